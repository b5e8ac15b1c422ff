"""kill -9 of the real daemon while it applies blob uploads, and replay: every upload once,
every spool file gone only once its blob is stored (ingestd/ingest/blobs.py)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest

from .conftest import smalltable
from .test_faults import wait_until

PROJECT = "pics"


def blob_line(request_id: str, spool, data: bytes, filename: str = "") -> bytes:
    """The line nginx's smalltable_blob_v1 format writes for an upload spooled to ``spool``."""
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(data)
    fields = {
        "v": 1, "t": 1796590000.5, "rt": 0.001, "id": request_id, "project": PROJECT, "method": "POST",
        "uri": "/_blobs", "ctype": "image/png", "clen": str(len(data)), "addr": "127.0.0.1", "ua": "curl/8",
        "status": "200", "key": "write:0123456789ab", "mint": "", "keyhash": "", "body": "",
        "blob": hashlib.sha256(data).hexdigest(), "file": str(spool), "filename": filename,
    }  # fmt: skip
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def blob_rows(daemon) -> list[tuple]:
    path = daemon.data_dir / f"{PROJECT}.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT id, size, filename, request_id FROM blobs ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc) == "no such table: blobs":  # no upload applied yet
                return []
            raise  # a locked or broken database is not one without blobs


@pytest.mark.parametrize("failpoint", ["blobs.after_copy@2", "blobs.after_row@2"])
def test_kill_9_while_applying_uploads_loses_and_doubles_nothing(daemon, failpoint):
    spool = daemon.home / "run" / "blob-spool"
    files = [os.urandom(70000), os.urandom(5), b"same bytes", b"same bytes"]
    lines = [blob_line(f"{n:032x}", spool / f"000000000{n}", data, f"f{n}") for n, data in enumerate(files)]
    daemon.log_path.write_bytes(b"".join(lines))
    daemon.start(failpoints=failpoint)
    assert daemon.wait_exit() == -9  # killed at the second upload
    daemon.start()
    wanted = {"sha256-" + hashlib.sha256(data).hexdigest() for data in files}
    wait_until(lambda: {row[0] for row in blob_rows(daemon)} == wanted, 20, "every blob's row")
    wait_until(lambda: not any(p.is_file() for p in spool.iterdir()), 20, "the spool files removed")
    rows = blob_rows(daemon)
    assert len(rows) == 3  # the same bytes twice: one blob, the first upload's row
    assert [row for row in rows if row[2] == "f3"] == []
    for data in files:
        blob = "sha256-" + hashlib.sha256(data).hexdigest()
        assert (daemon.home / "blobs" / "a" / blob[7:9] / blob).read_bytes() == data
    with sqlite3.connect(daemon.data_dir / f"{PROJECT}.db") as conn:
        assert conn.execute("SELECT count(*) FROM rejects").fetchone() == (0,)
    daemon.stop()
    # The log is the source of truth: replay rebuilds the blobs table from the stores.
    for path in daemon.data_dir.glob(f"{PROJECT}.db*"):
        path.unlink()
    replayed = smalltable("replay", "--config", str(daemon.config_path))
    assert replayed.returncode == 0, replayed.stderr
    assert blob_rows(daemon) == rows


def test_an_upload_whose_spool_file_is_gone_is_a_reject_not_a_silent_loss(daemon):
    spool = daemon.home / "run" / "blob-spool" / "0000000001"
    daemon.log_path.write_bytes(blob_line("f" * 32, spool, b"lost in a power cut"))
    spool.unlink()
    daemon.start()
    path = daemon.data_dir / f"{PROJECT}.db"
    wait_until(path.exists, 20, "the project's database")

    def reasons() -> list[str]:
        with sqlite3.connect(path) as conn:
            try:
                return [row[0] for row in conn.execute("SELECT _reason FROM rejects")]
            except sqlite3.OperationalError:  # tables not made yet
                return []

    wait_until(reasons, 20, "the reject")
    assert "its spooled body" in reasons()[0] and "is gone" in reasons()[0]
    assert blob_rows(daemon) == []
