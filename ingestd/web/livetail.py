"""``PROJECT.DOMAIN/_tail``: new records as server-sent events, as ingestd loads them.

Each record is one event (``curl -N`` shows them as they come)::

    id: 43
    event: record
    data: {"_id":43,"_request_id":"…",…}

The tail starts at the project's current end, or right after record N when
the request has ``Last-Event-ID: N`` (what a browser's EventSource sends when
it reconnects) or ``?after=N``; the header wins, being the newer of the two.
``_id`` is gapless and only grows, so resuming after the last id seen misses
nothing and repeats nothing. A project that does not exist is a 404: a tail
cannot hold a connection open for a name nobody posts to.

Watching costs next to nothing while a project is idle, however many tails it
has: one watch per project (:class:`_Watch`, a task that ends with its last
tail) ``stat``s the database and its WAL every POLL_SECONDS (no thread, no
SQL) and wakes its tails only while they are changing; each tail then queries
from where it is. A commit grows or rewrites the WAL a few
milliseconds before readers can see it (the fsync comes in between), so
after each change the watch keeps waking the tails for SETTLE_SECONDS; and it
wakes them every RECHECK_SECONDS regardless, since a commit that rewrites a reset WAL
within one clock tick of the last one can leave size and mtime unchanged.
A comment every KEEPALIVE_SECONDS keeps idle proxies from closing the
stream. The tail ends when the client disconnects or Datasette is asked to
stop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from datasette.utils.asgi import NotFound, Request, Response

from .databases import project_database
from .dbfiles import file_signature
from .rowstream import (
    CHUNK_ROWS,
    MAX_ID,
    Send,
    json_item,
    read_rows,
    send_body,
    start_response,
    watch_disconnect,
)
from .site import site
from .views import ROUTE_PREFIX, json_error

if TYPE_CHECKING:
    from datasette.app import Datasette

POLL_SECONDS = 0.05
SETTLE_SECONDS = 0.5
RECHECK_SECONDS = 2.0
KEEPALIVE_SECONDS = 15.0
EVENT_STREAM = "text/event-stream; charset=utf-8"
RESUME_EXPECTED = "a record position (_id) of 0 or more, e.g. Last-Event-ID: 42 or ?after=42"

log = logging.getLogger("smalltable.tail")


def resume_after(request: Request) -> int | None:
    """The ``_id`` to resume after (``Last-Event-ID``, else ``?after``), or None to start at the end."""
    value = (request.headers.get("last-event-id") or request.args.get("after") or "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", value) or int(value) > MAX_ID:
        raise ValueError(f"cannot resume after {value!r}")
    return int(value)


def server_stopping() -> bool:
    """True once Datasette's uvicorn has been asked to stop (SIGTERM or Ctrl-C).

    uvicorn waits for every open response before it exits, and a tail never
    ends by itself, so without this an open tail would hold up every restart
    until the process is killed. uvicorn's signal handler is a method of its
    ``Server``, whose ``should_exit`` turns true on the first signal.
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


def _read_events(conn: sqlite3.Connection, after: int) -> tuple[bytes, int, bool]:
    """The events of the records after ``after``: (events, the last ``_id`` in them, more waiting)."""
    try:
        sql = f"select * from records where _id > ? order by _id limit {CHUNK_ROWS}"
        cursor = conn.execute(sql, (after,))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the file exists, its tables are being created
            return b"", after, False
        raise
    columns = tuple(d[0] for d in cursor.description)
    rows = read_rows(cursor)
    id_index = columns.index("_id")
    events = b"".join(
        b"id: %d\nevent: record\ndata: %s\n\n" % (row[id_index], json_item(columns, row)) for row in rows
    )
    return events, rows[-1][id_index] if rows else after, len(rows) == CHUNK_ROWS


def _last_id(conn: sqlite3.Connection) -> int:
    return conn.execute("select max(_id) from records").fetchone()[0] or 0


class _Project:
    """A project's database as the tail sees it: perhaps not there yet."""

    def __init__(self, datasette: Datasette, name: str, path: Path) -> None:
        self.datasette, self.name, self.path = datasette, name, path

    async def events_after(self, after: int) -> tuple[bytes, int, bool]:
        try:
            db = project_database(self.datasette, self.name)
        except NotFound:
            return b"", after, False
        return await db.execute_fn(partial(_read_events, after=after))

    async def last_id(self) -> int:
        """The ``_id`` of the project's last record, 0 when it has none (or does not exist yet)."""
        try:
            db = project_database(self.datasette, self.name)
        except NotFound:
            return 0
        try:
            return await db.execute_fn(_last_id)
        except sqlite3.OperationalError:  # the file exists, its tables are being created
            return 0


class _Watch:
    """The one watch of a project's files, shared by all its open tails.

    Every POLL_SECONDS it stats the files; when the tails should query (the files
    changed, are settling, or a recheck is due) or the server is stopping, it
    resolves ``woken`` and puts a new future in its place. It ends when its last
    tail leaves.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tails = 0
        self.woken: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task | None = None

    def wake(self) -> None:
        self.woken.set_result(None)
        self.woken = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        seen, changed, checked = None, 0.0, 0.0
        while self.tails and not server_stopping():
            now = time.monotonic()
            signature = file_signature(self.path)
            if signature != seen:
                seen, changed = signature, now
            if now - changed < SETTLE_SECONDS or now - checked >= RECHECK_SECONDS:
                checked = now
                self.wake()
            await asyncio.sleep(POLL_SECONDS)
        self.wake()


_WATCHES: dict[tuple[asyncio.AbstractEventLoop, Path], _Watch] = {}


def _join_watch(path: Path, name: str) -> _Watch:
    """The project's watch, started for its first tail."""
    key = (asyncio.get_running_loop(), path)
    watch = _WATCHES.get(key)
    if watch is None or watch.task is None or watch.task.done():
        watch = _WATCHES[key] = _Watch(path)
        watch.tails = 1
        watch.task = asyncio.get_running_loop().create_task(watch.run(), name=f"smalltable-watch:{name}")
        watch.task.add_done_callback(
            lambda _: _WATCHES.pop(key, None) if _WATCHES.get(key) is watch else None
        )
    else:
        watch.tails += 1
    return watch


async def _follow(project: _Project, watch: _Watch, after: int, send: Send, gone: asyncio.Task) -> None:
    """Send each record after ``after`` as it is loaded, until the client or the server goes."""
    written, more, query = time.monotonic(), True, True
    while not gone.done() and not server_stopping():
        now = time.monotonic()
        if more or query:
            events, after, more = await project.events_after(after)
            if events:
                await send_body(send, events)
                written = now
            if more:
                continue
        if now - written >= KEEPALIVE_SECONDS:
            await send_body(send, b": keepalive\n\n")
            written = now
        woken = watch.woken
        timeout = KEEPALIVE_SECONDS - (time.monotonic() - written)
        await asyncio.wait({gone, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        query = woken.done()
    if not gone.done():
        await send_body(send, b": the server is restarting: resume with Last-Event-ID: %d\n\n" % after)
        await send_body(send, b"", more=False)


async def tail_view(datasette: Datasette, request: Request, send: Send) -> Response | None:
    """The ``/_tail`` route: a 400 for a bad resume point, else an event stream until disconnect."""
    name = request.url_vars["project"]
    try:
        after = resume_after(request)
    except ValueError as exc:
        return json_error(400, str(exc), expected=RESUME_EXPECTED)
    directory = site(datasette).data_dir
    if directory is None:
        return json_error(404, "this Datasette has no SmallTable data directory configured")
    path = directory / f"{name}.db"
    if not path.exists():
        return json_error(
            404,
            f"no project {name!r}",
            project=name,
            fix="post to it first: a tail follows a project that exists",
        )
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    if request.method == "HEAD":
        return Response("", headers=headers, content_type=EVENT_STREAM)
    project = _Project(datasette, name, path)
    asyncio.current_task().set_name(f"smalltable-tail:{name}")  # shows in /-/threads.json while open
    watch = _join_watch(path, name)
    gone = watch_disconnect(request.receive)
    try:
        await start_response(send, EVENT_STREAM, headers)
        if after is None:
            after = await project.last_id()
        await send_body(send, b": %s: records after %d, as they are loaded\n\n" % (name.encode(), after))
        await _follow(project, watch, after, send, gone)
    except Exception:
        log.exception("tail of %s failed", name)  # the unfinished body tells the client
    finally:
        gone.cancel()
        watch.tails -= 1
    return None


ROUTES = [(ROUTE_PREFIX + r"/_tail$", tail_view)]
