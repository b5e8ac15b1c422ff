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
:class:`ProjectDatabase`, whose connections each thread keeps in a small LRU
(``datasette.open_databases``), so memory stays bounded however many projects
are read.
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
_threads = threading.local()


class ProjectDatabase(Database):
    """A database Datasette serves whose connections each thread keeps in an LRU of ``limit``."""

    def __init__(self, datasette: Datasette, path: str, limit: int) -> None:
        super().__init__(datasette, path=path, is_mutable=True)
        self.limit = limit

    async def execute_fn(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(connection)`` on one of Datasette's SQL threads, as Datasette's own does."""
        if self.ds.executor is None:
            return await super().execute_fn(fn)
        return await asyncio.get_running_loop().run_in_executor(
            self.ds.executor, lambda: fn(self._thread_connection())
        )

    def _thread_connection(self) -> sqlite3.Connection:
        """This thread's read-only connection, opened (and the oldest closed) when needed."""
        kept: OrderedDict[ProjectDatabase, sqlite3.Connection] | None = getattr(_threads, "kept", None)
        if kept is None:
            kept = _threads.kept = OrderedDict()
        conn = kept.get(self)
        if conn is not None:
            kept.move_to_end(self)
            return conn
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self.ds._prepare_connection(conn, self.name)
        kept[self] = conn
        while len(kept) > self.limit:
            kept.popitem(last=False)[1].close()
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
            database = ProjectDatabase(datasette, str(path), site(datasette).open_databases)
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
