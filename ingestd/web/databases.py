"""Which databases Datasette serves: every project, new ones included, and the holding area.

Datasette 0.65 finds its databases at startup only. Projects appear whenever
someone first posts to them, so before each request the plugin looks at the data
directory's modification time (one ``stat``) and, when it changed, adds every
``PROJECT.db`` it does not serve yet. SmallTable's own ``_smalltable.db`` (the
holding area) is served too, as ``_smalltable``: its name can never be a
project's, so it is never mistaken for one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from datasette.database import Database
from datasette.utils.asgi import NotFound

from ..model.project import is_valid_project_name
from .holding_area import DATABASE_NAME
from .site import site

if TYPE_CHECKING:  # importing datasette.app here would be circular at plugin load
    from datasette.app import Datasette

_seen_mtime: dict[int, float] = {}


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
            datasette.add_database(Database(datasette, path=str(path), is_mutable=True), name=name)
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
