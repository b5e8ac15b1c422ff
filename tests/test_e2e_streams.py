"""Stream ranges, exports, the project list and the live tail, through nginx as a client sees them."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from ingestd.web.rowstream import CHUNK_ROWS

from .conftest import Stack

pytestmark = pytest.mark.e2e

BIG = 1500  # more than Datasette's 1000-row cap and than one chunk of the streams


def post_json(stack: Stack, project: str, value: object) -> str:
    response = stack.post(project, json.dumps(value), headers={"Content-Type": "application/json"})
    assert response.status_code == 202
    return response.json()["id"]


def wait_loaded(stack: Stack, project: str, last_id: int, timeout: float = 20) -> dict:
    """The project's ``/_stream/`` summary once its stream reaches ``last_id``."""
    deadline = time.monotonic() + timeout
    while True:
        response = stack.request("GET", project, "/_stream/")
        if response.status_code == 200 and response.json()["last_id"] >= last_id:
            return response.json()
        assert time.monotonic() < deadline, f"{project} did not reach _id {last_id}: {response.text}"
        time.sleep(0.05)


def ids(items: list[dict]) -> list[int]:
    return [item["_id"] for item in items]


def ndjson(response: httpx.Response) -> list[dict]:
    assert response.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.fixture(scope="module")
def big(stack: Stack) -> str:
    """A project of BIG records, posted over one keep-alive connection."""
    name = "streams-big"
    for n in range(1, BIG + 1):
        post_json(stack, name, {"n": n, "user": f"u{n % 7}", "note": "x" * (n % 50)})
    wait_loaded(stack, name, BIG)
    return name


@pytest.fixture(scope="module")
def five(stack: Stack) -> str:
    """A project of five JSON records: n = 1..5; only record 2 has a ``tag``."""
    name = "streams-five"
    for n in range(1, 6):
        post_json(stack, name, {"n": n, **({"tag": "two"} if n == 2 else {})})
    wait_loaded(stack, name, 5)
    return name


def test_stream_ranges(stack, five):
    whole = stack.request("GET", five, "/_stream/1-5")
    assert whole.headers["content-type"] == "application/json; charset=utf-8"
    records = whole.json()
    assert ids(records) == [1, 2, 3, 4, 5]
    assert [r["n"] for r in records] == [1, 2, 3, 4, 5]
    assert records[1]["tag"] == "two" and "tag" not in records[0]  # NULL user columns are left out
    assert records[0]["_kind"] == "json" and json.loads(records[0]["_body"]) == {"n": 1}

    assert ids(stack.request("GET", five, "/_stream/2-4").json()) == [2, 3, 4]
    assert ids(stack.request("GET", five, "/_stream/3-").json()) == [3, 4, 5]
    assert ids(stack.request("GET", five, "/_stream/4-4").json()) == [4]
    assert ids(stack.request("GET", five, "/_stream/4-99").json()) == [4, 5]
    assert ids(ndjson(stack.request("GET", five, "/_stream/2-3.ndjson"))) == [2, 3]
    negotiated = stack.request("GET", five, "/_stream/1-", headers={"Accept": "application/x-ndjson"})
    assert ndjson(negotiated) == records
    assert stack.request("GET", five, "/_stream/5-5.json").json() == records[4:]
    for past_the_end in ("/_stream/6-", "/_stream/10-20", "/_stream/6-.ndjson"):
        response = stack.request("GET", five, past_the_end)
        assert response.status_code == 200 and response.text.strip() in ("[]", "")


def test_stream_summary(stack, five):
    summary = stack.request("GET", five, "/_stream/").json()
    assert summary["project"] == five and summary["records"] == 5 and summary["last_id"] == 5
    assert summary["url"] == f"http://{stack.host(five)}/"


BAD_RANGES = ["5-2", "abc", "1-2-3", "1.5-2", "-5", "5", "99999999999999999999-", "1-x.csv"]


@pytest.mark.parametrize("bad", BAD_RANGES)
def test_bad_ranges_are_400_saying_what_is_expected(stack, five, bad):
    response = stack.request("GET", five, f"/_stream/{bad}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert "START-END" in response.json()["expected"]


def test_a_project_with_no_records_is_a_json_404(stack):
    for path in ("/_stream/1-", "/_export.csv", "/_stream/"):
        response = stack.request("GET", "never-posted-to", path)
        assert response.status_code == 404
        assert "POST something" in response.json()["error"]


def test_export_of_more_than_1000_records_in_every_format(stack, big):
    as_json = stack.request("GET", big, "/_export.json")
    assert as_json.headers["content-disposition"] == f'attachment; filename="{big}.json"'
    records = as_json.json()
    assert ids(records) == list(range(1, BIG + 1))
    assert [r["n"] for r in records] == list(range(1, BIG + 1))

    lines = stack.request("GET", big, "/_export.ndjson")
    assert lines.headers["content-disposition"] == f'attachment; filename="{big}.ndjson"'
    assert ndjson(lines) == records

    as_csv = stack.request("GET", big, "/_export.csv")
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"] == f'attachment; filename="{big}.csv"'
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["_id"]) for r in rows] == list(range(1, BIG + 1))
    assert [r["note"] for r in rows] == [r.get("note", "") for r in records]

    assert ids(stack.request("GET", big, f"/_stream/{BIG - 1}-").json()) == [BIG - 1, BIG]
    assert len(stack.request("GET", big, "/_stream/1-").json()) == BIG


def test_csv_round_trips_values(stack, project):
    values = [
        {"text": 'comma, "quotes"\nand a newline', "int": -7, "float": 0.1, "big": 2**62},
        {"text": "ünïcödé ✓", "nested": {"a": [1, 2]}, "flag": True, "none": None},
    ]
    for value in values:
        post_json(stack, project, value)
    binary = bytes(range(256))
    stack.post(project, binary, headers={"Content-Type": "application/octet-stream"})
    stack.post(project, "not base64, just text")
    wait_loaded(stack, project, 4)
    records = stack.request("GET", project, "/_stream/1-").json()
    rows = list(csv.DictReader(io.StringIO(stack.request("GET", project, "/_export.csv").text)))
    assert len(rows) == 4
    for record, row in zip(records, rows, strict=True):
        for column, value in record.items():
            if isinstance(value, dict):  # a BLOB: base64 in both, flagged in _base64
                assert row[column] == value["encoded"] and json.loads(row["_base64"]) == [column]
            else:
                assert row[column] == ("" if value is None else str(value)), column
    assert base64.b64decode(rows[2]["_body"]) == binary
    assert rows[3]["_body"] == "not base64, just text" and rows[3]["_base64"] == ""
    assert float(rows[0]["float"]) == 0.1 and int(rows[0]["big"]) == 2**62
    assert json.loads(rows[1]["nested"]) == {"a": [1, 2]} and rows[1]["flag"] == "1"


def test_rejects_export(stack, project):
    post_json(stack, project, {"ok": 1})
    for body in ("{broken", "[1,"):
        stack.post(project, body, headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + 10
    while len(stack.rows(project, "rejects")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = stack.request("GET", project, "/_export.csv", params={"table": "rejects"})
    assert response.headers["content-disposition"] == f'attachment; filename="{project}-rejects.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["_body"] for r in rows] == ["{broken", "[1,"]
    assert all(r["_reason"].startswith("malformed JSON:") for r in rows)
    rejects = stack.request("GET", project, "/_export.json", params={"table": "rejects"}).json()
    assert [r["_body"] for r in rejects] == ["{broken", "[1,"]
    bad = stack.request("GET", project, "/_export.csv", params={"table": "files"})
    assert bad.status_code == 400 and "rejects" in bad.json()["expected"]
    assert stack.request("GET", project, "/_export.xml").status_code == 400


def test_projects_json_lists_every_project(stack, five, project):
    post_json(stack, project, {"a": 1})
    stack.post(project, "{nope", headers={"Content-Type": "application/json"})
    post_json(stack, project, {"a": 2})
    wait_loaded(stack, project, 2)
    deadline = time.monotonic() + 10
    while True:
        listing = {p["project"]: p for p in stack.request("GET", None, "/_projects.json").json()}
        if listing[project]["rejects"] == 1:
            break
        assert time.monotonic() < deadline, listing[project]
        time.sleep(0.05)
    mine = listing[project]
    last = stack.request("GET", project, "/_stream/2-2").json()[0]
    assert mine["records"] == 2 and mine["last_id"] == 2
    assert mine["url"] == f"http://{stack.host(project)}/"
    assert mine["last_post"] >= last["_received"]
    assert mine["size_bytes"] > 0
    assert listing[five]["records"] == 5 and listing[five]["rejects"] == 0
    assert list(listing) == sorted(listing)


class Tail:
    """An open ``/_tail`` read with httpx's streaming, event by event."""

    def __init__(self, stack: Stack, project: str, headers: dict | None = None, query: str = "") -> None:
        self.stack = stack
        self.context = stack.client.stream(
            "GET",
            stack.url("/_tail" + query),
            headers={"Host": stack.host(project), **(headers or {})},
            timeout=httpx.Timeout(10),
        )
        self.response = self.context.__enter__()
        self.lines: Iterator[str] = self.response.iter_lines()
        self.greeting = next(self.lines)  # sent once the starting point is known

    def events(self, count: int) -> list[tuple[int, dict]]:
        """The next ``count`` record events as (id, record)."""
        out, fields = [], {}
        for line in self.lines:
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
            elif "id" in fields:
                assert fields["event"] == "record"
                out.append((int(fields["id"]), json.loads(fields["data"])))
                fields = {}
                if len(out) == count:
                    return out
        raise AssertionError(f"the tail ended after {out}")

    def close(self) -> None:
        self.context.__exit__(None, None, None)


def test_tail_is_server_sent_events_from_the_current_end(stack, project):
    post_json(stack, project, {"before": 1})
    wait_loaded(stack, project, 1)
    tail = Tail(stack, project)
    try:
        assert tail.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert tail.response.headers["cache-control"] == "no-cache"
        assert tail.greeting == f": {project}: records after 1, as they are loaded"
        for n in range(2, 22):  # posted after the connection opened
            rid = post_json(stack, project, {"after": n})
            [(event_id, record)] = tail.events(1)
            assert event_id == record["_id"] == n and record["_request_id"] == rid
        # how soon each event comes (and that none waits for the 2 s recheck) is measured
        # by bench/read_side.py
    finally:
        tail.close()


def test_a_dropped_tail_resumes_with_last_event_id_without_gap_or_repeat(stack, project):
    for n in range(1, 4):
        post_json(stack, project, {"n": n})
    wait_loaded(stack, project, 1)  # a tail needs the project to exist
    tail = Tail(stack, project, query="?after=0")
    seen = tail.events(3)
    tail.close()
    assert [i for i, _ in seen] == [1, 2, 3]
    for n in range(4, 8):  # while nobody listens
        post_json(stack, project, {"n": n})
    # ?after is the original URL's; the header is what EventSource sends on reconnect, and wins.
    tail = Tail(stack, project, headers={"Last-Event-ID": str(seen[-1][0])}, query="?after=0")
    try:
        resumed = tail.events(4)
        post_json(stack, project, {"n": 8})
        resumed += tail.events(1)
    finally:
        tail.close()
    assert [i for i, _ in resumed] == [4, 5, 6, 7, 8]
    assert [record["n"] for _, record in seen + resumed] == list(range(1, 9))


def test_a_tail_resumes_across_more_missed_records_than_one_chunk(stack, project):
    """More records missed than the tail reads at once (``CHUNK_ROWS``): every one
    comes, in order, once, across the chunk boundaries, and then the live ones."""
    missed = CHUNK_ROWS + 205
    post_json(stack, project, {"n": 1})
    wait_loaded(stack, project, 1)  # a tail follows a project that exists
    tail = Tail(stack, project, query="?after=0")
    [(first, _)] = tail.events(1)
    tail.close()
    for n in range(2, missed + 2):  # while nobody listens
        post_json(stack, project, {"n": n})
    wait_loaded(stack, project, missed + 1)
    tail = Tail(stack, project, headers={"Last-Event-ID": str(first)})
    try:
        assert tail.greeting == f": {project}: records after 1, as they are loaded"
        resumed = tail.events(missed)
        post_json(stack, project, {"n": missed + 2})
        resumed += tail.events(1)
    finally:
        tail.close()
    assert [i for i, _ in resumed] == list(range(2, missed + 3))
    assert [record["n"] for _, record in resumed] == list(range(2, missed + 3))


def test_a_tail_of_a_project_that_does_not_exist_is_404(stack, project):
    """A tail cannot hold a connection open for a name nobody posts to."""
    with stack.client.stream("GET", stack.url("/_tail"), headers={"Host": stack.host(project)}) as response:
        assert response.status_code == 404  # (a stream would be 200, and never end)
        response.read()
    assert response.json() == {
        "error": f"no project {project!r}",
        "project": project,
        "fix": "post to it first: a tail follows a project that exists",
    }


def test_a_bad_resume_point_is_400(stack, project):
    for headers, query in (({"Last-Event-ID": "abc"}, ""), ({}, "?after=-3")):
        response = stack.request("GET", project, "/_tail" + query, headers=headers)
        assert response.status_code == 400 and "Last-Event-ID" in response.json()["expected"]


def open_tails(stack: Stack) -> int:
    """How many tails Datasette is serving: each runs in a task named after it until it ends.
    (Asked of Datasette itself: nginx keeps its /-/ pages from the public.)"""
    threads = stack.client.get(f"http://127.0.0.1:{stack.datasette_port}/-/threads.json").json()
    return sum("name='smalltable-tail:" in task for task in threads["tasks"])


def test_a_closed_tail_leaves_nothing_running(stack, project):
    post_json(stack, project, {"n": 1})
    wait_loaded(stack, project, 1)
    before = open_tails(stack)
    tails = [Tail(stack, project) for _ in range(3)]
    assert open_tails(stack) == before + 3
    for tail in tails:
        tail.close()
    deadline = time.monotonic() + 5
    while open_tails(stack) != before:
        assert time.monotonic() < deadline, "a tail kept polling after its client left"
        time.sleep(0.05)


def test_stopping_datasette_ends_open_tails_at_once(fresh_stack, project):
    """uvicorn waits for open responses before it exits: a tail must end when asked to stop."""
    post_json(fresh_stack, project, {"n": 1})
    wait_loaded(fresh_stack, project, 1)
    datasette = fresh_stack.datasette_pid()
    url = f"http://127.0.0.1:{fresh_stack.datasette_port}/-/smalltable/p/{project}/_tail"
    with httpx.stream("GET", url, timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines).endswith("records after 1, as they are loaded")
        stopped = time.monotonic()
        os.kill(datasette, signal.SIGTERM)
        rest = [line for line in lines if line]  # ends only when the response is complete
    assert rest == [": the server is restarting: resume with Last-Event-ID: 1"]
    assert time.monotonic() - stopped < 2
