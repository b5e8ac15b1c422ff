"""SmallTable's Datasette plugin: every project database, and the project's own pages.

Datasette serves the tables, filters, facets and SQL of every ``PROJECT.db``.
The plugin adds databases as projects appear (:mod:`.discovery`), and routes
under ``/-/smalltable/`` that nginx maps onto each project's host:

==============================  ==========================================
``PROJECT.DOMAIN/``             the project page (:mod:`.pages`)
``PROJECT.DOMAIN/42``           record 42 (``.json``, ``/raw``)
``PROJECT.DOMAIN/_stream/…``    ranges of the stream (:mod:`.streams`)
``PROJECT.DOMAIN/_export.csv``  the whole project, streamed
``PROJECT.DOMAIN/_tail``        new records as server-sent events
``DOMAIN/_projects.json``       every project with its size and count
==============================  ==========================================

Configure it with Datasette metadata (``smalltable up`` writes it)::

    {"plugins": {"smalltable": {"data_dir": "/var/lib/smalltable/data"}}}
"""

from __future__ import annotations

from datasette import hookimpl

from . import pages, streams
from .discovery import sync_databases


@hookimpl
def startup(datasette) -> None:
    sync_databases(datasette)


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def add_new_projects_first(scope, receive, send):
            if scope["type"] == "http":
                sync_databases(datasette)
            await app(scope, receive, send)

        return add_new_projects_first

    return wrap


@hookimpl
def register_routes(datasette):
    return [*pages.ROUTES, *streams.ROUTES]
