"""The project's own pages: its records newest first, one record, its bytes, its stats.

nginx maps ``PROJECT.DOMAIN/…`` onto these routes (``nginx/smalltable.conf.j2``):

=================================  ===========================================
``/``                              the project page; ``?before=ID`` for older
``/42``                            record 42: HTML, or JSON for ``Accept: application/json``
``/42.json``                       record 42 as JSON, with its files' metadata
``/42/raw``                        record 42's body, the exact bytes posted
``/42/files/7``                    file 7 of multipart record 42, exact bytes
``/<request id>`` (and the above)  the same record, found by the id the POST answered
``/_stats.json``                   the project's numbers and settings, as on the project page
=================================  ===========================================

Links in these pages are paths on the project's own host: ``/42`` and
``/PROJECT/records`` (Datasette's table view, which nginx passes through).
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from typing import TYPE_CHECKING

from datasette.utils.asgi import NotFound, Response

from ..store import kv as kv_store
from ..store.schema import SYSTEM_COLUMNS, quote
from . import commands, stats
from .bloblist import recent_blobs
from .databases import project_database
from .holding_area import held_for
from .projectinfo import project_info
from .recordjson import record_json
from .site import site
from .views import ROUTE_PREFIX, Problem, answers_problems, bytes_response, project_url, render, wants_json

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.database import Database
    from datasette.utils.asgi import Request

PAGE_SIZE = 50
PREVIEW_CHARS = 120
CELL_CHARS = 60
MAX_FIELDS = 12
"""The most fields a record shows in the project page's list (its own page shows them all)."""
RECORD_REF = "(?P<ref>[0-9]{1,19}|[0-9a-f]{32})"
"""A record's ``_id``, or the 32-hex request id its POST was answered with."""
MAX_ID = 2**63 - 1
"""The largest id SQLite can hold: a larger number in a URL names nothing."""

_LIST_COLUMNS = (
    "_id",
    "_request_id",
    "_received",
    "_method",
    "_path",
    "_query",
    "_content_type",
    "_size",
    "_kind",
)
_FILE_COLUMNS = "_id, record_id, field, filename, content_type, size"

# -- reading ------------------------------------------------------------------


def create_command(request: Request) -> str:
    """The one curl line that adds a record to this project (and creates it, with auto-create on)."""
    return commands.post_command(project_url(request))


async def open_project(request: Request, datasette: Datasette) -> Database:
    """The database of the project in the URL, or a 404 that says how to create it.

    The 404 says how many posts wait for the name in the holding area, and
    gives the line that creates the project with an owner; with auto-create
    on, a plain post creates it too (``create``).
    """
    project = request.url_vars["project"]
    try:
        return project_database(datasette, project)
    except NotFound:
        config = site(datasette)
        held = 0
        if config.data_dir is not None:
            held = await asyncio.to_thread(held_for, config.data_dir, project)
        with_owner = commands.create_command(project_url(request))
        how = "POST something to it to create it" if config.auto_create else "create it with an owner"
        raise Problem(
            404,
            f"There is no project “{project}” yet: {how}.",
            create=create_command(request) if config.auto_create else with_owner,
            create_with_owner=with_owner,
            auto_create=config.auto_create,
            held=held,
        ) from None


async def user_columns(db: Database) -> list[str]:
    """The project's own columns (one per JSON key or form field), oldest first."""
    rows = (await db.execute("select name from pragma_table_info('records')")).rows
    return [row[0] for row in rows if row[0] not in SYSTEM_COLUMNS]


async def find_record(db: Database, ref: str, select: str = "*") -> dict:
    """The record ``ref`` names (an ``_id`` or a request id), or a 404 Problem.

    A request id that ended in ``rejects`` gets a 404 that says why.
    """
    by_request_id = len(ref) == 32
    column, value = ("_request_id", ref) if by_request_id else ("_id", int(ref))
    rows = []
    if by_request_id or value <= MAX_ID:
        rows = (await db.execute(f"select {select} from records where {column} = ?", [value])).rows
    if rows:
        return dict(rows[0])
    if by_request_id:
        rejected = (await db.execute("select _id, _reason from rejects where _request_id = ?", [ref])).rows
        if rejected:
            reject_id, reason = rejected[0]
            raise Problem(
                404, f"request {ref} was rejected: {reason}", reject=f"/{db.name}/rejects/{reject_id}"
            )
    raise Problem(404, f"There is no record {ref} in {db.name} (yet? a new post takes a moment)")


async def files_of(db: Database, record_ids: list[int]) -> dict[int, list[dict]]:
    """The file parts (metadata only, no content) of these records, by record id."""
    found: dict[int, list[dict]] = {record_id: [] for record_id in record_ids}
    if record_ids:
        marks = ", ".join("?" * len(record_ids))
        sql = f"select {_FILE_COLUMNS} from files where record_id in ({marks}) order by _id"
        for row in (await db.execute(sql, record_ids)).rows:
            found[row["record_id"]].append(dict(row))
    return found


async def neighbours(db: Database, record_id: int) -> tuple[int | None, int | None]:
    """The ids of the records just before and just after this one."""
    sql = (
        "select (select max(_id) from records where _id < :id), "
        "(select min(_id) from records where _id > :id)"
    )
    row = (await db.execute(sql, {"id": record_id})).rows[0]
    return row[0], row[1]


# -- shaping for the templates -------------------------------------------------


def body_view(record: dict, files: list[dict], text: str | None, truncated: bool = False) -> dict:
    """How to show a body: ``image``, ``binary`` (a download), ``files``, ``text`` or ``empty``.

    ``live.js`` makes the same choice for records that arrive while the page is open.
    """
    kind, content_type = record["_kind"], (record["_content_type"] or "").lower()
    if kind == "empty":
        mode = "empty"
    elif kind == "multipart":
        mode = "files"
    elif kind in ("binary", "text") and content_type.startswith("image/"):
        mode = "image"
    elif kind == "binary" or text is None:
        mode = "binary"
    else:
        mode = "text"
    return {"mode": mode, "text": text, "truncated": truncated, "files": files}


def cell_text(value: object, limit: int | None = CELL_CHARS) -> str:
    """A column value as the page shows it; long values cut at ``limit`` characters."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def received_text(received: str) -> str:
    """``2026-11-21T08:45:48.687Z`` → ``2026-11-21 08:45:48`` (the page says UTC)."""
    return received[:19].replace("T", " ")


def field_text(kind: str, value: object) -> str:
    """A JSON value as the page shows it: ``true``/``false``/``null`` as JSON writes them."""
    if kind in ("true", "false", "null"):
        return kind
    return cell_text(value)


def record_fields(json_fields: str | None, columns: dict[str, object]) -> list[tuple[str, str]]:
    """A record's own fields, ``(name, text)``, at most MAX_FIELDS + 1 (the last says more).

    A JSON object's are its top-level keys in its own order, typed as JSON (``json_each``
    read them in SQL); any other record's are its non-empty columns (form fields)."""
    if json_fields is not None:
        return [(key, field_text(kind, value)) for key, kind, value in json.loads(json_fields)]
    present = [(name, cell_text(value)) for name, value in columns.items() if value is not None]
    return present[: MAX_FIELDS + 1]


def list_row(record: dict, preview: str | None, fields: list[tuple[str, str]], files: list[dict]) -> dict:
    """One row of the project page's table: what the template shows of a record."""
    truncated = preview is not None and len(preview) > PREVIEW_CHARS
    return {
        **record,
        "received": received_text(record["_received"]),
        "request": record["_path"] + (f"?{record['_query']}" if record["_query"] is not None else ""),
        "fields": fields[:MAX_FIELDS],
        "more_fields": len(fields) > MAX_FIELDS,
        "body": body_view(record, files, preview[:PREVIEW_CHARS] if truncated else preview, truncated),
    }


def pretty_body(record: dict) -> str | None:
    """A text body for the record page: JSON indented, anything else as sent."""
    body = record["_body"]
    if not isinstance(body, str):
        return None
    if record["_kind"] == "json":
        try:
            return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return body


def body_filename(project: str, record: dict) -> str:
    """A name to save a raw body under: ``demo-42.png``."""
    content_type = (record["_content_type"] or "").split(";")[0].strip()
    extension = mimetypes.guess_extension(content_type) or (".txt" if record["_kind"] == "text" else ".bin")
    return f"{project}-{record['_id']}{extension}"


# -- the project page ----------------------------------------------------------


def before_arg(request: Request) -> int | None:
    """``?before=ID``: show records older than ID (a Problem if it is not a number)."""
    value = request.args.get("before")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise Problem(400, "?before= takes a record number, e.g. ?before=120")
    return min(int(value), MAX_ID)


JSON_FIELDS = f"""case when _kind = 'json' and json_valid(_body) and json_type(_body) = 'object' then (
    select json_group_array(json_array(key, type, substr(
        case when type in ('object', 'array') then json(value) else value end, 1, {CELL_CHARS + 1})))
    from (select key, type, value from json_each(records._body) limit {MAX_FIELDS + 1})) end"""
"""A JSON object body's first fields as ``[[key, JSON type, value], …]``: SQLite reads them."""


async def list_rows(db: Database, columns: list[str], before: int | None) -> list[dict]:
    """Up to one more than a page of records, newest first, older than ``before``.

    Each is its system columns (``record``), the start of a text body
    (``preview``) and its own fields (``fields``, :func:`record_fields`).
    """
    preview = f"case when typeof(_body) = 'text' then substr(_body, 1, {PREVIEW_CHARS + 1}) end"
    own = ", ".join([*_LIST_COLUMNS, preview, JSON_FIELDS, *(quote(column) for column in columns)])
    where = "where _id < :before" if before is not None else ""
    sql = f"select {own} from records {where} order by _id desc limit {PAGE_SIZE + 1}"
    fixed = len(_LIST_COLUMNS)
    return [
        {
            "record": dict(zip(_LIST_COLUMNS, row[:fixed], strict=True)),
            "preview": row[fixed],
            "fields": record_fields(row[fixed + 1], dict(zip(columns, row[fixed + 2 :], strict=True))),
        }
        for row in (await db.execute(sql, {"before": before})).rows
    ]


async def newer_page(db: Database, top: int) -> str:
    """The link to the page of records just newer than ``top``."""
    sql = f"select _id from records where _id > ? order by _id limit {PAGE_SIZE + 1}"
    ids = [row[0] for row in (await db.execute(sql, [top])).rows]
    return f"?before={ids[PAGE_SIZE - 1] + 1}" if len(ids) > PAGE_SIZE else "/"


@answers_problems(json_errors=False)
async def project_page(request: Request, datasette: Datasette) -> Response:
    """The project's records, newest first, with its numbers and a live view."""
    db = await open_project(request, datasette)
    before = before_arg(request)
    rows = await list_rows(db, await user_columns(db), before)
    ids = [row["record"]["_id"] for row in rows]
    older = f"?before={ids[PAGE_SIZE - 1]}" if len(rows) > PAGE_SIZE else None
    rows = rows[:PAGE_SIZE]
    files = await files_of(
        db, [row["record"]["_id"] for row in rows if row["record"]["_kind"] == "multipart"]
    )
    numbers = await stats.project_stats(db)
    config = site(datasette)
    info = await project_info(db, config.defaults)
    schema = info.settings.schema
    newer = None
    if before is not None:
        newer = await newer_page(db, ids[0]) if rows else "/"
    context = {
        "project_url": project_url(request),
        "create_command": create_command(request),
        "info": info,
        "quota_level": info.level(config.quota_warning),
        "claim_command": commands.create_command(project_url(request)),
        "raise_quota_command": commands.raise_quota_command(
            project_url(request), info.settings, info.database_bytes
        ),
        "schema_text": None if schema is None else json.dumps(schema, indent=2, ensure_ascii=False),
        "rows": [list_row(**row, files=files.get(row["record"]["_id"], [])) for row in rows],
        "blobs": await recent_blobs(db),
        "max_fields": MAX_FIELDS,
        "system_columns": [*SYSTEM_COLUMNS, "_base64"],
        "older": older,
        "newer": newer,
        "live": before is None,
        "stats": numbers,
        "last_post": received_text(numbers["last_post"]) if numbers["last_post"] else None,
        "charts": stats.charts(numbers),
        "buckets": await db.execute_fn(lambda conn: kv_store.list_buckets(conn, time.time())),
        "preview_chars": PREVIEW_CHARS,
        "cell_chars": CELL_CHARS,
    }
    return await render(request, datasette, "smalltable_project.html", context)


# -- one record ----------------------------------------------------------------


async def record_document(db: Database, record: dict) -> dict:
    """A record as JSON; a multipart record adds ``_files``: its files without their content."""
    document = record_json(record)
    if record["_kind"] == "multipart":
        files = (await files_of(db, [record["_id"]]))[record["_id"]]
        document["_files"] = [{**file, "url": f"/{record['_id']}/files/{file['_id']}"} for file in files]
    return document


@answers_problems(json_errors=False)
async def record_page(request: Request, datasette: Datasette) -> Response:
    """Record ``/42`` as a page (or JSON, if asked); ``/<request id>`` redirects to it."""
    db = await open_project(request, datasette)
    record = await find_record(db, request.url_vars["ref"])
    if wants_json(request):
        return Response.json(await record_document(db, record), headers={"Vary": "Accept"})
    if len(request.url_vars["ref"]) == 32:
        return Response.redirect(f"/{record['_id']}")
    files = (await files_of(db, [record["_id"]]))[record["_id"]]
    older, newer = await neighbours(db, record["_id"])
    context = {
        "record": record,
        "received": received_text(record["_received"]),
        "columns": [
            (name, None if value is None else cell_text(value, limit=None))
            for name, value in record.items()
            if name != "_body" and (value is not None or name in SYSTEM_COLUMNS)
        ],
        "body": body_view(record, files, pretty_body(record)),
        "older": older,
        "newer": newer,
    }
    return await render(request, datasette, "smalltable_record.html", context)


@answers_problems(json_errors=True)
async def record_json_view(request: Request, datasette: Datasette) -> Response:
    """``/42.json``: the record as JSON."""
    db = await open_project(request, datasette)
    record = await find_record(db, request.url_vars["ref"])
    return Response.json(await record_document(db, record))


@answers_problems(json_errors=True)
async def record_raw(request: Request, datasette: Datasette) -> Response:
    """``/42/raw``: the body exactly as posted, under its own content type."""
    db = await open_project(request, datasette)
    select = "_id, _kind, _content_type, cast(_body as blob) as _body"
    record = await find_record(db, request.url_vars["ref"], select)
    return bytes_response(record["_body"] or b"", record["_content_type"], body_filename(db.name, record))


@answers_problems(json_errors=True)
async def record_file(request: Request, datasette: Datasette) -> Response:
    """``/42/files/7``: one file of a multipart record, exactly as posted."""
    db = await open_project(request, datasette)
    record = await find_record(db, request.url_vars["ref"], "_id")
    file_id = int(request.url_vars["file_id"])
    sql = "select filename, content_type, content from files where _id = ? and record_id = ?"
    rows = (await db.execute(sql, [file_id, record["_id"]])).rows if file_id <= MAX_ID else []
    if not rows:
        raise Problem(404, f"record {record['_id']} has no file {file_id}")
    filename, content_type, content = rows[0]
    return bytes_response(content, content_type, filename or f"{db.name}-{record['_id']}-{file_id}")


@answers_problems(json_errors=True)
async def stats_json(request: Request, datasette: Datasette) -> Response:
    """``/_stats.json``: the project page's numbers, then its settings and how full it is."""
    db = await open_project(request, datasette)
    info = await project_info(db, site(datasette).defaults)
    return Response.json({**await stats.project_stats(db), **info.as_json()})


ROUTES = [
    (ROUTE_PREFIX + "/$", project_page),
    (ROUTE_PREFIX + "/_stats\\.json$", stats_json),
    (ROUTE_PREFIX + f"/{RECORD_REF}$", record_page),
    (ROUTE_PREFIX + f"/{RECORD_REF}\\.json$", record_json_view),
    (ROUTE_PREFIX + f"/{RECORD_REF}/raw$", record_raw),
    (ROUTE_PREFIX + f"/{RECORD_REF}/files/(?P<file_id>[0-9]{{1,19}})$", record_file),
]
