"""ingestd/support/s3.py against a real SeaweedFS on loopback (tests/s3lib.py)."""

from __future__ import annotations

import hashlib
import os

import pytest

from ingestd.support.s3 import Bucket, S3Error

from .s3lib import BUCKET, credentials_env


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)


def test_put_head_read_delete_round_trip(seaweed, tmp_path):
    bucket = Bucket(seaweed.endpoint, BUCKET, prefix="test-s3-round-trip")
    data = os.urandom(3 * 1048576 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    bucket.put_file("one", path, "image/png")
    assert bucket.head("one") == len(data)
    assert hashlib.sha256(b"".join(bucket.read("one"))).digest() == hashlib.sha256(data).digest()
    answer = seaweed.client().head_object(Bucket=BUCKET, Key="test-s3-round-trip/one")
    assert answer["ContentType"] == "image/png"
    bucket.delete("one")
    assert bucket.head("one") is None


def test_a_dead_endpoint_fails_the_call_quickly(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x")
    bucket = Bucket("http://127.0.0.1:9", BUCKET, timeout=1)
    with pytest.raises(S3Error, match="put one"):
        bucket.put_file("one", path)
    with pytest.raises(S3Error, match="head one"):
        bucket.head("one")
