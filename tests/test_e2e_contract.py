"""The log-line contract, checked against the real nginx: the line it writes for a
body is exactly what docs/log-format.md (and test_logline's model of escape=json) say."""

from __future__ import annotations

import json
import os
import time

import pytest

from ingestd.logline import parse_line

from .test_logline import nginx_escape_json

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
        "v", "t", "rt", "id", "project", "method", "uri", "ctype", "clen", "addr", "ua", "status", "body",
    ]  # fmt: skip
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
