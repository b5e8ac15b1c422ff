"""Which projects are private (``"read": "private"``), read from each one's settings row.

nginx keeps a private project's own host and its database's paths behind its read
key (``nginx/smalltable.js``). What the plugin shows across projects — the
holding area (``_smalltable/held`` and SQL on it), the apex's list of held posts,
the apex's status URL — asks here, and leaves a private project's rows out. The
answer is cached per database file until it changes (:class:`~.dbfiles.FileCache`),
so asking once per held row costs a ``stat``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..model.project import is_valid_project_name
from ..store.schema import read_settings
from .dbfiles import FileCache, open_existing

_cache: FileCache[bool | None] = FileCache()


def _read_private(db_path: Path) -> bool | None:
    """True when the project's settings say private; None when the file cannot be read."""
    try:
        conn = open_existing(db_path)
        try:
            settings = read_settings(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return settings is not None and settings.read == "private"


def is_private(data_dir: Path | None, project: str | None) -> bool:
    """True when ``project`` is private (blocking).

    A project with no database yet, or no settings, is public. A database that
    cannot be read counts as private: when in doubt, nothing is shown.
    """
    if data_dir is None or not project or not is_valid_project_name(project):
        return False
    path = data_dir / f"{project}.db"
    if not path.exists():
        return False
    private, _ = _cache.get(path, _read_private, keep=lambda value: value is not None)
    return private is not False
