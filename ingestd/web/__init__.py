"""SmallTable's Datasette plugin: every project database, and the project's own pages.

Datasette serves the tables, filters, facets and SQL of every ``PROJECT.db``
(and of the holding area, ``_smalltable.db``). The plugin adds databases as
they appear (:mod:`.databases`), and routes under ``/-/smalltable/`` that
nginx maps onto the apex and each project's host:

==============================  ==========================================
``DOMAIN/``                     every project, the holding area, the create form (:mod:`.apex`)
``DOMAIN/_projects.json``       every project with its size, count and settings
``DOMAIN/_status/ID``           what became of a write to the apex (:mod:`.request_status`)
``DOMAIN/stream/…``             the PhatData stream API, topic = project (:mod:`.topics`)
``PROJECT.DOMAIN/``             the project page (:mod:`.pages`)
``PROJECT.DOMAIN/42``           record 42 (``.json``, ``/raw``)
``PROJECT.DOMAIN/_project``     the project's settings as JSON (:mod:`.settings_api`)
``PROJECT.DOMAIN/_project/keys`` the project's live keys, for the owner (:mod:`.keys_api`)
``PROJECT.DOMAIN/_status/ID``   what became of a write to the project
``PROJECT.DOMAIN/_stream/…``    ranges of the stream (:mod:`.streams`)
``PROJECT.DOMAIN/_export.csv``  the whole project, streamed
``PROJECT.DOMAIN/_tail``        new records as server-sent events
``PROJECT.DOMAIN/_kv/…``        key-value buckets (:mod:`.kv`)
==============================  ==========================================

Datasette's table view of a project's records opens newest first with the
user's columns first (:mod:`.tableview`).

Configure it with Datasette metadata (``smalltable up`` writes it; :mod:`.site`
lists every key and its default)::

    {"plugins": {"smalltable": {"data_dir": "/var/lib/smalltable/data", "domain": "localhost", "port": 8080}}}
"""

from __future__ import annotations

import logging

from datasette import hookimpl
from datasette.utils.asgi import Response

from . import apex, keys_api, kv, livetail, pages, request_status, settings_api, streams, topics
from .databases import sync_databases
from .errors import json_error_page
from .guard import bound_connection
from .holding_area import DATABASE_NAME
from .privacy import is_private
from .site import site
from .tableview import default_view


@hookimpl
def startup(datasette) -> None:
    sync_databases(datasette)
    datasette.refresh_schemas = _refresh_no_schemas
    # nginx logs every request (logs/access.log); a second line per request from Datasette's
    # server is a write per read, which waits behind the kernel's writeback on a host busy
    # writing its logs and databases (bench/kv.py: bucket GETs 2.4 ms p50 with it). A
    # filter, because uvicorn sets this logger's level and handlers after start-up hooks ran.
    logging.getLogger("uvicorn.access").addFilter(_no_access_lines)


def _no_access_lines(record: logging.LogRecord) -> bool:
    """Drop the access line Datasette's server writes for each request."""
    return False


async def _refresh_no_schemas() -> None:
    """What Datasette's own views call first, instead of re-reading every database's schema.

    Datasette 0.65 asks each attached database for its schema version before every
    table, row, database or index view, to keep its ``_internal`` catalogue current:
    one query per project, on a thread, per request (20 ms with 300 projects, 2,000
    queries with 2,000). Only ``root`` may read that catalogue and SmallTable serves it
    to no one; the views read each table's columns from its own database.
    """


@hookimpl
def prepare_connection(conn, database, datasette) -> None:
    config = site(datasette)
    shown = None
    if database == DATABASE_NAME:  # the holding area: no private project's held posts

        def shown(project: str) -> bool:
            return not is_private(config.data_dir, project)

    bound_connection(conn, config.max_value_bytes, shown)


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def add_new_projects_first(scope, receive, send):
            if scope["type"] == "http":
                sync_databases(datasette)
                location = await default_view(datasette, scope)
                if location is not None:
                    await Response.redirect(location).asgi_send(send)
                    return
            await app(scope, receive, send)

        return add_new_projects_first

    return wrap


@hookimpl
def handle_exception(datasette, request, exception):
    return json_error_page(datasette, request, exception)


@hookimpl
def register_routes(datasette):
    return [
        *apex.ROUTES,
        *pages.ROUTES,
        *streams.ROUTES,
        *topics.ROUTES,
        *livetail.ROUTES,
        *settings_api.ROUTES,
        *keys_api.ROUTES,
        *request_status.ROUTES,
        *kv.ROUTES,
    ]
