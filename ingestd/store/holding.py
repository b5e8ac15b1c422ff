"""The holding area: accepted posts that cannot be loaded into their project yet.

A post waits here, never dropped, while its project does not exist and
``projects.auto_create`` is off (``no_project``), or while the project is over
its quota (``over_quota``). It is released into the project, oldest first, once
the project is created or has room again. Settings requests that cannot be
filed under a project (a name that is not valid, a refused first ``_project``
call) are kept in this database's ``rejects`` table.

All of it lives in ``DATA_DIR/_smalltable.db``: the leading ``_`` means no
project can ever have that name. Datasette serves it, so the holding area can be
browsed like any project.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..model.record import Reject
from ..model.request import Request
from ..support.timefmt import iso_time

DATABASE = "_smalltable.db"
CODES = ("no_project", "over_quota")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    _id INTEGER PRIMARY KEY,
    _request_id TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL,
    received REAL NOT NULL,
    _received TEXT NOT NULL,
    method TEXT NOT NULL,
    uri TEXT NOT NULL,
    content_type TEXT,
    content_length INTEGER,
    remote_addr TEXT,
    user_agent TEXT,
    body BLOB NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_held_project ON held (project, _id);
CREATE TABLE IF NOT EXISTS rejects (
    _id INTEGER PRIMARY KEY,
    _request_id TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL,
    _received TEXT,
    _method TEXT,
    _path TEXT,
    _content_type TEXT,
    _size INTEGER,
    _remote_addr TEXT,
    _user_agent TEXT,
    _reason TEXT NOT NULL,
    _body BLOB
);
"""


@dataclass(frozen=True, slots=True)
class Held:
    """One post to hold: the request, and why it waits."""

    request: Request
    code: str
    reason: str


class Holding:
    """The holding area's database, opened on first use."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DATABASE
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def has_waiting(self, project: str) -> bool:
        """True when posts wait for ``project``."""
        if self._conn is None and not self.path.exists():
            return False
        row = self.conn.execute("SELECT 1 FROM held WHERE project = ? LIMIT 1", (project,)).fetchone()
        return row is not None

    def waiting(self) -> Counter:
        """How many posts wait per (project, code); nothing when the database does not exist."""
        if self._conn is None and not self.path.exists():
            return Counter()
        rows = self.conn.execute("SELECT project, code, count(*) FROM held GROUP BY project, code")
        return Counter({(project, code): n for project, code, n in rows})

    def hold(self, items: list[Held]) -> int:
        """Keep ``items`` (idempotent, by request id); the number that were new."""
        rows = [
            (
                h.request.request_id,
                h.request.project,
                h.request.received,
                iso_time(h.request.received),
                h.request.method,
                h.request.uri,
                h.request.content_type,
                h.request.content_length,
                h.request.remote_addr,
                h.request.user_agent,
                h.request.body,
                h.code,
                h.reason,
            )
            for h in items
        ]
        return self._write(
            "INSERT INTO held (_request_id, project, received, _received, method, uri, content_type, "
            "content_length, remote_addr, user_agent, body, code, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (_request_id) DO NOTHING",
            rows,
        )

    def reject(self, project: str, rejects: list[Reject]) -> int:
        """Keep requests refused before any project could take them; the number that were new."""
        rows = [
            (
                r.request.request_id,
                project,
                iso_time(r.request.received),
                r.request.method,
                r.request.path,
                r.request.content_type,
                len(r.request.body),
                r.request.remote_addr,
                r.request.user_agent,
                r.reason,
                r.body,
            )
            for r in rejects
        ]
        return self._write(
            "INSERT INTO rejects (_request_id, project, _received, _method, _path, _content_type, _size, "
            "_remote_addr, _user_agent, _reason, _body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (_request_id) DO NOTHING",
            rows,
        )

    def _write(self, sql: str, rows: list[tuple]) -> int:
        if not rows:
            return 0
        conn = self.conn
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(sql, rows)
            return conn.total_changes - before

    def oldest(self, project: str, limit: int) -> list[tuple[int, Request]]:
        """Up to ``limit`` of the project's held posts, oldest first, as (row id, request)."""
        rows = self.conn.execute(
            "SELECT _id, _request_id, project, received, method, uri, content_type, content_length, "
            "remote_addr, user_agent, body FROM held WHERE project = ? ORDER BY _id LIMIT ?",
            (project, limit),
        )
        return [(row[0], Request(*row[1:])) for row in rows]

    def release(self, ids: list[int]) -> None:
        """Forget posts that are now loaded into their project."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("DELETE FROM held WHERE _id = ?", [(i,) for i in ids])
