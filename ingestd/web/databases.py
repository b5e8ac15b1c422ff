"""Which databases Datasette serves: every project, new ones included, and the holding area.

Datasette 0.65 finds its databases at startup only. Projects appear whenever
someone first posts to them, so before each request the plugin looks at the data
directory's modification time (one ``stat``) and, when it changed, adds every
``PROJECT.db`` it does not serve yet. SmallTable's own ``_smalltable.db`` (the
holding area) is served too, as ``_smalltable``: its name can never be a
project's, so it is never mistaken for one.

Datasette keeps, in each of its SQL threads, a connection to every database that
thread ever read, and never closes one: with thousands of projects that is
thousands of page caches and open files per thread. A project's database is a
:class:`ProjectDatabase`, whose reads take connections from one pool bounded by
``datasette.open_databases``, so memory stays bounded however many projects are
read.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from datasette.database import Database
from datasette.utils.asgi import NotFound

from ..model.project import is_valid_project_name
from .holding_area import DATABASE_NAME
from .site import site

if TYPE_CHECKING:  # importing datasette.app here would be circular at plugin load
    from datasette.app import Datasette

_seen_mtime: dict[int, float] = {}
_NEEDS_A_WRITER = ("SQLITE_READONLY_ROLLBACK", "SQLITE_READONLY_RECOVERY")
"""What a read-only connection answers for a database only a writer can recover."""


class ConnectionPool:
    """Idle read-only connections to project databases, at most ``limit`` over all of them.

    A read takes an idle connection to its database (or opens one) and gives it back
    when done, on whichever thread it ran: the queries of one page reuse one
    connection, its schema parsed once, instead of one per SQL thread. Past ``limit``
    idle connections the least recently used database's are closed, so memory and
    open files stay bounded however many projects are read.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: OrderedDict[ProjectDatabase, list[sqlite3.Connection]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def take(self, database: ProjectDatabase) -> sqlite3.Connection:
        """An idle connection to ``database``, or a new one."""
        with self._lock:
            idle = self._idle.get(database)
            if idle:
                self._count -= 1
                conn = idle.pop()
                if not idle:
                    del self._idle[database]
                return conn
        return database.connect_for_reads()

    def give(self, database: ProjectDatabase, conn: sqlite3.Connection) -> None:
        """``conn`` is idle again; the least recently used connections past ``limit`` are closed."""
        closing = []
        with self._lock:
            self._idle.setdefault(database, []).append(conn)
            self._idle.move_to_end(database)
            self._count += 1
            while self._count > self.limit:
                oldest, idle = next(iter(self._idle.items()))
                closing.append(idle.pop(0))
                self._count -= 1
                if not idle:
                    del self._idle[oldest]
        for old in closing:
            old.close()

    def open_count(self) -> int:
        """Idle connections kept."""
        return self._count


_pools: dict[int, ConnectionPool] = {}


def pool(datasette: Datasette) -> ConnectionPool:
    """This Datasette's pool (one per instance, as tests make several)."""
    found = _pools.get(id(datasette))
    if found is None:
        found = _pools[id(datasette)] = ConnectionPool(site(datasette).open_databases)
    return found


class ProjectDatabase(Database):
    """A database Datasette serves whose reads take pooled connections (:class:`ConnectionPool`)."""

    def __init__(self, datasette: Datasette, path: str) -> None:
        super().__init__(datasette, path=path, is_mutable=True)

    async def execute_fn(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(connection)`` on one of Datasette's SQL threads, as Datasette's own does."""
        if self.ds.executor is None:
            return await super().execute_fn(fn)
        return await asyncio.get_running_loop().run_in_executor(self.ds.executor, lambda: self.read_now(fn))

    def read_now(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(connection)`` on this thread, on a pooled connection (a point read on the
        event loop calls it directly: microseconds, less than a hop to a thread)."""
        pooled = pool(self.ds)
        conn = pooled.take(self)
        try:
            return fn(conn)
        finally:
            pooled.give(self, conn)

    def connect_for_reads(self) -> sqlite3.Connection:
        """A new read-only connection, prepared as Datasette prepares its own (limits, functions).

        A database whose writer was killed mid-transaction (a hot journal, or a WAL whose
        index must be rebuilt) cannot be read until a connection that may write recovers
        it; a read-only one fails, and Datasette would not even start. So the first such
        failure opens the file once for writing, which makes SQLite recover it (roll the
        unfinished transaction back, as ingestd would on its next open), then reads.
        """
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") not in _NEEDS_A_WRITER:
                raise
            conn.close()
            recovering = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True)
            try:
                recovering.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            finally:
                recovering.close()
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self.ds._prepare_connection(conn, self.name)
        return conn


def sync_databases(datasette: Datasette) -> list[str]:
    """Add each database under the data directory not yet served; return their names."""
    directory = site(datasette).data_dir
    if directory is None:
        return []
    try:
        mtime = os.stat(directory).st_mtime
    except FileNotFoundError:
        return []
    if _seen_mtime.get(id(datasette)) == mtime:
        return []
    _seen_mtime[id(datasette)] = mtime
    added = []
    for path in sorted(directory.glob("*.db")):
        name = path.stem
        servable = is_valid_project_name(name) or name == DATABASE_NAME
        if servable and name not in datasette.databases:
            database = ProjectDatabase(datasette, str(path))
            datasette.add_database(database, name=name)
            added.append(name)
    return added


def project_database(datasette: Datasette, project: str) -> Database:
    """The project's database, or NotFound (a project that was never posted to)."""
    if not is_valid_project_name(project):
        raise NotFound(f"not a project name: {project}")
    if project not in datasette.databases:
        sync_databases(datasette)
    if project not in datasette.databases:
        raise NotFound(f"no project {project!r} yet: POST something to it to create it")
    return datasette.get_database(project)
