"""Views of key-value buckets: ``PROJECT.DOMAIN/_kv/BUCKET/items/KEY`` and the rest of ``/_kv/``.

nginx passes the path as the client sent it (``$request_uri``), and Datasette routes
on the raw path, so a key's ``%XX`` are decoded here once, by the same rule ingestd
reads writes with (:func:`ingestd.model.kv.parse_item_path`).

A ``GET`` of an item answers its exact bytes under the Content-Type it was put
with, its version as ``ETag: "V"`` and ``X-Weave-Version: V``; ``If-None-Match``
naming that version answers ``304``. An absent, deleted or expired key is a JSON
``404``: expiry is checked against the clock at read time, so a value is never
served after it expired, even before the retention pass purges it. ``?after=ID``
waits (10 s, or ``&wait=SECONDS`` up to 30) until the write ``ID`` is applied:
read-your-writes without polling.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from datasette.utils.asgi import Response

from ..model.kv import KV_PREFIX, KvError, parse_item_path
from ..store import kv as kv_store
from .dbfiles import open_existing
from .site import site
from .views import ROUTE_PREFIX, Problem, answers_problems
from .waiting import AFTER_SECONDS, parse_wait, wait_until

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
ITEM_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "sandbox",
    "X-Content-Type-Options": "nosniff",
}


def read_item(db_path: Path, bucket: str, key: str) -> tuple | None:
    """A live item of a project's database (blocking), or None."""
    try:
        conn = open_existing(db_path)
    except sqlite3.OperationalError:
        return None  # no database: no buckets
    try:
        return kv_store.read_item(conn, bucket, key, time.time())
    finally:
        conn.close()


def write_applied(db_path: Path, request_id: str) -> bool:
    """True once the write ``request_id`` is applied in the project (blocking)."""
    try:
        conn = open_existing(db_path)
    except sqlite3.OperationalError:
        return False
    try:
        return kv_store.is_applied(conn, request_id)
    finally:
        conn.close()


async def _wait_after(datasette: Datasette, request: Request, db_path: Path) -> None:
    """With ``?after=ID``, wait (bounded) until that write is applied; a Problem if it is not in time."""
    after = request.args.get("after")
    if after is None:
        return
    if not _REQUEST_ID.match(after):
        raise Problem(400, f"bad after {after[:40]!r}", expected="?after=ID, the id of a write's 202 answer")
    seconds = parse_wait(request.args.get("wait"))
    seconds = AFTER_SECONDS if seconds is None else seconds
    waiters = site(datasette).status_waiters
    if not await wait_until(lambda: write_applied(db_path, after), bool, seconds, waiters):
        raise Problem(
            504,
            "that write is not applied yet",
            after=after,
            waited_seconds=seconds,
            fix=f"follow its status URL (/_status/{after}?wait=30), then read again",
        )


def _matches(if_none_match: str, version: int) -> bool:
    """True when an ``If-None-Match`` list names ``version`` (or is ``*``)."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or f'"{version}"' in tags


async def item_view(request: Request, datasette: Datasette) -> Response:
    """``GET /_kv/BUCKET/items/KEY``: the value's exact bytes, its version, or a JSON 404."""
    project = request.url_vars["project"]
    path = KV_PREFIX + request.url_vars["rest"]
    try:
        bucket, key = parse_item_path(path)
    except KvError as exc:
        raise Problem(400, str(exc), path=path, expected="/_kv/BUCKET/items/KEY") from None
    data_dir = site(datasette).data_dir
    item = None
    if data_dir is not None:
        db_path = data_dir / f"{project}.db"
        await _wait_after(datasette, request, db_path)
        item = await asyncio.to_thread(read_item, db_path, bucket, key)
    if item is None:
        raise Problem(
            404,
            "not found",
            bucket=bucket,
            key=key,
            detail="no such key in this bucket: never put, deleted or expired (or its write not applied yet)",
        )
    value, content_type, version = item
    headers = {**ITEM_HEADERS, "ETag": f'"{version}"', "X-Weave-Version": str(version)}
    if _matches(request.headers.get("if-none-match", ""), version):
        return Response("", status=304, headers=headers)
    if not content_type or not (content_type.isascii() and content_type.isprintable()):
        content_type = "application/octet-stream"
    return Response(value, headers=headers, content_type=content_type)


ROUTES = [
    (ROUTE_PREFIX + r"/_kv/(?P<rest>.*)$", answers_problems(json_errors=True)(item_view)),
]
