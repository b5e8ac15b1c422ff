"""The replicator (ingestd/ops/replicate.py) on real directories and a real SeaweedFS:
copies made and verified, corrupt and missing copies found and remade, a full disk, S3 down.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sqlite3
import subprocess
import threading
import time

import pytest

from ingestd.ops import replicate as replicate_module
from ingestd.ops.replicate import Replicator
from ingestd.store.blobs import LocalStore, S3Store
from ingestd.store.blobtable import add_blob
from ingestd.store.schema import open_database
from ingestd.support.s3 import Bucket

from .conftest import smalltable
from .s3lib import BUCKET, credentials_env
from .test_faults import require_root


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)


def blob_in(home, store: LocalStore, data: bytes, project: str = "p") -> str:
    """A blob uploaded to ``project`` as ingestd leaves it: one copy on ``store``, its row."""
    blob_id = "sha256-" + hashlib.sha256(data).hexdigest()
    source = home / "source"
    source.write_bytes(data)
    store.put(blob_id, source, len(data), "image/png")
    (home / "data").mkdir(exist_ok=True)
    conn = open_database(home / "data" / f"{project}.db")
    row = {"id": blob_id, "size": len(data), "content_type": "image/png", "filename": None}
    add_blob(conn, {**row, "uploaded": "2026-12-06T00:00:00Z", "copies": 1, "request_id": "r" * 32})
    conn.close()
    return blob_id


def copies_of(home, blob_id: str, project: str = "p") -> int:
    with sqlite3.connect(home / "data" / f"{project}.db") as conn:
        return conn.execute("SELECT copies FROM blobs WHERE id = ?", [blob_id]).fetchone()[0]


def s3_bytes(seaweed, key: str) -> bytes | None:
    try:
        return seaweed.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except seaweed.client().exceptions.NoSuchKey:
        return None


def test_replicate_makes_verified_copies_on_every_store_up_to_min_copies(tmp_path, seaweed):
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    s3 = S3Store(Bucket(seaweed.endpoint, BUCKET, prefix="replicate-every"))
    data = os.urandom(2 * 1048576 + 3)
    blob_id = blob_in(tmp_path, a, data)
    replicator = Replicator([a, b, s3], tmp_path / "data", tmp_path / "state", 3)
    figures = replicator.replicate()
    assert (figures.copied, figures.under_replicated, figures.failures) == (2, 0, [])
    assert b.path(blob_id).read_bytes() == data and b.content_type(blob_id) == "image/png"
    assert s3_bytes(seaweed, f"replicate-every/{blob_id}") == data
    assert copies_of(tmp_path, blob_id) == 3
    saved = json.loads((tmp_path / "state" / "blobs.json").read_text())
    assert saved["blobs"] == 1 and saved["bytes"] == len(data) and saved["under_replicated"] == 0
    assert replicator.replicate().copied == 0  # counted: nothing more to do


def test_verify_finds_corrupt_and_missing_copies_and_remakes_them(tmp_path, seaweed):
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    s3 = S3Store(Bucket(seaweed.endpoint, BUCKET, prefix="verify-repairs"))
    data = os.urandom(100000)
    blob_id = blob_in(tmp_path, a, data)
    replicator = Replicator([a, b, s3], tmp_path / "data", tmp_path / "state", 3)
    replicator.replicate()
    corrupt = bytearray(data)
    corrupt[500] ^= 0xFF  # the same size: only a re-read finds it
    a.path(blob_id).write_bytes(bytes(corrupt))
    seaweed.client().delete_object(Bucket=BUCKET, Key=f"verify-repairs/{blob_id}")
    assert replicator.replicate().dropped == 0  # the ledger trusts its verified copies
    figures = replicator.verify()
    assert figures.dropped == 2 and figures.copied == 2 and figures.under_replicated == 0
    assert a.path(blob_id).read_bytes() == data
    assert s3_bytes(seaweed, f"verify-repairs/{blob_id}") == data
    assert copies_of(tmp_path, blob_id) == 3
    saved = json.loads((tmp_path / "state" / "blobs.json").read_text())
    assert saved["last_verify"] >= time.time() - 60 and saved["last_verify_dropped"] == 2


def test_a_full_disk_on_one_store_sends_the_copy_to_the_next(tmp_path):
    require_root("mount a small tmpfs as one store")
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        a, b, c = LocalStore(tmp_path / "a"), LocalStore(full), LocalStore(tmp_path / "c")
        data = os.urandom(1048576)
        blob_id = blob_in(tmp_path, a, data)
        figures = Replicator([a, b, c], tmp_path / "data", tmp_path / "state", 2).replicate()
        assert figures.copied == 1 and figures.under_replicated == 0
        assert any("No space left" in failure for failure in figures.failures), figures.failures
        assert c.path(blob_id).read_bytes() == data
        assert not list(full.rglob("*.tmp"))  # the half-written copy is not left behind
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_a_pass_reads_again_only_the_projects_whose_files_changed(tmp_path, monkeypatch):
    """The daemon passes every ``blobs.replicate_interval``: a project database that has not
    changed since the last pass is not opened again, and a new blob is still found."""
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    blob_in(tmp_path, a, b"first", project="one")
    for name in ("idle-1", "idle-2"):
        open_database(tmp_path / "data" / f"{name}.db").close()
    opened: list[str] = []
    read = replicate_module._blob_rows
    monkeypatch.setattr(replicate_module, "_blob_rows", lambda path: opened.append(path.stem) or read(path))
    monkeypatch.setattr(replicate_module, "SETTLE_NS", 0)  # the files were made a moment ago
    replicator = Replicator([a, b], tmp_path / "data", tmp_path / "state", 2)
    assert replicator.replicate().copied == 1
    assert sorted(opened) == ["idle-1", "idle-2", "one"]
    opened.clear()
    assert replicator.replicate().copied == 0 and opened == ["one"]  # its copy count changed
    opened.clear()
    assert replicator.replicate().copied == 0 and opened == []
    second = blob_in(tmp_path, a, b"second", project="idle-2")
    figures = replicator.replicate()
    assert (figures.copied, figures.blobs) == (1, 2) and b.path(second).read_bytes() == b"second"
    assert "idle-1" not in opened


def test_a_dead_s3_store_leaves_the_blob_under_replicated_and_the_pass_quick(tmp_path):
    a = LocalStore(tmp_path / "a")
    dead = S3Store(Bucket("http://127.0.0.1:9", BUCKET, timeout=1))
    blob_id = blob_in(tmp_path, a, b"hello")
    started = time.monotonic()
    figures = Replicator([a, dead], tmp_path / "data", tmp_path / "state", 2).replicate()
    assert time.monotonic() - started < 20
    assert figures.under_replicated == 1 and figures.copied == 0 and figures.failures
    assert copies_of(tmp_path, blob_id) == 1


def test_the_blobs_commands_replicate_and_verify_a_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    a, b = LocalStore(home / "blobs" / "a"), LocalStore(home / "blobs" / "b")  # the default stores
    blob_id = blob_in(home, a, b"a file")
    once = smalltable("blobs", "replicate", "--home", str(home), "--min-copies", "1")
    assert once.returncode == 0 and json.loads(once.stdout)["copied"] == 0, once.stdout + once.stderr
    twice = smalltable("blobs", "replicate", "--home", str(home))  # blobs.min_copies: 2
    assert twice.returncode == 0 and json.loads(twice.stdout)["copied"] == 1
    assert b.path(blob_id).read_bytes() == b"a file"
    b.path(blob_id).write_bytes(b"a fil3")
    checked = smalltable("blobs", "verify", "--home", str(home))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) | {"finished": 0} == {
        "blobs": 1,
        "bytes": 6,
        "under_replicated": 0,
        "copied": 1,
        "dropped": 1,
        "failures": [],
        "finished": 0,
    }
    assert b.path(blob_id).read_bytes() == b"a file"
    a.remove(blob_id)
    b.remove(blob_id)
    lost = smalltable("blobs", "verify", "--home", str(home))
    assert lost.returncode == 1 and "1 blobs are on fewer stores than wanted" in lost.stderr


class _Faulty(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint in trouble: every request answered 500, or (``slow``) never answered."""

    slow = False

    def _answer(self) -> None:
        if self.slow:
            time.sleep(5)
            return
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_HEAD = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("slow", [False, True], ids=["answers-500", "never-answers"])
def test_an_s3_store_in_trouble_is_skipped_and_tried_again_next_pass(tmp_path, seaweed, slow):
    handler = type("Handler", (_Faulty,), {"slow": slow})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        a = LocalStore(tmp_path / "a")
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        ids = [blob_in(tmp_path, a, os.urandom(1000)) for _ in range(5)]
        started = time.monotonic()
        trouble = Replicator(
            [a, S3Store(Bucket(endpoint, BUCKET, timeout=1))], tmp_path / "data", tmp_path / "state", 2
        )
        figures = trouble.replicate()
        assert time.monotonic() - started < 15  # one store's trouble costs one timeout, not one per blob
        assert figures.under_replicated == 5 and len(figures.failures) == 1
        trouble.close()
        healthy = S3Store(Bucket(seaweed.endpoint, BUCKET, prefix=f"trouble-{slow}"))
        assert Replicator([a, healthy], tmp_path / "data", tmp_path / "state", 2).replicate().copied == 5
        assert {copies_of(tmp_path, blob) for blob in ids} == {2}
    finally:
        server.shutdown()
