"""Datasette's table view of a project's ``records``, by default newest first with the user's columns first.

Datasette shows a table oldest first, in its columns' order, and a records table
begins with a dozen system columns (``_request_id``, ``_received``, …) before the
first column a user posted. A plain ``/PROJECT/records`` (no query string: any
choice of the user's stands) is redirected to the same view sorted by ``_id``
descending with ``_col=`` naming the project's own columns first, then the
system ones. A table with very many columns gets the sort alone, to keep the URL
within what nginx reads in a request line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ..store.schema import SYSTEM_COLUMNS

if TYPE_CHECKING:
    from datasette.app import Datasette

RECORDS_VIEW = re.compile(r"^/(?P<database>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)/records$")
MAX_QUERY_CHARS = 4000
"""Longer than this, the redirect sorts only: nginx's request-line buffer is 8 KiB by default."""


async def default_view(datasette: Datasette, scope: dict) -> str | None:
    """Where a plain records table view should go instead; None for every other request."""
    if scope.get("method") not in ("GET", "HEAD") or scope.get("query_string"):
        return None
    match = RECORDS_VIEW.match(scope.get("path", ""))
    # (a project's name never starts with "_": the holding area, _smalltable, never matches)
    if not match or match["database"] not in datasette.databases:
        return None
    columns = await datasette.get_database(match["database"]).table_columns("records")
    own = [column for column in columns if column not in SYSTEM_COLUMNS]
    system = [column for column in columns if column in SYSTEM_COLUMNS and column != "_id"]
    query = urlencode([("_sort_desc", "_id"), *(("_col", column) for column in own + system)])
    if not own or len(query) > MAX_QUERY_CHARS:
        query = "_sort_desc=_id"
    return f"{scope['path']}?{query}"
