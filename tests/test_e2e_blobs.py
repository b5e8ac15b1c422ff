"""Blobs through the real nginx (njs), ingestd and Datasette: upload, download, bad input.

docs/blobs.md describes what these show.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import httpx
import pytest

from .bloblib import blob_id, oversized, upload, wait_blob, writer
from .keyslib import bearer, claim, logged, make_key, until, wait_owned
from .test_e2e_projects import JSON, status

pytestmark = pytest.mark.e2e


def test_an_upload_answers_its_sha256_and_the_download_is_the_exact_bytes(stack, project):
    key = writer(stack, project)
    data = os.urandom(3 * 1048576 + 5)  # past nginx.max_body_bytes (1 MiB): blobs have their own limit
    answer = upload(stack, project, key, data, "image/png", **{"X-Filename": "cat.png"})
    assert answer.status_code == 200, answer.text
    expected = blob_id(data)
    url = f"http://{stack.host(project)}/_blobs/{expected}"
    assert answer.json() == {
        "id": expected,
        "size": len(data),
        "status": "OK",
        "url": url,
        "request_id": answer.headers["X-Request-Id"],
    }
    got = wait_blob(stack, project, expected)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == expected.removeprefix("sha256-")
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["ETag"] == f'"{expected}"'
    assert "immutable" in got.headers["Cache-Control"]
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    host = {"Host": stack.host(project)}
    part = httpx.get(stack.url(f"/_blobs/{expected}"), headers={**host, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    head = httpx.head(stack.url(f"/_blobs/{expected}"), headers=host)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data)) and not head.content
    apex = wait_blob(stack, None, expected)
    assert apex.status_code == 200 and apex.content == data
    [row] = stack.rows(project, "blobs")
    assert row | {"uploaded": None} == {
        "id": expected,
        "size": len(data),
        "content_type": "image/png",
        "filename": "cat.png",
        "uploaded": None,
        "copies": row["copies"],
        "request_id": answer.headers["X-Request-Id"],
    }
    assert row["copies"] >= 1
    page = httpx.get(stack.url("/"), headers=host).text  # the project page shows it, inline
    assert f'<img class="st-thumb" src="/_blobs/{expected}" alt="cat.png"' in page
    # The body never travels through the ingest log as escaped text.
    [line] = [line for line in logged(stack) if line["project"] == project and line["uri"] == "/_blobs"][-1:]
    assert line["body"] == "" and line["blob"] == expected.removeprefix("sha256-")
    assert line["clen"] == str(len(data))


def test_an_upload_needs_a_write_key_whatever_the_write_policy(stack, project):
    big = os.urandom(2 * 1048576)  # refused for its key before its size: 401, not 413
    for data in (b"hello", big):
        answer = upload(stack, project, None, data)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "uploading a blob needs a write key of this project"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    owner = claim(stack, project)
    wait_owned(stack, project)
    reader, _ = make_key(stack, project, owner, scope="read")
    until(lambda: upload(stack, project, reader, b"hello").status_code == 403, timeout=10)
    assert not [line for line in logged(stack) if line["project"] == project and line["uri"] == "/_blobs"]


def test_an_upload_over_the_limit_is_refused_before_its_body_is_read(stack, project):
    key = writer(stack, project)
    limit = 64 * 1048576
    head = oversized(stack, project, key, limit + 1)  # nothing of the body is sent: the answer comes at once
    assert head.startswith("HTTP/1.1 413"), head
    body = json.loads(head.split("\r\n\r\n", 1)[1])
    assert body["error"] == "blob too large" and body["limit_bytes"] == limit


def test_unknown_and_malformed_ids_get_a_json_404(stack, project):
    host = {"Host": stack.host(project)}
    unknown = "sha256-" + "0" * 64
    for path, error in (
        (f"/_blobs/{unknown}", "no such blob"),
        ("/_blobs/sha256-xyz", "not a blob id"),
        ("/_blobs/" + unknown.upper(), "not a blob id"),
    ):
        answer = httpx.get(stack.url(path), headers=host)
        assert answer.status_code == 404 and answer.json()["error"] == error, (path, answer.text)
        assert "fix" in answer.json()
    apex = httpx.get(stack.url(f"/fetch/{unknown}"), headers={"Host": stack.host(None)})
    assert apex.status_code == 404 and apex.json()["error"] == "no such blob"


def test_the_same_bytes_uploaded_twice_at_once_are_one_blob(stack, project):
    key = writer(stack, project)
    data = os.urandom(1048576)
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(upload(stack, project, key, data))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200, 200]
    assert {a.json()["id"] for a in answers} == {blob_id(data)}
    wait_blob(stack, project, blob_id(data))
    spooled = [line["file"] for line in logged(stack) if line["project"] == project and line.get("blob")]
    assert len(spooled) == 2
    until(lambda: not any(os.path.exists(path) for path in spooled), timeout=20)  # both applied
    rows = stack.rows(project, "blobs")
    assert [row["id"] for row in rows] == [blob_id(data)]
    copies = list((stack.home / "blobs").glob(f"*/*/{blob_id(data)}"))
    assert len(copies) >= 1 and all(c.read_bytes() == data for c in copies)


def test_a_private_projects_blobs_need_a_read_key(stack, project):
    key = writer(stack, project)
    data = os.urandom(4096)
    upload(stack, project, key, data, "text/plain")
    assert wait_blob(stack, project, blob_id(data)).status_code == 200
    owner = stack.owner_keys.get(project)
    answer = stack.post(project, json.dumps({"read": "private", "now": True}), path="/_project", headers=JSON)
    assert status(stack, project, answer, headers=bearer(owner))["status"] == "applied"
    host = {"Host": stack.host(project)}
    until(lambda: httpx.get(stack.url(f"/_blobs/{blob_id(data)}"), headers=host).status_code == 401)
    reader, _ = make_key(stack, project, owner, scope="read")
    until(lambda: wait_blob(stack, project, blob_id(data), **bearer(reader)).status_code == 200, timeout=10)
    secret = os.urandom(4096)
    upload(stack, project, key, secret)
    assert wait_blob(stack, project, blob_id(secret), **bearer(reader)).content == secret
    apex = httpx.get(stack.url(f"/fetch/{blob_id(secret)}"), headers={"Host": stack.host(None)})
    assert apex.status_code == 404  # the apex serves only public projects' blobs
