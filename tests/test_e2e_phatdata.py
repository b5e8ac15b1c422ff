"""The PhatData stream API on the apex (issue 22, docs/streams.md), through the real stack.

Topic = project; location L = record L+1. Writes are logged by nginx and applied
by ingestd in log order; each test waits for a write's status with the status URL.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time

import httpx
import pytest

from ingestd.store.schema import open_database
from ingestd.support.timefmt import iso_time

from .conftest import Stack, smalltable
from .keyslib import bearer, claim, lines_of, make_key, until, wait_owned
from .test_e2e_limits import peak_memory_kib
from .test_e2e_projects import JSON, configure, status

pytestmark = pytest.mark.e2e


def post(stack: Stack, topic: str, body: bytes | str, headers: dict | None = None):
    """A stream post to the apex; its 202 answer."""
    answer = stack.request("POST", None, f"/stream/{topic}", content=body, headers=headers or JSON)
    assert answer.status_code == 202, answer.text
    return answer


def applied(stack: Stack, topic: str, answer) -> dict:
    """The write's status once ingestd has applied it (polled at its status URL)."""
    return status(stack, topic, answer)


def read(stack: Stack, path: str, **kwargs):
    return stack.request("GET", None, path, **kwargs)


# -- 1. posting documents ------------------------------------------------------


def test_a_post_answers_202_with_id_and_status_url_which_says_the_location(stack, project):
    first = post(stack, project, b'{"foo":"bar"}')
    assert set(first.json()) >= {"id", "status_url"}
    assert first.headers["Location"] == first.json()["status_url"]
    assert applied(stack, project, first)["location"] == 0
    second = post(stack, project, b'{"foo": "baz"}\n')
    done = applied(stack, project, second)
    assert done["status"] == "stored" and done["location"] == 1
    # Location L is record L+1: the project's own pages show the same document.
    page = stack.request("GET", project, "/2/raw")
    assert page.content == b'{"foo": "baz"}\n'
    assert stack.request("GET", project, "/_stream/2-2").json()[0]["foo"] == "baz"


def test_an_array_of_100_documents_lands_at_100_consecutive_locations(stack, project):
    applied(stack, project, post(stack, project, b'{"n": -1}'))
    documents = [json.dumps({"n": n, "pad": " " * (n % 3)}, separators=(", ", ": ")) for n in range(100)]
    answer = post(stack, project, ("[" + ",\n ".join(documents) + "]").encode())
    done = applied(stack, project, answer)
    assert done["status"] == "stored"
    assert done["location_list"] == list(range(1, 101))
    for location in (1, 50, 100):  # each document as its exact bytes in the array
        assert read(stack, f"/stream/{project}/{location}").text == documents[location - 1]
    rows = stack.rows(project, _sort="_id", _col="n")
    assert [row["n"] for row in rows] == list(range(-1, 100))


def test_a_post_that_is_not_json_or_breaks_the_projects_rules_is_rejected_whole(stack, project):
    text = applied(stack, project, post(stack, project, b"hello", headers={"Content-Type": "text/plain"}))
    assert text["status"] == "rejected" and "must be JSON" in text["reason"]
    empty = applied(stack, project, post(stack, project, b"[]"))
    assert empty["status"] == "rejected" and "empty array" in empty["reason"]
    schema = {"type": "object", "required": ["n"]}
    claimed = configure(stack, project, owner="ann@example.com", type="json", schema=schema)
    assert claimed["status"] == "applied"
    mixed = applied(stack, project, post(stack, project, b'[{"n": 1}, 3, {"n": 2}]'))
    assert mixed["status"] == "rejected"
    assert mixed["reason"].startswith("document 1 of the array (nothing of the post is stored)")
    assert "schema" in mixed["reason"]
    good = applied(stack, project, post(stack, project, b'[{"n": 1}, {"n": 2}]'))
    assert good["location_list"] == [0, 1]  # the rejected posts took no location


def test_concurrent_posts_to_one_topic_leave_no_gap_and_no_duplicate(stack, project):
    answers: list = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        for k in range(20):
            body = json.dumps([{"w": number, "k": k}] * (1 + k % 3) if k % 2 else {"w": number, "k": k})
            answer = post(stack, project, body)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    locations: list[int] = []
    for answer in answers:
        done = applied(stack, project, answer)
        locations += done["location_list"] if "location_list" in done else [done["location"]]
    assert sorted(locations) == list(range(len(locations)))
    meta = read(stack, f"/stream/{project}").json()
    assert meta[0]["count"] == meta[0]["next"] == len(locations)


# -- 2. reading ----------------------------------------------------------------


def documents_posted(stack: Stack, topic: str, documents: list[bytes]) -> list[int]:
    """Post each document; their locations, once applied."""
    answers = [post(stack, topic, document) for document in documents]
    return [applied(stack, topic, answer)["location"] for answer in answers]


ODD = [b'{"foo":"bar"}', b' {"a": [1, 2]}\n', b'"caf\xc3\xa9"', b"12345678901234567890123", b'{"b":{}}']
"""Documents whose exact bytes a re-encoding would change (spaces, UTF-8, a big number)."""


def test_documents_are_read_as_their_exact_bytes_alone_or_in_ranges(stack, project):
    assert documents_posted(stack, project, ODD) == [0, 1, 2, 3, 4]
    for location, document in enumerate(ODD):
        answer = read(stack, f"/stream/{project}/{location}")
        assert answer.status_code == 200 and answer.content == document
        assert answer.headers["X-Stream-Epoch"] == "0"
    whole = read(stack, f"/stream/{project}/0-4")
    assert whole.headers["content-type"] == "application/json; charset=utf-8"
    assert whole.headers["X-Stream-Epoch"] == "0"
    assert whole.content == b"[" + b",".join(ODD) + b"]\n"
    assert whole.json() == [json.loads(document) for document in ODD]
    assert read(stack, f"/stream/{project}/1-2").json() == [{"a": [1, 2]}, "café"]
    assert read(stack, f"/stream/{project}/3-").json() == [12345678901234567890123, {"b": {}}]
    assert read(stack, f"/stream/{project}/3-99").json() == [12345678901234567890123, {"b": {}}]  # to the end
    assert read(stack, f"/stream/{project}/5-").json() == []  # nothing new yet


def test_records_posted_to_the_projects_own_host_are_documents_too(stack, project):
    documents_posted(stack, project, [b'{"n": 0}'])
    for body, headers in ((b"plain text", {"Content-Type": "text/plain"}), (b"\x89PNG\x00\xff", {})):
        stack.wait_row(project, stack.post(project, body, headers=headers).json()["id"])
    assert read(stack, f"/stream/{project}/1").content == b"plain text"
    assert read(stack, f"/stream/{project}/2").content == b"\x89PNG\x00\xff"
    assert read(stack, f"/stream/{project}/0-").json() == [
        {"n": 0},
        "plain text",
        {"base64": base64.b64encode(b"\x89PNG\x00\xff").decode()},
    ]


def test_bad_locations_and_ranges_are_json_errors(stack, project):
    documents_posted(stack, project, [b'{"n": 0}', b'{"n": 1}'])
    cases = {
        f"/stream/{project}/2": (404, "no document at location 2: the topic's next location is 2"),
        f"/stream/{project}/2-3": (404, "no document at location 2"),
        f"/stream/{project}/3-": (404, "no document at location 3"),
        f"/stream/{project}/1-0": (400, "the range ends before it starts: 1-0"),
        f"/stream/{project}/x": (400, "not a location or range: 'x'"),
        f"/stream/{project}/1-2-3": (400, "not a location or range"),
        "/stream/no-such-topic-here": (404, "no topic 'no-such-topic-here'"),
        "/stream/no-such-topic-here/0-": (404, "no topic"),
        "/stream/Not_A_Name": (404, "no topic 'Not_A_Name': not a project name"),
    }
    for path, (code, error) in cases.items():
        answer = read(stack, path)
        assert answer.status_code == code, (path, answer.text)
        assert answer.json()["error"].startswith(error), (path, answer.text)
    put = stack.request("PUT", None, f"/stream/{project}", content=b"{}")
    assert put.status_code == 405 and "not a stream write" in put.json()["error"]
    preflight = stack.request("OPTIONS", None, f"/stream/{project}/0")  # a browser's, before a DELETE
    assert preflight.status_code == 204 and "DELETE" in preflight.headers["Access-Control-Allow-Methods"]


def test_topics_list_public_projects_with_size_and_count(stack, project):
    documents_posted(stack, project, [b'{"n": 0}', b'{"n": 10}'])
    meta = [{"topic": project, "size": 17, "count": 2, "epoch": 0, "first": 0, "next": 2}]
    assert read(stack, f"/stream/{project}").json() == meta
    assert meta[0] in read(stack, "/stream/").json()
    private = f"{project[:50]}-private"
    owner = claim(stack, private)
    applied(stack, private, post(stack, private, b'{"secret": 1}'))
    wait_owned(stack, private)
    turned = stack.post(private, b'{"read": "private", "now": true}', path="/_project", headers=bearer(owner))
    assert status(stack, private, turned)["status"] == "applied"
    until(lambda: read(stack, f"/stream/{private}").status_code == 401)
    assert private not in {t["topic"] for t in read(stack, "/stream/").json()}
    for path in (f"/stream/{private}", f"/stream/{private}/0", f"/stream/{private}/0-"):
        assert read(stack, path).status_code == 401
        assert read(stack, path, headers=bearer(owner)).status_code == 200
    assert read(stack, f"/stream/{private}/0", headers=bearer(owner)).content == b'{"secret": 1}'


MILLION = 1_000_000
DOCUMENT_BYTES = 100


def million_documents(path) -> None:
    """A project of MILLION documents of DOCUMENT_BYTES each (``{"n":N}`` padded with spaces),
    written straight into its database (the real schema) by SQLite itself: the loader is not
    what is measured, and a Python loop would take most of the test's time. Received now, so
    that retention leaves them alone."""
    conn = open_database(path, sync_commits=False)
    with conn:
        conn.execute(
            "WITH RECURSIVE n(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM n WHERE n < ?) "
            "INSERT INTO records (_request_id, _received, _method, _path, _size, _kind, _body) "
            "SELECT printf('%032x', n), ?, 'POST', '/', ?, 'json', "
            "printf('%-' || ? || 's', '{\"n\":' || n || '}') FROM n",
            (MILLION - 1, iso_time(time.time()), DOCUMENT_BYTES, DOCUMENT_BYTES),
        )
    conn.close()


def test_a_range_of_a_million_documents_streams_in_constant_memory(fresh_stack, project):
    """Read whole, Datasette's memory does not grow with the range; a truncation applied
    while a range is being sent cuts it short (no closing bracket): never two epochs in one."""
    owner = claim(fresh_stack, project)
    wait_owned(fresh_stack, project)
    million_documents(fresh_stack.home / "data" / f"{project}.db")
    pid = fresh_stack.datasette_pid()
    assert read(fresh_stack, f"/stream/{project}").json()[0]["count"] == MILLION
    before = peak_memory_kib(pid)
    received, commas, head, tail = 0, 0, b"", b""
    url, headers = fresh_stack.url(f"/stream/{project}/0-"), {"Host": fresh_stack.host(None)}
    with fresh_stack.client.stream("GET", url, headers=headers) as answer:
        assert answer.status_code == 200
        for piece in answer.iter_bytes():
            received += len(piece)
            commas += piece.count(b",")
            head += piece[: 200 - len(head)]
            tail = (tail + piece)[-200:]
    assert received == MILLION * (DOCUMENT_BYTES + 1) + 2  # each document, a comma or "[", "]\n"
    assert commas == MILLION - 1
    assert head.startswith(b'[{"n":0} ') and tail.endswith(b'{"n":999999}'.ljust(DOCUMENT_BYTES) + b"]\n")
    grown_mib = (peak_memory_kib(pid) - before) / 1024
    assert grown_mib < 40, f"Datasette grew {grown_mib:.0f} MiB sending {received >> 20} MiB"
    with fresh_stack.client.stream("GET", url, headers=headers) as answer:
        pieces = answer.iter_bytes()
        cut_short = [next(pieces)]
        cut = truncate(fresh_stack, project, 10, owner)
        assert applied(fresh_stack, project, cut)["epoch"] == 1
        with pytest.raises(httpx.RemoteProtocolError):  # the body stops before its end
            for piece in pieces:
                cut_short.append(piece)
    assert not b"".join(cut_short).endswith(b"]\n")
    assert len(b"".join(cut_short)) < MILLION * DOCUMENT_BYTES


# -- 3. truncation and epochs --------------------------------------------------


def truncate(stack: Stack, topic: str, location: int, key: str | None):
    headers = bearer(key) if key else {}
    return stack.request("DELETE", None, f"/stream/{topic}/{location}", headers=headers)


def claimed_topic(stack: Stack, topic: str, documents: int) -> str:
    """Claim ``topic`` and post ``documents`` documents ``{"n": 0}``, … to it; its owner key."""
    owner = claim(stack, topic)
    wait_owned(stack, topic)
    body = json.dumps([{"n": n} for n in range(documents)])
    assert applied(stack, topic, post(stack, topic, body))["location_list"] == list(range(documents))
    return owner


def test_truncation_lets_the_next_posts_reuse_locations_under_a_new_epoch(stack, project):
    owner = claimed_topic(stack, project, 10)
    cut = truncate(stack, project, 4, owner)
    assert cut.status_code == 202 and set(cut.json()) >= {"id", "status_url"}
    done = applied(stack, project, cut)
    assert (done["status"], done["action"], done["location"], done["epoch"], done["removed"]) == (
        "applied",
        "truncated",
        4,
        1,
        6,
    )
    again = [post(stack, project, json.dumps({"again": n})) for n in range(3)]
    assert [applied(stack, project, answer)["location"] for answer in again] == [4, 5, 6]
    meta = read(stack, f"/stream/{project}")
    assert meta.json()[0] | {"size": 0} == {
        "topic": project,
        "size": 0,
        "count": 7,
        "epoch": 1,
        "first": 0,
        "next": 7,
    }
    for path in ("", "/4", "/0-", "/2-5", "/99"):  # every read says the epoch
        assert read(stack, f"/stream/{project}{path}").headers["X-Stream-Epoch"] == "1", path
    assert read(stack, f"/stream/{project}/3-").json() == [{"n": 3}, {"again": 0}, {"again": 1}, {"again": 2}]
    for path in ("", "/4", "/0-"):
        stale = read(stack, f"/stream/{project}{path}", params={"epoch": "0"})
        assert stale.status_code == 409, path
        assert stale.json()["epoch"] == 1 and "truncated" in stale.json()["error"]
        assert read(stack, f"/stream/{project}{path}", params={"epoch": "1"}).status_code == 200
    # Nothing accepted is lost: the removed documents are in rejects, saying where they were.
    removed = stack.rows(project, "rejects", _sort="_id")
    assert [row["_body"] for row in removed] == [json.dumps({"n": n}) for n in range(4, 10)]
    assert removed[0]["_reason"] == f"removed from location 4 by truncation {cut.json()['id']} (epoch 1)"
    second = applied(stack, project, truncate(stack, project, 7, owner))  # at the end: removes nothing
    assert (second["epoch"], second["removed"]) == (2, 0)


def test_truncation_needs_the_owner_key_and_a_location_the_topic_holds(stack, project):
    unclaimed = f"{project[:50]}-open"
    documents_posted(stack, unclaimed, [b'{"n": 0}'])
    nobody = truncate(stack, unclaimed, 0, None)
    assert nobody.status_code == 401 and "owner key" in nobody.json()["error"]
    owner = claimed_topic(stack, project, 3)
    write, _ = make_key(stack, project, owner, scope="write")
    until(lambda: truncate(stack, project, 0, write).status_code == 403)  # nginx knows the key
    lines = lines_of(stack, project)
    refused = {None: 401, write: 403, "stk_" + "0" * 32: 401}
    for key, code in refused.items():
        answer = truncate(stack, project, 0, key)
        assert answer.status_code == code, answer.text
        assert answer.json()["error"] and answer.json()["fix"]
    assert lines_of(stack, project) == lines  # refused by nginx: never logged
    past = applied(stack, project, truncate(stack, project, 4, owner))
    assert past["status"] == "rejected"
    assert past["reason"] == "not truncated: location 4 is past the end of the topic (its next location is 3)"
    assert read(stack, f"/stream/{project}").json()[0]["epoch"] == 0
    assert read(stack, f"/stream/{project}/0-").json() == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_replay_into_a_new_home_gives_the_same_documents_locations_and_epochs(stack, project, tmp_path):
    owner = claimed_topic(stack, project, 5)
    applied(stack, project, truncate(stack, project, 2, owner))
    applied(stack, project, post(stack, project, b'[{"b": 0}, {"b": 1}, {"b": 2}]'))
    applied(stack, project, truncate(stack, project, 4, owner))
    applied(stack, project, post(stack, project, b'{"c": 0}'))
    rebuilt = tmp_path / "rebuilt"
    config = str(stack.home / "conf" / "smalltable.yaml")
    result = smalltable("replay", "--config", config, "--project", project, "--data-dir", str(rebuilt))
    assert result.returncode == 0, result.stderr

    def dump(path) -> list:
        with sqlite3.connect(path) as conn:
            return [
                conn.execute(f"select * from {table} order by _id").fetchall()
                for table in ("records", "rejects", "stream_truncations")
            ]

    original = dump(stack.home / "data" / f"{project}.db")
    assert dump(rebuilt / f"{project}.db") == original
    bodies = [row[11] for row in original[0]]  # _body
    assert bodies == ['{"n": 0}', '{"n": 1}', '{"b": 0}', '{"b": 1}', '{"c": 0}']
    assert [row[3] for row in original[2]] == [2, 4]  # the truncations' locations, epochs 1 and 2


# -- 4. the seed's examples (seeds/003, PhatData 1.1.1 to 1.1.6), one by one -----------


@pytest.fixture
def foo_topic(stack, project) -> str:
    """A topic holding the seed's two documents, ``{"foo":"bar"}`` and ``{"foo":"baz"}``."""
    assert documents_posted(stack, project, [b'{"foo":"bar"}', b'{"foo":"baz"}']) == [0, 1]
    return project


def test_seed_1_1_1_list_topics(stack, foo_topic):
    listed = read(stack, "/stream/").json()
    assert all({"topic", "size", "count"} <= set(topic) for topic in listed)
    assert {"topic": foo_topic, "size": 26, "count": 2} in [
        {key: topic[key] for key in ("topic", "size", "count")} for topic in listed
    ]


def test_seed_1_1_2_get_metadata_for_a_single_topic(stack, foo_topic):
    [meta] = read(stack, f"/stream/{foo_topic}").json()
    assert (meta["topic"], meta["size"], meta["count"]) == (foo_topic, 26, 2)


def test_seed_1_1_3_add_a_single_document(stack, foo_topic):
    assert applied(stack, foo_topic, post(stack, foo_topic, b'{"foo":"qux"}'))["location"] == 2


def test_seed_1_1_3_add_multiple_documents(stack, foo_topic):
    answer = post(stack, foo_topic, b'[{"a":1},{"a":2},{"a":3},{"a":4}]')
    assert applied(stack, foo_topic, answer)["location_list"] == [2, 3, 4, 5]


def test_seed_1_1_4_get_a_document(stack, foo_topic):
    assert read(stack, f"/stream/{foo_topic}/0").content == b'{"foo":"bar"}'


def test_seed_1_1_5_get_a_range_of_documents(stack, foo_topic):
    assert read(stack, f"/stream/{foo_topic}/0-1").content == b'[{"foo":"bar"},{"foo":"baz"}]\n'


def test_seed_1_1_5_get_all_documents_after_a_location(stack, foo_topic):
    assert read(stack, f"/stream/{foo_topic}/0-").content == b'[{"foo":"bar"},{"foo":"baz"}]\n'
    assert read(stack, f"/stream/{foo_topic}/1-").json() == [{"foo": "baz"}]


def test_seed_1_1_6_truncate_a_stream(stack, project):
    owner = claimed_topic(stack, project, 4)
    assert applied(stack, project, truncate(stack, project, 1, owner))["action"] == "truncated"
    assert read(stack, f"/stream/{project}/0-").json() == [{"n": 0}]
    assert applied(stack, project, post(stack, project, b'{"n": "again"}'))["location"] == 1
