"""Views of key-value buckets: ``PROJECT.DOMAIN/_kv/BUCKET/items/KEY`` and the rest of ``/_kv/``.

``/_kv/`` lists the buckets, ``/_kv/BUCKET/items/`` a bucket's keys in order (a
page at a time, with a cursor), ``/_kv/BUCKET/indexes/NAME`` an index's entries.

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlencode

from datasette.utils.asgi import Response

from ..model.kv import KV_PREFIX, KvError, check_bucket, parse_item_path
from ..store import kv as kv_store
from .databases import ProjectDatabase, sync_databases
from .dbfiles import file_signature, open_existing
from .site import site
from .views import ROUTE_PREFIX, Problem, answers_problems, json_response, project_url
from .waiting import AFTER_SECONDS, parse_wait, wait_until

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

T = TypeVar("T")
DEFAULT_LIMIT = 100
"""Keys or index entries one listing answers without ``?limit=``."""
MAX_LIMIT = 10000
"""The most one listing answers: a page of a bucket is bounded in memory and time."""
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
ITEM_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "sandbox",
    "X-Content-Type-Options": "nosniff",
}


INLINE_BYTES = 65536
"""A value up to this long is read on the event loop; a longer one on a Datasette thread."""


async def read_item(datasette: Datasette, project: str, bucket: str, key: str) -> tuple | None:
    """A live item; None when there is none, or no project yet.

    The point read runs on the event loop, on a pooled connection
    (:meth:`~.databases.ProjectDatabase.read_now`): it takes microseconds, less than
    a hop to a thread and back. A value longer than :data:`INLINE_BYTES` is read on
    one of Datasette's threads, so that the loop never copies megabytes.
    """
    sync_databases(datasette)
    if project not in datasette.databases:
        return None
    database = datasette.get_database(project)
    now = time.time()
    if not isinstance(database, ProjectDatabase):  # a file Datasette was started with
        return await database.execute_fn(lambda conn: kv_store.read_item(conn, bucket, key, now))
    item = database.read_now(lambda conn: kv_store.read_item(conn, bucket, key, now, most=INLINE_BYTES))
    if item is None or item[0] is not None:
        return item
    return await database.execute_fn(lambda conn: kv_store.read_item(conn, bucket, key, now))


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
    applied = await wait_until(
        lambda: write_applied(db_path, after), bool, seconds, waiters, lambda: file_signature(db_path)
    )
    if not applied:
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
        item = await read_item(datasette, project, bucket, key)
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


def query(db_path: Path, read: Callable[..., T], *args: object) -> T | list:
    """``read(conn, *args)`` on a project's database (blocking); [] when it has no buckets yet."""
    try:
        conn = open_existing(db_path)
    except sqlite3.OperationalError:
        return []
    try:
        return read(conn, *args)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def _limit(request: Request) -> int:
    """``?limit=`` (1 to MAX_LIMIT, DEFAULT_LIMIT without it); a Problem (400) otherwise."""
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise Problem(400, f"bad limit {raw[:40]!r}", expected=f"?limit=N, from 1 to {MAX_LIMIT}")
    return int(raw)


def _db_path(datasette: Datasette, project: str) -> Path:
    data_dir = site(datasette).data_dir
    if data_dir is None:
        raise Problem(404, "no data directory configured")
    return data_dir / f"{project}.db"


async def buckets_view(request: Request, datasette: Datasette) -> Response:
    """``GET /_kv/``: every bucket of the project with its live items and their bytes."""
    db_path = _db_path(datasette, request.url_vars["project"])
    rows = await asyncio.to_thread(query, db_path, kv_store.list_buckets, time.time())
    base = project_url(request)
    buckets = [
        {"bucket": name, "items": count, "bytes": size or 0, "url": f"{base}_kv/{name}/items/"}
        for name, count, size in rows
    ]
    return json_response({"buckets": buckets})


async def list_view(request: Request, datasette: Datasette, bucket: str) -> Response:
    """``GET /_kv/BUCKET/items/?prefix=&after=&limit=``: keys in order, a page at a time."""
    prefix, after, limit = request.args.get("prefix", ""), request.args.get("after", ""), _limit(request)
    db_path = _db_path(datasette, request.url_vars["project"])
    rows = await asyncio.to_thread(
        query, db_path, kv_store.list_items, bucket, prefix, after, limit + 1, time.time()
    )
    items = [
        {"key": key, "version": str(version), "size": size, "content_type": ctype, "expires_at": expires}
        for key, version, size, ctype, expires in rows[:limit]
    ]
    more = len(rows) > limit
    body: dict = {"bucket": bucket, "items": items, "next": items[-1]["key"] if more else None}
    if more:
        query_string = urlencode({"prefix": prefix, "after": items[-1]["key"], "limit": limit})
        body["next_url"] = f"{project_url(request)}_kv/{bucket}/items/?{query_string}"
    return json_response(body)


async def index_view(request: Request, datasette: Datasette, bucket: str, name: str) -> Response:
    """``GET /_kv/BUCKET/indexes/NAME?min=&max=&reverse=true&limit=``: ``[[value, key], …]``."""
    reverse = request.args.get("reverse", "false")
    if reverse not in ("true", "false"):
        raise Problem(400, f"bad reverse {reverse[:40]!r}", expected="?reverse=true or ?reverse=false")
    db_path = _db_path(datasette, request.url_vars["project"])
    low, high, limit = request.args.get("min"), request.args.get("max"), _limit(request)
    scan = (bucket, name, low, high, reverse == "true", limit, time.time())
    entries = await asyncio.to_thread(query, db_path, kv_store.scan_index, *scan)
    return json_response(entries)


async def kv_view(request: Request, datasette: Datasette) -> Response:
    """Every ``GET`` under ``/_kv/``, by its path: buckets, a bucket's items, an index, an item."""
    rest = request.url_vars["rest"]
    if rest == "":
        return await buckets_view(request, datasette)
    bucket, _, tail = rest.partition("/")
    if tail == "items/":
        return await list_view(request, datasette, _bucket(bucket))
    if tail.startswith("indexes/"):
        name = unquote(tail[len("indexes/") :]).lower()
        return await index_view(request, datasette, _bucket(bucket), name)
    return await item_view(request, datasette)


def _bucket(raw: str) -> str:
    try:
        return check_bucket(raw)
    except KvError as exc:
        raise Problem(400, str(exc)) from None


ROUTES = [
    (ROUTE_PREFIX + r"/_kv/(?P<rest>.*)$", answers_problems(json_errors=True)(kv_view)),
]
