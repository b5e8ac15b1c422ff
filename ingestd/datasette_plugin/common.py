"""What the plugin's pages and streams share: finding a project, a record as JSON."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from datasette.utils.asgi import NotFound

from ..projects import is_valid_project_name
from .discovery import sync_databases

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.database import Database

ROUTE_PREFIX = "/-/smalltable/p/(?P<project>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
"""The start of every per-project route; nginx maps PROJECT.DOMAIN/x to it."""


def project_database(datasette: Datasette, project: str) -> Database:
    """The project's database, or NotFound (a project that was never posted to)."""
    if not is_valid_project_name(project):
        raise NotFound(f"not a project name: {project}")
    if project not in datasette.databases:
        sync_databases(datasette)
    if project not in datasette.databases:
        raise NotFound(f"no project {project!r} yet: POST something to it to create it")
    return datasette.get_database(project)


def json_value(value: object) -> object:
    """A column value for JSON: BLOBs the way Datasette writes them, base64-encoded."""
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode()}
    return value


def record_json(row: dict) -> dict:
    """A ``records`` row as JSON: every column, NULL user columns left out."""
    return {key: json_value(value) for key, value in row.items() if value is not None or key.startswith("_")}
