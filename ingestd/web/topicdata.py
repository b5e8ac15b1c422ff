"""A project read as a PhatData topic: its metadata, documents by location, write statuses.

Location L is record ``_id`` L+1 (:mod:`ingestd.store.streams`). Every read here
is of one database file opened for it (never created), and everything a
response shows is read in one transaction with the topic's epoch, so a
document is never shown under an epoch it does not belong to.

A topic's size is the bytes of its documents (``sum(_size)``). Summing a large
topic on every read would scan it, so the sum is kept per file and extended by
the records loaded since; a truncation (a new epoch) or retention (a new first
location) starts it again.
"""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..store import streams
from ..store.schema import read_settings
from .dbfiles import FileCache, is_missing_table
from .rowstream import CHUNK_BYTES

CHUNK_ROWS = 10000
"""Documents per chunk of a range: one query, one piece of the response."""
_SIZES_KEPT = 10000
_sizes: dict[Path, tuple[int, int, int, int]] = {}
_topics: FileCache[Topic | None] = FileCache()
"""A file's (epoch, first, last ``_id``, bytes of records up to it)."""


class EpochMoved(Exception):
    """The topic was truncated while a response was being read."""


@dataclass(frozen=True)
class Topic:
    """A topic as one transaction saw it."""

    name: str
    epoch: int
    first: int
    """The first location still held (retention removes the oldest)."""
    next: int
    """The location the next document gets."""
    size: int
    public: bool

    @property
    def count(self) -> int:
        return self.next - self.first

    def metadata(self) -> dict[str, object]:
        """The PhatData metadata, with the epoch and the locations held."""
        return {
            "topic": self.name,
            "size": self.size,
            "count": self.count,
            "epoch": self.epoch,
            "first": self.first,
            "next": self.next,
        }


def connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing project database (``sqlite3.OperationalError`` if none),
    usable from any thread (a streamed response reads each chunk in a worker thread)."""
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _size(path: Path, conn: sqlite3.Connection, epoch: int, first: int, last: int) -> int:
    kept = _sizes.get(path)
    if kept and kept[:2] == (epoch, first) and kept[2] <= last:
        since = conn.execute(
            "SELECT coalesce(sum(_size), 0) FROM records WHERE _id > ? AND _id <= ?", (kept[2], last)
        )
        size = kept[3] + since.fetchone()[0]
    else:
        size = conn.execute("SELECT coalesce(sum(_size), 0) FROM records WHERE _id <= ?", (last,)).fetchone()[
            0
        ]
    if len(_sizes) >= _SIZES_KEPT:
        _sizes.clear()
    _sizes[path] = (epoch, first, last, size)
    return size


def read_topic(conn: sqlite3.Connection, path: Path) -> Topic:
    """The topic of an open database, inside the caller's transaction."""
    epoch = streams.epoch(conn)
    first, end = streams.bounds(conn)
    settings = read_settings(conn)
    is_public = settings is None or settings.read != "private"
    return Topic(path.stem, epoch, first, end, _size(path, conn, epoch, first, end), is_public)


def topic_of(path: Path) -> Topic | None:
    """A topic's metadata (blocking); None when the project has no database. Kept until its
    files change, so listing every topic reads only those that did."""
    return _topics.get(path, _read_topic_file, keep=lambda topic: topic is not None)[0]


def forget_others(paths: list[Path]) -> None:
    """Forget the metadata of every topic not in ``paths`` (deleted projects)."""
    _topics.keep_only(paths)


def _read_topic_file(path: Path) -> Topic | None:
    try:
        conn = connect(path)
    except sqlite3.OperationalError:
        return None
    try:
        conn.execute("BEGIN")
        try:
            return read_topic(conn, path)
        finally:
            conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # being created
        raise
    finally:
        conn.close()


def document(conn: sqlite3.Connection, path: Path, location: int) -> tuple[Topic, tuple | None]:
    """The topic and the record at ``location`` (``_body``, ``_content_type``), in one transaction."""
    conn.execute("BEGIN")
    try:
        topic = read_topic(conn, path)
        row = conn.execute("SELECT _body, _content_type FROM records WHERE _id = ?", (location + 1,))
        return topic, row.fetchone()
    finally:
        conn.execute("COMMIT")


def as_document(kind: str, body: str | bytes) -> str:
    """A record as a JSON document of a range: a JSON record's own text; a text body as a
    JSON string; a binary body as ``{"base64": …}`` (only posts to the project's own host
    can be other than JSON)."""
    if kind == "json":
        return body if isinstance(body, str) else body.decode("utf-8")
    if isinstance(body, str):
        return orjson.dumps(body).decode()
    return orjson.dumps({"base64": base64.b64encode(body).decode()}).decode()


def chunk(conn: sqlite3.Connection, epoch: int, after: int, through: int) -> tuple[int, bytes]:
    """The documents of records ``after < _id <= end``, comma-separated, and ``end``: up to
    CHUNK_ROWS documents and CHUNK_BYTES of them (bodies reach 1 MiB), ``end <= through``.
    EpochMoved if the topic was truncated since ``epoch``.

    SQLite joins the documents itself (quoting text bodies that are not JSON), so a chunk
    costs Python one string, not a tuple per row; a chunk with a binary body is joined here.
    """
    conn.execute("BEGIN")
    try:
        if streams.epoch(conn) != epoch:
            raise EpochMoved(epoch)
        end = _chunk_end(conn, after, through)
        try:
            text = conn.execute(_JOINED_SQL, (after, end)).fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "BLOB" not in str(exc):
                raise
            rows = conn.execute(_ROWS_SQL, (after, end)).fetchall()
            text = ",".join(as_document(kind, body) for kind, body in rows)
    finally:
        conn.execute("COMMIT")
    return end, b"" if text is None else text.encode()


_JOINED_SQL = (
    # A range of the rowid is scanned in rowid order, so the documents join in location order.
    "SELECT group_concat(iif(_kind = 'json', _body, json_quote(_body)), ',') "
    "FROM records WHERE _id > ? AND _id <= ?"
)
_ROWS_SQL = "SELECT _kind, _body FROM records WHERE _id > ? AND _id <= ? ORDER BY _id"
_SUM_SQL = "SELECT coalesce(sum(_size), 0) FROM records WHERE _id > ? AND _id <= ?"


def _chunk_end(conn: sqlite3.Connection, after: int, through: int) -> int:
    """The last ``_id`` of the chunk after ``after``: CHUNK_ROWS records, halved until their
    bodies add up to at most CHUNK_BYTES (or one record is left)."""
    rows = CHUNK_ROWS
    while True:
        end = min(after + rows, through)
        if rows == 1 or conn.execute(_SUM_SQL, (after, end)).fetchone()[0] <= CHUNK_BYTES:
            return end
        rows //= 2


def write_status(conn: sqlite3.Connection, request_id: str) -> dict | None:
    """What became of a stream write not found as one record: an array post's documents
    (``ID-0``, ``ID-1``, …), or a truncation; None for neither."""
    try:
        rows = conn.execute(
            "SELECT _id FROM records WHERE _request_id >= ? AND _request_id < ? ORDER BY _id",
            (f"{request_id}-", f"{request_id}."),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if is_missing_table(exc):
            return None  # the database is being created
        raise
    if rows:
        ids = [row[0] for row in rows]
        return {
            "status": "stored",
            "id": ids[0],
            "ids": ids,
            "location_list": [i - 1 for i in ids],
            "created": False,
        }
    done = streams.applied(conn, request_id)
    if done is None:
        return None
    return {
        "status": "applied",
        "action": "truncated",
        "location": done.location,
        "epoch": done.epoch,
        "removed": done.removed,
        "created": False,
    }


def location(record_id: int, path: str) -> dict[str, int]:
    """A stream post's location in its status (location L is record L+1); {} for other posts."""
    return {"location": record_id - 1} if path.startswith("/stream/") else {}
