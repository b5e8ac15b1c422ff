"""Keys through the real nginx (njs), ingestd and Datasette: private projects, destructive
settings that wait, and replay as authorised when written.

nginx decides every key alone (nginx/smalltable.js) from the maps ingestd writes;
these tests go through nginx as a client would, and read what was stored on disk.
"""

from __future__ import annotations

import json
import secrets
import sqlite3

import httpx
import pytest

from .conftest import smalltable, start_stack, stop_stack
from .keyslib import (
    bearer,
    claim,
    make_key,
    until,
    wait_owned,
    write_settings,
    write_with,
)
from .test_e2e_projects import JSON, settings_of, status

pytestmark = pytest.mark.e2e


def test_a_private_project_is_unreadable_without_a_read_key_through_every_url(stack, project):
    marker = "secret-" + secrets.token_hex(6)
    settings = {"owner": "ann", "description": marker, "read": "private"}
    answer = stack.post(project, json.dumps(settings), path="/_project", headers=JSON)
    owner = answer.json()["key"]
    wait_owned(stack, project)
    assert status(stack, project, answer, headers=bearer(owner))["status"] == "applied"
    until(lambda: httpx.get(stack.url("/"), headers={"Host": stack.host(project)}).status_code == 401)
    posted = stack.post(project, json.dumps({"note": marker}), headers=JSON)  # writes stay open
    assert posted.status_code == 202
    rid = posted.json()["id"]
    read, _ = make_key(stack, project, owner, scope="read")
    write, _ = make_key(stack, project, owner, scope="write")
    for key in (read, write):  # in force once nginx has reloaded
        until(lambda key=key: stack.request("GET", project, "/", headers=bearer(key)).status_code != 401)
    until(lambda: marker in stack.request("GET", project, f"/{rid}.json", headers=bearer(read)).text)
    public = project[:50] + "-public"
    claim(stack, public)
    urls = [
        "/",
        "/1",
        "/1.json",
        "/1/raw",
        f"/{rid}",
        "/_project",
        f"/_status/{rid}",
        "/_export.json",
        "/_export.csv",
        "/_export.ndjson",
        "/_stream/",
        "/_stream/1-",
        "/_stats.json",
        f"/{project}",
        f"/{project}/records",
        f"/{project}/records.json",
        f"/{project}.json?sql=select+*+from+records",
        f"/{project}/settings.json",
    ]
    for url in urls:
        for headers, code in (({}, 401), (bearer(write), 403), (bearer(owner + "0"), 401)):
            refused = stack.request("GET", project, url, headers=headers)
            assert refused.status_code == code, (url, headers, refused.text)
            assert marker not in refused.text and refused.json()["error"]
        for key in (read, owner):
            allowed = stack.request("GET", project, url, headers=bearer(key))
            assert allowed.status_code in (200, 302), (url, allowed.text)
    with httpx.stream("GET", stack.url("/_tail"), headers={"Host": stack.host(project)}) as tail:
        assert tail.status_code == 401
    # through another project's host and the apex: Datasette serves every database there
    for host in (public, None):
        for url in (f"/{project}", f"/{project}/records.json", f"/{project}.json?sql=select+*+from+records"):
            for headers in ({}, bearer(read)):
                refused = stack.request("GET", host, url, headers=headers)
                assert refused.status_code == 403 and marker not in refused.text, (host, url, refused.text)
        for url in ("/.json", "/-/databases.json"):
            assert stack.request("GET", host, url).status_code == 404
    # SQL on another project's database cannot reach it
    path = stack.home / "data" / f"{project}.db"
    for sql in (
        f"attach database '{path}' as p",
        f'select * from "{project}".records',
        "select * from pragma_database_list",
        "select * from records",
    ):
        answer = stack.request("GET", public, f"/{public}.json", params={"sql": sql, "_shape": "array"})
        assert marker not in answer.text, (sql, answer.text)
    # the lists of every project show its name and owner, nothing it holds
    listed = stack.request("GET", None, "/_projects.json").json()
    entry = next(p for p in listed if p["project"] == project)
    assert entry == {"project": project, "url": entry["url"], "owner": "ann", "private": True}
    apex = stack.request("GET", None, "/")
    assert project in apex.text and marker not in apex.text and "private" in apex.text


def test_a_private_projects_held_posts_and_status_urls_need_its_read_key(stack, project):
    """Issue 20: the holding area and the apex status URL never show a private project's posts."""
    marker = "held-secret-" + secrets.token_hex(6)
    tiny = {"owner": "ann", "read": "private", "quota_mb": 0.01}  # over quota at once: posts wait
    claimed = stack.post(project, json.dumps(tiny), path="/_project", headers=JSON)
    owner = claimed.json()["key"]
    wait_owned(stack, project)
    until(lambda: stack.request("GET", project, "/_project").status_code == 401)
    read, _ = make_key(stack, project, owner, scope="read")
    until(lambda: stack.request("GET", project, "/", headers=bearer(read)).status_code == 200)
    rid = stack.post(project, json.dumps({"note": marker}), headers=JSON).json()["id"]
    own_status = f"/_status/{rid}"
    until(lambda: stack.request("GET", project, own_status, headers=bearer(read)).json()["status"] == "held")
    public = project[:50] + "-pubheld"
    stack.post(public, json.dumps({"owner": "bob", "quota_mb": 0.01}), path="/_project", headers=JSON)
    shown = stack.post(public, json.dumps({"note": "public-" + marker}), headers=JSON).json()["id"]
    until(lambda: stack.request("GET", public, f"/_status/{shown}").json()["status"] == "held")
    with sqlite3.connect(stack.home / "data" / "_smalltable.db") as conn:
        (row_id,) = conn.execute("select _id from held where _request_id = ?", [rid]).fetchone()
    listings = [
        f"/_smalltable/held/{row_id}",
        f"/_smalltable/held/{row_id}.json",
        "/_smalltable.db",
        "/_smalltable/held.json?_shape=array&_size=max",
        f"/_smalltable/held.json?_shape=array&project={project}",
        "/_smalltable/held.csv?_size=max",
        "/_smalltable/held?_sort_desc=_id",
        "/_smalltable.json?sql=select+*+from+held",
        "/_smalltable.json?sql=select+*+from+main.held",
        "/_smalltable.json?sql=select+group_concat(body)+from+main.held",
        "/_smalltable.json?sql=select+*+from+_smalltable.held",
        "/_smalltable",
        "/",
    ]
    for host, headers in ((None, {}), (public, {}), (project, bearer(read))):
        for url in listings:
            answer = stack.request("GET", host, url, headers=headers)
            assert marker not in answer.text.replace("public-" + marker, ""), (host, url, answer.text)
            assert rid not in answer.text, (host, url)
    # the holding area still lists public projects' posts
    listed = stack.request("GET", None, "/_smalltable/held.json?_shape=array&_size=max").json()
    assert shown in {row["_request_id"] for row in listed}
    assert f"held?project={public}" in stack.request("GET", None, "/").text
    assert f"held?project={project}&amp;" not in stack.request("GET", None, "/").text
    # the apex status URL answers 401 for a private project's writes, held or applied
    for write in (rid, claimed.json()["id"]):
        for accept in ("application/json", "text/html"):
            apex = stack.request("GET", None, f"/_status/{write}", headers={"Accept": accept})
            assert apex.status_code == 401, (write, apex.text)
            assert marker not in apex.text and "quota" not in apex.text and "version" not in apex.text
            if accept == "application/json":
                assert apex.json()["error"] and project in apex.json()["fix"]
    # another project's host does not find it; its own host only with a read key
    elsewhere = stack.request("GET", public, own_status).json()
    assert elsewhere["status"] == "pending" and elsewhere["project"] == public
    assert stack.request("GET", project, own_status).status_code == 401
    assert stack.request("GET", project, own_status, headers=bearer(owner)).json()["status"] == "held"
    assert stack.request("GET", project, "/_project", headers=bearer(read)).json()["held"] == 1
    own_page = stack.request("GET", project, "/", headers=bearer(read)).text
    assert "1 waiting" in own_page and f"held?project={project}&amp;" not in own_page  # no empty list


@pytest.fixture
def quick_grace_stack(tmp_path):
    """A stack of its own whose destructive settings wait 3.6 s instead of 24 h."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("projects:\n  grace_hours: 0.001\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    yield running
    stop_stack(running)


def test_destructive_settings_wait_for_the_grace_period_announced_and_now_skips_it(quick_grace_stack):
    stack, project = quick_grace_stack, "graced"
    owner = claim(stack, project)
    assert status(stack, project, write_settings(stack, project, owner))["status"] == "applied"
    wait_owned(stack, project)
    change = {"retention_days": 7, "quota_mb": 10, "schema": {"type": "object"}, "description": "soon"}
    sent = stack.post(project, json.dumps(change), path="/_project", headers=bearer(owner))
    done = status(stack, project, sent)
    assert done["status"] == "applied" and done["changed"] == ["description"]
    waiting = {"retention_days": 7, "quota_mb": 10, "schema": {"type": "object"}}
    assert done["waiting"]["settings"] == waiting and not done["waiting"]["applied"]
    now = settings_of(stack, project)["settings"]
    assert (now["retention_days"], now["quota_mb"], now["schema"], now["description"]) == (
        180,
        100,
        None,
        "soon",
    )
    header = ""

    def announced() -> bool:
        nonlocal header
        header = write_with(stack, project, None).headers.get("X-SmallTable-Pending", "")
        return "retention_days 7" in header

    until(announced, timeout=3)
    assert "quota_mb 10" in header and "(a new schema)" in header
    page = stack.request("GET", project, "/")
    assert "waiting for its grace period" in page.text and "retention_days" in page.text
    # a post after the due time applies it first (the log's time decides, as in a replay)
    until(
        lambda: (
            settings_of(stack, project)["settings"]["retention_days"] == 7
            or not write_with(stack, project, None)
        ),
        10,
    )
    later = settings_of(stack, project)["settings"]
    assert (later["quota_mb"], later["schema"]) == (10, {"type": "object"})
    assert status(stack, project, sent)["waiting"]["applied"] is True
    until(lambda: "X-SmallTable-Pending" not in write_with(stack, project, None).headers)
    # the owner may skip the wait
    at_once = stack.post(project, b'{"quota_mb": 5, "now": true}', path="/_project", headers=bearer(owner))
    assert status(stack, project, at_once)["changed"] == ["quota_mb"]
    assert settings_of(stack, project)["settings"]["quota_mb"] == 5


def test_replay_applies_the_log_as_it_was_authorised_when_written(stack, project, tmp_path):
    owner = claim(stack, project)
    wait_owned(stack, project)
    assert status(stack, project, write_settings(stack, project, owner))["status"] == "applied"
    key_only = stack.post(project, b'{"write": "key"}', path="/_project", headers=bearer(owner))
    assert status(stack, project, key_only)["status"] == "applied"
    write, kid = make_key(stack, project, owner, scope="write")
    until(lambda: write_with(stack, project, write).status_code == 202)
    written = [write_with(stack, project, write) for _ in range(3)]
    # claimed while nginx did not know yet: ingestd refused it, and a replay must too
    refused = stack.post(project, b'{"owner": "eve"}', path="/_project", headers=bearer("stk_" + "3" * 32))
    gone = stack.request("DELETE", project, f"/_project/keys/{kid}", headers=bearer(owner))
    assert status(stack, project, gone)["status"] == "applied"
    until(lambda: write_with(stack, project, write).status_code == 401)
    for answer in written:
        status(stack, project, answer, headers=bearer(owner))
    if refused.status_code == 202:
        assert status(stack, project, refused)["status"] == "rejected"
    rebuilt = tmp_path / "rebuilt"
    keys_before = (stack.home / "state" / "keys.json").read_bytes()
    # no secret anywhere: replay reads only the log
    config = str(stack.home / "conf" / "smalltable.yaml")
    result = smalltable(
        "replay",
        "--config",
        config,
        "--project",
        project,
        "--data-dir",
        str(rebuilt),
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr

    def dump(path):
        with sqlite3.connect(path) as conn:
            return [
                conn.execute(f"select * from {table} order by _id").fetchall()
                for table in ("settings", "records", "rejects", "key_changes")
            ]

    assert dump(rebuilt / f"{project}.db") == dump(stack.home / "data" / f"{project}.db")
    with sqlite3.connect(rebuilt / f"{project}.db") as conn:
        ids = {row[0] for row in conn.execute("select _request_id from records")}
    assert {answer.json()["id"] for answer in written} <= ids  # the revoked key's records stay
    assert (stack.home / "state" / "keys.json").read_bytes() == keys_before  # replay left nginx's keys alone
