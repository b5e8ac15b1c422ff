"""The terminal client (`smalltable post`, `get`, `tail`, `open`) against the real stack.

Every URL is a ``*.localhost`` name, as a user types it: the client resolves it
to loopback itself, as curl does.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.e2e


def smalltable(*args: str, stdin: bytes = b"", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingestd", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def lines_of(stream) -> queue.Queue:
    """The lines a pipe gives, as they come, read by a thread: a test waits with a timeout."""
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [got.put(line) for line in stream], daemon=True).start()
    return got


def answers(done: subprocess.CompletedProcess) -> list[dict]:
    """The JSON lines ``post`` printed, without its ``# …`` remarks (a "did you mean" shows
    when another test's project has a close name)."""
    return [json.loads(line) for line in done.stdout.splitlines() if not line.startswith(b"#")]


def url(stack, project: str, path: str = "/") -> str:
    return f"http://{project}.localhost:{stack.port}{path}"


def test_post_from_stdin_waits_for_the_record_and_exits_0(stack, project):
    done = smalltable("post", url(stack, project, "/clicks"), "--wait", stdin=b'{"user": "ann"}')
    assert done.returncode == 0, done.stderr
    answer, outcome = answers(done)
    assert (answer["status"], answer["created"]) == ("accepted", True)
    assert (outcome["status"], outcome["id"]) == ("stored", 1)
    row = stack.wait_row(project, answer["id"])
    assert (row["_content_type"], row["_path"], row["user"]) == ("application/json", "/clicks", "ann")


def test_post_dash_sends_stdin_byte_for_byte(stack, project):
    """``-`` names standard input, as the usage line says: binary bytes arrive unchanged."""
    body = bytes(range(256)) * 4
    done = smalltable(
        "post", url(stack, project), "-", "--type", "application/octet-stream", "--wait", stdin=body
    )
    assert done.returncode == 0, done.stderr
    row = stack.wait_row(project, answers(done)[0]["id"])
    assert (row["_content_type"], row["_size"]) == ("application/octet-stream", 1024)
    assert base64.b64decode(row["_body"]["encoded"]) == body  # Datasette's JSON for a BLOB


def test_post_a_file_takes_its_type_from_its_name(stack, project, tmp_path):
    picture = tmp_path / "dot.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    done = smalltable("post", url(stack, project), str(picture), "--wait")
    assert done.returncode == 0, done.stderr
    row = stack.wait_row(project, answers(done)[0]["id"])
    assert row["_content_type"] == "image/png" and row["_size"] == 264


def test_post_wait_exits_2_with_the_reason_when_rejected(stack, project):
    body = b'{"user": ann'
    done = smalltable("post", url(stack, project), "--type", "application/json", "--wait", stdin=body)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("Error: rejected: malformed JSON")
    assert answers(done)[-1]["status"] == "rejected"


def test_post_wait_exits_3_with_the_reason_when_held(stack, project):
    settings = b'{"owner": "ann", "quota_mb": 0.01}'
    assert smalltable("post", url(stack, project, "/_project"), "--wait", stdin=settings).returncode == 0
    done = smalltable("post", url(stack, project), "--wait", stdin=b'{"n": 1}')
    assert done.returncode == 3
    assert f"Error: held: project {project} is over its quota" in done.stderr.decode()


def test_post_to_nothing_listening_is_a_clear_error(tmp_path):
    done = smalltable("post", "http://demo.localhost:1/", stdin=b"x")
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "Error: cannot connect to demo.localhost:1 (127.0.0.1): nothing listens there"
        " (is SmallTable running? smalltable up)\n"
    )


def test_get_a_record_as_json_and_an_export(stack, project):
    done = smalltable("post", url(stack, project), "--wait", stdin=b'{"user": "bob"}')
    record = answers(done)[1]["id"]
    got = smalltable("get", url(stack, project, f"/{record}"), "--json")
    assert got.returncode == 0, got.stderr
    assert got.stdout.endswith(b"\n") and json.loads(got.stdout)["user"] == "bob"
    raw = smalltable("get", url(stack, project, f"/{record}"))
    assert raw.stdout == b'{"user": "bob"}'  # the body exactly as posted
    export = smalltable("get", url(stack, project, "/_export.csv"))
    assert export.stdout.splitlines()[0].startswith(b"_id,_request_id")
    assert len(export.stdout.splitlines()) == 2


def test_get_an_unknown_record_says_so(stack, project):
    smalltable("post", url(stack, project), "--wait", stdin=b'{"n": 1}')
    got = smalltable("get", url(stack, project, "/999"), "--json")
    assert got.returncode == 1
    assert got.stderr.decode().startswith(f"Error: HTTP 404: There is no record 999 in {project}")


def test_tail_resumes_after_a_dropped_connection_missing_nothing(fresh_stack, project):
    """nginx's reload ends the tail's connection (after worker_shutdown_timeout); a record
    loaded before the client connects again still comes, and none comes twice. (On a
    stack of its own: a SIGHUP to the shared nginx would reach every other test's.)"""
    stack = fresh_stack
    first = smalltable("post", url(stack, project), "--wait", stdin=b'{"n": 1}')
    assert first.returncode == 0, first.stderr
    follower = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "tail", url(stack, project), "--after", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = lines_of(follower.stdout), lines_of(follower.stderr)
    try:
        assert json.loads(out.get(timeout=20))["n"] == 1
        os.kill(int(next(stack.home.rglob("nginx.pid")).read_text()), signal.SIGHUP)
        assert "the tail's connection dropped" in err.get(timeout=20)
        follower.send_signal(signal.SIGSTOP)  # still away: the next record is loaded meanwhile
        try:
            gap = smalltable("post", url(stack, project), "--wait", stdin=b'{"n": 2}')
            assert gap.returncode == 0, gap.stderr
        finally:
            follower.send_signal(signal.SIGCONT)
        assert json.loads(out.get(timeout=20))["n"] == 2
        later = smalltable("post", url(stack, project), "--wait", stdin=b'{"n": 3}')
        assert later.returncode == 0
        assert json.loads(out.get(timeout=20))["n"] == 3
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_open_hands_the_url_to_the_browser(tmp_path):
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    done = smalltable("open", "demo.localhost:8080/7", env={"BROWSER": str(browser)})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while not opened.exists() or not opened.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert opened.read_text() == "http://demo.localhost:8080/7"
