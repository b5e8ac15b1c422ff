"""Range reads of the PhatData stream API (issue 22): ``GET /stream/TOPIC/0-99999`` through
the real nginx and Datasette, against reading the same rows with ``sqlite3`` directly.

A topic of 100,000 JSON documents (60 to 110 bytes each) is posted through the real
stack (array posts of 5,000 documents to ``/stream/bench``, loaded by ingestd). Then,
alternating, in the same run:

- **SmallTable**: curl reads the whole range, ``/stream/bench/0-99999`` (one JSON array,
  sent a chunk at a time), to ``/dev/null``; the time is curl's ``time_total``.
- **baseline**: a Python process reads the same rows' bodies with the ``sqlite3`` module
  (``select _body … where _id between 1 and 100000 order by _id``, 1,000 at a time)
  and writes them as the same JSON array to ``/dev/null``; the time is of the read and
  write alone (its start-up is not counted).

Documents/s and MiB/s are of the medians; peak memory is Datasette's growth in
resident memory over all the reads (VmHWM after, less before), and the baseline
process's own peak (VmHWM, the interpreter included). Goal: SmallTable at least 0.5x
the direct read's documents/s.

    .venv/bin/python bench/stream_reads.py           # 7 pairs of reads
    .venv/bin/python bench/stream_reads.py --short   # 3 pairs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchlib import free_port, interrupt, wait_port

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.5
DOCUMENTS = 100_000
PER_POST = 5_000
TOPIC = "bench"

DIRECT = """
import sqlite3, sys, time
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
out = open("/dev/null", "wb")
start = time.perf_counter()
cursor = conn.execute("select _body from records where _id between 1 and ? order by _id", (int(sys.argv[2]),))
sent, first = 0, True
out.write(b"[")
while rows := cursor.fetchmany(1000):
    data = (b"" if first else b",") + ",".join(row[0] for row in rows).encode()
    out.write(data)
    sent += len(data)
    first = False
out.write(b"]\\n")
elapsed = time.perf_counter() - start
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(elapsed, sent + 3, hwm)
"""


def document(n: int) -> dict:
    return {"n": n, "user": f"u{n % 97}", "score": n % 1000, "note": "x" * (n % 50)}


def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def datasette_pid(ds_port: int) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"datasette serve --host 127.0.0.1 --port {ds_port}"], capture_output=True, text=True
    ).stdout.split()
    if len(found) != 1:
        raise SystemExit(f"cannot tell which process is Datasette: {found}")
    return int(found[0])


def fill(client: httpx.Client, port: int) -> None:
    """Post DOCUMENTS documents to the topic, then wait until ingestd has loaded them all."""
    url = f"http://127.0.0.1:{port}/stream/{TOPIC}"
    headers = {"Host": "localhost", "Content-Type": "application/json"}
    for start in range(0, DOCUMENTS, PER_POST):
        body = json.dumps([document(n) for n in range(start, start + PER_POST)], separators=(",", ":"))
        client.post(url, content=body, headers=headers).raise_for_status()
    deadline = time.monotonic() + 300
    while True:
        answer = client.get(url, headers={"Host": "localhost"})
        if answer.status_code == 200 and answer.json()[0]["count"] == DOCUMENTS:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the topic did not reach {DOCUMENTS} documents: {answer.text}")
        time.sleep(0.2)


def read_smalltable(port: int) -> tuple[float, int]:
    """(seconds, bytes) of one range read of the whole topic with curl."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download} %{http_code}",
         "-H", "Host: localhost", f"http://127.0.0.1:{port}/stream/{TOPIC}/0-{DOCUMENTS - 1}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if out[2] != "200":
        raise SystemExit(f"the range read answered {out[2]}")
    return float(out[0]), int(out[1])


def read_direct(db: Path) -> tuple[float, int, int]:
    """(seconds, bytes, peak KiB) of the same rows read with sqlite3 in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-c", DIRECT, str(db), str(DOCUMENTS)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="3 pairs of reads instead of 7")
    args = parser.parse_args()
    pairs = 3 if args.short else 7
    work = Path(tempfile.mkdtemp(prefix="st-streams-"))
    home = work / "home"
    port, ds_port, metrics_port = free_port(), free_port(), free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--home", str(home), "--port", str(port),
         "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port)],
        stdout=open(work / "up.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        wait_port(ds_port)
        with httpx.Client(timeout=60) as client:
            fill(client, port)
        db = home / "data" / f"{TOPIC}.db"
        datasette = datasette_pid(ds_port)
        read_smalltable(port)  # warm-up: the page cache, Datasette's first request
        read_direct(db)
        before = peak_kib(datasette)
        ours, direct, direct_peak, sizes = [], [], [], set()
        for _ in range(pairs):
            seconds, size = read_smalltable(port)
            ours.append(seconds)
            sizes.add(size)
            seconds, size, peak = read_direct(db)
            direct.append(seconds)
            direct_peak.append(peak)
            sizes.add(size)
        if len(sizes) != 1:
            raise SystemExit(f"the two reads sent different sizes: {sorted(sizes)}")
        size = sizes.pop()
        grown = (peak_kib(datasette) - before) / 1024
        print(f"{DOCUMENTS:,} documents, {size / 2**20:.1f} MiB as one JSON array; {pairs} pairs of reads")
        for name, times in (("SmallTable (nginx, Datasette)", ours), ("sqlite3 directly", direct)):
            median = statistics.median(times)
            spread = " ".join(f"{t * 1000:.0f}" for t in times)
            print(
                f"  {name:<30} {DOCUMENTS / median:>10,.0f} documents/s  {size / 2**20 / median:>7.1f} MiB/s"
                f"  (median {median * 1000:.0f} ms of {spread})"
            )
        print(f"  peak memory: Datasette grew {grown:.1f} MiB; the direct reader peaked at "
              f"{max(direct_peak) / 1024:.1f} MiB (the interpreter included)")  # fmt: skip
        ratio = statistics.median(direct) / statistics.median(ours)
        verdict = "meets" if ratio >= GOAL else "MISSES"
        print(f"SmallTable / direct: {ratio:.2f}x ({verdict} the goal of {GOAL}x)")
    finally:
        if up.poll() is None:
            interrupt(up, 30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
