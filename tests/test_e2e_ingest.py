"""End to end: POST through the real nginx, loaded by the real ingestd, read back
through Datasette's JSON API. What a user sees is what is asserted."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import pytest

from ingestd.ingest.logline import parse_line

pytestmark = pytest.mark.e2e

LIMIT = 1048576


def body_bytes(value: str | dict) -> bytes:
    """A ``_body`` value from Datasette's JSON back to bytes (BLOBs come base64-encoded)."""
    if isinstance(value, dict):
        assert value["$base64"] is True
        return base64.b64decode(value["encoded"])
    return value.encode()


def accepted(response) -> str:
    """Assert a write was accepted the way the docs say, and return its request id."""
    assert response.status_code == 202, response.text
    answer = response.json()
    assert len(answer["id"]) == 32 and int(answer["id"], 16) >= 0
    assert response.headers["X-Request-Id"] == answer["id"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    return answer["id"]


# -- what gets stored ---------------------------------------------------------


def test_json_object_keys_become_columns(stack, project):
    body = b'{"user":"ann","score":3,"tags":["a","b"],"ok":true,"none":null}'
    response = stack.post(project, body, headers={"Content-Type": "application/json"})
    assert response.json()["project"] == project
    row = stack.wait_row(project, accepted(response))
    assert row["_body"] == body.decode()
    assert row["_kind"] == "json"
    assert (row["user"], row["score"], row["tags"], row["ok"], row["none"]) == (
        "ann",
        3,
        '["a","b"]',
        1,
        None,
    )
    assert row["_method"] == "POST" and row["_path"] == "/" and row["_size"] == len(body)
    assert row["_content_type"] == "application/json"
    # the columns are real columns: Datasette filters on them
    assert stack.rows(project, user="ann")[0]["_request_id"] == row["_request_id"]
    assert stack.rows(project, score__gt="2")[0]["_request_id"] == row["_request_id"]


def test_text_body_path_and_query(stack, project):
    rid = accepted(stack.post(project, "just some text", path="/notes?day=2"))
    row = stack.wait_row(project, rid)
    assert (row["_body"], row["_kind"], row["_path"], row["_query"]) == (
        "just some text",
        "text",
        "/notes",
        "day=2",
    )


def test_curl_default_form_type_with_plain_text_stays_text(stack, project):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    row = stack.wait_row(project, accepted(stack.post(project, "just some text", headers=headers)))
    assert row["_kind"] == "text"
    assert row["_body"] == "just some text"


def test_empty_body_and_delete(stack, project):
    empty = stack.wait_row(project, accepted(stack.post(project, b"")))
    assert (empty["_body"], empty["_size"], empty["_kind"]) == ("", 0, "empty")
    deleted = stack.wait_row(project, accepted(stack.request("DELETE", project, "/things/7")))
    assert (deleted["_method"], deleted["_path"]) == ("DELETE", "/things/7")
    put = stack.wait_row(project, accepted(stack.request("PUT", project, "/x", content=b"v")))
    assert (put["_method"], put["_body"]) == ("PUT", "v")


def test_unicode_is_stored_exactly(stack, project):
    text = "naïve café — 東京 🎉 \u2028 end"
    rid = accepted(stack.post(project, json.dumps({"greeting": text}, ensure_ascii=False).encode()))
    row = stack.wait_row(project, rid)
    assert row["greeting"] == text
    plain = stack.wait_row(project, accepted(stack.post(project, text.encode())))
    assert plain["_body"] == text


def test_all_256_byte_values_are_stored_byte_exact(stack, project):
    body = bytes(range(256)) * 3
    rid = accepted(stack.post(project, body, headers={"Content-Type": "application/octet-stream"}))
    row = stack.wait_row(project, rid)
    assert row["_kind"] == "binary"
    assert body_bytes(row["_body"]) == body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_of_exactly_the_limit_is_stored_whole(stack, project, chunked):
    body = os.urandom(LIMIT)
    content = iter([body[: LIMIT // 3], body[LIMIT // 3 :]]) if chunked else body
    response = stack.post(project, content, headers={"Content-Type": "application/octet-stream"})
    row = stack.wait_row(project, accepted(response))
    assert row["_size"] == LIMIT
    assert hashlib.sha256(body_bytes(row["_body"])).digest() == hashlib.sha256(body).digest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_one_byte_over_the_limit_is_refused_and_not_logged(stack, project, chunked):
    body = os.urandom(LIMIT + 1)
    content = iter([body[:1000], body[1000:]]) if chunked else body
    lines_before = len(stack.log_lines())
    response = stack.post(project, content)
    assert response.status_code == 413
    assert response.json() == {"error": "body too large", "limit_bytes": LIMIT}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    # a later write is logged and loaded, the refused one never was
    after = stack.wait_row(project, accepted(stack.post(project, "after")))
    assert after["_body"] == "after"
    new_lines = stack.log_lines()[lines_before:]
    assert all(line["id"] != "" and line["status"] == "202" for line in new_lines)
    assert len(stack.rows(project)) == 1


def test_form_post_fields_become_columns(stack, project):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    row = stack.wait_row(project, accepted(stack.post(project, "name=ann&age=31&x=", headers=headers)))
    assert (row["_kind"], row["name"], row["age"], row["x"]) == ("form", "ann", "31", "")


def test_multipart_fields_and_files(stack, project):
    png = bytes(range(256)) + b"\r\n--not-a-boundary\r\n" + os.urandom(2048)
    response = stack.request(
        "POST",
        project,
        files={"file": ("photo.png", png, "image/png")},
        data={"caption": "hi"},
    )
    row = stack.wait_row(project, accepted(response))
    assert (row["_kind"], row["caption"], row["file"]) == ("multipart", "hi", "photo.png")
    [stored] = stack.rows(project, "files", record_id=str(row["_id"]))
    assert (stored["field"], stored["filename"], stored["content_type"]) == ("file", "photo.png", "image/png")
    assert body_bytes(stored["content"]) == png


def test_twenty_projects_created_on_the_fly(stack):
    names = [f"fly-{i:02d}-{os.getpid() % 1000}" for i in range(20)]
    ids = {name: accepted(stack.post(name, json.dumps({"n": i}))) for i, name in enumerate(names)}
    for i, name in enumerate(names):
        assert stack.wait_row(name, ids[name])["n"] == i
    assert set(names) <= stack.databases()
    assert (stack.home / "data" / f"{names[0]}.db").is_file()


def test_project_created_after_datasette_started(stack, project):
    assert project not in stack.databases()
    row = stack.wait_row(project, accepted(stack.post(project, "late")))
    assert row["_body"] == "late"
    assert project in stack.databases()
    # and the list of every project has it (Datasette's own index is not served: it
    # would show a private project's row counts)
    index = stack.request("GET", None, "/_projects.json").json()
    assert project in {entry["project"] for entry in index}


def test_project_page_shows_records_newest_first(stack, project):
    first = accepted(stack.post(project, "first"))
    second = accepted(stack.post(project, "second"))
    stack.wait_row(project, second)
    stack.wait_row(project, first)
    page = stack.request("GET", project, "/")
    assert page.status_code == 200
    assert "Records, newest first" in page.text
    # each row carries its request id: the second post's row comes first
    assert page.text.index(f'data-request-id="{second}"') < page.text.index(f'data-request-id="{first}"')


# -- bad input gets a clear answer and nothing is lost --------------------------


@pytest.mark.parametrize("host", ["Bad_Name", "-dash", "dash-", "a" * 64, "a.b"])
def test_invalid_project_host_is_refused_with_json(stack, host):
    response = stack.client.post(stack.url("/"), headers={"Host": f"{host}.localhost"}, content=b"x")
    assert response.status_code == 400
    assert response.json()["error"] == "not a SmallTable project host"
    assert "lowercase letters, digits or dashes" in response.json()["expected"]


def test_uppercase_host_is_the_lowercase_project(stack, project):
    response = stack.client.post(
        stack.url("/"), headers={"Host": f"{project.upper()}.localhost"}, content=b"x"
    )
    assert response.json()["project"] == project
    stack.wait_row(project, accepted(response))


def test_malformed_json_is_kept_in_rejects_with_the_reason(stack, project):
    response = stack.post(project, b'{"user": ann}', headers={"Content-Type": "application/json"})
    row = stack.wait_row(project, accepted(response), table="rejects")
    assert row["_reason"].startswith("malformed JSON")
    assert row["_body"] == '{"user": ann}'
    assert stack.rows(project) == []


def test_cors_preflight(stack, project):
    response = stack.request(
        "OPTIONS",
        project,
        "/any/path",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_unparsable_log_line_goes_to_dead_letter_and_ingest_goes_on(fresh_stack, project):
    """(A stack of its own: a line that is not JSON in the shared log would break every
    test reading that log after it.)"""
    stack = fresh_stack
    garbage = b"this is not a log line \xff\n"
    with open(stack.ingest_log, "ab") as log:
        log.write(garbage)
    rid = accepted(stack.post(project, "still loading"))
    assert stack.wait_row(project, rid)["_body"] == "still loading"
    dead = stack.home / "state" / "deadletter.ndjson"
    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    [entry] = [e for e in entries if e["line"].startswith("this is not a log line")]
    assert entry["error"].startswith("not JSON")
    assert entry["end"] - entry["start"] == len(garbage)
    assert entry["file"].endswith("ingest.log")


def test_body_not_captured_whole_is_rejected_never_stored_empty(fresh_stack, project):
    """nginx logs an empty $request_body when a body spilled to a temp file; the
    daemon must see the mismatch with the logged length. The line is written the
    way nginx would have written it for such a request, after a real one (on a stack
    of its own: the shared log holds only what nginx wrote)."""
    stack = fresh_stack
    stack.wait_row(project, accepted(stack.post(project, "a real write first")))
    real = parse_line(stack.ingest_log.read_bytes().splitlines()[-1])
    rid = "f" * 32
    line = {
        "v": 1,
        "t": time.time(),
        "rt": 0.001,
        "id": rid,
        "project": project,
        "method": "POST",
        "uri": "/",
        "ctype": "image/png",
        "clen": "5000",
        "addr": real.remote_addr,
        "ua": "curl",
        "status": "202",
        "body": "",
    }
    with open(stack.ingest_log, "ab") as log:
        log.write(json.dumps(line).encode() + b"\n")
    row = stack.wait_row(project, rid, table="rejects")
    assert row["_reason"] == "body not captured whole: the log holds 0 of 5000 bytes"
    assert [r["_body"] for r in stack.rows(project)] == ["a real write first"]


@pytest.mark.parametrize("path", ["/", "/{project}/records.json", "/_stream/1-", "/_stats.json"])
def test_cors_header_is_sent_exactly_once_on_reads(stack, project, path):
    """Browsers reject a doubled Access-Control-Allow-Origin: nginx alone sends it."""
    stack.wait_row(project, accepted(stack.post(project, b'{"a":1}')))
    response = stack.request("GET", project, path.format(project=project))
    assert response.status_code == 200
    assert response.headers.get_list("Access-Control-Allow-Origin") == ["*"]
