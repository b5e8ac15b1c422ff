"""The machine-facing reads of SmallTable: stream ranges, exports, the live tail, the project list.

A project is a stream in the PhatData sense: immutable records at gapless
positions, the ``_id`` (1, 2, 3…). nginx maps ``PROJECT.DOMAIN/x`` onto
``/-/smalltable/p/PROJECT/x``:

================================  ===========================================================
``/_stream/``                     the project's summary (count, last ``_id``, size, last post)
``/_stream/5-9``                  records 5 to 9 inclusive, a JSON array
``/_stream/5-``                   record 5 to the end (the end when the request started)
``/_stream/5-9.ndjson``           NDJSON instead (or ``Accept: application/x-ndjson``)
``/_export.json|.csv|.ndjson``    every record, as a download (``?table=rejects``: the rejects)
``/_tail``                        new records as server-sent events (:mod:`.livetail`)
``DOMAIN/_projects.json``         every project's summary (:mod:`.catalog`)
================================  ===========================================================

Ranges and exports are streamed a chunk at a time (:mod:`.rowstream`), never capped.
"""

from __future__ import annotations

import asyncio
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from datasette.utils.asgi import NotFound, Request, Response

from .catalog import summaries, summary
from .databases import project_database
from .holding_area import held_for
from .rowstream import FORMATS, MAX_ID, Send, stream_rows, take_snapshot
from .site import scheme, site
from .views import ROUTE_PREFIX, json_error, json_response

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.database import Database

RANGE_EXPECTED = (
    "START-END or START-: record positions (_id, counted from 1) with END >= START, "
    "optionally ending in .json or .ndjson, e.g. /_stream/1-100 or /_stream/101-.ndjson"
)
EXPORT_TABLES = ("records", "rejects")


def parse_range(spec: str) -> tuple[int, int | None, str | None]:
    """``5-9`` → (5, 9, None); ``5-.ndjson`` → (5, None, "ndjson"); ValueError says what is wrong."""
    fmt = None
    for suffix in ("json", "ndjson"):
        if spec.endswith("." + suffix):
            spec, fmt = spec[: -len(suffix) - 1], suffix
    match = re.fullmatch(r"([0-9]{1,19})-([0-9]{1,19})?", spec)
    if match is None:
        raise ValueError(f"not a range of records: {spec!r}")
    start, end = int(match[1]), None if match[2] is None else int(match[2])
    if max(start, end or 0) > MAX_ID:
        raise ValueError(f"positions go up to {MAX_ID}")
    if end is not None and end < start:
        raise ValueError(f"the range ends before it starts: {start}-{end}")
    return start, end, fmt


def _database(datasette: Datasette, project: str) -> Database | Response:
    """The project's database, or a JSON 404 saying it has no records yet."""
    try:
        return project_database(datasette, project)
    except NotFound as exc:
        return json_error(404, str(exc.args[0]))


async def stream_view(datasette: Datasette, request: Request, send: Send) -> Response | None:
    """``/_stream/START-END``: a range of records, JSON array or NDJSON."""
    try:
        start, end, fmt = parse_range(request.url_vars["range"])
    except ValueError as exc:
        return json_error(400, str(exc), expected=RANGE_EXPECTED)
    db = _database(datasette, request.url_vars["project"])
    if isinstance(db, Response):
        return db
    if fmt is None:
        fmt = "ndjson" if "ndjson" in request.headers.get("accept", "") else "json"
    snapshot = await db.execute_fn(partial(take_snapshot, table="records"))
    last = snapshot.last_id if end is None else min(end, snapshot.last_id)
    await stream_rows(db, snapshot, FORMATS[fmt], start, last, request, send, {"vary": "Accept"})
    return None


async def stream_summary_view(datasette: Datasette, request: Request) -> Response:
    """``/_stream/``: how many records the project has, its last ``_id``, size and last post."""
    db = _database(datasette, request.url_vars["project"])
    if isinstance(db, Response):
        return db
    url = f"{scheme(request)}://{request.host}/"
    path = Path(db.path)
    held = await asyncio.to_thread(held_for, path.parent, db.name)
    return json_response(await asyncio.to_thread(summary, path, url, site(datasette).defaults, held))


async def export_view(datasette: Datasette, request: Request, send: Send) -> Response | None:
    """``/_export.FORMAT``: a whole table as a download, streamed."""
    fmt, table = request.url_vars["format"], request.args.get("table", "records")
    if fmt not in FORMATS:
        expected = "_export.json, _export.csv or _export.ndjson"
        return json_error(400, f"no export format {fmt!r}", expected=expected)
    if table not in EXPORT_TABLES:
        return json_error(400, f"cannot export table {table!r}", expected="?table=records or ?table=rejects")
    project = request.url_vars["project"]
    db = _database(datasette, project)
    if isinstance(db, Response):
        return db
    snapshot = await db.execute_fn(partial(take_snapshot, table=table))
    filename = project if table == "records" else f"{project}-{table}"
    headers = {"content-disposition": f'attachment; filename="{filename}.{fmt}"'}
    await stream_rows(db, snapshot, FORMATS[fmt], 0, snapshot.last_id, request, send, headers)
    return None


async def projects_view(datasette: Datasette, request: Request) -> Response:
    """``DOMAIN/_projects.json``: every project's summary, by name."""
    return json_response(await asyncio.to_thread(summaries, site(datasette), request))


ROUTES = [
    (ROUTE_PREFIX + r"/_stream/$", stream_summary_view),
    (ROUTE_PREFIX + r"/_stream/(?P<range>[^/]+)$", stream_view),
    (ROUTE_PREFIX + r"/_export\.(?P<format>[^/]+)$", export_view),
    (r"/-/smalltable/projects\.json$", projects_view),
]
