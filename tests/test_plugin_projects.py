"""The plugin's self-service pages, in-process: the apex page, settings, quotas, held posts, status URLs.

Each test builds project databases by hand in a temporary data directory (the
tables ingestd writes: ``records``, ``rejects``, ``settings``, ``expiry``, and
the holding area's ``_smalltable.db``) and asks Datasette with the plugin, as
nginx would: the plugin's route, with the host the user typed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from html import unescape
from pathlib import Path

import httpx
import pytest
from datasette.app import Datasette
from datasette.cli import check_databases

from ingestd.model.project import MAX_DESCRIPTION, MAX_OWNER, MAX_QUOTA_MB, MAX_RETENTION_DAYS
from ingestd.store.holding import Holding
from ingestd.store.schema import database_bytes, open_database
from ingestd.support.timefmt import iso_time
from ingestd.web.databases import pool

MIB = 1048576
APEX = "localhost:8080"


def rid() -> str:
    return uuid.uuid4().hex


# -- building databases ---------------------------------------------------------------


def add_records(path: Path, *request_ids: str, received: str = "2026-11-21T08:00:00.000Z") -> None:
    conn = open_database(path)
    conn.executemany(
        "insert into records (_request_id, _received, _method, _path, _size, _kind, _body) "
        "values (?, ?, 'POST', '/', 2, 'json', '{}')",
        [(request_id, received) for request_id in request_ids],
    )
    conn.close()


def add_reject(
    path: Path, request_id: str, reason: str, request_path: str = "/", content_type: str | None = None
) -> None:
    conn = open_database(path)
    conn.execute(
        "insert into rejects (_request_id, _received, _method, _path, _content_type, _size, _reason) "
        "values (?, '2026-11-21T08:00:01.000Z', 'POST', ?, ?, 0, ?)",
        [request_id, request_path, content_type, reason],
    )
    conn.close()


def add_settings(
    path: Path,
    request_id: str | None = None,
    received: str = "2026-11-21T09:00:00.000Z",
    changed: tuple[str, ...] = ("owner", "description"),
    **settings: object,
) -> None:
    values = {
        "owner": "ann@example.com",
        "description": "checkout clicks",
        "type": "json",
        "schema": None,
        "retention_days": 30,
        "quota_mb": 100,
        **settings,
    }
    conn = open_database(path)
    conn.execute(
        "insert into settings (_request_id, _received, _remote_addr, _user_agent, owner, description, "
        "type, schema, retention_days, quota_mb, changed) "
        "values (?, ?, '10.0.0.7', 'curl/8.5.0', ?, ?, ?, ?, ?, ?, ?)",
        [
            request_id or rid(),
            received,
            values["owner"],
            values["description"],
            values["type"],
            None if values["schema"] is None else json.dumps(values["schema"]),
            values["retention_days"],
            values["quota_mb"],
            json.dumps(list(changed)),
        ],
    )
    conn.close()


def set_quota_use(path: Path, fraction: float) -> None:
    """Set the current settings' quota so the database uses ``fraction`` of it (WAL emptied)."""
    conn = sqlite3.connect(path)
    conn.execute("pragma wal_checkpoint(truncate)")
    size = database_bytes(path)
    conn.execute(
        "update settings set quota_mb = ? where _id = (select max(_id) from settings)",
        [size / fraction / MIB],
    )
    conn.commit()
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    assert database_bytes(path) == size


def hold(data_dir: Path, project: str, code: str, reason: str, request_id: str | None = None) -> str:
    request_id = request_id or rid()
    holding = Holding(data_dir)
    holding.conn.execute(
        "insert into held (_request_id, project, received, _received, method, uri, content_type, "
        "content_length, remote_addr, user_agent, body, code, reason) "
        "values (?, ?, ?, ?, 'POST', '/', 'application/json', 2, '127.0.0.1', 'curl', x'7b7d', ?, ?)",
        [request_id, project, time.time(), iso_time(time.time()), code, reason],
    )
    holding.close()
    return request_id


def refuse_in_holding(data_dir: Path, project: str, reason: str) -> str:
    request_id = rid()
    holding = Holding(data_dir)
    holding.conn.execute(
        "insert into rejects (_request_id, project, _received, _method, _path, _reason) "
        "values (?, ?, '2026-11-21T09:00:00.000Z', 'POST', '/_project', ?)",
        [request_id, project, reason],
    )
    holding.close()
    return request_id


def old_database(path: Path) -> None:
    """A project made before settings existed: no ``settings`` nor ``expiry`` table."""
    add_records(path, rid())
    conn = sqlite3.connect(path)
    conn.execute("drop table settings")
    conn.execute("drop table expiry")
    conn.commit()
    conn.close()


# -- asking Datasette -------------------------------------------------------------------


class Site:
    """Datasette with the plugin over one data directory, asked as nginx would ask it."""

    def __init__(self, data_dir: Path, **config: object) -> None:
        plugin = {"data_dir": str(data_dir), "domain": "localhost", "port": 8080, **config}
        self.datasette = Datasette(metadata={"plugins": {"smalltable": plugin}})

    def get(self, path: str, host: str = APEX, accept: str | None = None) -> httpx.Response:
        headers = {"Host": host} | ({"Accept": accept} if accept else {})

        async def ask() -> httpx.Response:
            await self.datasette.invoke_startup()
            return await self.datasette.client.get(path, headers=headers)

        return asyncio.run(ask())

    def project(self, project: str, path: str, accept: str | None = None) -> httpx.Response:
        return self.get(f"/-/smalltable/p/{project}{path}", host=f"{project}.{APEX}", accept=accept)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    return directory


def text_of(response: httpx.Response) -> str:
    """A page's words, tags removed and white space collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", response.text)))


# -- the apex page ------------------------------------------------------------------------


def test_apex_lists_projects_with_owner_quota_and_held(data_dir):
    add_records(data_dir / "alpha.db", rid(), rid())
    add_settings(data_dir / "alpha.db", owner="ann@example.com", description="checkout clicks")
    set_quota_use(data_dir / "alpha.db", 0.85)
    add_records(data_dir / "beta.db", rid())
    add_settings(data_dir / "full.db", owner="cy@example.com")
    set_quota_use(data_dir / "full.db", 1.2)
    hold(data_dir, "full", "over_quota", "full uses 120% of its quota")
    hold(data_dir, "full", "over_quota", "full uses 120% of its quota")
    hold(data_dir, "gamma", "no_project", "no project gamma and auto-create is off")

    page = Site(data_dir).get("/-/smalltable/")
    assert page.status_code == 200
    html, words = page.text, text_of(page)
    rows = dict(re.findall(r'<tr id="p-([a-z0-9-]+)">(.*?)</tr>', html, flags=re.S))
    assert list(rows) == ["alpha", "beta", "full"]  # gamma has no database: only held posts
    assert 'href="http://alpha.localhost:8080/"' in rows["alpha"]
    # An owner's email is never listed (privacy): the row says the project is claimed.
    assert "claimed" in rows["alpha"] and "checkout clicks" in rows["alpha"]
    assert "ann@example.com" not in rows["alpha"] and "cy@example.com" not in html
    assert "st-quota-warning" in rows["alpha"] and "85%" in rows["alpha"]
    assert '<span class="st-unclaimed">unclaimed</span>' in rows["beta"] and "st-quota-ok" in rows["beta"]
    assert "st-quota-over" in rows["full"] and "120%" in rows["full"] and "2 held" in rows["full"]

    held = html[html.index('id="holding-area"') : html.index('id="create"')]
    assert 'href="/_smalltable/held"' in held
    assert "the project does not exist yet (auto-create is off): create it to load them" in held
    assert "over quota: raise the quota or let retention free space" in held
    assert 'href="http://gamma.localhost:8080/"' in held
    assert "Auto-create is on: POST to any new name creates it" in words


def test_apex_pages_and_searches_thousands_of_projects(data_dir):
    """The apex shows PAGE_SIZE projects a page with links to the next, and ``?q=``
    finds projects by part of their name: a host with thousands stays one quick page."""
    for n in range(250):
        open_database(data_dir / f"p-{n:04d}.db").close()
    site = Site(data_dir)
    first = site.get("/-/smalltable/")
    rows = re.findall(r'<tr id="p-([a-z0-9-]+)">', first.text)
    assert len(rows) == 100 and rows[0] == "p-0000"
    assert 'Projects <span class="st-muted">(250)</span>' in first.text
    assert 'rel="next" href="?page=2"' in first.text
    last = site.get("/-/smalltable/?page=3")
    assert len(re.findall(r'<tr id="p-', last.text)) == 50 and "Page 3 of 3" in last.text
    found = site.get("/-/smalltable/?q=p-012")
    assert re.findall(r'<tr id="p-([a-z0-9-]+)">', found.text) == [f"p-012{n}" for n in range(10)]
    assert "No project name contains" in site.get("/-/smalltable/?q=zzz").text
    assert site.get("/-/smalltable/?page=oops").status_code == 200


def test_apex_form_posts_every_setting_to_project_with_defaults(data_dir):
    defaults = {"type": "json", "retention_days": 90, "quota_mb": 250}
    page = Site(data_dir, auto_create=False, defaults=defaults).get("/-/smalltable/")
    html = page.text
    form = html[html.index("<form") : html.index("</form>")]
    assert 'method="post" action="/_project"' in form
    names = re.findall(r'name="([a-z_]+)"', form)
    assert names == ["name", "owner", "description", "type", "retention_days", "quota_mb", "schema"]
    name_input = re.search(r"<input[^>]*name=\"name\"[^>]*>", form)[0]
    pattern = re.search(r'pattern="([^"]+)"', name_input)[1]
    assert "required" in name_input and re.fullmatch(pattern.replace("\\-", "-"), "clicks-2")
    assert not re.fullmatch(pattern.replace("\\-", "-"), "-Bad")
    assert "required" in re.search(r"<input[^>]*name=\"owner\"[^>]*>", form)[0]
    assert '<option value="json" selected>' in form
    assert 'value="90"' in form and 'value="250"' in form
    assert "<textarea" in form and 'name="schema"' in form
    curl = (
        'curl -d \'{"owner":"ann@example.com","description":"checkout clicks, for the UX study",'
        '"type":"json","retention_days":90,"quota_mb":250}\' http://NAME.localhost:8080/_project'
    )
    assert curl in unescape(html)
    assert "Auto-create is off" in text_of(page)
    assert "No projects yet" in html and 'id="holding-area"' not in html


def test_apex_form_bounds_are_the_ones_a_settings_write_is_checked_against(data_dir):
    """The form refuses in the browser what ingestd would refuse: its limits come from
    ingestd.model.project, so changing a bound there changes the form (no copy of it)."""
    html = Site(data_dir).get("/-/smalltable/").text
    form = html[html.index("<form") : html.index("</form>")]

    def attribute(name: str, attr: str) -> str:
        return re.search(rf'<(?:input|textarea)[^>]*name="{name}"[^>]*\b{attr}="([^"]+)"', form)[1]

    assert attribute("owner", "maxlength") == str(MAX_OWNER)
    assert attribute("description", "maxlength") == str(MAX_DESCRIPTION)
    assert attribute("retention_days", "max") == str(MAX_RETENTION_DAYS)
    assert attribute("quota_mb", "max") == str(MAX_QUOTA_MB)


def test_projects_json_adds_settings_quota_and_held(data_dir):
    add_records(data_dir / "alpha.db", rid(), rid())
    add_settings(data_dir / "alpha.db", owner="ann@example.com", description="clicks", retention_days=7)
    old_database(data_dir / "beta.db")
    hold(data_dir, "alpha", "over_quota", "over")
    site = Site(data_dir, defaults={"type": "text", "retention_days": 60, "quota_mb": 10})
    answer = site.get("/-/smalltable/projects.json")
    assert "ann@example.com" not in answer.text  # owners' emails are not listed
    listing = {p["project"]: p for p in answer.json()}
    assert set(listing) == {"alpha", "beta"}  # never _smalltable
    alpha, beta = listing["alpha"], listing["beta"]
    assert alpha["records"] == 2 and alpha["last_id"] == 2 and alpha["rejects"] == 0
    assert alpha["url"] == "http://alpha.localhost:8080/" and alpha["size_bytes"] > 0
    assert (alpha["owner"], alpha["description"], alpha["type"]) == ("claimed", "clicks", "json")
    assert (alpha["retention_days"], alpha["quota_mb"], alpha["held"]) == (7, 100, 1)
    assert alpha["quota_used"] == round(alpha["size_bytes"] / (100 * MIB), 4)
    assert (beta["owner"], beta["description"], beta["type"]) == ("unclaimed", "", "text")
    assert (beta["retention_days"], beta["quota_mb"], beta["held"]) == (60, 10, 0)


def test_300_projects_are_listed(data_dir):
    """Every project on the listing and on the apex's pages; how fast is bench/read_side.py's."""
    add_records(data_dir / "template.db", rid())
    add_settings(data_dir / "template.db")
    an_hour_ago = time.time() - 3600
    for n in range(300):
        copy = data_dir / f"p{n:03d}.db"
        shutil.copy(data_dir / "template.db", copy)
        os.utime(copy, (an_hour_ago, an_hour_ago))
    (data_dir / "template.db").unlink()
    site = Site(data_dir)
    for _ in range(2):  # read, then from the cache
        listing = site.get("/-/smalltable/projects.json").json()
        assert sorted(p["project"] for p in listing) == [f"p{n:03d}" for n in range(300)]
        pages = [site.get(f"/-/smalltable/?page={page}") for page in (1, 2, 3)]
        assert all(apex.status_code == 200 for apex in pages)
        shown = [name for apex in pages for name in re.findall(r'<tr id="p-([a-z0-9-]+)">', apex.text)]
        assert shown == [f"p{n:03d}" for n in range(300)]


def test_the_holding_area_is_served_as_a_database_but_not_as_a_project(data_dir):
    hold(data_dir, "gamma", "no_project", "no project gamma")
    add_records(data_dir / "alpha.db", rid())
    site = Site(data_dir)
    rows = site.get("/_smalltable/held.json?_shape=array").json()
    assert [row["project"] for row in rows] == ["gamma"]
    assert site.get("/-/smalltable/p/_smalltable/_project").status_code == 404
    assert [p["project"] for p in site.get("/-/smalltable/projects.json").json()] == ["alpha"]


# -- GET /_project ------------------------------------------------------------------------


def test_settings_json_with_usage_and_history_newest_first(data_dir):
    path = data_dir / "alpha.db"
    add_records(path, rid())
    first, second = rid(), rid()
    add_settings(path, first, "2026-11-21T09:00:00.000Z", ("owner", "description", "type"))
    schema = {"type": "object", "required": ["user"]}
    later = "2026-11-21T10:00:00.000Z"
    add_settings(path, second, later, ("schema", "quota_mb"), schema=schema, quota_mb=200)
    hold(data_dir, "alpha", "over_quota", "over")
    answer = Site(data_dir).project("alpha", "/_project")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["project"] == "alpha" and body["exists"] is True and body["claimed"] is True
    assert body["settings"] == {
        "owner": "ann@example.com",
        "description": "checkout clicks",
        "type": "json",
        "schema": schema,
        "retention_days": 30,
        "quota_mb": 200,
        "write": "open",
        "read": "public",
        "store_client": False,
    }
    assert body["version"] == 2 and body["held"] == 1
    assert '"quota_mb":200,' in answer.text  # as set: not the REAL column's 200.0
    assert body["usage"]["database_bytes"] == database_bytes(path)
    assert body["usage"]["quota_bytes"] == 200 * MIB
    assert body["usage"]["quota_used"] == round(database_bytes(path) / (200 * MIB), 4)
    assert [h["version"] for h in body["history"]] == [2, 1]
    assert body["history"][0] == {
        "version": 2,
        "at": "2026-11-21T10:00:00.000Z",
        "changed": ["schema", "quota_mb"],
        "by": {"addr": "10.0.0.7", "user_agent": "curl/8.5.0"},
    }
    assert body["how_to_change"] == (
        'curl -H "Authorization: Bearer $OWNER_KEY" -d \'{"quota_mb":400}\' http://alpha.localhost:8080/_project'
    )


def test_settings_json_of_an_unclaimed_project_has_the_defaults(data_dir):
    old_database(data_dir / "beta.db")
    defaults = {"type": "any", "retention_days": 180, "quota_mb": 100}
    body = Site(data_dir, defaults=defaults).project("beta", "/_project").json()
    assert body["claimed"] is False and body["version"] == 0 and body["history"] == []
    assert body["settings"] == {"owner": "unclaimed", "description": "", "type": "any", "schema": None} | {
        "retention_days": 180,
        "quota_mb": 100,
        "write": "open",
        "read": "public",
        "store_client": False,
    }
    assert '"owner":"you@example.com"' in body["how_to_change"]


def test_settings_json_of_no_project_is_404_with_held_and_create(data_dir):
    hold(data_dir, "gamma", "no_project", "no project")
    answer = Site(data_dir).project("gamma", "/_project")
    assert answer.status_code == 404
    body = answer.json()
    assert body["error"] == "no project gamma yet" and body["exists"] is False and body["held"] == 1
    assert body["create"].startswith('curl -d \'{"owner":"you@example.com"')
    assert body["create"].endswith(" http://gamma.localhost:8080/_project")


# -- status URLs --------------------------------------------------------------------------


def status(site: Site, project: str | None, request_id: str, accept: str | None = None) -> httpx.Response:
    if project is None:
        return site.get(f"/-/smalltable/_status/{request_id}", accept=accept)
    return site.project(project, f"/_status/{request_id}", accept=accept)


def test_status_of_each_outcome_in_a_project(data_dir):
    path = data_dir / "alpha.db"
    stored, applied, refused = rid(), rid(), rid()
    add_records(path, rid(), stored)
    add_settings(path, applied, changed=("owner",))
    reason = "settings not changed: 'type': expected one of json, text, any, got 'xml'"
    add_reject(path, refused, reason, "/_project")
    held = hold(data_dir, "alpha", "over_quota", "alpha uses 104% of its 100 MB quota")
    site = Site(data_dir)

    assert status(site, "alpha", stored).json() == {
        "request_id": stored,
        "status": "stored",
        "id": 2,
        "created": False,
        "project": "alpha",
        "url": "http://alpha.localhost:8080/2",
    }
    answer = status(site, "alpha", applied).json()
    assert answer["status"] == "applied" and answer["version"] == 1 and answer["changed"] == ["owner"]
    assert answer["action"] == "claimed"  # the project had records before its first settings
    answer = status(site, "alpha", refused).json()
    assert answer["status"] == "rejected" and answer["project"] == "alpha"
    assert answer["reason"] == reason and answer["url"] == "http://alpha.localhost:8080/alpha/rejects/1"
    answer = status(site, "alpha", held).json()
    assert (answer["status"], answer["code"]) == ("held", "over_quota")
    assert answer["reason"] == "alpha uses 104% of its 100 MB quota"
    pending = rid()
    for accept in (None, "*/*", "application/json"):
        answer = status(site, "alpha", pending, accept)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
        assert answer.json()["status"] == "pending" and answer.json()["request_id"] == pending
        assert answer.json()["project"] == "alpha" and "not loaded yet" in answer.json()["detail"]


def test_status_without_a_project_database(data_dir):
    held = hold(data_dir, "gamma", "no_project", "no project gamma and auto-create is off")
    site = Site(data_dir)
    answer = status(site, "gamma", held)
    assert answer.status_code == 200
    assert answer.json()["status"] == "held" and answer.json()["code"] == "no_project"
    answer = status(site, "nothing", rid())
    assert answer.status_code == 200 and answer.json()["status"] == "pending"
    assert answer.json()["project"] == "nothing"


def test_apex_status_finds_the_request_in_any_project(data_dir):
    created, changed, refused = rid(), rid(), rid()
    add_settings(data_dir / "alpha.db", created, changed=("owner", "description"))
    add_records(data_dir / "beta.db", rid())
    add_settings(data_dir / "beta.db", rid())
    add_settings(data_dir / "beta.db", changed, changed=("quota_mb",), quota_mb=300)
    add_reject(data_dir / "gamma.db", refused, "settings not changed: 'owner': expected a non-empty string")
    nameless = refuse_in_holding(data_dir, "Bad_Name", "'Bad_Name' is not a project name")
    site = Site(data_dir)

    answer = status(site, None, created).json()
    assert answer == {
        "request_id": created,
        "status": "applied",
        "version": 1,
        "changed": ["owner", "description"],
        "action": "created",
        "created": True,
        "project": "alpha",
        "url": "http://alpha.localhost:8080/",
    }
    answer = status(site, None, changed).json()
    assert (answer["project"], answer["version"], answer["changed"], answer["action"]) == (
        "beta",
        2,
        ["quota_mb"],
        "changed",
    )
    answer = status(site, None, refused).json()
    assert (answer["status"], answer["project"]) == ("rejected", "gamma")
    answer = status(site, None, nameless).json()
    assert answer["status"] == "rejected" and answer["reason"] == "'Bad_Name' is not a project name"
    assert "url" not in answer
    answer = status(site, None, rid()).json()
    assert answer["status"] == "pending" and answer["project"] is None


def nginx_id(unix: float) -> str:
    """A request id as SmallTable's nginx makes it: the millisecond it answered, then random hex."""
    return f"{round(unix * 1000):013d}" + uuid.uuid4().hex[:19]


def test_status_of_a_write_deleted_by_retention_says_expired(data_dir):
    path = data_dir / "alpha.db"
    cutoff = "2026-11-01T00:00:00.000Z"
    before, after = (
        time.mktime((2026, 10, 20, 0, 0, 0, 0, 0, 0)),
        time.mktime((2026, 11, 20, 0, 0, 0, 0, 0, 0)),
    )
    kept = nginx_id(after)
    add_records(path, kept, received=iso_time(after))
    conn = open_database(path)
    conn.execute(
        "insert into expiry (at, cutoff, records, rejects, through_id, bytes_before, bytes_after) "
        "values ('2026-11-21T00:00:00.000Z', ?, 10, 0, 10, 0, 0)",
        [cutoff],
    )
    conn.close()
    old_held = hold(data_dir, "alpha", "over_quota", "over its quota", nginx_id(before - 60))  # not expired
    gone = nginx_id(before)
    site = Site(data_dir)

    answer = status(site, "alpha", gone).json()
    assert answer["status"] == "expired" and answer["project"] == "alpha"
    assert (answer["answered"], answer["cutoff"]) == (iso_time(before), cutoff)
    assert f"everything received before {cutoff} is gone" in answer["detail"]
    assert status(site, "alpha", kept).json()["status"] == "stored"
    assert status(site, "alpha", nginx_id(after + 60)).json()["status"] == "pending"  # not loaded yet
    assert status(site, "alpha", "0" * 32).json()["status"] == "pending"  # not an id nginx made
    assert status(site, "alpha", old_held).json()["status"] == "held"
    assert status(site, "beta", gone).json()["status"] == "pending"  # a project with no retention pass

    page = status(site, "alpha", gone, "text/html")
    assert "Deleted by alpha's retention" in text_of(page)
    assert f"everything received before {cutoff} has been deleted" in text_of(page)
    assert '<meta http-equiv="refresh"' not in page.text

    # a cutoff still to come (retention's clock ahead of the page's) says nothing
    conn = open_database(path)
    future = "2999-01-01T00:00:00.000Z"
    conn.execute("insert into expiry (at, cutoff) values (?, ?)", [future, future])
    conn.close()
    assert status(site, "alpha", gone).json()["status"] == "pending"


def test_status_pages_for_browsers_reload_only_while_pending(data_dir):
    created, refused = rid(), rid()
    add_settings(data_dir / "alpha.db", created)
    form = "application/x-www-form-urlencoded"
    reason = "settings not changed: 'quota_mb': expected a number"
    add_reject(data_dir / "gamma.db", refused, reason, "/_project", form)
    site = Site(data_dir)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    refresh = '<meta http-equiv="refresh" content="1">'

    page = status(site, None, created, browser)
    assert page.headers["content-type"].startswith("text/html") and refresh not in page.text
    assert "Project alpha created" in text_of(page) and 'href="http://alpha.localhost:8080/"' in page.text
    page = status(site, None, refused, browser)
    assert "settings not changed: 'quota_mb': expected a number" in text_of(page)
    assert 'href="http://localhost:8080/#create"' in page.text and refresh not in page.text
    page = status(site, None, rid(), browser)
    assert refresh in page.text and "Not loaded yet" in text_of(page)
    page = status(site, "alpha", rid(), browser)
    assert refresh in page.text


# -- the project page and /_stats.json -----------------------------------------------------


def test_project_page_warns_from_the_quota_warning_on(data_dir):
    path = data_dir / "alpha.db"
    add_records(path, rid())
    add_settings(path, quota_mb=1, retention_days=30, schema={"type": "object"})
    conn = open_database(path)
    conn.execute(
        "insert into expiry (at, cutoff, records, rejects, through_id, bytes_before, bytes_after) "
        "values ('2026-11-20T03:00:00.000Z', '2026-10-21T03:00:00.000Z', 12, 1, 40, 90000, 60000)"
    )
    conn.close()
    site = Site(data_dir)
    set_quota_use(path, 0.79)
    page = site.project("alpha", "/")
    assert "st-alert" not in page.text
    set_quota_use(path, 0.85)
    page = site.project("alpha", "/")
    words = text_of(page)
    assert "this project uses 85% of its quota; at 100% new posts are held" in words
    assert (
        'curl -H "Authorization: Bearer $OWNER_KEY" -d \'{"quota_mb":' in words
        and "http://alpha.localhost:8080/_project" in words
    )
    assert "Owner: ann@example.com · checkout clicks" in words
    assert "Records are kept for 30 days" in words
    assert "last retention pass 2026-11-20 03:00:00 UTC: 12 records and 1 rejects deleted" in words
    assert '<details class="st-schema">' in page.text and "&#34;object&#34;" in page.text
    assert "JSON only" in words


def test_project_page_over_quota_says_how_many_are_held(data_dir):
    path = data_dir / "alpha.db"
    add_records(path, rid())
    add_settings(path)
    set_quota_use(path, 1.5)
    for _ in range(3):
        hold(data_dir, "alpha", "over_quota", "over quota")
    page = Site(data_dir).project("alpha", "/")
    words = text_of(page)
    assert 'class="st-alert st-alert-over"' in page.text
    assert "Over quota: this project uses 150%" in words and "3 waiting" in words
    assert 'href="/_smalltable/held?project=alpha&amp;_sort=_id"' in page.text


def test_unclaimed_project_page_says_how_to_claim_it(data_dir):
    old_database(data_dir / "beta.db")
    page = Site(data_dir).project("beta", "/")
    words = text_of(page)
    assert "unclaimed — nobody owns this project yet" in words
    assert 'curl -d \'{"owner":"you@example.com","description":"what it is for"}\' ' in words
    assert "No JSON Schema" in words and "Records are kept for 180 days" in words


def test_stats_json_has_the_settings_and_quota(data_dir):
    path = data_dir / "alpha.db"
    add_records(path, rid())
    add_settings(path, quota_mb=2)
    hold(data_dir, "alpha", "over_quota", "over")
    stats = Site(data_dir).project("alpha", "/_stats.json").json()
    assert stats["records"] == 1 and stats["database_bytes"] == database_bytes(path)
    assert (stats["owner"], stats["type"], stats["retention_days"], stats["quota_mb"]) == (
        "ann@example.com",
        "json",
        30,
        2,
    )
    assert stats["claimed"] is True and stats["settings_version"] == 1 and stats["held"] == 1
    assert stats["quota_bytes"] == 2 * MIB
    assert stats["quota_used"] == round(database_bytes(path) / (2 * MIB), 4)
    assert stats["last_expiry"] is None and stats["schema"] is None


def test_a_missing_project_page_mentions_held_posts_and_how_to_create_it(data_dir):
    for _ in range(2):
        hold(data_dir, "gamma", "no_project", "no project gamma")
    site = Site(data_dir, auto_create=False)
    page = site.project("gamma", "/")
    assert page.status_code == 404
    words = text_of(page)
    assert "2 posts to “gamma” wait in the holding area" in words
    assert 'curl -d \'{"owner":"you@example.com","description":"what it is for"}\' ' in words
    assert "http://gamma.localhost:8080/_project" in words
    answer = site.project("gamma", "/1.json")
    assert answer.status_code == 404 and answer.json()["held"] == 2
    assert answer.json()["create"].endswith("/_project")


def test_a_projects_reads_share_pooled_connections_bounded_over_all_projects(data_dir):
    for name in ("one", "two", "three"):
        add_records(data_dir / f"{name}.db", rid())
    site = Site(data_dir, open_databases=2)

    async def reads() -> tuple[set[int], int, int]:
        await site.datasette.invoke_startup()
        one = site.datasette.get_database("one")
        used = {await one.execute_fn(id) for _ in range(20)}  # on whichever SQL thread
        for name in ("two", "three", "one", "two"):
            rows = await site.datasette.get_database(name).execute("select count(*) from records")
            assert rows.first()[0] == 1
        return used, pool(site.datasette).open_count(), len(site.datasette.databases)

    used, idle, served = asyncio.run(reads())
    assert len(used) == 1  # one connection, its schema parsed once, for every read of "one"
    assert idle == 2 and served >= 3  # three projects read, two connections kept


def test_a_project_its_writer_left_mid_transaction_is_recovered_and_datasette_starts(data_dir):
    """ingestd killed -9 while creating a project leaves a hot journal, which a read-only
    connection cannot roll back: Datasette's start-up check used to fail on it."""
    add_records(data_dir / "fine.db", rid())
    crashed = data_dir / "crashed.db"
    script = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('PRAGMA journal_mode=DELETE')\n"
        "conn.execute('CREATE TABLE records (x)')\n"
        "conn.execute('INSERT INTO records VALUES (1)')\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "conn.execute('PRAGMA cache_size=1')  # pages spill to the file before any commit\n"
        "conn.executemany('INSERT INTO records VALUES (?)', [('x' * 200,)] * 2000)\n"
        "os._exit(0)  # no commit, no rollback: as a kill -9 leaves it\n"
    )
    subprocess.run([sys.executable, "-c", script, str(crashed)], check=True)
    assert (data_dir / "crashed.db-journal").stat().st_size > 0
    site = Site(data_dir)

    async def start_and_read() -> list:
        await site.datasette.invoke_startup()
        await check_databases(site.datasette)  # what `datasette serve` runs before serving
        rows = await site.datasette.get_database("crashed").execute("select x from records")
        return [row[0] for row in rows]

    assert asyncio.run(start_and_read()) == [1]  # the unfinished transaction was rolled back
