"""Which store holds a verified copy of which blob: ``STATE_DIR/blob-copies.db``.

A copy is entered here only after its size and SHA-256 were checked on the store
itself (written and read back, or re-read by ``smalltable blobs verify``), and taken
out when verify finds it missing or corrupt. The replicator counts copies here, so
that a pass does not ask every store about every blob. Outside anything Datasette
serves; it can be rebuilt at any time by ``smalltable blobs verify``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..support.timefmt import iso_time


class CopyLedger:
    """The verified copies, by blob id and store name."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS copies (blob TEXT NOT NULL, store TEXT NOT NULL, "
            "verified TEXT NOT NULL, PRIMARY KEY (blob, store))"
        )

    def stores_of(self, blob_id: str) -> set[str]:
        """The stores with a verified copy of ``blob_id``."""
        return {row[0] for row in self.conn.execute("SELECT store FROM copies WHERE blob = ?", [blob_id])}

    def add(self, blob_id: str, store: str, when: float) -> None:
        """A copy verified at ``when`` (Unix time)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO copies (blob, store, verified) VALUES (?, ?, ?)",
            [blob_id, store, iso_time(when)],
        )

    def drop(self, blob_id: str, store: str) -> None:
        """A copy found missing or corrupt."""
        self.conn.execute("DELETE FROM copies WHERE blob = ? AND store = ?", [blob_id, store])

    def close(self) -> None:
        self.conn.close()
