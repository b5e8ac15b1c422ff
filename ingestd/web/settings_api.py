"""``GET PROJECT.DOMAIN/_project``: a project's settings, usage and history of changes, as JSON.

Settings are changed by ``POST /_project`` (a write like any other: nginx
answers it and ingestd applies it); this is how a program, or a person with
curl, reads them back. A project with no database yet is a 404 that says
how to create it, and how many posts wait for it in the holding area.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from datasette.utils.asgi import NotFound, Request, Response

from . import commands
from .databases import project_database
from .holding_area import held_for
from .projectinfo import history, project_info
from .site import project_address, site
from .views import ROUTE_PREFIX, json_response

if TYPE_CHECKING:
    from datasette.app import Datasette


async def settings_view(datasette: Datasette, request: Request) -> Response:
    """The project's settings (the defaults while unclaimed), usage, held posts and history."""
    project = request.url_vars["project"]
    config = site(datasette)
    url = project_address(config, request, project)
    try:
        db = project_database(datasette, project)
    except NotFound:
        held = 0 if config.data_dir is None else await asyncio.to_thread(held_for, config.data_dir, project)
        body = {
            "error": f"no project {project} yet",
            "project": project,
            "exists": False,
            "held": held,
            "create": commands.create_command(url, config.defaults),
        }
        return json_response(body, status=404)
    info = await project_info(db, config.defaults)
    settings = info.settings
    return json_response(
        {
            "project": project,
            "exists": True,
            "claimed": settings.claimed,
            "settings": settings.as_dict(),
            "version": info.version,
            "usage": {
                "database_bytes": info.database_bytes,
                "quota_bytes": settings.quota_bytes,
                "quota_used": round(info.quota_used, 4),
            },
            "held": info.held,
            "history": await db.execute_fn(history),
            "how_to_change": (
                commands.raise_quota_command(url, settings, info.database_bytes)
                if settings.claimed
                else commands.create_command(url)
            ),
        }
    )


ROUTES = [(ROUTE_PREFIX + r"/_project$", settings_view)]
