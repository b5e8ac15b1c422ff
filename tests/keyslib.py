"""What the keys tests share: claiming, sending keys, waiting until nginx has a key in force."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time

import httpx

from .test_e2e_projects import JSON, status

KEY = re.compile(r"stk_[0-9a-f]{32}")


def logged(stack) -> list[dict]:
    """The ingest log's lines (other tests of the session append broken ones on purpose)."""
    lines = []
    for line in stack.ingest_log.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line.decode("latin-1")))
    return lines


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **JSON}


def claim(stack, project: str, owner: str = "ann@example.com") -> str:
    """Claim ``project``; its owner key, once the claim is applied."""
    answer = stack.post(project, json.dumps({"owner": owner}), path="/_project", headers=JSON)
    assert answer.status_code == 202, answer.text
    assert status(stack, project, answer)["status"] == "applied"
    return answer.json()["key"]


def wait_owned(stack, project: str, timeout: float = 5) -> float:
    """Seconds until nginx knows ``project``'s owner key (a refusal that writes nothing says so)."""
    start = time.monotonic()
    while True:
        answer = stack.request("POST", project, "/_project/keys", as_owner=False, content=b"{}")
        if answer.json()["error"] != "the project has no owner key":
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, answer.text
        time.sleep(0.02)


def logged_line(stack, request_id: str, timeout: float = 5) -> dict:
    """The ingest log's line of ``request_id``, waiting for it: nginx writes a request's
    line as the request ends, which may be just after the client has read the answer."""
    deadline = time.monotonic() + timeout
    while True:
        for line in logged(stack):
            if line["id"] == request_id:
                return line
        assert time.monotonic() < deadline, f"no line of {request_id} in the ingest log"
        time.sleep(0.02)


def until(predicate, timeout: float = 5) -> float:
    """Seconds until ``predicate()`` is true (failing after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - start


def write_with(stack, project: str, key: str | None) -> httpx.Response:
    """A post with ``key`` (None: none), on a connection of its own: a reload closes kept-alive ones."""
    headers = {"Host": stack.host(project), **(bearer(key) if key else {})}
    return httpx.post(stack.url("/"), content=b'{"n": 1}', headers=headers, timeout=30)


def make_key(stack, project: str, owner: str, **fields) -> tuple[str, str]:
    """A new key of ``project`` (scope, label, expires), once ingestd has applied it."""
    answer = stack.post(project, json.dumps(fields), path="/_project/keys", headers=bearer(owner))
    assert answer.status_code == 202, answer.text
    assert status(stack, project, answer, headers=bearer(owner))["status"] == "applied"
    return answer.json()["key"], answer.json()["key_id"]


def lines_of(stack, project: str) -> int:
    return sum(line["project"] == project for line in logged(stack))


def smalltable(stack, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ingestd", *args, "--home", str(stack.home)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def write_settings(stack, project: str, key: str | None) -> httpx.Response:
    """A harmless settings change with ``key``, on a connection of its own."""
    headers = {"Host": stack.host(project), **(bearer(key) if key else JSON)}
    return httpx.post(stack.url("/_project"), content=b'{"description": "kept"}', headers=headers, timeout=30)
