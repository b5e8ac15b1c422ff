"""Key-value buckets in a project's database: items with versions, index entries, decisions.

Tables (made on a project's first key-value write, so Datasette shows them):

``kv_writes``
    One row per key-value write applied, in log order: its decision (``stored``,
    ``deleted`` or ``rejected``), the version it made or the version that made it
    fail. ``_id`` (AUTOINCREMENT: never reused) is the project's key-value sequence,
    and a stored value's version is its write's ``_id``: it comes from the log
    alone, so a replay makes the same versions and decisions, and it increases for
    every key with every write.
``kv_items``
    The live value of each (bucket, key): exact bytes (TEXT when UTF-8, else BLOB),
    Content-Type, version, expiry (``expires``: the logged receive time + TTL), and
    how many index entries it has (``indexed``).
``kv_index``
    The index entries of each live item: (bucket, name, value, key).

Conditions are decided against the state the earlier writes left, with time taken
from the line (an item expired at the line's receive time counts as absent). A
batch of writes commits in one transaction with their ``kv_writes`` rows, so a
write applied before a crash is found by its request id and not applied twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..model.kv import KvWrite
from ..support.timefmt import iso_time

TABLES = """
CREATE TABLE IF NOT EXISTS kv_writes (
    _id INTEGER PRIMARY KEY AUTOINCREMENT,
    _request_id TEXT NOT NULL UNIQUE,
    _received TEXT NOT NULL,
    t REAL NOT NULL,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    op TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER,
    current_version INTEGER,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS kv_items (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value BLOB,
    content_type TEXT,
    size INTEGER NOT NULL,
    stored_at TEXT NOT NULL,
    expires REAL,
    expires_at TEXT,
    _request_id TEXT NOT NULL,
    indexed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS kv_index (
    bucket TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (bucket, name, value, key)
);
CREATE INDEX IF NOT EXISTS kv_index_by_key ON kv_index (bucket, key);
"""
PRECONDITION_FAILED = "precondition failed"
NOT_FOUND = "not found"


@dataclass
class KvResult:
    """What one batch of key-value writes did."""

    stored: int = 0
    rejected: int = 0
    duplicates: int = 0


def ensure_tables(conn: sqlite3.Connection) -> None:
    """Create the key-value tables if the project has none yet."""
    conn.executescript(TABLES)


def _value(body: bytes) -> str | bytes:
    """A value as stored: TEXT when it is UTF-8 (Datasette shows and filters it), else BLOB."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def _current(conn: sqlite3.Connection, bucket: str, key: str, at: float) -> tuple[int | None, int]:
    """The version of the key's live value at time ``at`` (a line's), None if absent or expired;
    and how many index entries the key has."""
    row = conn.execute(
        "SELECT version, expires, indexed FROM kv_items WHERE bucket = ? AND key = ?", [bucket, key]
    ).fetchone()
    if row is None:
        return None, 0
    return (None if row[1] is not None and row[1] <= at else row[0]), row[2]


def _failure(write: KvWrite, current: int | None) -> str | None:
    """Why the write's condition does not hold against ``current``; None when it does."""
    if write.if_none_match and current is not None:
        return PRECONDITION_FAILED
    if (write.must_exist or write.if_match is not None) and current is None:
        return PRECONDITION_FAILED if write.op == "put" or write.if_match is not None else NOT_FOUND
    if write.if_match is not None and write.if_match != current:
        return PRECONDITION_FAILED
    if write.op == "delete" and current is None:
        return NOT_FOUND
    return None


_INSERT_WRITE = (
    "INSERT INTO kv_writes (_id, _request_id, _received, t, bucket, key, op, status, version, "
    "current_version, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (_request_id) DO NOTHING"
)
_INSERT_ITEM = (
    "INSERT OR REPLACE INTO kv_items (bucket, key, version, value, content_type, size, stored_at, "
    "expires, expires_at, _request_id, indexed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _apply_one(conn: sqlite3.Connection, write: KvWrite, number: int) -> str | None:
    """Decide and apply one write as ``kv_writes`` row ``number`` (inside the batch's
    transaction): its status, or None when it was applied before (a duplicate)."""
    request = write.request
    current, indexed = _current(conn, write.bucket, write.key, request.received)
    reason = _failure(write, current)
    status = "rejected" if reason else ("stored" if write.op == "put" else "deleted")
    received = iso_time(request.received)
    row = [number, request.request_id, received, request.received, write.bucket, write.key, write.op]
    row += [status, None if reason else number, current, reason]
    if not conn.execute(_INSERT_WRITE, row).rowcount:
        return None
    if reason:
        return status
    if indexed:
        conn.execute("DELETE FROM kv_index WHERE bucket = ? AND key = ?", [write.bucket, write.key])
    if write.op == "delete":
        conn.execute("DELETE FROM kv_items WHERE bucket = ? AND key = ?", [write.bucket, write.key])
        return status
    expires = None if write.ttl is None else request.received + write.ttl
    body = request.body
    item = [write.bucket, write.key, number, _value(body), request.content_type, len(body), received, expires]
    item += [None if expires is None else iso_time(expires), request.request_id, len(write.indexes)]
    conn.execute(_INSERT_ITEM, item)
    if write.indexes:
        conn.executemany(
            "INSERT INTO kv_index (bucket, name, value, key) VALUES (?, ?, ?, ?)",
            [(write.bucket, name, value, write.key) for name, value in write.indexes],
        )
    return status


def apply(conn: sqlite3.Connection, writes: list[KvWrite]) -> KvResult:
    """Apply a batch of one project's key-value writes in log order, in one transaction.

    Rows of ``kv_writes`` are numbered here, after the table's last row, so a value's
    version is known as its row is written. A write whose request id is in
    ``kv_writes`` already (applied before a crash) is skipped: so each is applied once,
    whatever is read again."""
    result = KvResult()
    ensure_tables(conn)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        # max(_id), not sqlite_sequence: an insert skipped as a duplicate moves the sequence
        # all the same, and a replay (which skips none) would number every later write one
        # lower. Retention never deletes the last row, so max(_id) never goes back.
        number = conn.execute("SELECT coalesce(max(_id), 0) FROM kv_writes").fetchone()[0]
        for write in writes:
            status = _apply_one(conn, write, number + 1)
            if status is None:
                result.duplicates += 1
                continue
            number += 1
            if status == "rejected":
                result.rejected += 1
            else:
                result.stored += 1
    return result


def write_status(conn: sqlite3.Connection, request_id: str) -> dict | None:
    """What became of one key-value write (for its status URL); None if it is not one applied."""
    try:
        row = conn.execute(
            "SELECT bucket, key, op, status, version, current_version, reason FROM kv_writes "
            "WHERE _request_id = ?",
            [request_id],
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # no key-value write yet: no table
    if row is None:
        return None
    bucket, key, op, status, version, current, reason = row
    found: dict = {"status": status, "bucket": bucket, "key": key, "op": op}
    if status == "rejected":
        found["reason"] = reason
        found["current_version"] = None if current is None else str(current)
    else:
        found["version"] = str(version)
    return found


def read_item(
    conn: sqlite3.Connection, bucket: str, key: str, now: float, most: int | None = None
) -> tuple | None:
    """``(value bytes, content type, version)`` of a live item at ``now``; None if absent or expired.

    With ``most``, a value longer than ``most`` bytes is not read: its place in the
    answer is None (read it again without ``most``).
    """
    try:  # fetchall ends the statement: a connection kept open holds no old snapshot
        rows = conn.execute(
            "SELECT CASE WHEN ? IS NULL OR length(value) <= ? THEN value END, length(value),"
            " content_type, version, expires FROM kv_items WHERE bucket = ? AND key = ?",
            [most, most, bucket, key],
        ).fetchall()
    except sqlite3.OperationalError:
        return None
    row = rows[0] if rows else None
    if row is None or (row[4] is not None and row[4] <= now):
        return None
    value, size = row[0], row[1]
    if value is None and size is not None:
        return None, row[2], row[3]
    value = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
    return value, row[2], row[3]


def is_applied(conn: sqlite3.Connection, request_id: str) -> bool:
    """True when the write ``request_id`` is in the project: a key-value decision, a reject or a record."""
    for table in ("kv_writes", "rejects", "records"):
        try:
            if conn.execute(f"SELECT 1 FROM {table} WHERE _request_id = ?", [request_id]).fetchone():
                return True
        except sqlite3.OperationalError:
            continue  # no such table yet
    return False


def _live(now: float) -> tuple[str, list]:
    """The SQL condition (on ``kv_items``) and parameters of an item still live at ``now``."""
    return "(expires IS NULL OR expires > ?)", [now]


def list_items(
    conn: sqlite3.Connection, bucket: str, prefix: str, after: str, limit: int, now: float
) -> list[tuple]:
    """Up to ``limit`` live items of a bucket, in key order, with keys after ``after`` that start
    with ``prefix``: ``(key, version, size, content_type, expires_at)`` each."""
    live, params = _live(now)
    rows = conn.execute(
        "SELECT key, version, size, content_type, expires_at FROM kv_items "
        f"WHERE bucket = ? AND key > ? AND key >= ? AND {live} ORDER BY key",
        [bucket, after, prefix, *params],
    )
    found = []
    for row in rows:  # keys in order: past the last key with the prefix, none has it
        if not row[0].startswith(prefix) or len(found) == limit:
            break
        found.append(row)
    return found


def scan_index(
    conn: sqlite3.Connection,
    bucket: str,
    name: str,
    low: str | None,
    high: str | None,
    reverse: bool,
    limit: int,
    now: float,
) -> list[list[str]]:
    """``[value, key]`` entries of one index of a bucket, in (value, key) order (or reversed),
    ``low`` and ``high`` inclusive, of live items only."""
    conditions, params = ["i.bucket = ?", "i.name = ?"], [bucket, name]
    if low is not None:
        conditions.append("i.value >= ?")
        params.append(low)
    if high is not None:
        conditions.append("i.value <= ?")
        params.append(high)
    order = "DESC" if reverse else "ASC"
    rows = conn.execute(
        "SELECT i.value, i.key FROM kv_index i JOIN kv_items k ON k.bucket = i.bucket AND k.key = i.key "
        f"WHERE {' AND '.join(conditions)} AND (k.expires IS NULL OR k.expires > ?) "
        f"ORDER BY i.value {order}, i.key {order} LIMIT ?",
        [*params, now, limit],
    )
    return [list(row) for row in rows]


def list_buckets(conn: sqlite3.Connection, now: float) -> list[tuple]:
    """Every bucket with live items: ``(bucket, items, bytes)``, by name; none without the table."""
    live, params = _live(now)
    try:
        return conn.execute(
            f"SELECT bucket, count(*), sum(size) FROM kv_items WHERE {live} GROUP BY bucket ORDER BY bucket",
            params,
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # no key-value write yet


PURGE_SLACK_SECONDS = 300.0
"""How far behind the project's last key-value line an expiry must be before its item is
purged. Lines are logged as requests end, so a later line may have been received up to a
request's time earlier: an item still live when such a line arrived is never purged
before it is applied, and the purge never changes a decision (replay makes the same)."""


def purge(conn: sqlite3.Connection, at: float, cutoff: str) -> int:
    """Delete items expired by ``at`` (and behind the log: see PURGE_SLACK_SECONDS), with their
    index entries, and ``kv_writes`` rows received before ``cutoff`` (retention) but the last;
    the number of items purged."""
    try:
        clock = conn.execute("SELECT max(t) FROM kv_writes").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # no key-value write yet
    if clock is None:
        return 0
    upto = min(at, clock - PURGE_SLACK_SECONDS)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "DELETE FROM kv_index WHERE (bucket, key) IN "
            "(SELECT bucket, key FROM kv_items WHERE expires <= ?)",
            [upto],
        )
        purged = conn.execute("DELETE FROM kv_items WHERE expires <= ?", [upto]).rowcount
        conn.execute(
            "DELETE FROM kv_writes WHERE _received < ? AND _id < (SELECT max(_id) FROM kv_writes)", [cutoff]
        )
    return purged
