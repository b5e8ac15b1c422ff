"""Rows of a project table as one streamed HTTP response, a bounded chunk at a time.

Stream ranges and exports can cover millions of rows, so nothing here holds
more than one chunk: rows are read by keyset pagination on ``_id``
(``where _id > ? and _id <= ? order by _id limit 1000``), one short query per
chunk on Datasette's database thread, and each chunk is encoded and sent
before the next is read. Every query is a range scan of the primary key, so
Datasette's time limit and row cap (which guard ad-hoc SQL) do not apply.

A response stops reading as soon as the client goes away. A failure after
the first byte is logged and the connection closed without the final chunk,
so a client can tell a download that was cut short from a complete one.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import orjson
from datasette.utils.asgi import Request

from ..store.schema import quote
from .recordjson import record_json

if TYPE_CHECKING:
    from datasette.database import Database

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

MAX_ID = 2**63 - 1
"""The largest position SQLite's integer ``_id`` can hold."""
CHUNK_ROWS = 1000
"""Rows per query and per piece of the response."""
CHUNK_BYTES = 4 * 1024 * 1024
"""A chunk also ends once its text and BLOB values add up to this (bodies reach 1 MiB each)."""

log = logging.getLogger("smalltable.streams")


def watch_disconnect(receive: Receive) -> asyncio.Task:
    """A task that finishes when the client goes away; cancel it when the response is done."""

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return asyncio.create_task(until_disconnect(), name="smalltable-disconnect-watch")


async def start_response(send: Send, content_type: str, headers: dict[str, str]) -> None:
    """Send a 200's status line and headers; the body follows with :func:`send_body`."""
    raw = [(k.lower().encode(), v.encode()) for k, v in {**headers, "content-type": content_type}.items()]
    await send({"type": "http.response.start", "status": 200, "headers": raw})


async def send_body(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


@dataclass(frozen=True)
class Snapshot:
    """What a response covers, fixed when it starts: the table's columns and its last ``_id``.

    Rows loaded while a long response is being sent are not part of it, so an
    open-ended range or an export always ends. The columns are read after the
    last ``_id``: a column added later belongs only to rows past that ``_id``.
    """

    table: str
    columns: tuple[str, ...]
    last_id: int


def take_snapshot(conn: sqlite3.Connection, table: str) -> Snapshot:
    """The :class:`Snapshot` of ``table`` now (``last_id`` 0 when it is empty)."""
    last_id = conn.execute(f"select max(_id) from {quote(table)}").fetchone()[0] or 0
    columns = tuple(row[1] for row in conn.execute(f"pragma table_info({quote(table)})"))
    return Snapshot(table, columns, last_id)


def read_rows(cursor: sqlite3.Cursor) -> list[tuple]:
    """The rows of an executed query that has a ``limit``, up to CHUNK_BYTES of values; closes it."""
    rows, size = [], 0
    try:
        for row in cursor:
            rows.append(row)
            size += sum(len(value) for value in row if isinstance(value, (str, bytes)))
            if size >= CHUNK_BYTES:
                break
    finally:
        cursor.close()  # ends the read transaction at once, even when stopping early
    return rows


def read_chunk(conn: sqlite3.Connection, snapshot: Snapshot, after: int, through: int) -> list[tuple]:
    """The next chunk of rows with ``after < _id <= through``, in ``_id`` order."""
    columns = ", ".join(quote(c) for c in snapshot.columns)
    sql = (
        f"select {columns} from {quote(snapshot.table)} "
        f"where _id > ? and _id <= ? order by _id limit {CHUNK_ROWS}"
    )
    return read_rows(conn.execute(sql, (after, through)))


def json_item(columns: tuple[str, ...], row: tuple) -> bytes:
    """One row as compact JSON (``common.record_json``): NULL user columns left out, BLOBs base64."""
    return orjson.dumps(record_json(dict(zip(columns, row, strict=True))))


class JsonArray:
    """A JSON array, one item per line: ``[`` / ``{...},`` / ``]``."""

    content_type = "application/json; charset=utf-8"

    def head(self, snapshot: Snapshot) -> bytes:
        return b"["

    def chunk(self, snapshot: Snapshot, rows: list[tuple], first: bool) -> bytes:
        items = b",\n".join(json_item(snapshot.columns, row) for row in rows)
        return (b"\n" if first else b",\n") + items

    def end(self, sent_rows: bool) -> bytes:
        return b"\n]\n" if sent_rows else b"]\n"


class Ndjson:
    """Newline-delimited JSON: one item per line, nothing around them."""

    content_type = "application/x-ndjson; charset=utf-8"

    def head(self, snapshot: Snapshot) -> bytes:
        return b""

    def chunk(self, snapshot: Snapshot, rows: list[tuple], first: bool) -> bytes:
        return b"".join(json_item(snapshot.columns, row) + b"\n" for row in rows)

    def end(self, sent_rows: bool) -> bytes:
        return b""


class Csv:
    """CSV with a header row: every column of the table, then ``_base64``.

    NULL is an empty cell. A BLOB is written as base64, and the row's last
    cell, ``_base64``, lists the columns whose cells are base64 as a JSON
    array (empty when there are none), so a binary body and a text body that
    happens to look like base64 can always be told apart. The name gets a
    trailing ``_`` while the table has a column called that.
    """

    content_type = "text/csv; charset=utf-8"

    @staticmethod
    def marker_column(columns: tuple[str, ...]) -> str:
        taken = {c.lower() for c in columns}
        name = "_base64"
        while name in taken:
            name += "_"
        return name

    def _lines(self, rows: Iterable[list[object]]) -> bytes:
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue().encode()

    def head(self, snapshot: Snapshot) -> bytes:
        return self._lines([[*snapshot.columns, self.marker_column(snapshot.columns)]])

    def chunk(self, snapshot: Snapshot, rows: list[tuple], first: bool) -> bytes:
        def cells(row: tuple) -> list[object]:
            blobs = [c for c, v in zip(snapshot.columns, row, strict=True) if isinstance(v, bytes)]
            values = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in row]
            return [*values, orjson.dumps(blobs).decode() if blobs else ""]

        return self._lines(cells(row) for row in rows)

    def end(self, sent_rows: bool) -> bytes:
        return b""


FORMATS: dict[str, JsonArray | Ndjson | Csv] = {"json": JsonArray(), "ndjson": Ndjson(), "csv": Csv()}


async def stream_rows(
    db: Database,
    snapshot: Snapshot,
    fmt: JsonArray | Ndjson | Csv,
    first_id: int,
    last_id: int,
    request: Request,
    send: Send,
    headers: dict[str, str],
) -> None:
    """Send the rows of ``snapshot.table`` with ``first_id <= _id <= last_id`` as a response.

    A HEAD request gets the headers alone, without reading a row.
    """
    gone = watch_disconnect(request.receive)
    after, sent_rows = first_id - 1, False
    id_index = snapshot.columns.index("_id")
    if request.method == "HEAD":
        after = last_id
    try:
        await start_response(send, fmt.content_type, headers)
        await send_body(send, fmt.head(snapshot))
        while after < last_id and not gone.done():
            rows = await db.execute_fn(partial(read_chunk, snapshot=snapshot, after=after, through=last_id))
            if not rows:
                break
            await send_body(send, fmt.chunk(snapshot, rows, first=not sent_rows))
            after, sent_rows = rows[-1][id_index], True
        if not gone.done():
            await send_body(send, fmt.end(sent_rows), more=False)
    except Exception:
        # The status line is out: the only honest signal left is an unfinished body.
        log.exception("%s of %s cut short after _id %d", snapshot.table, db.name, after)
    finally:
        gone.cancel()
