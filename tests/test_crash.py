"""kill -9 in the middle of the daemon's slower work: releasing held posts, a retention pass.

Each test arms a failpoint (ingestd/support/failpoints.py), lets the real daemon
die there with SIGKILL, starts it again and checks the state it recovers to: every
post loaded exactly once, the holding area empty, what retention deleted gone for
good and counted once, the numbering going on after it. (The failpoints every load
reaches are in test_faults.py.)
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time

from ingestd.store.retention import CHUNK

from .daemonlib import DaemonRunner

DAY = 86400


def died_at(runner: DaemonRunner, point: str) -> None:
    status = runner.wait_exit()
    assert status == -signal.SIGKILL, f"did not die at {point} (status {status}):\n{runner.log_text()}"


def query(runner: DaemonRunner, database: str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{runner.data_dir / database}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def append(runner: DaemonRunner, lines: list[bytes]) -> None:
    with open(runner.log_path, "ab") as log:
        log.write(b"".join(lines))


def test_kill_9_while_held_posts_are_released_loads_each_once(tmp_path):
    """Posts wait for a project that does not exist; its creation releases them in
    batches. Killed after a batch is loaded but before the holding area forgets it, the
    daemon loads that batch again on restart: the store skips what it has."""
    runner = DaemonRunner(tmp_path / "home", projects={"auto_create": False}, ingest={"batch_lines": 50})
    held = [runner.line("late", json.dumps({"n": n}).encode(), ctype="application/json") for n in range(180)]
    _, create = runner.line(
        "late", b'{"owner": "ann@example.com"}', uri="/_project", ctype="application/json"
    )
    append(runner, [line for _, line in held] + [create])
    ids = [rid for rid, _ in held]
    try:
        runner.start(failpoints="holding.after_load@2")
        died_at(runner, "holding.after_load@2")
        loaded = runner.request_ids("late")
        assert 0 < len(loaded) < len(ids), "killed between the first and the last release"
        runner.start()
        runner.wait_loaded("late", ids)
        runner.assert_exactly("late", ids)
        assert runner.request_ids("late") == ids  # in the order they were posted
        assert query(runner, "_smalltable.db", "select count(*) from held") == [(0,)]
        more = runner.write("late", 3)
        runner.wait_loaded("late", ids + more)
        runner.assert_exactly("late", ids + more)
    finally:
        runner.kill()


def test_kill_9_in_a_retention_pass_finishes_it_on_restart(tmp_path):
    """More old records than one chunk: killed after the first chunk, the next pass
    deletes the rest. Nothing kept is deleted, nothing deleted comes back, each row is
    counted in one pass, and new records are numbered after the highest deleted."""
    runner = DaemonRunner(tmp_path / "home", projects={"retention_days": 30, "retention_interval": 0.5})
    old_time, now = f"{time.time() - 40 * DAY:.3f}", f"{time.time():.3f}"
    old = [runner.line("aging", b'{"n":1}', t=old_time, ctype="application/json") for _ in range(CHUNK + 700)]
    kept = [runner.line("aging", b'{"n":2}', t=now, ctype="application/json") for _ in range(5)]
    append(runner, [line for _, line in old + kept])
    kept_ids = [rid for rid, _ in kept]
    try:
        runner.start(failpoints="retention.after_chunk@1")
        died_at(runner, "retention.after_chunk@1")
        assert len(runner.request_ids("aging")) == len(old) + len(kept) - CHUNK
        runner.start()
        deadline = time.monotonic() + 30
        while runner.request_ids("aging") != kept_ids:
            assert time.monotonic() < deadline, f"{len(runner.request_ids('aging'))} rows left"
            time.sleep(0.1)
        passes = query(runner, "aging.db", "select records, rejects, through_id from expiry order by _id")
        assert passes == [(CHUNK, 0, CHUNK), (len(old) - CHUNK, 0, len(old))]
        more = runner.write("aging", 1)
        runner.wait_loaded("aging", kept_ids + more)
        last = query(runner, "aging.db", "select _id from records order by _id desc limit 1")
        assert last == [(len(old) + len(kept) + 1,)]
    finally:
        runner.kill()
