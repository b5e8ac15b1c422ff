"""Read-side latency with many projects, against Datasette serving one database, and
against SmallTable holding that one project alone.

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

Then issue 25's goal 4: the project page, a table JSON request and a record request
with N projects, spread over 50 of them (what having many projects costs: the goal,
p50 and p99 within 1.5x), and each to the next of all N (every read cold: its
connection closed, its pages not cached), against the same requests to a second
``smalltable up`` whose data directory holds only a copy of one of those projects.
Memory: Datasette's and ingestd's resident memory on both after the requests, and how
many project databases Datasette holds open (bounded by ``datasette.open_databases``);
and 202 → queryable on both (the daemon's per-batch cost must not grow with idle
projects).

The goals were limits inside the functional tests (test_e2e_browse, test_e2e_streams,
test_plugin_projects), which a loaded machine broke; here they are measured alone.

    .venv/bin/python bench/read_side.py                  # 300 projects x 10,000 records
    .venv/bin/python bench/read_side.py --projects 2000  # goal 4's 2,000 projects (4 GB)
    .venv/bin/python bench/read_side.py --short          # 30 x 2,000, for a quick look
"""

from __future__ import annotations

import argparse
import contextlib
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
MANY_GOAL = 1.5
"""Goal 4: with N projects, p50 and p99 at most this times their one-project values."""
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
        with contextlib.suppress(httpx.TransportError):  # the stack stopped while it listened
            follow()

    def follow() -> None:
        with (
            httpx.Client(timeout=None) as client,
            client.stream(
                "GET", f"http://127.0.0.1:{port}/_tail", headers={"Host": f"{project}.localhost"}
            ) as response,
        ):
            response.raise_for_status()
            ready.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    rid = json.loads(line[6:]).get("_request_id")
                    events[rid] = time.perf_counter()
                    if len(events) > samples:
                        return

    with httpx.Client() as client:
        # the first post creates the project: a tail of a project that does not exist is a 404
        warm = {"Host": f"{project}.localhost"}
        client.post(f"http://127.0.0.1:{port}/", content=b'{"warm":1}', headers=warm)
        while not (data / f"{project}.db").exists():
            time.sleep(0.01)
        time.sleep(1)
        threading.Thread(target=listen, daemon=True).start()
        ready.wait(10)
        to_event, to_sql = [], []
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


def start_up(home: Path, data: Path) -> tuple[subprocess.Popen, int, int]:
    """``smalltable up`` serving ``data`` from ``home``: the process, nginx's and Datasette's ports."""
    port, ds_port, metrics_port = free_port(), free_port(), free_port()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "smalltable.yaml"
    config.write_text(yaml.safe_dump({"home": str(home), "paths": {"data_dir": str(data)}}))
    stack = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--config", str(config), "--port", str(port),
         "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_port(port)
    return stack, port, ds_port


def pid_of(pattern: str) -> int:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    assert len(found) == 1, (pattern, found)
    return int(found[0])


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_databases(pid: int) -> int:
    """The project databases (``NAME.db``) the process has open."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.endswith(".db"):
            names.add(target)
    return len(names)


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
    alone = home / "alone-data"  # one project, a copy: the other stack's ingestd never touches ours
    alone.mkdir()
    (alone / f"{names[0]}.db").write_bytes((data / f"{names[0]}.db").read_bytes())
    base_port = free_port()
    stack, port, ds_port = start_up(home / "many", data)
    single, one_port, one_ds_port = start_up(home / "one", alone)
    baseline = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(data / f"{names[0]}.db"), "--port", str(base_port),
         "--setting", "suggest_facets", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_port(base_port)
        wait_port(ds_port)
        wait_port(one_ds_port)
        rng = random.Random(1)
        sample = [rng.choice(names) for _ in range(50)]
        mid = records // 2

        def ours(path: str, over: list[str] = sample, at: int = port) -> list[tuple[str, dict]]:
            return [(f"http://127.0.0.1:{at}{path.format(n=n)}", {"Host": f"{n}.localhost"}) for n in over]

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
        # a plain table URL is redirected to its default view (newest first): a user follows it
        with httpx.Client(timeout=60, follow_redirects=True) as client:
            for name, (mine, base, goal) in cases.items():
                a, b = timings(client, mine, rounds), timings(client, base, rounds)
                ratio = statistics.median(a) / statistics.median(b)
                print(
                    f"{name:24} {p(a, 0.5):15.1f} {p(a, 0.99):8.1f} "
                    f"{p(b, 0.5):13.1f} {p(b, 0.99):8.1f} {ratio:6.2f}x {goal:9}{missed(p(a, 0.99), goal)}"
                )
            spread = names[1:] + names[:1]  # every project in turn: most reads find theirs closed
            many_cases = {
                "project page": "/",
                "table JSON": "/{n}/records.json?_sort_desc=_id",
                "record JSON": f"/{mid}.json",
            }
            count = max(rounds, min(projects, 2000))
            print(
                f"\ngoal 4: {projects} projects against one alone; {count} requests each; ms."
                f" 'set': requests spread over {len(sample)} of the {projects} (the goal's measure:"
                " what having many projects costs); 'all': each request to the next of all of them"
                " (every read cold: its connection, its pages)"
            )
            print(f"{'':24} {'N p50':>8} {'p99':>8} {'one p50':>8} {'p99':>8} {'p50 x':>7} {'p99 x':>7}")
            for name, path in many_cases.items():
                b = timings(client, ours(path, [names[0]], one_port), count)
                for spread_over, over in (("set", sample), ("all", spread)):
                    a = timings(client, ours(path, over), count)
                    x50, x99 = p(a, 0.5) / p(b, 0.5), p(a, 0.99) / p(b, 0.99)
                    verdict = "PASS" if max(x50, x99) <= MANY_GOAL else "FAIL"
                    goal = f"goal <= {MANY_GOAL}x {verdict}" if spread_over == "set" else "(cold)"
                    print(
                        f"{name + ' (' + spread_over + ')':24} {p(a, 0.5):8.1f} {p(a, 0.99):8.1f}"
                        f" {p(b, 0.5):8.1f} {p(b, 0.99):8.1f} {x50:6.2f}x {x99:6.2f}x  {goal}"
                    )
        for label, at, data_dir, ds_at in (
            (f"{projects} projects", port, data, ds_port),
            ("one project", one_port, alone, one_ds_port),
        ):
            datasette = pid_of(f"datasette serve --host 127.0.0.1 --port {ds_at}")
            daemon = pid_of(f"ingestd ingest --config {home / ('many' if data_dir == data else 'one')}/")
            probe = f"probe-{os.getpid()}"
            to_event, to_sql = tail_latency(at, data_dir, probe, 40 if args.short else 100)
            print(
                f"{label}: Datasette {rss_mib(datasette):.0f} MiB resident, {open_databases(datasette)}"
                f" databases open; ingestd {rss_mib(daemon):.0f} MiB; 202 → queryable p50"
                f" {p(to_sql, 0.5):.1f} p99 {p(to_sql, 0.99):.1f} ms"
            )
            if data_dir == data:
                median, slowest = p(to_event, 0.5), max(to_event) * 1000
                print(
                    f"{'live tail: 202 → event':24} {median:15.1f} {p(to_event, 0.99):8.1f}"
                    f"   median goal {TAIL_MEDIAN_GOAL_MS}{missed(median, TAIL_MEDIAN_GOAL_MS)},"
                    f" slowest {slowest:.1f} (goal {TAIL_MAX_GOAL_MS}){missed(slowest, TAIL_MAX_GOAL_MS)}"
                )
    finally:
        for process in (stack, single, baseline):
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
