"""Writes of the stream API (PhatData, docs/streams.md): a post of documents, or a truncation.

``POST /stream/TOPIC`` (on the apex, where nginx logs it under project TOPIC, or on
TOPIC's own host) holds one JSON document, or a JSON array of documents: each
becomes a record of its own, at consecutive ``_id`` (location L is record L+1).
An array's documents are kept as their exact bytes in the array, and get the
request ids ``ID-0``, ``ID-1``, … (the post's own id names none of them), so a
replay of the line makes the same records. The post is stored whole or rejected
whole: every document must follow the project's rules (type, schema).

``DELETE /stream/TOPIC/LOC`` truncates the topic at LOC; :mod:`ingestd.store.streams`
applies it. Everything here is a pure function of the request.
"""

from __future__ import annotations

import re

import msgspec

from ..model.record import Record, Reject
from ..model.request import Request
from ..store.pool import Store
from ..store.streams import TruncationRefused, truncate
from ..support.timefmt import iso_time
from .records import build
from .validate import Rules, check

STREAM_PREFIX = "/stream/"
"""Where every stream path starts (``/stream/TOPIC``, ``/stream/TOPIC/LOC``)."""
_PATH = re.compile(r"/stream/(?P<topic>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:/(?P<location>[0-9]{1,19}))?")
DOCUMENT_TYPE = "application/json"
"""The content type every stream document is stored with: each is one JSON document."""

_decode_array = msgspec.json.Decoder(list[msgspec.Raw]).decode


def _match(request: Request) -> re.Match | None:
    match = _PATH.fullmatch(request.path)
    return match if match and match["topic"] == request.project else None


def is_stream_post(request: Request) -> bool:
    """True for ``POST /stream/TOPIC`` to its own project."""
    if request.method != "POST" or not request.uri.startswith(STREAM_PREFIX):
        return False
    match = _match(request)
    return match is not None and match["location"] is None


def truncation_location(request: Request) -> int | None:
    """LOC of ``DELETE /stream/TOPIC/LOC`` to its own project; None for any other request."""
    if request.method != "DELETE" or not request.uri.startswith(STREAM_PREFIX):
        return None
    match = _match(request)
    return None if match is None or match["location"] is None else int(match["location"])


def element_id(request_id: str, index: int) -> str:
    """The request id of document ``index`` (from 0) of an array post."""
    return f"{request_id}-{index}"


def documents(request: Request, rules: Rules) -> list[Record] | Reject:
    """The records a stream post makes (one, or one per element of an array), or one Reject
    for the whole post saying which document broke which rule."""
    whole = build(msgspec.structs.replace(request, content_type=DOCUMENT_TYPE))
    if isinstance(whole, Reject):
        reason = f"a stream document must be JSON: {whole.reason}"
        return Reject(request, reason, whole.body, "not_json")
    if not isinstance(whole.value, list):
        checked = check(whole, rules)
        return [checked] if isinstance(checked, Record) else checked
    elements = _decode_array(request.body)
    if not elements:
        return Reject(request, "an empty array holds no documents: post at least one", whole.body, "other")
    records: list[Record] = []
    for index, raw in enumerate(elements):
        body = bytes(raw)
        part = msgspec.structs.replace(
            request,
            request_id=element_id(request.request_id, index),
            content_type=DOCUMENT_TYPE,
            content_length=len(body),
            body=body,
        )
        item = build(part)
        if isinstance(item, Record) and not rules.trivial:
            item = check(item, rules)
        if isinstance(item, Reject):
            reason = f"document {index} of the array (nothing of the post is stored): {item.reason}"
            return Reject(request, reason, whole.body, item.code)
        records.append(item)
    return records


def truncation(store: Store, request: Request, location: int, exists: bool) -> Reject | None:
    """Apply ``DELETE /stream/TOPIC/LOC`` in log order; a Reject saying why not, or None.

    nginx lets only the owner key through; the line says which key it was, so a
    truncation that reached the log another way (an old log) is refused here too."""
    try:
        if not exists or not request.key.startswith("owner:"):
            raise TruncationRefused("truncating needs the owner key of an existing topic")
        conn = store.project(request.project).conn
        truncate(conn, request.request_id, iso_time(request.received), location)
    except TruncationRefused as exc:
        return Reject(request, f"not truncated: {exc}", request.body.decode("utf-8", "replace"), "other")
    return None
