"""Where requests go, in log order: settings, records, rejects and the holding area.

Real SQLite databases in a temporary directory; requests as the parser returns them.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time

import msgspec
import pytest

from ingestd.config import default_settings
from ingestd.ingest.registry import Registry
from ingestd.model.request import Request
from ingestd.store.holding import Holding
from ingestd.store.pool import Store
from ingestd.store.schema import database_bytes

_ids = itertools.count(1)


def req(
    project: str, body: bytes | dict = b'{"n":1}', uri: str = "/", ctype: str = "application/json"
) -> Request:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return Request(
        f"{next(_ids):032x}", project, time.time(), "POST", uri, ctype, len(body), "127.0.0.1", "test", body
    )


def settings(project: str, **change: object) -> Request:
    return req(project, change, uri="/_project")


def rows(store: Store, project: str, sql: str) -> list[tuple]:
    path = store.path(project)
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def ids(store: Store, project: str, table: str = "records") -> list[str]:
    return [r[0] for r in rows(store, project, f"select _request_id from {table} order by _id")]


@pytest.fixture
def make(tmp_path):
    made = []

    def make(auto_create: bool = True, **defaults) -> Registry:
        store = Store(tmp_path / "data", 200, 8)
        holding = Holding(tmp_path / "data")
        made.append((store, holding))
        return Registry(store, holding, default_settings(**defaults), auto_create, release_batch=3)

    yield make
    for store, holding in made:
        store.close()
        holding.close()


def test_a_post_creates_an_unclaimed_project_and_the_first_settings_claim_it(make):
    registry = make()
    post = req("demo")
    registry.load([post])
    assert ids(registry.store, "demo") == [post.request_id]
    assert registry.state("demo").settings.owner == "unclaimed"
    claim = settings("demo", owner="ann@example.com", type="json")
    out = registry.load([claim])["demo"]
    assert out.settings_changed == 1
    assert rows(registry.store, "demo", "select _request_id, owner, type, changed from settings") == [
        (claim.request_id, "ann@example.com", "json", '["owner", "type"]')
    ]


def test_settings_apply_from_their_place_in_the_log_on(make):
    registry = make()
    before, after = req("demo", b"text", ctype="text/plain"), req("demo", b"more text", ctype="text/plain")
    registry.load([before, settings("demo", owner="ann", type="json"), after])
    assert ids(registry.store, "demo") == [before.request_id]
    reason = rows(registry.store, "demo", "select _reason from rejects")[0][0]
    assert reason == "the project takes JSON only (type json), and this is a text body"


def test_a_refused_change_keeps_the_old_settings_and_says_why(make):
    registry = make()
    registry.load([settings("demo", owner="ann", type="json")])
    bad = settings("demo", type="xml", retention_days=-5)
    out = registry.load([bad, req("demo", b"not json", ctype="text/plain")])["demo"]
    assert out.settings_refused == 1
    assert registry.state("demo").settings.type == "json"
    reasons = dict(rows(registry.store, "demo", "select _request_id, _reason from rejects"))
    assert reasons[bad.request_id].startswith("settings not changed: 'type': expected one of json, text, any")
    assert "retention_days" in reasons[bad.request_id]
    assert len(rows(registry.store, "demo", "select 1 from settings")) == 1


def test_a_refused_first_call_creates_nothing(make):
    registry = make()
    bad = settings("ghost", description="no owner")
    registry.load([bad])
    assert not registry.store.path("ghost").exists()
    held_rejects = registry.holding.conn.execute("select project, _reason from rejects").fetchall()
    assert held_rejects == [("ghost", "settings not changed: " + held_rejects[0][1].partition(": ")[2])]
    assert "'owner' is required" in held_rejects[0][1]


def test_schema_failures_name_the_field_and_the_expectation(make):
    registry = make()
    schema = {
        "type": "object",
        "required": ["user"],
        "properties": {"user": {"type": "string"}, "tags": {"type": "array", "items": {"type": "integer"}}},
    }
    good, bad = req("s", {"user": "ann", "tags": [1]}), req("s", {"tags": [1, "two"]})
    registry.load([settings("s", owner="ann", schema=schema), good, bad])
    assert ids(registry.store, "s") == [good.request_id]
    reason = rows(registry.store, "s", "select _reason from rejects")[0][0]
    # SmallTable's words and where each error is; what is wrong there is jsonschema-rs's wording
    problems = reason.removeprefix("does not match the project's schema: ").split("; ")
    assert reason.startswith("does not match the project's schema: ")
    assert sorted(problem.split(": ", 1)[0] for problem in problems) == ["tags[1]", "the record"]
    assert all(len(problem.split(": ", 1)[1]) > 0 for problem in problems)
    assert any("two" in p and "integer" in p for p in problems if p.startswith("tags[1]: "))
    assert any("user" in p for p in problems if p.startswith("the record: "))


def test_forms_are_checked_as_objects_and_text_cannot_be(make):
    registry = make()
    schema = {"type": "object", "required": ["email"]}
    form = req("f", b"email=a%40b.c&x=1", ctype="application/x-www-form-urlencoded")
    text = req("f", b"hello", ctype="text/plain")
    registry.load([settings("f", owner="ann", schema=schema), form, text])
    assert ids(registry.store, "f") == [form.request_id]
    assert "a text body cannot be checked" in rows(registry.store, "f", "select _reason from rejects")[0][0]


def test_type_text_refuses_bytes_that_are_not_utf8(make):
    registry = make()
    ok, bad = req("t", "héllo".encode(), ctype="text/plain"), req("t", b"\xff\xfe", ctype="text/plain")
    registry.load([settings("t", owner="ann", type="text"), ok, bad])
    assert ids(registry.store, "t") == [ok.request_id]
    assert (
        "not UTF-8 (bad byte at offset 0)" in rows(registry.store, "t", "select _reason from rejects")[0][0]
    )


def test_without_auto_create_posts_wait_then_load_first_in_first_out(make):
    registry = make(auto_create=False)
    early = [req("later") for _ in range(7)]
    registry.load(early)
    assert not registry.store.path("later").exists()
    assert registry.holding.waiting() == {("later", "no_project"): 7}
    late = req("later")
    out = registry.load([settings("later", owner="ann"), late])["later"]
    assert out.released == 7  # in batches of release_batch=3
    assert ids(registry.store, "later") == [r.request_id for r in early] + [late.request_id]
    assert registry.holding.waiting() == {}


def test_over_quota_posts_wait_until_the_quota_is_raised(make):
    registry = make()
    first = req("q")
    registry.load([first])
    size = database_bytes(registry.store.path("q"))
    registry.load([settings("q", owner="ann", quota_mb=size / 2 / 1048576)])
    waiting = [req("q") for _ in range(4)]
    out = registry.load(waiting)["q"]
    assert out.held == 4 and ids(registry.store, "q") == [first.request_id]
    assert registry.holding.waiting() == {("q", "over_quota"): 4}
    # still over: a settings change that does not make room releases nothing
    registry.load([settings("q", description="still small")])
    assert registry.holding.waiting() == {("q", "over_quota"): 4}
    after = req("q")
    registry.load([settings("q", quota_mb=100), after])
    assert ids(registry.store, "q") == [first.request_id] + [r.request_id for r in waiting] + [
        after.request_id
    ]
    assert registry.holding.waiting() == {}


def test_a_quota_below_one_byte_holds_posts_and_stops_nothing(make):
    """quota_mb 1e-7 is above 0, so it is accepted: it must hold the posts, not divide by zero."""
    registry = make()
    registry.load([settings("tiny", owner="ann", quota_mb=1e-7)])
    out = registry.load([req("tiny"), req("other")])
    assert out["tiny"].held == 1 and out["tiny"].settings.used(out["tiny"].database_bytes) > 1
    assert len(ids(registry.store, "other")) == 1


def test_loading_a_batch_twice_changes_nothing(make):
    registry = make(auto_create=False)
    batch = [req("twice"), settings("twice", owner="ann"), req("twice"), settings("twice", type="xml")]
    registry.load(batch)
    snapshot = {t: ids(registry.store, "twice", t) for t in ("records", "rejects", "settings")}
    registry.load(batch)
    assert {t: ids(registry.store, "twice", t) for t in ("records", "rejects", "settings")} == snapshot
    assert len(snapshot["records"]) == 2 and len(snapshot["settings"]) == 1 and len(snapshot["rejects"]) == 1


def test_an_apex_settings_write_names_its_project_in_the_body(make):
    registry = make()
    create = req("", {"name": "named", "owner": "ann"}, uri="/_project")
    bad = req("", {"name": "Not A Name", "owner": "ann"}, uri="/_project")
    nameless = req("", {"owner": "ann"}, uri="/_project")
    registry.load([create, bad, nameless])
    assert registry.state("named").settings.owner == "ann"
    refused = dict(registry.holding.conn.execute("select _request_id, _reason from rejects"))
    assert "'Not A Name' is not a project name" in refused[bad.request_id]
    assert "'name' is required" in refused[nameless.request_id]


def test_a_name_in_the_body_must_match_the_host(make):
    registry = make()
    registry.load([req("host")])
    wrong = settings("host", name="other", owner="ann")
    registry.load([wrong])
    reason = rows(registry.store, "host", "select _reason from rejects")[0][0]
    assert "'name' is 'other', but this is the settings of 'host'" in reason


def test_deeply_nested_json_against_a_recursive_schema_does_not_crash(make):
    registry = make()
    schema = {
        "$defs": {"a": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#/$defs/a"}}]}}
    }
    schema["$ref"] = "#/$defs/a"
    deep_ok = b"[" * 1000 + b"1" + b"]" * 1000
    deep_bad = b"[" * 1000 + b'"x"' + b"]" * 1000
    too_deep = b"[" * 5000 + b"]" * 5000
    posts = [req("deep", body) for body in (deep_ok, deep_bad, too_deep)]
    registry.load([settings("deep", owner="ann", schema=schema), *posts])
    assert ids(registry.store, "deep") == [posts[0].request_id]
    reasons = dict(rows(registry.store, "deep", "select _request_id, _reason from rejects"))
    # whether jsonschema-rs can describe every error that deep or not: a reject that says why
    assert "the project's schema" in reasons[posts[1].request_id]
    assert reasons[posts[2].request_id].startswith("malformed JSON")


def test_state_is_read_afresh_so_a_replay_beside_the_daemon_is_seen(make, tmp_path):
    daemon_side, replay_side = make(), make()
    daemon_side.load([req("shared")])
    replay_side.load([settings("shared", owner="ann", type="json")])
    daemon_side.load([req("shared", b"plain", ctype="text/plain")])
    assert "type json" in rows(daemon_side.store, "shared", "select _reason from rejects")[0][0]


def test_an_apex_settings_write_cannot_create_a_reserved_name(make):
    registry = make()
    reserved = req("", {"name": "admin", "owner": "ann"}, uri="/_project")
    registry.load([reserved])
    assert not registry.store.exists("admin")
    refused = dict(registry.holding.conn.execute("select _request_id, _reason from rejects"))
    assert "'admin' is reserved and cannot be a project" in refused[reserved.request_id]


def test_a_stream_batch_loaded_again_after_a_crash_changes_nothing(make):
    """Stream posts and a truncation (issue 22) in one batch, loaded twice (the daemon died
    before its checkpoint): the truncated documents are not put back, nothing is twice."""
    registry = make()
    first = req("demo", b'[{"n": 0}, {"n": 1}, {"n": 2}]', uri="/stream/demo")
    cut = msgspec.structs.replace(
        req("demo", b"", uri="/stream/demo/1", ctype=""), method="DELETE", key="owner:abc"
    )
    after = req("demo", b'{"n": "new"}', uri="/stream/demo")
    registry.load([first, cut, after])
    dump = "select _id, _request_id, _body from records order by _id"
    records = rows(registry.store, "demo", dump)
    assert records == [
        (1, f"{first.request_id}-0", '{"n": 0}'),
        (2, after.request_id, '{"n": "new"}'),
    ]
    registry.load([first, cut, after])
    assert rows(registry.store, "demo", dump) == records
    assert ids(registry.store, "demo", "rejects") == [f"{first.request_id}-1", f"{first.request_id}-2"]
    assert rows(registry.store, "demo", "select _id, location, removed from stream_truncations") == [
        (1, 1, 2)
    ]


def test_paths_that_only_look_special_are_posts_and_special_ones_are_not(make):
    """Only ``/_project…``, ``/_kv…`` and ``/stream/…`` are asked whether they are more than
    a post: a path that merely resembles one is stored like any other, and the special
    ones still reach their handlers (a settings change, a key-value write)."""
    registry = make()
    lookalikes = ["/project", "/kv/a", "/stream", "/x/_project", "/_projects", "/_kvs", "/stream-x/1"]
    posts = [req("demo", uri=uri) for uri in lookalikes]
    registry.load(posts)
    assert rows(registry.store, "demo", "select _path from records order by _id") == [
        (u,) for u in lookalikes
    ]
    out = registry.load(
        [settings("demo", owner="ann@example.com"), req("demo", b"v1", "/_kv/b/k", "text/plain")]
    )
    assert out["demo"].settings_changed == 1
    assert registry.state("demo").settings.owner == "ann@example.com"
    assert rows(registry.store, "demo", "select count(*) from records") == [(len(lookalikes),)]
    assert rows(registry.store, "demo", "select _reason from rejects") == [
        ("key-value write not applied: POST is not a key-value write: PUT a value or DELETE it",)
    ]  # the key-value API's answer, not a record
