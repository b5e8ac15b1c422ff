"""Serve every project database, new ones included.

Datasette 0.65 finds its databases at startup only. Projects appear whenever
someone first posts to them, so before each request the plugin looks at the data
directory's modification time (one ``stat``) and, when it changed, adds every
``PROJECT.db`` it does not serve yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from datasette.database import Database

from ..projects import is_valid_project_name

if TYPE_CHECKING:  # importing datasette.app here would be circular at plugin load
    from datasette.app import Datasette

_seen_mtime: dict[int, float] = {}


def data_dir(datasette: Datasette) -> Path | None:
    """The data directory from the plugin's config, if set."""
    config = datasette.plugin_config("smalltable") or {}
    return Path(config["data_dir"]) if config.get("data_dir") else None


def sync_databases(datasette: Datasette) -> list[str]:
    """Add each project database under the data directory not yet served; return their names."""
    directory = data_dir(datasette)
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
        if is_valid_project_name(name) and name not in datasette.databases:
            datasette.add_database(Database(datasette, path=str(path), is_mutable=True), name=name)
            added.append(name)
    return added
