"""View: ``GET PROJECT.DOMAIN/_project/keys``, a project's live keys (never a secret).

nginx lets only the owner key reach this view (``nginx/smalltable.js``). It lists
from the project's ``key_changes`` table: every key made and not revoked since,
with its id, scope, label and expiry; the hashes are not in any database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from datasette.utils.asgi import NotFound, Request, Response

from ..support.timefmt import iso_time
from .databases import project_database
from .views import ROUTE_PREFIX, json_response

if TYPE_CHECKING:
    from datasette.app import Datasette

LIVE_KEYS = """
select key_id, scope, label, expires, _received as created from key_changes
where action in ('created', 'reset')
  and key_id not in (select key_id from key_changes where action = 'revoked')
  and (scope != 'owner' or _id = (
      select max(_id) from key_changes where scope = 'owner' and action in ('created', 'reset')))
order by _id
"""
"""Keys made and not revoked since; of owner keys, only the last (a reset replaces it)."""


async def keys_view(datasette: Datasette, request: Request) -> Response:
    """The project's live keys, oldest first; expired ones say so."""
    project = request.url_vars["project"]
    try:
        db = project_database(datasette, project)
    except NotFound:
        return json_response({"error": f"no project {project} yet", "project": project}, status=404)
    tables = await db.table_names()
    rows = (await db.execute(LIVE_KEYS)).rows if "key_changes" in tables else []
    now = iso_time(time.time())
    keys = [{**dict(row), "expired": row["expires"] is not None and row["expires"] <= now} for row in rows]
    answer = json_response({"project": project, "keys": keys})
    answer.headers["Cache-Control"] = "no-store"
    return answer


ROUTES = [(ROUTE_PREFIX + r"/_project/keys$", keys_view)]
