"""``DOMAIN/``: every project, the holding area, and the form that creates a project.

The list comes from the catalog's cached summaries (:mod:`.catalog`) of the
page's projects only, so it stays fast with thousands: a listing of the data
directory, then a ``stat`` per project shown plus a read of each one that changed.
The form posts to ``/_project`` on the apex, which nginx answers itself (``202``
with a page that shows the owner key once and links to ``/_status/<request id>``,
where the page says whether the project was created or why not). It is a plain
HTML form: it works without JavaScript.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from datasette.utils.asgi import Request, Response

from ..model.project import (
    MAX_DESCRIPTION,
    MAX_OWNER,
    MAX_QUOTA_MB,
    MAX_RETENTION_DAYS,
    PROJECT_NAME_RE,
    PROJECT_NAME_RULE,
    TYPES,
    quota_level,
)
from . import commands, holding_area
from .catalog import project_paths, summaries
from .privacy import is_private
from .site import Site, project_address, site
from .views import render

if TYPE_CHECKING:
    from datasette.app import Datasette

NAME_PATTERN = PROJECT_NAME_RE.pattern.removeprefix("^").removesuffix("$").replace("0-9-]", "0-9\\-]")
"""The project-name rule for the form's ``pattern`` (browsers compile it with the ``v`` flag,
where a literal ``-`` in a class must be escaped)."""
PAGE_SIZE = 100
"""Projects shown per page of the apex: a host with thousands stays one quick page."""
FORM_BOUNDS = {
    "owner": MAX_OWNER,
    "description": MAX_DESCRIPTION,
    "retention_days": MAX_RETENTION_DAYS,
    "quota_mb": MAX_QUOTA_MB,
}
"""The form's ``maxlength`` and ``max`` attributes: the bounds ingestd checks a settings
write against (:mod:`ingestd.model.project`), so the browser refuses what ingestd would."""
EXAMPLE_CHANGE = {"owner": "ann@example.com", "description": "checkout clicks, for the UX study"}


def _rows(config: Site, request: Request) -> tuple[dict, list[dict]]:
    """The page of projects ``?q=`` and ``?page=`` ask for, each with its quota level, and each
    name with held posts but private ones (blocking). Only the page's projects are read."""
    paths = project_paths(config)
    page = _page_of([path.stem for path in paths], request)
    page["projects"] = summaries(config, request, page["projects"], paths)
    for entry in page["projects"]:
        if "quota_used" in entry:
            entry["level"] = quota_level(entry["quota_used"], config.quota_warning)
    held = {} if config.data_dir is None else holding_area.waiting(config.data_dir)
    waiting = [
        {
            "entry": entry,
            "url": project_address(config, request, name),
            "rows": f"/{holding_area.DATABASE_NAME}/held?project={name}&_sort=_id",
        }
        for name, entry in held.items()
        if not is_private(config.data_dir, name)
    ]
    return page, waiting


def _page_of(names: list[str], request: Request) -> dict:
    """The names that contain ``?q=``, ``PAGE_SIZE`` at a time (``?page=N``)."""
    query = request.args.get("q", "").strip().lower()
    matching = [name for name in names if query in name] if query else names
    pages = max(1, -(-len(matching) // PAGE_SIZE))
    try:
        page = min(max(1, int(request.args.get("page") or 1)), pages)
    except ValueError:
        page = 1
    return {
        "projects": matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "total": len(names),
        "matching": len(matching),
        "query": query,
        "page": page,
        "pages": pages,
    }


async def apex_page(datasette: Datasette, request: Request) -> Response:
    """The apex page: projects (searched and paged), the holding area, how to create a project."""
    config = site(datasette)
    page, waiting = await asyncio.to_thread(_rows, config, request)
    defaults = config.defaults
    example = EXAMPLE_CHANGE | {
        "type": "json",
        "retention_days": defaults.retention_days,
        "quota_mb": defaults.quota_mb,
    }
    context = {
        **page,
        "waiting": waiting,
        "config": config,
        "types": TYPES,
        "bounds": FORM_BOUNDS,
        "name_pattern": NAME_PATTERN,
        "name_rule": PROJECT_NAME_RULE,
        "example_address": project_address(config, request, "NAME"),
        "curl_example": commands.settings_command(project_address(config, request, "NAME"), example),
        "post_example": commands.post_command(project_address(config, request, "NAME")),
        "held_table": f"/{holding_area.DATABASE_NAME}/held",
    }
    return await render(request, datasette, "smalltable_apex.html", context)


ROUTES = [(r"/-/smalltable/$", apex_page)]
