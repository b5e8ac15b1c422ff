"""Views: the PhatData stream API on the apex, topic = project (docs/streams.md).

nginx maps ``DOMAIN/stream/…`` onto ``/-/smalltable/stream/…`` (its writes go to
the ingest log instead):

==============================  ==============================================================
``/stream/``                    ``[{"topic", "size", "count", …}]`` of every public topic
``/stream/TOPIC``               ``[{"topic", "size", "count", "epoch", "first", "next"}]``
``/stream/TOPIC/LOC``           the document at LOC, its exact bytes
``/stream/TOPIC/A-B``           the documents at A to B (both included), a JSON array
``/stream/TOPIC/A-``            the documents from A to the end (as the read starts)
==============================  ==============================================================

Every answer about a topic carries ``X-Stream-Epoch``, and ``?epoch=E`` on any of
them answers 409 once the topic's epoch is no longer E (a truncation reused its
locations). A range is streamed a bounded chunk at a time; a truncation while it
is sent cuts it short (no closing ``]``), so the client can tell.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from datasette.utils.asgi import Request, Response

from ..model.project import PROJECT_NAME_RULE, is_valid_project_name
from . import topicdata
from .rowstream import MAX_ID, Send, send_body, start_response, watch_disconnect
from .site import site
from .views import json_error, json_response

if TYPE_CHECKING:
    from datasette.app import Datasette

log = logging.getLogger("smalltable.topics")

TOPIC = "(?P<topic>[^/]+)"
EXPECTED = "LOC, A-B (both included, A <= B) or A-: locations are counted from 0, e.g. /stream/demo/0-99"
_SPEC = re.compile(r"([0-9]{1,19})(?:(-)([0-9]{1,19})?)?")
DOCUMENTS_TYPE = "application/json; charset=utf-8"


def _path(datasette: Datasette, topic: str) -> Path | Response:
    """The topic's database, or a JSON error naming what is wrong."""
    data_dir = site(datasette).data_dir
    if not is_valid_project_name(topic):
        return json_error(404, f"no topic {topic!r}: not a project name", rule=PROJECT_NAME_RULE)
    if data_dir is None or not (data_dir / f"{topic}.db").exists():
        return json_error(
            404, f"no topic {topic!r}", fix=f"POST a JSON document to /stream/{topic} to create it"
        )
    return data_dir / f"{topic}.db"


def _epoch_check(request: Request, topic: topicdata.Topic) -> Response | None:
    """409 when the reader's ``?epoch=`` is not the topic's epoch; 400 when it is no number."""
    asked = request.args.get("epoch")
    if asked is None:
        return None
    if not asked.isdigit():
        return json_error(400, f"epoch must be a whole number, not {asked!r}", epoch=topic.epoch)
    if int(asked) != topic.epoch:
        return json_error(
            409,
            f"the topic has been truncated since epoch {asked}: its locations from "
            "the truncation on hold other documents now",
            epoch=topic.epoch,
            asked=int(asked),
            fix=f"read the topic again (GET /stream/{topic.name}) and go on with ?epoch={topic.epoch}",
        )
    return None


def _with_epoch(response: Response, topic: topicdata.Topic) -> Response:
    response.headers["X-Stream-Epoch"] = str(topic.epoch)
    return response


async def list_view(datasette: Datasette, request: Request) -> Response:
    """``/stream/``: every public topic's metadata, by name."""
    data_dir = site(datasette).data_dir
    paths = [] if data_dir is None else sorted(data_dir.glob("*.db"), key=lambda p: p.stem)
    named = [p for p in paths if is_valid_project_name(p.stem)]
    topicdata.forget_others(named)
    found = await asyncio.to_thread(lambda: [topicdata.topic_of(p) for p in named])
    return json_response([t.metadata() for t in found if t is not None and t.public])


async def topic_view(datasette: Datasette, request: Request) -> Response:
    """``/stream/TOPIC``: one topic's metadata, in a list as PhatData has it."""
    path = _path(datasette, request.url_vars["topic"])
    if isinstance(path, Response):
        return path
    topic = await asyncio.to_thread(topicdata.topic_of, path)
    if topic is None:
        return json_error(404, f"no topic {path.stem!r} yet")
    return _with_epoch(_epoch_check(request, topic) or json_response([topic.metadata()]), topic)


def parse(spec: str) -> tuple[int, int | None, bool]:
    """``7`` → (7, 7, False); ``3-9`` → (3, 9, True); ``3-`` → (3, None, True); ValueError if neither."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"not a location or range: {spec!r}")
    start = int(match[1])
    end = start if not match[2] else (None if match[3] is None else int(match[3]))
    if max(start, end or 0) >= MAX_ID:
        raise ValueError(f"locations go up to {MAX_ID - 1}")
    if end is not None and end < start:
        raise ValueError(f"the range ends before it starts: {start}-{end}")
    return start, end, bool(match[2])


async def documents_view(datasette: Datasette, request: Request, send: Send) -> Response | None:
    """``/stream/TOPIC/LOC``, ``/A-B``, ``/A-``: a document, or a range of them streamed."""
    try:
        start, end, is_range = parse(request.url_vars["spec"])
    except ValueError as exc:
        return json_error(400, str(exc), expected=EXPECTED)
    path = _path(datasette, request.url_vars["topic"])
    if isinstance(path, Response):
        return path
    conn = await asyncio.to_thread(topicdata.connect, path)
    try:
        topic, row = await asyncio.to_thread(topicdata.document, conn, path, start)
        refused = _epoch_check(request, topic) or _out_of_range(topic, start, end, is_range)
        if refused is not None:
            return _with_epoch(refused, topic)
        if not is_range and row is None:
            return _with_epoch(json_error(404, f"no document at location {start}"), topic)
        if not is_range:
            body, content_type = row
            data = body.encode() if isinstance(body, str) else body
            response = Response(data, content_type=content_type or "application/octet-stream")
            return _with_epoch(response, topic)
        last = topic.next - 1 if end is None else min(end, topic.next - 1)
        await _send_range(conn, topic, max(start, topic.first), last, request, send)
        return None
    finally:
        conn.close()


def _out_of_range(topic: topicdata.Topic, start: int, end: int | None, is_range: bool) -> Response | None:
    """404 for a location the topic does not hold (``A-`` at the next location is ``[]``)."""
    if start > topic.next or (start == topic.next and (end is not None or not is_range)):
        return json_error(
            404,
            f"no document at location {start}: the topic's next location is {topic.next}",
            next=topic.next,
            epoch=topic.epoch,
        )
    if not is_range and start < topic.first:
        return json_error(
            404,
            f"location {start} is no longer held: retention removed it (the first held is {topic.first})",
            first=topic.first,
            epoch=topic.epoch,
        )
    return None


async def _send_range(
    conn, topic: topicdata.Topic, first: int, last: int, request: Request, send: Send
) -> None:
    """Locations ``first`` to ``last`` as one JSON array, a chunk at a time."""
    gone = watch_disconnect(request.receive)
    after, through, sent = first, last + 1, False  # records, not locations: L is record L+1
    headers = {"x-stream-epoch": str(topic.epoch)}
    try:
        await start_response(send, DOCUMENTS_TYPE, headers)
        await send_body(send, b"[")
        while request.method != "HEAD" and after < through and not gone.done():
            after, data = await asyncio.to_thread(topicdata.chunk, conn, topic.epoch, after, through)
            if data:
                await send_body(send, (b"," if sent else b"") + data)
                sent = True
        if not gone.done():
            await send_body(send, b"]\n", more=False)
    except topicdata.EpochMoved:
        log.info("range of %s cut short: truncated while it was sent (epoch %d)", topic.name, topic.epoch)
    except Exception:
        log.exception("range of %s cut short after record %d", topic.name, after)
    finally:
        gone.cancel()


ROUTES = [
    (r"/-/smalltable/stream/$", list_view),
    (rf"/-/smalltable/stream/{TOPIC}$", topic_view),
    (rf"/-/smalltable/stream/{TOPIC}/(?P<spec>[^/]+)$", documents_view),
]
