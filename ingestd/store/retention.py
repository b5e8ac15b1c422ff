"""Retention: delete a project's records and rejects once they are older than it keeps them.

Expired key-value items go too (:func:`ingestd.store.kv.purge`).

Rows go from the front of each table (lowest ``_id`` first) up to the first one
received within the retention period, so what remains is one unbroken run of
``_id`` s and counts stay exact. Deletion runs in chunks, each its own short
transaction, so writers and readers are never held up for long; each chunk also
updates the pass's row in ``expiry``, which keeps the highest ``_id`` ever
deleted (the store numbers new records after it even when the table is empty).
Then the freed pages go back to the filesystem: the database file shrinks.

:func:`now` is the clock retention reads: the real time, moved forward by the
number of seconds in the file ``SMALLTABLE_CLOCK_FILE`` names, when that
variable is set. Tests use it to age records without waiting months: the file
is read at every pass, so a test can move time while the daemon runs.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from ..support import failpoints
from ..support.timefmt import iso_time
from . import kv
from .schema import database_bytes

CLOCK_FILE_ENV = "SMALLTABLE_CLOCK_FILE"
CHUNK = 5000
"""Rows deleted per transaction."""


def now() -> float:
    """Unix time as retention sees it (see the module's docstring)."""
    offset = 0.0
    clock_file = os.environ.get(CLOCK_FILE_ENV)
    if clock_file:
        with suppress(OSError, ValueError):
            offset = float(Path(clock_file).read_text())
    return time.time() + offset


@dataclass
class Expired:
    """What one pass deleted from one project."""

    records: int = 0
    rejects: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def expire(conn: sqlite3.Connection, path: Path, retention_days: int, at: float) -> Expired:
    """Delete what ``path``'s project no longer keeps at time ``at``, then shrink the file."""
    cutoff = iso_time(at - retention_days * 86400)
    expired = Expired(bytes_before=database_bytes(path))
    kv.purge(conn, at, cutoff)  # expired key-value items, and decisions older than the cutoff
    pass_id: int | None = None
    for table in ("records", "rejects"):
        while True:
            through = _last_expired_id(conn, table, cutoff)
            if through is None:
                break
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                first = conn.execute(f"SELECT min(_id) FROM {table}").fetchone()[0]
                upto = min(through, first + CHUNK - 1)
                if table == "records":
                    conn.execute("DELETE FROM files WHERE record_id <= ?", (upto,))
                deleted = conn.execute(f"DELETE FROM {table} WHERE _id <= ?", (upto,)).rowcount
                setattr(expired, table, getattr(expired, table) + deleted)
                pass_id = _note(conn, pass_id, at, cutoff, expired, upto if table == "records" else None)
            failpoints.hit("retention.after_chunk")
    if pass_id is None:
        expired.bytes_after = expired.bytes_before
        return expired
    _shrink(conn)
    expired.bytes_after = database_bytes(path)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE expiry SET bytes_before = ?, bytes_after = ? WHERE _id = ?",
            (expired.bytes_before, expired.bytes_after, pass_id),
        )
    return expired


def _last_expired_id(conn: sqlite3.Connection, table: str, cutoff: str) -> int | None:
    """The ``_id`` of the last row to delete: just before the first one received at or after ``cutoff``."""
    first = conn.execute(f"SELECT min(_id) FROM {table}").fetchone()[0]
    if first is None:
        return None
    kept = conn.execute(
        f"SELECT _id FROM {table} WHERE _received >= ? ORDER BY _id LIMIT 1", (cutoff,)
    ).fetchone()
    last = conn.execute(f"SELECT max(_id) FROM {table}").fetchone()[0] if kept is None else kept[0] - 1
    return last if last >= first else None


def _note(
    conn: sqlite3.Connection,
    pass_id: int | None,
    at: float,
    cutoff: str,
    expired: Expired,
    through_id: int | None,
) -> int:
    """Write this pass's ``expiry`` row (in the deleting transaction); its ``_id``."""
    if pass_id is None:
        return conn.execute(
            "INSERT INTO expiry (at, cutoff, records, rejects, through_id, bytes_before) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING _id",
            (iso_time(at), cutoff, expired.records, expired.rejects, through_id, expired.bytes_before),
        ).fetchone()[0]
    conn.execute(
        "UPDATE expiry SET records = ?, rejects = ?, through_id = coalesce(?, through_id) WHERE _id = ?",
        (expired.records, expired.rejects, through_id, pass_id),
    )
    return pass_id


def _shrink(conn: sqlite3.Connection) -> None:
    """Give freed pages back to the filesystem, and empty the write-ahead log.

    Databases made by SmallTable use incremental auto-vacuum; an older one is
    converted by one full VACUUM. A reader holding the WAL open only delays the
    truncation to a later pass.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        conn.executescript("PRAGMA incremental_vacuum")  # steps it to the end: every free page
    else:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
