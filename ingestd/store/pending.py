"""Destructive settings changes that wait for their grace period, in the project's database.

Which changes wait, and for how long, is :mod:`ingestd.ingest.grace`'s decision;
this keeps them (``settings_pending``) until the registry applies them.
"""

from __future__ import annotations

import json
import sqlite3

from ..support.timefmt import iso_time

PENDING_TABLE = """CREATE TABLE IF NOT EXISTS settings_pending (
    _id INTEGER PRIMARY KEY,
    _request_id TEXT NOT NULL UNIQUE,
    _received TEXT NOT NULL,
    due REAL NOT NULL,
    due_at TEXT NOT NULL,
    change TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0
)"""
"""Destructive settings changes waiting for their grace period (ingest/grace.py)."""


def add_pending(conn: sqlite3.Connection, request_id: str, received: str, due: float, change: dict) -> None:
    """Keep a change that waits until ``due`` (Unix time), idempotent by request id."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(PENDING_TABLE)
        conn.execute(
            "INSERT INTO settings_pending (_request_id, _received, due, due_at, change) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (_request_id) DO NOTHING",
            (request_id, received, due, iso_time(due), json.dumps(change)),
        )


def pending(conn: sqlite3.Connection) -> list[tuple[str, float, str, dict]]:
    """Changes still waiting, oldest first: ``(request id, due, due_at, change)``."""
    try:
        rows = conn.execute(
            "SELECT _request_id, due, due_at, change FROM settings_pending WHERE applied = 0 ORDER BY _id"
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # no table: nothing ever waited
    return [(rid, due, due_at, json.loads(change)) for rid, due, due_at, change in rows]


def mark_applied(conn: sqlite3.Connection, request_id: str) -> None:
    with conn:
        conn.execute("UPDATE settings_pending SET applied = 1 WHERE _request_id = ?", [request_id])
