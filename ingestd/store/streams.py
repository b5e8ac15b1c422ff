"""A project as a PhatData stream: its truncations and epoch (docs/streams.md).

Location L of a topic is record ``_id`` L+1 of its project: ``_id`` is gapless,
and SQLite numbers a new row one past the largest ``_id``, so once a truncation
has removed the records from ``_id`` L+1 on, the next record takes location L.

A truncation moves the records it removes into ``rejects``, with a reason that
names their location and the truncation: nothing accepted is lost, and a line
loaded again after a crash is skipped there as already loaded (a request ends up
in one table only), never put back at a location. Each truncation is a row of
``stream_truncations``, keyed by its request id (a line applied twice truncates
once); its ``_id`` is the epoch it started: a topic's epoch is the number of
truncations it has had.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .schema import REJECT_COLUMNS, SYSTEM_COLUMNS

TRUNCATIONS_TABLE = "stream_truncations"
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TRUNCATIONS_TABLE} (_id INTEGER PRIMARY KEY, "
    "_request_id TEXT NOT NULL UNIQUE, _received TEXT NOT NULL, location INTEGER NOT NULL, "
    "removed INTEGER NOT NULL)"
)
# What a truncated record keeps in rejects: the request's columns (its body goes on its own).
_MOVED = tuple(name for name in REJECT_COLUMNS if name in SYSTEM_COLUMNS and name not in ("_id", "_body"))


class TruncationRefused(ValueError):
    """A truncation that cannot be applied; its message says why and what to do."""


@dataclass(frozen=True)
class Truncation:
    """An applied truncation: the epoch it started, where, and how many documents it removed."""

    epoch: int
    location: int
    removed: int


def epoch(conn: sqlite3.Connection) -> int:
    """The topic's epoch: how many truncations it has had (0 for none)."""
    try:
        return conn.execute(f"SELECT coalesce(max(_id), 0) FROM {TRUNCATIONS_TABLE}").fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise


def bounds(conn: sqlite3.Connection) -> tuple[int, int]:
    """(first location kept, next location): retention may have removed the first ones."""
    first, last = conn.execute("SELECT min(_id), max(_id) FROM records").fetchone()
    if last is None:
        floor = conn.execute("SELECT coalesce(max(through_id), 0) FROM expiry").fetchone()[0]
        return floor, floor
    return first - 1, last


def applied(conn: sqlite3.Connection, request_id: str) -> Truncation | None:
    """The truncation ``request_id`` made, if it was applied."""
    try:
        row = conn.execute(
            f"SELECT _id, location, removed FROM {TRUNCATIONS_TABLE} WHERE _request_id = ?", (request_id,)
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return None if row is None else Truncation(*row)


def truncate(conn: sqlite3.Connection, request_id: str, received: str, location: int) -> Truncation:
    """Remove the documents at ``location`` and after (into ``rejects``), in one transaction;
    TruncationRefused when ``location`` is past the end or already removed by retention."""
    conn.execute(_CREATE)
    try:
        conn.execute("BEGIN IMMEDIATE")
        done = applied(conn, request_id)
        if done is not None:
            conn.execute("COMMIT")
            return done
        first, end = bounds(conn)
        if location > end:
            raise TruncationRefused(
                f"location {location} is past the end of the topic (its next location is {end})"
            )
        if location < first:
            raise TruncationRefused(
                f"location {location} was removed by retention already (the first kept is {first})"
            )
        new_epoch = epoch(conn) + 1
        reason = f"'removed from location ' || (_id - 1) || ' by truncation {request_id} (epoch {new_epoch})'"
        columns = ", ".join(_MOVED)
        moved = conn.execute(
            f"INSERT INTO rejects ({columns}, _reason, _body) SELECT {columns}, {reason}, _body "
            "FROM records WHERE _id > ? ORDER BY _id ON CONFLICT (_request_id) DO NOTHING",
            (location,),
        ).rowcount
        conn.execute("DELETE FROM files WHERE record_id > ?", (location,))
        conn.execute("DELETE FROM records WHERE _id > ?", (location,))
        conn.execute(
            f"INSERT INTO {TRUNCATIONS_TABLE} (_id, _request_id, _received, location, removed) "
            "VALUES (?, ?, ?, ?, ?)",
            (new_epoch, request_id, received, location, moved),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Truncation(new_epoch, location, moved)
