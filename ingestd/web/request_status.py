"""``/_status/<request id>``: what became of a write, by the id its ``202`` answered with.

Every ``202`` carries its status URL (``Location`` and ``status_url``). A
write ends up in exactly one place, looked up in this order:

=====================================  ==============  ==========================================
where                                  status          also says
=====================================  ==============  ==========================================
the project's ``records``              ``stored``      ``id`` and ``url`` of the record
the project's ``settings``             ``applied``     ``version``, ``changed``, ``action``
the project's ``kv_writes``            ``stored``,     ``bucket``, ``key``, ``version``; or
                                       ``deleted``,    ``reason`` (``precondition failed``, ``not
                                       ``rejected``    found``) and ``current_version``
the project's ``rejects``              ``rejected``    ``reason``
``_smalltable.db``'s ``held``          ``held``        ``code`` and ``reason``
``_smalltable.db``'s ``rejects``       ``rejected``    ``reason`` (settings for no project)
gone: older than the project keeps     ``expired``     ``detail``, ``answered``, ``cutoff``
nowhere yet                            ``pending``     ``detail``
=====================================  ==============  ==========================================

A write is ``expired`` when its project's retention has deleted everything received
before a cutoff and the write was answered before it: nginx's request ids begin with
the millisecond of the answer (13 digits), so the id alone says when. An id that does
not begin so (from another front end, or mistyped) is never called expired.

``PROJECT.DOMAIN/_status/ID`` looks in that project (and at what the holding area
holds for it); ``DOMAIN/_status/ID`` (where the apex page's form lands) does not
know the project, so it looks in ``_smalltable.db`` and then in every project, and
answers a write of a private project with 401 (its own host's status URL tells it
to a read key). Every answer is a ``200``: the
status is in the body. With ``?wait=SECONDS`` (at most 30; :mod:`.waiting`) the
view holds until the write is decided, and the HTTP status says the outcome too
(:func:`http_status`). API clients get JSON; a browser (``Accept: text/html``)
gets a page that says it in words and reloads itself while the write is pending.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote as url_quote

from datasette.utils.asgi import Request, Response

from ..model.project import is_valid_project_name
from ..store import kv as kv_store
from ..store import retention
from ..support.timefmt import iso_time
from . import holding_area, topicdata
from .dbfiles import fetch_one, file_signature, open_existing
from .privacy import is_private
from .site import apex_address, project_address, site
from .views import ROUTE_PREFIX, answers_problems, json_error, json_response, render, wants_html
from .waiting import parse_wait, wait_until

if TYPE_CHECKING:
    from datasette.app import Datasette

REQUEST_ID = "(?P<request_id>[0-9a-f]{32})"
EARLIEST_ID_MS = 1_577_836_800_000
"""2020-01-01: an id whose first 13 digits read as an earlier millisecond is not nginx's."""
PENDING_DETAIL = (
    "not loaded yet: ingest usually takes well under a second; if it stays pending, the id may be wrong"
)
SIMILAR_CUTOFF = 0.75
"""How alike two project names must be (difflib's ratio) to ask "did you mean"."""
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
"""What a browser's form sends: only its writes are offered a way back to the form."""
NO_STORE = {"Cache-Control": "no-store", "Vary": "Accept"}


def _settings_action(conn: sqlite3.Connection, version: int, applied_at: str) -> str:
    """``created`` (the first settings made the project), ``claimed`` (it had posts before) or ``changed``."""
    if version > 1:
        return "changed"
    earlier = [
        fetch_one(conn, f"select _received from {table} order by _id limit 1")
        for table in ("records", "rejects")
    ]
    return "claimed" if any(row and row[0] < applied_at for row in earlier) else "created"


def _is_first(conn: sqlite3.Connection, table: str, row_id: int, received: str) -> bool:
    """True when the row is the first thing its project ever held: the write that created it.

    Each table's first row by ``_id`` is its earliest (rows are loaded in log order),
    so this reads one row per table."""
    if row_id != 1:
        return False
    others = [t for t in ("records", "rejects", "settings", "kv_writes") if t != table]
    firsts = [fetch_one(conn, f"select _received from {t} order by _id limit 1") for t in others]
    return not any(row and row[0] < received for row in firsts)


def similar_project(data_dir: Path, project: str) -> str | None:
    """An existing project whose name is close to ``project`` (a likely typo), or None."""
    names = [p.stem for p in data_dir.glob("*.db") if p.stem != project and is_valid_project_name(p.stem)]
    close = difflib.get_close_matches(project, names, n=1, cutoff=SIMILAR_CUTOFF)
    return close[0] if close else None


def in_project(db_path: Path, request_id: str) -> dict | None:
    """The request in one project's database (blocking): stored, applied or rejected; else None."""
    if not db_path.exists():
        return None
    try:
        conn = open_existing(db_path)
    except sqlite3.OperationalError:
        return None  # deleted since: as good as not there
    try:
        record = fetch_one(
            conn, "select _id, _received, _path from records where _request_id = ?", [request_id]
        )
        if record:
            created = _is_first(conn, "records", *record[:2])
            return {
                "status": "stored",
                "id": record[0],
                "created": created,
                **topicdata.location(record[0], record[2]),
            }
        streamed = topicdata.write_status(conn, request_id)  # issue 22: array posts, truncations
        if streamed is not None:
            return streamed
        applied = fetch_one(
            conn, "select _id, changed, _received from settings where _request_id = ?", [request_id]
        )
        if applied:
            version, changed, at = applied
            action = _settings_action(conn, version, at)
            found = {
                "status": "applied",
                "version": version,
                "changed": json.loads(changed),
                "action": action,
                "created": action == "created",
            }
            with suppress(sqlite3.OperationalError):  # no settings_pending table: nothing ever waited
                waits = fetch_one(
                    conn,
                    "select change, due_at, applied from settings_pending where _request_id = ?",
                    [request_id],
                )
                if waits:
                    found["waiting"] = {
                        "settings": json.loads(waits[0]),
                        "from": waits[1],
                        "applied": bool(waits[2]),
                    }
            return found
        with suppress(sqlite3.OperationalError):  # no key_changes table: no key changed yet
            key = fetch_one(
                conn, "select action, key_id from key_changes where _request_id = ?", [request_id]
            )
            if key:
                return {"status": "applied", "action": f"key {key[0]}", "key_id": key[1]}
        kv_write = kv_store.write_status(conn, request_id)
        if kv_write:
            return kv_write
        rejected = fetch_one(
            conn,
            "select _id, _reason, _received, _path, _content_type from rejects where _request_id = ?",
            [request_id],
        )
        if rejected:
            reject_id, reason, received, path, content_type = rejected
            created = _is_first(conn, "rejects", reject_id, received)
            return {
                "status": "rejected",
                "reason": reason,
                "reject_id": reject_id,
                "created": created,
                "_path": path,
                "_content_type": content_type,
            }
        return None
    finally:
        conn.close()


def answered_at(request_id: str) -> float | None:
    """When nginx answered the request (Unix time), read from its id; None for an id nginx
    did not make that way."""
    digits = request_id[:13]
    if not digits.isdigit() or int(digits) < EARLIEST_ID_MS:
        return None
    return int(digits) / 1000


def expired_in_project(db_path: Path, request_id: str) -> dict | None:
    """``expired`` if the project's retention deleted what was received before the request
    was answered (blocking); else None. Asked only of a request found nowhere else."""
    answered = answered_at(request_id)
    if answered is None or not db_path.exists():
        return None
    try:
        conn = open_existing(db_path)
    except sqlite3.OperationalError:
        return None
    try:
        row = fetch_one(conn, "select max(cutoff) from expiry")
    finally:
        conn.close()
    cutoff = row[0] if row else None
    answered_iso = iso_time(answered)
    # A cutoff still to come means retention's clock is ahead of this one (a test's, or
    # a clock stepped back since): nothing can be said from it.
    if cutoff is None or answered_iso >= cutoff or cutoff > iso_time(retention.now()):
        return None
    return {
        "status": "expired",
        "detail": f"deleted by the project's retention: everything received before {cutoff} is gone",
        "answered": answered_iso,
        "cutoff": cutoff,
    }


def find_in_project(data_dir: Path, project: str, request_id: str) -> dict | None:
    """A write to ``project``'s host (blocking): in its database, else held for it in the
    holding area, else perhaps expired. Another project's write is not found here."""
    path = data_dir / f"{project}.db"
    held = holding_area.find_request(data_dir, request_id)
    found = in_project(path, request_id) or (held if held and held["project"] == project else None)
    if found is None:
        found = expired_in_project(path, request_id)
    if found is not None:
        return {"project": project, **found, **_did_you_mean(data_dir, project, found)}
    return None


def _did_you_mean(data_dir: Path, project: str, found: dict) -> dict[str, str]:
    """``did_you_mean``, for a write that created its project when a close name exists."""
    if not found.get("created"):
        return {}
    similar = similar_project(data_dir, project)
    return {"did_you_mean": similar} if similar else {}


def find_anywhere(data_dir: Path, request_id: str) -> dict | None:
    """A write to the apex (blocking): in the holding area, else in whichever project has it."""
    found = holding_area.find_request(data_dir, request_id)
    if found is not None:
        return found
    for path in sorted(data_dir.glob("*.db")):
        if is_valid_project_name(path.stem):
            found = in_project(path, request_id)
            if found is not None:
                return {**found, "project": path.stem, **_did_you_mean(data_dir, path.stem, found)}
    return None


def headline(status: dict) -> str:
    """The status page's title: what happened, in words."""
    project, kind = status.get("project") or "", status["status"]
    if "bucket" in status:
        outcome = status.get("reason") or f"version {status.get('version')}"
        return f"Key {status['key']!r} of bucket {status['bucket']}: {kind} ({outcome})"
    if kind == "stored":
        return f"Stored as record {status['id']} of {project}"
    if kind == "applied" and status["action"] == "changed":
        return f"Settings of {project} changed"
    if kind == "applied":
        return f"Project {project} {status['action']}"
    if kind == "rejected" and status["settings_write"]:
        return "Settings not changed"
    if kind == "rejected":
        return f"Kept in {project}'s rejects, not stored as a record"
    if kind == "held":
        return f"Held for {project}"
    if kind == "expired":
        return f"Deleted by {project}'s retention"
    return "Not loaded yet"


UNDECIDED = ("pending", "held")
"""What ``?wait=`` waits past: the write is not loaded, or waits in the holding area."""


def decided(found: dict | None) -> bool:
    """True when the write is decided: stored, applied, rejected or expired."""
    return found is not None and found["status"] not in UNDECIDED


def http_status(found: dict | None) -> int:
    """The HTTP status a ``?wait=`` answer has, for clients to branch on: 201 stored (a record
    or a value), 200 deleted or applied, 412 precondition failed, 404 nothing to delete,
    422 any other reject, 410 expired, 202 still pending or held at the deadline."""
    kind = "pending" if found is None else found["status"]
    if kind == "rejected":
        return {"precondition failed": 412, "not found": 404}.get(found.get("reason", ""), 422)
    return {"stored": 201, "deleted": 200, "applied": 200, "expired": 410}.get(kind, 202)


async def find(
    datasette: Datasette,
    request: Request,
    look: Callable[[], dict | None],
    files: Callable[[], object] | None = None,
) -> dict | None:
    """What ``look()`` (blocking) finds now, or once decided when the request asks ``?wait=``
    (looking again when ``files``, the signature of what it reads, changes)."""
    seconds = parse_wait(request.args.get("wait"))
    if seconds is None:
        return await asyncio.to_thread(look)
    return await wait_until(look, decided, seconds, site(datasette).status_waiters, files)


async def answer(datasette: Datasette, request: Request, project: str | None, found: dict | None) -> Response:
    """The status as JSON, or as a page for a browser; with ``?wait=``, its HTTP status says it too."""
    code = 200 if request.args.get("wait") is None else http_status(found)
    config = site(datasette)
    request_id = request.url_vars["request_id"]
    status = {"status": "pending", "detail": PENDING_DETAIL, "project": project} if found is None else found
    project = status.get("project")
    project_url = project_address(config, request, project) if is_valid_project_name(project or "") else None
    body = {"request_id": request_id, "project": project, **status}
    reject_id = body.pop("reject_id", None)
    path, content_type = body.pop("_path", None), body.pop("_content_type", None)
    if project_url and "bucket" in status:
        body["url"] = f"{project_url}_kv/{status['bucket']}/items/{url_quote(status['key'], safe='')}"
    elif project_url and status["status"] == "stored":
        body["url"] = f"{project_url}{status['id']}"
    elif project_url and status["status"] in ("applied", "held"):
        body["url"] = project_url
    elif project_url and reject_id is not None:
        body["url"] = f"{project_url}{project}/rejects/{reject_id}"
    if body.get("did_you_mean"):
        body["did_you_mean_url"] = project_address(config, request, body["did_you_mean"])
    if not wants_html(request):
        response = json_response(body, status=code)
        response.headers.update(NO_STORE)
        return response
    settings_write = (path or "").partition("?")[0] == "/_project"
    context = {
        "status": body,
        "headline": headline({**body, "settings_write": settings_write}),
        "settings_write": settings_write,
        "from_form": settings_write and (content_type or "").startswith(FORM_TYPES),
        "project_url": project_url,
        "why": holding_area.WHY.get(body.get("code", "")),
        "form_url": f"{apex_address(config, request)}/#create",
        "held_url": "/_smalltable/held?_sort_desc=_id",
    }
    response = await render(request, datasette, "smalltable_status.html", context, code)
    response.headers.update(NO_STORE)
    return response


async def project_status_view(datasette: Datasette, request: Request) -> Response:
    """``PROJECT.DOMAIN/_status/ID``: a write to the project's host; 200 even with no database yet."""
    project, request_id = request.url_vars["project"], request.url_vars["request_id"]
    data_dir = site(datasette).data_dir
    found = None
    if data_dir is not None:
        paths = (data_dir / f"{project}.db", data_dir / f"{holding_area.DATABASE_NAME}.db")
        found = await find(
            datasette,
            request,
            lambda: find_in_project(data_dir, project, request_id),
            lambda: [file_signature(path) for path in paths],
        )
    return await answer(datasette, request, project, found)


async def apex_status_view(datasette: Datasette, request: Request) -> Response:
    """``DOMAIN/_status/ID``: a write to the apex (its form), found wherever it went.

    A private project's write is not told here (401): nginx checks read keys on the
    project's own host, whose status URL says it to a read key."""
    config = site(datasette)
    found = None
    if config.data_dir is not None:
        data_dir, request_id = config.data_dir, request.url_vars["request_id"]
        found = await find(datasette, request, lambda: find_anywhere(data_dir, request_id))
    project = (found or {}).get("project")
    if await asyncio.to_thread(is_private, config.data_dir, project):
        address = project_address(config, request, project)
        response = json_error(
            401,
            "this write went to a private project: its status needs a read key",
            fix=f"ask {address}_status/{request.url_vars['request_id']} with the header "
            '"Authorization: Bearer stk_..." (a read key or the owner key of ' + f"{project})",
        )
        response.headers.update({**NO_STORE, "WWW-Authenticate": 'Bearer realm="smalltable"'})
        return response
    return await answer(datasette, request, None, found)


ROUTES = [
    (ROUTE_PREFIX + f"/_status/{REQUEST_ID}$", answers_problems(json_errors=True)(project_status_view)),
    (f"/-/smalltable/_status/{REQUEST_ID}$", answers_problems(json_errors=True)(apex_status_view)),
]
