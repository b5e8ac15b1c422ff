"""Datasette's own errors (an unknown database, table or row, a bad sort) as JSON for API clients.

Datasette answers a missing page with an HTML page unless the path ends in
``.json``; an API client that sent ``Accept: application/json`` gets JSON too,
with the reason and, where the path says what was meant, what to do instead.
Some of the mistakes Datasette explains in words come with status 500 (``?_sort=``
a column the table lacks): they are answered in JSON too, with Datasette's status.
A browser still gets Datasette's page.

A query whose answer does not fit in Datasette's memory (``datasette.memory_max_mb``:
a thousand rows of values each under ``datasette.max_value_bytes`` can need gigabytes)
raises MemoryError, which Datasette answers with an empty 500: an API client gets a
400 that says the answer is too big and how to ask for less.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from datasette.utils.asgi import Base400, Response
from datasette.views.base import DatasetteError

from .site import apex_address, project_address, site
from .views import wants_json

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

STATUS_PATH = re.compile(r"^/(?:-/smalltable/(?:p/[^/]+/)?)?_status/(?P<id>[^/]*)$")
ROW_PATH = re.compile(r"^/(?P<database>[^/]+)/(?P<table>[^/]+)/(?P<row>[^/]+?)(?:\.json)?$")


def _hints(datasette: Datasette, request: Request) -> dict[str, str]:
    """What the user most likely meant, from the path and the host: extra keys of the answer."""
    config = site(datasette)
    project = request.headers.get("x-smalltable-project") or None
    path = request.path
    if match := STATUS_PATH.match(path):
        return {
            "error": f"not a request id: {match['id']!r}",
            "expected": "32 lowercase hex digits, as in the status_url of the write's 202 answer",
        }
    if project is None:
        return {"projects": f"{apex_address(config, request)}/_projects.json"}
    home = project_address(config, request, project)
    hints = {"project_page": home, "records": f"{home}{project}/records.json"}
    if (match := ROW_PATH.match(path)) and match["database"] == project and match["table"] == "records":
        hints["error"] = f"There is no record {match['row']} in {project} (yet? a new post takes a moment)"
        hints["record"] = f"{home}ID.json, where ID is a record's number"
    elif not path.startswith((f"/{project}/", f"/{project}.", "/-/")) and path != f"/{project}":
        hints["detail"] = f"this host serves the project {project}: its tables are under /{project}/"
    return hints


def json_error_page(datasette: Datasette, request: Request, exception: BaseException) -> Response | None:
    """A JSON answer for a Datasette 4xx, any error Datasette explains in words (a
    ``DatasetteError``, whatever its status), or a query's MemoryError, that an API client
    asked JSON of; None for everyone else and for unexpected failures."""
    if isinstance(exception, MemoryError):
        status, message, title = 400, "the answer is too big for Datasette's memory", None
        info: dict = {
            "limits": {"memory_max_mb": site(datasette).memory_max_mb},
            "fix": "ask for fewer rows (limit, _size=) or smaller values (length(), substr())",
        }
    elif isinstance(exception, Base400):
        status, message, title = exception.status, str(exception.args[0]) if exception.args else "", None
        info = {}
    elif isinstance(exception, DatasetteError):
        status, message, title = exception.status, exception.message, exception.title
        info = exception.error_dict
    else:
        return None
    if not (wants_json(request) or request.path.endswith(".json")):
        return None
    body = {**info, "ok": False, "error": message, "status": status, "title": title}
    body.update(_hints(datasette, request))
    return Response.json(body, status=status)
