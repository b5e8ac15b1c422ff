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


def test_kill_the_s3_server_during_200_uploads_and_every_blob_reaches_min_copies(
    tmp_path, fresh_seaweed, monkeypatch, project
):
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)  # smalltable up (and ingestd) inherit them: never in the config
    config = {
        "blobs": {
            "stores": [
                {"dir": "blobs/a"},
                {"s3": fresh_seaweed.endpoint, "bucket": BUCKET, "prefix": "kill"},
            ],
            "min_copies": 2,
            "replicate_interval": 1,
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    stack = start_stack(tmp_path / "home", ["--config", str(path)])
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
        db = stack.home / "data" / f"{project}.db"
        deadline = time.monotonic() + 120
        while True:
            with sqlite3.connect(db) as conn:
                counts = dict(conn.execute("SELECT id, copies FROM blobs").fetchall())
            if len(counts) == 200 and set(counts.values()) == {2}:
                break
            assert time.monotonic() < deadline, f"{sorted(counts.values()).count(2)} of 200 have 2 copies"
            time.sleep(0.5)
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
