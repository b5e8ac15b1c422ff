"""A project's ``blobs`` table: the blobs uploaded to it, browsable in Datasette.

One row per blob (the same bytes uploaded twice are one row: the first upload's
time, name and type): ``id`` (``sha256-…``), ``size``, ``content_type``,
``filename`` (the upload's ``X-Filename``), ``uploaded`` (the time nginx received it),
``copies`` (verified copies on the stores, kept up to date by the replicator) and
``request_id`` (the upload's, as in the ingest log).
"""

from __future__ import annotations

import sqlite3

BLOB_COLUMNS = ("id", "size", "content_type", "filename", "uploaded", "copies", "request_id")
_CREATE = (
    "CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, size INTEGER NOT NULL, content_type TEXT, "
    "filename TEXT, uploaded TEXT NOT NULL, copies INTEGER NOT NULL DEFAULT 0, request_id TEXT NOT NULL)"
)


_MARKS = ", ".join("?" * len(BLOB_COLUMNS))


def add_blob(conn: sqlite3.Connection, row: dict) -> bool:
    """Record an upload (its own transaction); False when the blob was there already."""
    with conn:
        conn.execute(_CREATE)
        cursor = conn.execute(
            f"INSERT OR IGNORE INTO blobs ({', '.join(BLOB_COLUMNS)}) VALUES ({_MARKS})",
            [row[c] for c in BLOB_COLUMNS],
        )
    return cursor.rowcount == 1


def project_blobs(conn: sqlite3.Connection) -> list[tuple[str, int, str | None, int]]:
    """Every blob of the project: ``(id, size, content_type, copies)``; none without the table."""
    try:
        return conn.execute("SELECT id, size, content_type, copies FROM blobs ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []


def set_copies(conn: sqlite3.Connection, blob_id: str, copies: int) -> None:
    """The blob's verified copy count, as the replicator last found it."""
    with conn:
        conn.execute("UPDATE blobs SET copies = ? WHERE id = ? AND copies != ?", [copies, blob_id, copies])
