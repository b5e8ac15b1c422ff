"""The plugin's small view framework: answering problems, pages, exact bytes, JSON, URLs.

Every view module under :mod:`ingestd.web` builds its answers with these, and no
view imports another: a view raises :class:`Problem` for anything but the
answer it was asked for, and :func:`answers_problems` turns it into JSON for API
URLs and clients that ask for JSON, or a friendly page for everyone else.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote as url_quote

import orjson
from datasette.utils.asgi import Response
from datasette.version import __version__ as datasette_version

from .site import scheme

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request

ROUTE_PREFIX = "/-/smalltable/p/(?P<project>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
"""The start of every per-project route; nginx maps PROJECT.DOMAIN/x to it."""

View = Callable[["Request", "Datasette"], Awaitable[Response]]


class Problem(Exception):
    """An answer other than the page asked for: its status, what to tell the user, extra JSON."""

    def __init__(self, status: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def wants_json(request: Request) -> bool:
    """True when the client asked for JSON (``Accept``) and not for a web page."""
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def answers_problems(json_errors: bool) -> Callable[[View], View]:
    """Turn a view's :class:`Problem` into an answer: JSON for API URLs and
    clients that ask for JSON, a friendly page for everyone else."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def answer(request: Request, datasette: Datasette) -> Response:
            try:
                return await view(request, datasette)
            except Problem as problem:
                if json_errors or wants_json(request):
                    body = {"error": problem.message, "status": problem.status, **problem.details}
                    return Response.json(body, status=problem.status)
                context = {"problem": problem}
                return await render(request, datasette, "smalltable_error.html", context, problem.status)

        return answer

    return decorate


async def render(
    request: Request, datasette: Datasette, template: str, context: dict, status: int = 200
) -> Response:
    """A page from one of our templates, with what every SmallTable page shows."""
    context = {
        "project": request.url_vars.get("project"),
        "apex_url": apex_url(request),
        "datasette_version": datasette_version,
        **context,
    }
    html = await datasette.render_template(template, context, request=request)
    return Response.html(html, status=status, headers={"Vary": "Accept"})


def bytes_response(body: bytes, content_type: str | None, filename: str) -> Response:
    """Exact bytes, inline, under the type they were posted with.

    ``sandbox`` and ``nosniff`` keep a posted HTML page or SVG from running
    scripts on the project's host: it is shown, never trusted.
    """
    if not content_type or not (content_type.isascii() and content_type.isprintable()):
        content_type = "application/octet-stream"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    headers = {
        "Content-Length": str(len(body)),
        "Content-Disposition": f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{url_quote(filename)}",
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(body, headers=headers, content_type=content_type)


def project_url(request: Request) -> str:
    """The project's address as the user typed it (``http://demo.localhost:8080/``)."""
    return f"{scheme(request)}://{request.headers.get('host', request.host)}/"


def apex_url(request: Request) -> str | None:
    """The address of the page that lists every project, when the host says it."""
    host, project = request.headers.get("host", ""), request.url_vars.get("project")
    if project is None:
        return "/"
    if not host.startswith(project + "."):
        return None
    return f"{scheme(request)}://{host[len(project) + 1 :]}/"


def wants_html(request: Request) -> bool:
    """True for a browser (``Accept: text/html``); API clients, ``*/*`` and no Accept get JSON."""
    return "text/html" in request.headers.get("accept", "")


def json_response(body: dict | list, status: int = 200) -> Response:
    """A JSON answer that reads well in a terminal: a list has one item per line, and a newline ends it."""
    if isinstance(body, list):
        text = b"[" + b",\n".join(orjson.dumps(item) for item in body) + b"]\n"
    else:
        text = orjson.dumps(body) + b"\n"
    return Response(text, status=status, content_type="application/json; charset=utf-8")


def json_error(status: int, error: str, **details: object) -> Response:
    """A JSON error answer: what went wrong and, in ``details``, what is expected."""
    return json_response({"error": error, **details}, status=status)
