"""The log-line contract, checked against the real nginx: the line it writes for a
body is exactly what docs/log-format.md (and test_logline's model of escape=json) say."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from ingestd.ingest.logline import parse_line

from .linelib import nginx_escape_json

pytestmark = pytest.mark.e2e


def test_nginx_writes_the_documented_line(stack, project):
    body = bytes(range(256)) + os.urandom(512) + "é🎉".encode()
    response = stack.post(project, body, path="/a/b?q=1", headers={"Content-Type": "x/y", "User-Agent": "t"})
    rid = response.json()["id"]
    # nginx writes the line just after it answers: give it a moment
    deadline = time.monotonic() + 5
    while not (found := [ln for ln in stack.ingest_log.read_bytes().splitlines() if rid.encode() in ln]):
        assert time.monotonic() < deadline, "nginx did not log the request"
        time.sleep(0.01)
    [raw] = found
    assert b'"body":"' + nginx_escape_json(body) + b'"}' in raw
    fields = json.loads(raw.decode("latin-1"))
    assert list(fields) == [
        "v", "t", "rt", "id", "project", "method", "uri", "ctype", "clen", "addr", "ua", "status",
        "key", "mint", "keyhash", "kv", "body",
    ]  # fmt: skip
    # no key sent, none made; no key-value write
    assert (fields["key"], fields["mint"], fields["keyhash"], fields["kv"]) == ("", "", "", "")
    assert (fields["v"], fields["id"], fields["project"], fields["status"]) == (1, rid, project, "202")
    assert (fields["uri"], fields["ctype"], fields["clen"], fields["ua"]) == (
        "/a/b?q=1",
        "x/y",
        str(len(body)),
        "t",
    )
    request = parse_line(raw)
    assert request.body == body
    assert request.received <= fields["t"]


def test_request_ids_are_unique_32_hex_characters_in_time_order(stack, project):
    """The id starts with the millisecond nginx answered: each project's unique index on
    it grows at one end (bench/RESULTS.md). The answer, its header, its status URL and
    the log line carry the same id."""
    answers = []
    for _ in range(20):
        answers.append(stack.post(project, b"x"))
        time.sleep(0.002)
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for answer, rid in zip(answers, ids, strict=True):
        assert len(rid) == 32 and set(rid) <= set("0123456789abcdef")
        assert answer.headers["X-Request-Id"] == rid
        assert answer.json()["status_url"].endswith(f"/_status/{rid}")
    deadline = time.monotonic() + 5
    while len(logged := [f for f in _logged(stack) if f["id"] in ids]) < len(ids):
        assert time.monotonic() < deadline, "nginx did not log the requests"
        time.sleep(0.01)
    for fields in logged:
        received_ms = round((float(fields["t"]) - float(fields["rt"])) * 1000)
        answered_ms = int(fields["id"][:13])
        assert received_ms <= answered_ms <= round(float(fields["t"]) * 1000)


def _logged(stack) -> list[dict]:
    return [json.loads(line.decode("latin-1")) for line in stack.ingest_log.read_bytes().splitlines()]


def test_writes_are_answered_202_while_nginx_reloads(fresh_stack, project):
    """ingestd reloads nginx when a quota level changes. Each write goes to nginx's ack
    server over a kept-alive connection, and a reload closes those: a write sent on one
    as it closes must be sent again, never answered 502. (On a stack of its own: SIGHUP
    a hundred times over would close the connections of tests running beside it.)"""
    stack = fresh_stack
    pid = int(next(stack.home.rglob("nginx.pid")).read_text())
    codes: dict[int, int] = {}
    stop = time.monotonic() + 5

    def post_until_stop() -> None:
        while time.monotonic() < stop:
            try:
                answer = stack.post(project, b'{"a":1}', headers={"Content-Type": "application/json"})
            except httpx.TransportError:  # the client's own kept-alive connection closed: retried
                continue
            codes[answer.status_code] = codes.get(answer.status_code, 0) + 1

    writers = [threading.Thread(target=post_until_stop) for _ in range(4)]
    for writer in writers:
        writer.start()
    while time.monotonic() < stop:
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.05)
    for writer in writers:
        writer.join()
    assert set(codes) == {202}, codes
    assert codes[202] > 100
