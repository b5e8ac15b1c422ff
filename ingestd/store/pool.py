"""The open project databases: one per project, created on first use, at most ``ingest.open_databases`` open.

What the daemon, replay and the tools write through. Each project's own writer is
:class:`~ingestd.store.database.ProjectDatabase`; this keeps the ones in use open (the
least recently used is closed past the bound) and closes a database whose write failed,
so the next write starts on a fresh connection.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from contextlib import suppress
from pathlib import Path

from ..config import Config
from ..model.project import is_valid_project_name
from ..model.record import Record, Reject
from ..model.request import Request
from .database import ProjectDatabase, WriteResult
from .schema import remove_stale_spares


class Store:
    """Every project database under ``data_dir``, at most ``open_databases`` open at once,
    each with a page cache of up to ``cache_mb``, syncing each commit or (without
    ``sync_commits``) each database when it is closed."""

    def __init__(
        self,
        data_dir: Path,
        max_columns: int,
        open_databases: int,
        cache_mb: int = 2,
        sync_commits: bool = True,
        max_new_columns_per_post: int = 20,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_spares(self.data_dir)
        self.max_columns = max_columns
        self.max_new_columns_per_post = max_new_columns_per_post
        self.open_databases = open_databases
        self.cache_mb = cache_mb
        self.sync_commits = sync_commits
        self._open: OrderedDict[str, ProjectDatabase] = OrderedDict()

    def project(self, name: str) -> ProjectDatabase:
        """The open database of project ``name``, created on first use."""
        if not isinstance(name, str) or not is_valid_project_name(name):
            raise ValueError(f"not a valid project name: {name!r}")
        db = self._open.get(name)
        if db is None:
            db = ProjectDatabase(
                self.path(name),
                self.max_columns,
                self.cache_mb,
                self.sync_commits,
                self.max_new_columns_per_post,
            )
            self._open[name] = db
            while len(self._open) > self.open_databases:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(name)
        return db

    def write(
        self,
        project: str,
        records: list[Record],
        rejects: list[Reject],
        column_keys: frozenset[str] | None = None,
        store_client: bool = False,
    ) -> WriteResult:
        """Load one project's share of a batch; only ``column_keys`` (if given: the keys of
        the owner's schema) may become new columns.

        If the batch fails, the project's database is closed, so the next write
        starts on a fresh connection (whatever state the failure left behind).
        """
        db = self.project(project)
        db.follow(column_keys, store_client)
        try:
            return db.write(records, rejects)
        except BaseException:
            self._forget(project, db)
            raise

    def path(self, project: str) -> Path:
        """Where project ``project``'s database is (or would be)."""
        return self.data_dir / f"{project}.db"

    def projects(self) -> list[str]:
        """Every project that has a database, in the order of their files' names."""
        return [p.stem for p in sorted(self.data_dir.glob("*.db")) if is_valid_project_name(p.stem)]

    def exists(self, project: str) -> bool:
        """True when the project has a database."""
        return project in self._open or self.path(project).exists()

    def change_settings(
        self, project: str, request: Request, settings: dict[str, object], changed: list[str]
    ) -> bool:
        """Record a project's settings change (creating the project); True when it was new."""
        db = self.project(project)
        try:
            return db.change_settings(request, settings, changed)
        except BaseException:
            self._forget(project, db)
            raise

    def is_open(self, project: str) -> bool:
        """True while ``project``'s database is one of the open ones."""
        return project in self._open

    def close_project(self, project: str) -> None:
        """Close ``project``'s database if it is open (its SQLite cache goes with it)."""
        db = self._open.pop(project, None)
        if db is not None:
            db.close()

    def _forget(self, project: str, db: ProjectDatabase) -> None:
        """Close a database whose last operation failed, so the next one starts afresh."""
        if self._open.get(project) is db:
            del self._open[project]
        with suppress(sqlite3.Error):
            db.close()

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


def for_config(config: Config, data_dir: Path | None = None, sync_commits: bool = True) -> Store:
    """The store a deployment's config describes (``ingest.*``), in ``data_dir`` if given."""
    return Store(
        data_dir or config.path("data_dir"),
        config["ingest.max_columns"],
        config["ingest.open_databases"],
        config["ingest.cache_mb"],
        sync_commits,
        config["ingest.max_new_columns_per_post"],
    )
