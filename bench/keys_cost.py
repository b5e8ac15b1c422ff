"""The key check's cost at nginx: writes with a write key against writes with none (issue 20).

Through the real nginx of ``smalltable up``, wrk POSTs the same ~200-byte JSON body
as fast as it can to two projects in turn: ``open`` (``"write": "open"``, no
``Authorization``: the baseline) and ``keyed`` (``"write": "key"``, every request
with ``Authorization: Bearer stk_…`` of a write key, which nginx/smalltable.js hashes
with SHA-256 and looks up in the keys map). The runs alternate in the order
open-keyed, keyed-open, open-keyed, ... (ABBA), four pairs by default, so that a drift
of the machine's speed touches both sides alike: each run adds some 300 MB to the
ingest log, and the later runs of a pair were slower when one side always went
second. The ratio is of the summed rates.

nginx alone is measured: ingestd is SIGSTOPped during the runs (after it has applied
the claims and made the key), as in ``end_to_end.py``'s run A, so the figure is
nginx's and not the CPU ingestd takes from it. Goal: keyed at least 0.9x open.

    .venv/bin/python bench/keys_cost.py           # 8 runs of 15 s
    .venv/bin/python bench/keys_cost.py --short   # 8 runs of 5 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from end_to_end import BODY, RUNNING, ensure_wrk, find_ingestd, run_wrk, write_lua

from benchlib import free_port, interrupt, wait_port

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.9


def until(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("the stack did not get there in time")
        time.sleep(0.05)


def prepare(client: httpx.Client, port: int) -> str:
    """Claim both projects, make ``keyed`` take keys only; a write key of ``keyed``."""
    url = f"http://127.0.0.1:{port}"

    def post(project: str, path: str, body: dict, key: str | None = None) -> dict:
        headers = {"Host": f"{project}.localhost", "Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        answer = client.post(url + path, content=json.dumps(body), headers=headers)
        answer.raise_for_status()
        return answer.json()

    post("open", "/_project", {"owner": "bench", "quota_mb": 1_000_000})
    owner = post("keyed", "/_project", {"owner": "bench", "quota_mb": 1_000_000, "write": "key"})["key"]

    def owned() -> bool:
        probe = client.post(url + "/_project/keys", content=b"{}", headers={"Host": "keyed.localhost"})
        return probe.json()["error"] != "the project has no owner key"

    until(owned)
    key = post("keyed", "/_project/keys", {"scope": "write", "label": "bench"}, owner)["key"]

    def in_force() -> bool:
        headers = {"Host": "keyed.localhost", "Authorization": f"Bearer {key}"}
        return client.post(url + "/", content=BODY, headers=headers).status_code == 202

    until(in_force)
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="5 s per run instead of 15 s")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections [64]")
    parser.add_argument("--rounds", type=int, default=4, help="pairs of runs, ABBA order [4]")
    args = parser.parse_args()
    seconds = 5.0 if args.short else 15.0
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="st-keys-"))
    home = work / "home"
    port, ds_port, metrics_port = free_port(), free_port(), free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--home", str(home), "--port", str(port),
         "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port)],
        stdout=open(work / "up.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    RUNNING.append(up)
    ingestd = None
    try:
        wait_port(port)
        wait_port(metrics_port)
        ingestd = find_ingestd(home)
        with httpx.Client(timeout=30) as client:
            key = prepare(client, port)
        url = f"http://127.0.0.1:{port}/"
        plain = write_lua(work / "open.lua", BODY, {})
        keyed = write_lua(work / "keyed.lua", BODY, {"Authorization": f"Bearer {key}"})
        os.kill(ingestd, signal.SIGSTOP)
        print(
            f"nginx alone (ingestd stopped); wrk -t {args.threads} -c {args.connections}, {seconds:g} s runs"
        )
        run_wrk(wrk, args, url, "open.localhost", plain, 2)  # warm-up
        rates = {"open": [], "keyed": []}
        pair = (("open", plain), ("keyed", keyed))
        for round_ in range(args.rounds):
            for name, lua in pair if round_ % 2 == 0 else pair[::-1]:
                result = run_wrk(wrk, args, url, f"{name}.localhost", lua, seconds)
                if result.ok != result.requests:
                    raise SystemExit(f"{name}: {result.requests - result.ok} requests not answered 2xx")
                rates[name].append(result.rate)
                latency = f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms"
                print(f"  {name:<6} {result.rate:>9,.0f} req/s  {latency}")
        ratio = sum(rates["keyed"]) / sum(rates["open"])
        verdict = "meets" if ratio >= GOAL else "MISSES"
        print(f"keyed / open: {ratio:.3f}x ({verdict} the goal of {GOAL}x)")
    finally:
        if ingestd is not None:
            os.kill(ingestd, signal.SIGCONT)
        for process in RUNNING:
            if process.poll() is None:
                interrupt(process, 30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
