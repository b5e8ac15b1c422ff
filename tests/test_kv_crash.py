"""kill -9 of the real daemon while it applies key-value writes (ingestd/store/kv.py): after
a restart each write is decided once, and the buckets are what a replay of the log makes."""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
import subprocess
import sys

import pytest

from .daemonlib import DaemonRunner
from .linelib import make_line, nginx_escape_json

PROJECT = "kvcrash"


def kv_line(n: int, method: str, key: str, headers: dict | None = None) -> tuple[str, bytes]:
    """A key-value write as nginx logs it, with its headers in the ``kv`` field."""
    rid = secrets.token_hex(16)
    body = f"value {n}".encode() if method == "PUT" else b""
    line = make_line(
        body, id=rid, project=PROJECT, method=method, uri=f"/_kv/b/items/{key}", t=f"{1.8e9 + n}"
    )
    kv = nginx_escape_json(json.dumps(headers or {}).encode())
    return rid, line.replace(b',"body":"', b',"kv":"' + kv + b'","body":"', 1) + b"\n"


def the_log() -> tuple[list[str], bytes]:
    """60 puts and deletes of 5 keys, a third of them create-only (most fail), in order."""
    ids, data = [], []
    for n in range(60):
        if n % 7 == 6:
            rid, raw = kv_line(n, "DELETE", f"k{n % 5}")
        else:
            rid, raw = kv_line(n, "PUT", f"k{n % 5}", {"if_none_match": ["*"]} if n % 3 == 0 else None)
        ids.append(rid)
        data.append(raw)
    return ids, b"".join(data)


def dump(db) -> list:
    with sqlite3.connect(db) as conn:
        return [
            conn.execute("select * from kv_writes order by _id").fetchall(),
            conn.execute("select * from kv_items order by bucket, key").fetchall(),
        ]


@pytest.mark.parametrize("point", ["load.before_checkpoint@2", "checkpoint.after_temp_write@3"])
def test_kill_9_while_applying_decides_each_write_once_as_a_replay_does(tmp_path, point):
    runner = DaemonRunner(tmp_path / "home", ingest={"batch_lines": 10})
    ids, data = the_log()
    runner.log_path.write_bytes(data)
    try:
        runner.start(failpoints=point)
        assert runner.wait_exit() == -signal.SIGKILL, runner.log_text()
        runner.start()
        runner.wait_loaded(PROJECT, ids, table="kv_writes")  # fails on a write decided twice
        runner.assert_exactly(PROJECT, ids, table="kv_writes")
    finally:
        runner.kill()
    rebuilt = tmp_path / "rebuilt"
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingestd",
            "replay",
            "--config",
            str(runner.config_path),
            "--data-dir",
            str(rebuilt),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    live = dump(runner.data_dir / f"{PROJECT}.db")
    assert live == dump(rebuilt / f"{PROJECT}.db")
    statuses = [row[7] for row in live[0]]
    assert {"stored", "rejected", "deleted"} <= set(statuses)
