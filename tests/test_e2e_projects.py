"""Self-service projects end to end, through the real nginx, ingestd and Datasette.

Create by curl (on the project's host and on the apex), claim, settings that are
refused, schema and type checks learned from the status URL, quotas (warning
header, held posts, release), the holding area when projects are not created by
a post, retention with a clock the test moves, and replay of settings.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from ingestd.store.schema import database_bytes

from .conftest import smalltable, start_stack, stop_stack

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


def status(
    stack, project: str | None, answer, timeout: float = 15, wanted: tuple = (), headers: dict | None = None
) -> dict:
    """Poll a write's status URL until it is no longer pending (or is one of ``wanted``)."""
    url = answer.json()["status_url"]
    assert answer.headers.get("Location", url) == url
    path = url.split("/", 3)[3]
    deadline = time.monotonic() + timeout
    while True:
        got = stack.request("GET", project, "/" + path, headers=headers or {}).json()
        if (got["status"] in wanted) if wanted else got["status"] != "pending":
            return got
        assert time.monotonic() < deadline, f"still {got} after {timeout}s"
        time.sleep(0.05)


def configure(stack, project: str | None, **settings) -> dict:
    """Change settings at once: a lower quota or retention does not wait (``"now": true``)."""
    answer = stack.post(project, json.dumps({**settings, "now": True}), path="/_project", headers=JSON)
    assert answer.status_code == 202, answer.text
    return status(stack, project, answer)


def settings_of(stack, project: str) -> dict:
    return stack.request("GET", project, "/_project").json()


# -- creating, claiming, changing ------------------------------------------------


def test_create_with_one_curl_then_every_post_says_what_became_of_it(stack, project):
    schema = {
        "type": "object",
        "required": ["user", "score"],
        "properties": {"user": {"type": "string"}, "score": {"type": "integer", "minimum": 0}},
    }
    applied = configure(
        stack, project, owner="ann@example.com", description="clicks", type="json", schema=schema
    )
    assert applied["status"] == "applied"
    current = settings_of(stack, project)
    assert current["claimed"] is True
    assert current["settings"] == {
        "owner": "ann@example.com",
        "description": "clicks",
        "type": "json",
        "schema": schema,
        "retention_days": 180,
        "quota_mb": 100,
        "write": "open",
        "read": "public",
        "store_client": False,
    }

    good = stack.post(project, '{"user":"ann","score":3}', headers=JSON)
    stored = status(stack, project, good)
    assert stored["status"] == "stored"
    record = stack.client.get(
        stored["url"].replace(stack.host(project), f"127.0.0.1:{stack.port}"),
        headers={"Host": stack.host(project), "Accept": "application/json"},
    )
    assert record.json()["_request_id"] == good.json()["id"]

    bad = stack.post(project, '{"user":"ann","score":-1}', headers=JSON)
    rejected = status(stack, project, bad)
    assert rejected["status"] == "rejected"
    # SmallTable's words, the place; how jsonschema-rs words the problem is its own
    prefix = "does not match the project's schema: score: "
    assert rejected["reason"].startswith(prefix)
    assert "-1" in rejected["reason"].removeprefix(prefix)
    text = stack.post(project, "just words", headers={"Content-Type": "text/plain"})
    assert status(stack, project, text)["reason"] == (
        "the project takes JSON only (type json), and this is a text body"
    )
    # the raw body of a reject is kept, never lost
    assert stack.wait_row(project, text.json()["id"], "rejects")["_body"] == "just words"


def test_a_post_creates_an_unclaimed_project_and_the_first_settings_call_claims_it(stack, project):
    assert status(stack, project, stack.post(project, '{"a":1}'))["status"] == "stored"
    current = settings_of(stack, project)
    assert current["claimed"] is False and current["settings"]["owner"] == "unclaimed"

    no_owner = configure(stack, project, description="mine now")
    assert no_owner["status"] == "rejected"
    assert "'owner' is required to create or claim a project" in no_owner["reason"]

    assert configure(stack, project, owner="bob@example.com")["status"] == "applied"
    assert configure(stack, project, description="bob's")["status"] == "applied"  # owner kept
    current = settings_of(stack, project)
    assert current["settings"]["owner"] == "bob@example.com"
    assert [change["changed"] for change in current["history"]] == [["description"], ["owner"]]


def test_invalid_settings_are_refused_with_every_reason_and_the_old_ones_stay(stack, project):
    configure(stack, project, owner="ann", type="text", retention_days=30)
    refused = configure(
        stack, project, type="xml", retention_days=-1, schema={"type": "nosuch"}, colour="red"
    )
    assert refused["status"] == "rejected"
    reason = refused["reason"]
    assert reason.startswith("settings not changed: ")
    for part in (
        "'type': expected one of json, text, any, got 'xml'",
        "'retention_days'",
        "'schema': not a valid JSON Schema",
        "unknown setting 'colour'",
    ):
        assert part in reason
    current = settings_of(stack, project)["settings"]
    assert (current["type"], current["retention_days"]) == ("text", 30)
    binary = stack.post(project, b"\xff\x00\xfe", headers={"Content-Type": "application/octet-stream"})
    assert "not UTF-8" in status(stack, project, binary)["reason"]
    assert status(stack, project, stack.post(project, "héllo"))["status"] == "stored"


def test_create_on_the_apex_naming_the_project_and_a_bad_name_is_explained(stack, project):
    # curl -d labels the JSON as a form: still a JSON answer, since curl does not ask for HTML
    answer = stack.post(None, json.dumps({"name": project, "owner": "ann"}), path="/_project")
    assert answer.status_code == 202
    assert answer.json()["status_url"].startswith(f"http://localhost:{stack.port}/_status/")
    assert status(stack, None, answer)["status"] == "applied"
    assert settings_of(stack, project)["settings"]["owner"] == "ann"

    bad = stack.post(
        None, json.dumps({"name": "No_Such Name", "owner": "ann"}), path="/_project", headers=JSON
    )
    refused = status(stack, None, bad)
    assert refused["status"] == "rejected"
    assert "'No_Such Name' is not a project name" in refused["reason"]


def test_the_first_post_to_a_new_name_says_it_created_the_project_and_names_a_close_one(stack, project):
    first = stack.post(project, '{"n": 1}', headers=JSON)
    assert first.json()["created"] is True
    stored = status(stack, project, first)
    assert (stored["status"], stored["created"]) == ("stored", True)
    assert "did_you_mean" not in stored
    second = stack.post(project, '{"n": 2}', headers=JSON)
    assert second.json()["created"] is False
    assert status(stack, project, second)["created"] is False
    typo = project + "s"
    mistyped = stack.post(typo, '{"n": 3}', headers=JSON)
    assert mistyped.json()["created"] is True
    said = status(stack, typo, mistyped)
    assert (said["created"], said["did_you_mean"]) == (True, project)
    assert said["did_you_mean_url"] == f"http://{project}.localhost:{stack.port}/"
    path = "/" + mistyped.json()["status_url"].split("/", 3)[3]
    page = stack.request("GET", typo, path, headers={"Accept": "text/html"})
    assert f"This post created the new project <strong>{typo}</strong>. Did you mean" in page.text


def test_a_rejected_posts_status_page_says_it_was_kept_and_offers_no_form(stack, project):
    status(stack, project, stack.post(project, '{"n": 1}', headers=JSON))
    answer = stack.post(project, '{"n": 2', headers=JSON)
    assert status(stack, project, answer)["status"] == "rejected"
    path = "/" + answer.json()["status_url"].split("/", 3)[3]
    page = stack.request("GET", project, path, headers={"Accept": "text/html"}).text
    assert f"Kept in {project}&#39;s rejects, not stored as a record" in page
    assert "was accepted and is kept" in page
    assert "Not accepted" not in page and "nothing was stored" not in page.lower()
    assert "Back to the form" not in page


def test_a_form_with_several_problems_hears_of_them_all_and_is_offered_the_form(stack):
    form = "name=Bad_Name&owner=&type=any&retention_days=0&quota_mb=5&schema="
    answer = stack.post(
        None, form, path="/_project", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    refused = status(stack, None, answer)
    assert refused["status"] == "rejected"
    reason = refused["reason"]
    assert "'Bad_Name' is not a project name" in reason
    assert "'retention_days': expected a whole number of days" in reason
    assert "'owner' is required" in reason
    path = "/" + answer.json()["status_url"].split("/", 3)[3]
    page = stack.request("GET", None, path, headers={"Accept": "text/html"}).text
    assert "Settings not changed" in page and "Back to the form" in page


def test_an_apex_202_says_its_status_url_in_location_for_programs_and_browsers(stack, project):
    form = f"name={project}&owner=ann%40example.com"
    answer = stack.post(None, form, path="/_project")
    assert answer.status_code == 202
    assert answer.headers["Location"] == answer.json()["status_url"]
    page = stack.post(
        None, f"name={project}-b&owner=ann%40example.com", path="/_project", headers={"Accept": "text/html"}
    )
    assert page.status_code == 202
    assert len(page.headers.get_list("Location")) == 1
    assert f'href="{page.headers["Location"]}"' in page.text


def test_the_apex_form_post_shows_the_owner_key_once_and_links_its_status_page(stack, project):
    form = f"name={project}&owner=ann%40example.com&type=json&retention_days=30&quota_mb=5&schema="
    answer = stack.post(
        None,
        form,
        path="/_project",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html,*/*;q=0.8"},
    )
    assert answer.status_code == 202 and answer.headers["content-type"].startswith("text/html")
    assert answer.headers["Cache-Control"] == "no-store"
    key = re.search(r'<code id="owner-key">(stk_[0-9a-f]{32})</code>', answer.text).group(1)
    assert "This key is shown only once." in answer.text
    location = re.search(r'<a href="([^"]+)">Follow your change</a>', answer.text).group(1)
    assert location.startswith(f"http://localhost:{stack.port}/_status/")
    request_id = location.rsplit("/", 1)[1]
    assert key not in stack.request("GET", None, f"/_status/{request_id}").text
    deadline = time.monotonic() + 15
    while (got := stack.request("GET", None, f"/_status/{request_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert got["status"] == "applied"
    current = settings_of(stack, project)["settings"]
    assert (current["type"], current["retention_days"], current["quota_mb"]) == ("json", 30, 5)


# -- quotas -----------------------------------------------------------------------


def test_quota_warning_header_then_held_posts_then_release(stack, project):
    configure(stack, project, owner="ann")
    # a first record big enough that each small post after it (a few WAL pages) moves
    # the project's size by well under 1 %, however many go in before nginx reloads
    status(stack, project, stack.post(project, '{"n":0,"pad":"' + "x" * 800_000 + '"}'))
    size = database_bytes(stack.home / "data" / f"{project}.db")
    # a quota the project already uses ~85 % of: the answers say so (nginx reloads)
    configure(stack, project, quota_mb=round(size / 0.87 / 1048576, 6))
    deadline = time.monotonic() + 15
    while "X-SmallTable-Quota" not in (answer := stack.post(project, '{"n":1}')).headers:
        assert time.monotonic() < deadline, "no quota header"
        time.sleep(0.1)
    assert answer.headers["X-SmallTable-Quota"].endswith(" MiB used")
    assert int(answer.headers["X-SmallTable-Quota"].split("%")[0]) >= 80
    assert answer.json()["status"] == "accepted"
    status(stack, project, answer)

    configure(stack, project, quota_mb=round(size / 2 / 1048576, 6))  # now over
    held_answer = stack.post(project, '{"n":2}')
    held = status(stack, project, held_answer, wanted=("held",))
    assert "over its quota" in held["reason"]
    deadline = time.monotonic() + 15
    while (answer := stack.post(project, '{"n":3}')).json()["status"] != "held":
        assert time.monotonic() < deadline, "nginx never said held"
        time.sleep(0.1)
    assert "over quota" in answer.headers["X-SmallTable-Quota"]
    assert status(stack, project, answer, wanted=("held",))["status"] == "held"
    assert settings_of(stack, project)["held"] >= 2

    configure(stack, project, quota_mb=100)
    assert status(stack, project, held_answer, wanted=("stored",))["status"] == "stored"
    assert status(stack, project, answer, wanted=("stored",))["status"] == "stored"
    numbers = [row["n"] for row in stack.rows(project, _sort="_id")]
    assert numbers[:2] == [0, 1] and numbers[2:] == sorted(numbers[2:]) and 2 in numbers and 3 in numbers


# -- bad input ---------------------------------------------------------------------


def test_huge_and_deeply_nested_json_do_not_hurt_the_daemon(stack, project):
    schema = {
        "$defs": {"n": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]}},
        "$ref": "#/$defs/n",
    }
    configure(stack, project, owner="ann", schema=schema)
    deep = stack.post(project, "[" * 1000 + "1" + "]" * 1000, headers=JSON)
    deeper = stack.post(project, "[" * 100000 + "]" * 100000, headers=JSON)
    wide = stack.post(project, json.dumps([list(range(50))] * 2500), headers=JSON)
    assert status(stack, project, deep)["status"] == "stored"
    assert status(stack, project, deeper)["reason"].startswith("malformed JSON")
    assert status(stack, project, wide)["status"] == "stored"
    assert status(stack, project, stack.post(project, "7", headers=JSON))["status"] == "stored"


# -- replay ---------------------------------------------------------------------------


def test_replay_reproduces_settings_and_what_they_decided(stack, project, tmp_path):
    configure(stack, project, owner="ann", type="json")
    status(stack, project, stack.post(project, "text", headers={"Content-Type": "text/plain"}))
    configure(stack, project, type="any")
    last = stack.post(project, "text", headers={"Content-Type": "text/plain"})
    assert status(stack, project, last)["status"] == "stored"
    rebuilt = tmp_path / "rebuilt"
    config = str(stack.home / "conf" / "smalltable.yaml")
    result = smalltable("replay", "--config", config, "--project", project, "--data-dir", str(rebuilt))
    assert result.returncode == 0, result.stderr
    assert "2 settings changes" in result.stdout

    import sqlite3

    def dump(path):
        with sqlite3.connect(path) as conn:
            return [
                conn.execute(f"select _request_id from {t} order by _id").fetchall()
                for t in ("settings", "records", "rejects")
            ]

    assert dump(rebuilt / f"{project}.db") == dump(stack.home / "data" / f"{project}.db")


# -- a deployment of its own: no auto-create, a clock the test moves ------------------


@pytest.fixture
def own_stack(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    clock = tmp_path / "clock"
    clock.write_text("0")
    config = tmp_path / "smalltable.yaml"
    config.write_text("projects:\n  auto_create: false\n  retention_interval: 0.5\n")
    import os

    os.environ["SMALLTABLE_CLOCK_FILE"] = str(clock)
    try:
        running = start_stack(home, ["--config", str(config)])
    finally:
        del os.environ["SMALLTABLE_CLOCK_FILE"]
    running.clock = clock
    yield running
    if running.process.poll() is None:
        stop_stack(running)


def test_without_auto_create_posts_wait_in_the_holding_area_until_the_project_exists(own_stack):
    stack = own_stack
    waiting = [stack.post("later", json.dumps({"n": n})) for n in range(3)]
    for answer in waiting:
        held = status(stack, "later", answer)
        assert held["status"] == "held" and held["code"] == "no_project"
    assert not (stack.home / "data" / "later.db").exists()

    assert configure(stack, "later", owner="ann")["status"] == "applied"
    after = stack.post("later", json.dumps({"n": 3}))
    assert status(stack, "later", after)["status"] == "stored"
    for answer in waiting:
        assert status(stack, "later", answer)["status"] == "stored"
    assert [row["n"] for row in stack.rows("later", _sort="_id")] == [0, 1, 2, 3]


def test_retention_deletes_old_records_and_the_file_shrinks(own_stack):
    stack = own_stack
    configure(stack, "short", owner="ann", retention_days=7)
    configure(stack, "long", owner="ann", retention_days=30)
    pad = "x" * 4000
    answers = {}
    for project in ("short", "long"):
        answers[project] = [stack.post(project, json.dumps({"n": n, "pad": pad})) for n in range(100)]
        status(stack, project, answers[project][-1])
    before = database_bytes(stack.home / "data" / "short.db")

    stack.clock.write_text(str(10 * 86400))  # ten days on
    deadline = time.monotonic() + 20
    while stack.rows("short"):
        assert time.monotonic() < deadline, "short's records were not expired"
        time.sleep(0.2)
    assert len(stack.rows("long")) == 100
    assert database_bytes(stack.home / "data" / "short.db") < before / 4
    expiry = stack.rows("short", "expiry")
    assert expiry[-1]["records"] == 100 and expiry[-1]["bytes_after"] < expiry[-1]["bytes_before"]
    # a deleted write's status URL says so, with the cutoff; a kept one's is unchanged
    gone = status(stack, "short", answers["short"][0])
    assert (gone["status"], gone["cutoff"]) == ("expired", expiry[-1]["cutoff"])
    assert status(stack, "long", answers["long"][0])["status"] == "stored"

    # numbering goes on where it was
    stack.clock.write_text("0")
    time.sleep(1)  # a pass that started before the clock went back is over
    newer = stack.post("short", '{"n": 100}')
    stored = status(stack, "short", newer)
    assert stored["url"].endswith("/101")
