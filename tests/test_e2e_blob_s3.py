"""Blobs on a real SeaweedFS through the real stack: S3 killed during 200 uploads, every
upload answered 2xx is later on ``blobs.min_copies`` stores, verified (docs/blobs.md)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time

import httpx
import pytest
import yaml

from .bloblib import blob_id, upload, writer
from .conftest import start_stack, stop_stack
from .s3lib import BUCKET, credentials_env

pytestmark = pytest.mark.e2e


def s3_stack(tmp_path, seaweed, monkeypatch, prefix: str):
    """A stack whose stores are a directory and a bucket of ``seaweed``; min_copies 2, a pass a second."""
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)  # smalltable up (nginx, ingestd) inherit them: never in the config
    stores = [{"dir": "blobs/a"}, {"s3": seaweed.endpoint, "bucket": BUCKET, "prefix": prefix}]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"blobs": {"stores": stores, "min_copies": 2, "replicate_interval": 1}}))
    return start_stack(tmp_path / "home", ["--config", str(path)])


def wait_copies(stack, project: str, count: int, copies: int = 2, timeout: float = 120) -> None:
    """Until the project's ``count`` blobs each have ``copies`` verified copies."""
    db = stack.home / "data" / f"{project}.db"
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as conn:
            try:
                counts = dict(conn.execute("SELECT id, copies FROM blobs").fetchall())
            except sqlite3.OperationalError:  # no upload applied yet
                counts = {}
        if len(counts) == count and set(counts.values()) == {copies}:
            return
        assert time.monotonic() < deadline, (
            f"{sorted(counts.values()).count(copies)} of {count} have {copies}"
        )
        time.sleep(0.5)


def test_kill_the_s3_server_during_200_uploads_and_every_blob_reaches_min_copies(
    tmp_path, fresh_seaweed, monkeypatch, project
):
    stack = s3_stack(tmp_path, fresh_seaweed, monkeypatch, "kill")
    try:
        key = writer(stack, project)
        sent: list[bytes] = []
        for n in range(200):
            if n == 50:
                fresh_seaweed.stop()  # SIGKILL, mid-stream
            if n == 150:
                fresh_seaweed.start()
            data = os.urandom(1000 + n)
            answer = upload(stack, project, key, data)
            errors = (stack.home / "logs" / "nginx-error.log").read_text()[-3000:]
            assert answer.status_code == 200, f"{answer.text}\n{errors}"
            assert answer.json()["id"] == blob_id(data)
            sent.append(data)
        wait_copies(stack, project, 200)
        s3 = fresh_seaweed.client()
        for data in sent:
            stored = s3.get_object(Bucket=BUCKET, Key=f"kill/{blob_id(data)}")["Body"].read()
            assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
            local = stack.home / "blobs" / "a" / blob_id(data)[7:9] / blob_id(data)
            assert local.read_bytes() == data
        metrics = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics").text
        assert "smalltable_blobs_under_replicated 0.0" in metrics, metrics[-2000:]
        assert "smalltable_blobs 200.0" in metrics
    finally:
        stop_stack(stack)


def test_a_blob_with_no_local_copy_is_served_from_s3_by_nginx(tmp_path, fresh_seaweed, monkeypatch, project):
    stack = s3_stack(tmp_path, fresh_seaweed, monkeypatch, "fallback")
    try:
        key = writer(stack, project)
        data = os.urandom(300000)
        assert upload(stack, project, key, data, "image/webp").status_code == 200
        wait_copies(stack, project, 1)
        blob = blob_id(data)
        (stack.home / "blobs" / "a" / blob[7:9] / blob).unlink()  # the local disk lost it
        host = {"Host": stack.host(project)}
        got = httpx.get(stack.url(f"/_blobs/{blob}"), headers=host)
        assert got.status_code == 200 and got.content == data
        assert got.headers["Content-Type"] == "image/webp"
        assert got.headers["ETag"] == f'"{blob}"' and "immutable" in got.headers["Cache-Control"]
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        part = httpx.get(stack.url(f"/_blobs/{blob}"), headers={**host, "Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        head = httpx.head(stack.url(f"/_blobs/{blob}"), headers=host)
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
        apex = httpx.get(stack.url(f"/fetch/{blob}"), headers={"Host": stack.host(None)})
        assert apex.status_code == 200 and apex.content == data
        unknown = httpx.get(stack.url("/_blobs/sha256-" + "1" * 64), headers=host)
        assert unknown.status_code == 404 and unknown.json()["error"] == "no such blob"
        fresh_seaweed.stop()
        down = httpx.get(stack.url(f"/_blobs/{blob}"), headers=host)
        assert down.status_code == 503 and down.json()["error"] == "blob store unavailable"
    finally:
        stop_stack(stack)
