"""The torture test: the promise under everything at once.

Several clients POST through the real nginx to many projects (valid JSON, malformed
JSON, binary); logrotate is forced every fraction of a second; the daemon is
SIGKILLed and restarted at random moments, and rotations happen while it is down.
At the end every request nginx answered 202 is in its project exactly once: in
``records``, or in ``rejects`` for the malformed ones, never both, nothing else.

A probe posts every 200 ms and measures how long its record takes to become
queryable; the figures go to test-artifacts/torture.json.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import threading
import time
from collections import Counter, defaultdict

import httpx
import pytest

from .conftest import ARTIFACTS
from .daemonlib import DaemonRunner
from .nginxlib import NginxFront

pytestmark = pytest.mark.e2e

DURATION = float(os.environ.get("SMALLTABLE_TORTURE_SECONDS", "45"))
CLIENTS = 6
PROJECTS = [f"torture-{i:02d}" for i in range(30)]
PROBE_TIMEOUT = 60
"""Seconds a probe waits for its record: longer means it was lost."""


def queryable(data_dir, project: str, request_id: str) -> bool:
    path = data_dir / f"{project}.db"
    if not path.exists():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("select 1 from records where _request_id = ?", [request_id]).fetchone()
        return row is not None
    except sqlite3.OperationalError as exc:
        if str(exc) == "no such table: records":
            return False
        raise
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture
def torture_front(tmp_path):
    runner = DaemonRunner(tmp_path / "home", ingest={"batch_lines": 500})
    front = NginxFront(runner)
    yield front
    front.stop()
    runner.kill()


def test_torture(torture_front):
    front = torture_front
    runner = front.runner
    runner.start()
    stop = threading.Event()
    lock = threading.Lock()
    rotating = threading.Lock()  # logrotate runs one at a time on a state file
    expected: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"records": [], "rejects": []})
    events = Counter()
    posted_by: set[int] = set()
    latencies: list[float] = []
    errors: list[BaseException] = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as exc:  # a thread's failure must fail the test
                errors.append(exc)
                stop.set()

        return run

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                project = rng.choice(PROJECTS)
                kind = rng.random()
                if kind < 0.05:
                    body, ctype, table = b'{"broken": ', "application/json", "rejects"
                elif kind < 0.10:
                    body, ctype, table = os.urandom(rng.randint(1, 3000)), "image/png", "records"
                else:
                    payload = {"client": seed, "n": rng.randint(0, 10**6), "pad": "x" * rng.randint(0, 400)}
                    body, ctype, table = json.dumps(payload).encode(), "application/json", "records"
                response = http.post(
                    f"http://127.0.0.1:{front.port}/",
                    content=body,
                    headers={"Host": f"{project}.localhost", "Content-Type": ctype},
                )
                assert response.status_code == 202, response.text
                with lock:
                    expected[project][table].append(response.json()["id"])
                    posted_by.add(seed)

    def rotator() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            time.sleep(rng.uniform(0.1, 0.5))
            with rotating:
                front.rotate()
            with lock:
                events["rotations"] += 1
                events["rotations_while_down"] += runner.process.poll() is not None

    def killer() -> None:
        rng = random.Random(2)
        while not stop.is_set():
            time.sleep(rng.uniform(0.3, 2.5))
            runner.kill()
            events["kills"] += 1
            if not events["rotations_while_down"]:  # at least one, however slow the rotator
                with rotating:
                    front.rotate()
                with lock:
                    events["rotations"] += 1
                    events["rotations_while_down"] += 1
            time.sleep(rng.uniform(0.0, 1.2))
            runner.start()

    def probe() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                response = http.post(
                    f"http://127.0.0.1:{front.port}/",
                    content=b'{"probe":1}',
                    headers={"Host": "probe.localhost", "Content-Type": "application/json"},
                )
                rid, sent = response.json()["id"], time.monotonic()
                with lock:
                    expected["probe"]["records"].append(rid)
                while not queryable(runner.data_dir, "probe", rid):
                    assert time.monotonic() < sent + PROBE_TIMEOUT, (
                        f"probe {rid} not loaded in {PROBE_TIMEOUT}s"
                    )
                    time.sleep(0.005)
                latencies.append(time.monotonic() - sent)
                time.sleep(0.2)

    # daemon threads: one that hangs fails the test below and cannot keep pytest from exiting
    threads = [threading.Thread(target=guarded(lambda s=s: client(s)), daemon=True) for s in range(CLIENTS)]
    threads += [threading.Thread(target=guarded(f), daemon=True) for f in (rotator, killer, probe)]
    for thread in threads:
        thread.start()
    stop.wait(DURATION)
    stop.set()
    joined_by = time.monotonic() + PROBE_TIMEOUT + 30
    for thread in threads:
        thread.join(timeout=max(0.0, joined_by - time.monotonic()))
    assert not errors, errors
    assert not [t for t in threads if t.is_alive()], "a torture thread did not stop"
    if runner.process.poll() is not None:
        runner.start()
    total = sum(len(tables["records"]) + len(tables["rejects"]) for tables in expected.values())
    front.wait_logged(total)
    caught_up_from = time.monotonic()
    for project, tables in expected.items():
        for table, ids in tables.items():
            runner.wait_loaded(project, ids, table=table, timeout=120)
    catch_up = time.monotonic() - caught_up_from
    loaded = 0
    for project, tables in expected.items():
        records, rejects = runner.request_ids(project), runner.request_ids(project, "rejects")
        assert not set(records) & set(rejects), f"{project}: a request in records and rejects"
        runner.assert_exactly(project, tables["records"])
        runner.assert_exactly(project, tables["rejects"], table="rejects")
        loaded += len(records) + len(rejects)
    assert loaded == total
    # the run really was a torture: every part ran, and a rotation came while the daemon
    # was down (how many of each a machine manages is in torture.json, not a test)
    assert events["kills"] >= 1 and events["rotations"] >= 1 and events["rotations_while_down"] >= 1
    assert posted_by == set(range(CLIENTS)), "a client posted nothing"
    report = {
        "requests": total,
        "seconds": DURATION,
        **events,
        "probe_count": len(latencies),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_max_ms": round(max(latencies) * 1000, 1),
        "final_catch_up_s": round(catch_up, 2),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "torture.json").write_text(json.dumps(report, indent=2) + "\n")
    print("torture:", report)
