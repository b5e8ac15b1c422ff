"""The PhatData stream API on the apex (issue 22, docs/streams.md), through the real stack.

Topic = project; location L = record L+1. Writes are logged by nginx and applied
by ingestd in log order; each test waits for a write's status with the status URL.
"""

from __future__ import annotations

import json
import threading

import pytest

from .conftest import Stack
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
