"""Read-side latency with many projects, against Datasette serving one database.

SmallTable: ``smalltable up`` over N projects of M records (bench/make_projects.py),
requests through nginx. Baseline, same run, same machine: a plain ``datasette
serve`` of one of those databases alone, with SmallTable's settings (facet
suggestions off), requests straight to it: the ratio is what nginx and the other
databases add. Printed per URL:
p50 and p99 of each, SmallTable's p50 over the baseline's, and the goal for
SmallTable's p99 (``over`` marks a miss). Then the live tail: how long from nginx's
202 to the record's event on ``/_tail`` (median and slowest against their goals: a
change the tail fails to notice waits for its 2 s recheck), against how long until
the record is queryable in SQLite (the ingest part of that delay).

The goals were limits inside the functional tests (test_e2e_browse, test_e2e_streams,
test_plugin_projects), which a loaded machine broke; here they are measured alone.

    .venv/bin/python bench/read_side.py            # 300 projects x 10,000 records
    .venv/bin/python bench/read_side.py --short    # 30 x 2,000, for a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from benchlib import free_port, wait_port
from make_projects import make

REPO = Path(__file__).resolve().parent.parent
PAGE_GOAL_MS = 1000
"""Every page of a project of 10,000 records, p99."""
LISTING_GOAL_MS = 100
"""Every project's summary (``/_projects.json``, the apex page) with 300 projects, p99."""
TAIL_MEDIAN_GOAL_MS = 500
TAIL_MAX_GOAL_MS = 1800
"""202 → the live tail's event: under the tail's 2 s recheck, so no change was missed."""


def timings(client: httpx.Client, urls: list[tuple[str, dict]], rounds: int) -> list[float]:
    """Seconds per request over ``rounds`` requests cycling through ``urls`` (after a warm-up)."""
    for url, headers in urls[:20]:
        client.get(url, headers=headers).raise_for_status()
    out = []
    for i in range(rounds):
        url, headers = urls[i % len(urls)]
        started = time.perf_counter()
        client.get(url, headers=headers).raise_for_status()
        out.append(time.perf_counter() - started)
    return out


def missed(ms: float, goal: float) -> str:
    return "  over" if ms > goal else ""


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def tail_latency(port: int, data: Path, project: str, samples: int) -> tuple[list[float], list[float]]:
    """(202 → SSE event, 202 → queryable) in seconds, for ``samples`` posts."""
    events: dict[str, float] = {}
    ready = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(timeout=None) as client,
            client.stream(
                "GET", f"http://127.0.0.1:{port}/_tail", headers={"Host": f"{project}.localhost"}
            ) as response,
        ):
            ready.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    rid = json.loads(line[6:]).get("_request_id")
                    events[rid] = time.perf_counter()
                    if len(events) > samples:
                        return

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(10)
    to_event, to_sql = [], []
    with httpx.Client() as client:
        # the first post creates the project (the tail waits for it to appear)
        warm = {"Host": f"{project}.localhost"}
        client.post(f"http://127.0.0.1:{port}/", content=b'{"warm":1}', headers=warm)
        while not (data / f"{project}.db").exists():
            time.sleep(0.01)
        time.sleep(1)
        conn = sqlite3.connect(f"file:{data / (project + '.db')}?mode=ro", uri=True)
        for _ in range(samples):
            response = client.post(
                f"http://127.0.0.1:{port}/", content=b'{"probe":1}', headers={"Host": f"{project}.localhost"}
            )
            rid, sent = response.json()["id"], time.perf_counter()
            while not conn.execute("select 1 from records where _request_id=?", [rid]).fetchone():
                time.sleep(0.001)
            to_sql.append(time.perf_counter() - sent)
            deadline = time.monotonic() + 10
            while rid not in events and time.monotonic() < deadline:
                time.sleep(0.001)
            to_event.append(events.get(rid, float("inf")) - sent)
            time.sleep(0.05)
    return to_event, to_sql


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="30 projects x 2,000 records, fewer rounds")
    parser.add_argument("--projects", type=int)
    parser.add_argument("--records", type=int)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    projects = args.projects or (30 if args.short else 300)
    records = args.records or (2000 if args.short else 10000)
    rounds = args.rounds or (100 if args.short else 400)
    data = REPO / "bench" / ".data" / f"data-{projects}x{records}"
    make(data, projects, records)
    names = [f"bench-{i:03d}" for i in range(projects)]

    home = Path(tempfile.mkdtemp(prefix="st-bench-"))
    port, ds_port, metrics_port, base_port = free_port(), free_port(), free_port(), free_port()
    config = home / "smalltable.yaml"
    config.write_text(yaml.safe_dump({"home": str(home), "paths": {"data_dir": str(data)}}))
    stack = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--config", str(config), "--port", str(port),
         "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    baseline = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(data / f"{names[0]}.db"), "--port", str(base_port),
         "--setting", "suggest_facets", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_port(port)
        wait_port(base_port)
        rng = random.Random(1)
        sample = [rng.choice(names) for _ in range(50)]
        mid = records // 2

        def ours(path: str) -> list[tuple[str, dict]]:
            return [
                (f"http://127.0.0.1:{port}{path.format(n=n)}", {"Host": f"{n}.localhost"}) for n in sample
            ]

        def theirs(path: str) -> list[tuple[str, dict]]:
            return [(f"http://127.0.0.1:{base_port}{path.format(n=names[0])}", {})]

        apex = [(f"http://127.0.0.1:{port}{{}}", {"Host": "localhost"})]
        cases = {
            "project page": (ours("/"), theirs("/{n}/records?_sort_desc=_id"), PAGE_GOAL_MS),
            "older records page": (
                ours(f"/?before={mid}"),
                theirs(f"/{{n}}/records?_sort_desc=_id&_id__lt={mid}"),
                PAGE_GOAL_MS,
            ),
            "record page": (ours(f"/{mid}"), theirs(f"/{{n}}/records/{mid}"), PAGE_GOAL_MS),
            "record JSON": (ours(f"/{mid}.json"), theirs(f"/{{n}}/records/{mid}.json"), PAGE_GOAL_MS),
            "record raw body": (ours(f"/{mid}/raw"), theirs(f"/{{n}}/records/{mid}.json"), PAGE_GOAL_MS),
            "stats JSON": (
                ours("/_stats.json"),
                theirs("/{n}.json?sql=select+count(*)+from+records"),
                PAGE_GOAL_MS,
            ),
            "table JSON": (ours("/{n}/records.json"), theirs("/{n}/records.json"), PAGE_GOAL_MS),
            "table HTML (Datasette)": (ours("/{n}/records"), theirs("/{n}/records"), PAGE_GOAL_MS),
            f"_projects.json ({projects})": (
                [(url.format("/_projects.json"), h) for url, h in apex],
                theirs("/-/databases.json"),
                LISTING_GOAL_MS,
            ),
            f"apex page ({projects})": (
                [(url.format("/"), h) for url, h in apex],
                theirs("/"),
                LISTING_GOAL_MS,
            ),
        }
        print(f"{projects} projects x {records} records; {rounds} requests each; ms")
        print(
            f"{'':24} {'SmallTable p50':>15} {'p99':>8} {'baseline p50':>13} {'p99':>8} {'ratio':>7}"
            f" {'goal p99':>9}"
        )
        with httpx.Client(timeout=60) as client:
            for name, (mine, base, goal) in cases.items():
                a, b = timings(client, mine, rounds), timings(client, base, rounds)
                ratio = statistics.median(a) / statistics.median(b)
                print(
                    f"{name:24} {p(a, 0.5):15.1f} {p(a, 0.99):8.1f} "
                    f"{p(b, 0.5):13.1f} {p(b, 0.99):8.1f} {ratio:6.2f}x {goal:9}{missed(p(a, 0.99), goal)}"
                )
        probe = f"probe-{os.getpid()}"  # a project of its own: the data set stays as built
        to_event, to_sql = tail_latency(port, data, probe, 40 if args.short else 100)
        median, slowest = p(to_event, 0.5), max(to_event) * 1000
        print(
            f"{'live tail: 202 → event':24} {median:15.1f} {p(to_event, 0.99):8.1f}"
            f"   median goal {TAIL_MEDIAN_GOAL_MS}{missed(median, TAIL_MEDIAN_GOAL_MS)},"
            f" slowest {slowest:.1f} (goal {TAIL_MAX_GOAL_MS}){missed(slowest, TAIL_MAX_GOAL_MS)}"
        )
        print(f"{'202 → queryable':24} {p(to_sql, 0.5):15.1f} {p(to_sql, 0.99):8.1f}")
    finally:
        for process in (stack, baseline):
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
