"""What the ingest daemon costs when nothing is posted: CPU and memory (issue 7, benchmark 4).

The daemon (``smalltable ingest``) waits on watchdog's inotify events, with a
rescan every ``ingest.rescan_interval`` (1 s) in case an event is missed; it
must not busy-poll. It runs on a temporary home as production has it between
posts: an empty live log, a rotated log it has finished loading, an older
compressed one, and its metrics server listening (not scraped).

Measured over the same window, side by side, against two baselines started the
same way (the same Python):

- ``sleep``: ``python -c "import time; time.sleep(...)"``, the floor: what a
  process that does nothing costs here (0);
- ``50 ms poll``: ``while True: os.stat(log); time.sleep(0.05)``, the naive tailer
  a watcher replaces.

CPU % is (utime + stime) from /proc/PID/stat, all threads, over the wall time
(one core = 100 %); ``on-CPU`` is the same from the scheduler's nanosecond
counters (/proc/PID/task/*/schedstat), finer than the 10 ms clock tick. ``ctx
sw/s``: context switches per second, all threads (about one per wakeup). RSS is VmRSS from
/proc/PID/status at the end. Goal: the daemon under 1 % CPU.

    .venv/bin/python bench/idle_cost.py            # settle 5 s, measure 60 s
    .venv/bin/python bench/idle_cost.py --short    # measure 15 s
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchlib import terminate

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GOAL_PERCENT = 1.0

POLLER = """
import os, sys, time
path = sys.argv[1]
while True:
    try:
        os.stat(path)
    except OSError:
        pass
    time.sleep(0.05)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_line(project: str, n: int, when: float) -> bytes:
    """One ingest-log line as nginx's ``smalltable_v1`` format writes it (docs/log-format.md)."""
    body = json.dumps({"n": n, "user": "ann", "score": n % 7})
    fields = {
        "v": 1,
        "t": round(when, 3),
        "rt": 0.001,
        "id": secrets.token_hex(16),
        "project": project,
        "method": "POST",
        "uri": "/",
        "ctype": "application/json",
        "clen": str(len(body)),
        "addr": "127.0.0.1",
        "ua": "bench/idle_cost",
        "status": "202",
        "body": body,
    }
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def make_home(home: Path, metrics_port: int) -> Path:
    """A home whose logs the daemon will find finished: .2.gz and .1 loaded, the live log empty."""
    logs = home / "logs"
    logs.mkdir(parents=True)
    now = time.time()
    with gzip.open(logs / "ingest.log.2.gz", "wb") as f:
        f.writelines(log_line("idle", n, now - 7200 + n) for n in range(200))
    (logs / "ingest.log.1").write_bytes(b"".join(log_line("idle", n, now - 3600 + n) for n in range(200)))
    for name, age in (("ingest.log.2.gz", 7200), ("ingest.log.1", 3600)):
        os.utime(logs / name, (now - age, now - age))
    (logs / "ingest.log").touch()
    config = home / "smalltable.yaml"
    config.write_text(yaml.safe_dump({"home": str(home), "metrics": {"port": metrics_port}}))
    return config


def wait_loaded(home: Path, lines: int, timeout: float = 60) -> None:
    """Until the daemon has loaded ``lines`` records (so the window sees it idle, not catching up)."""
    db = home / "data" / "idle.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    if conn.execute("select count(*) from records").fetchone()[0] >= lines:
                        return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    raise SystemExit(f"the daemon did not load the rotated logs within {timeout:.0f}s; see {home}")


@dataclass
class Sample:
    ticks: int
    oncpu_ns: int
    switches: int


def sample(pid: int) -> Sample:
    """CPU ticks (utime+stime, all threads), on-CPU ns and context switches over all threads."""
    with open(f"/proc/{pid}/stat") as f:
        # the command name may hold spaces: the fields start after its closing parenthesis
        fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    oncpu = switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                oncpu += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        switches += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return Sample(ticks, oncpu, switches)


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="measure 15 s instead of 60 s")
    parser.add_argument("--seconds", type=float, help="measurement window (default 60, --short 15)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before measuring")
    args = parser.parse_args()
    window = args.seconds or (15.0 if args.short else 60.0)

    home = Path(tempfile.mkdtemp(prefix="st-idle-"))
    config = make_home(home, free_port())
    live = home / "logs" / "ingest.log"
    out = open(home / "ingestd.out", "wb")
    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["ingestd"] = subprocess.Popen(
            [sys.executable, "-m", "ingestd", "ingest", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_loaded(home, 400)
        processes["sleep (floor)"] = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({window + args.settle + 60})"]
        )
        processes["50 ms poll"] = subprocess.Popen([sys.executable, "-c", POLLER, str(live)])
        time.sleep(args.settle)
        for name, process in processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with status {process.returncode}; see {home}")

        before = {name: sample(p.pid) for name, p in processes.items()}
        started = time.monotonic()
        time.sleep(window)
        after = {name: sample(p.pid) for name, p in processes.items()}
        wall = time.monotonic() - started
        rss = {name: status_kib(p.pid, "VmRSS") for name, p in processes.items()}
        hwm = {name: status_kib(p.pid, "VmHWM") for name, p in processes.items()}
        nthreads = {name: threads(p.pid) for name, p in processes.items()}

        print(f"idle for {wall:.1f} s after {args.settle:g} s to settle; one core = 100 %")
        print(
            f"{'':16} {'CPU %':>7} {'on-CPU %':>9} {'CPU ms':>7} {'ctx sw/s':>10} "
            f"{'RSS MiB':>8} {'peak MiB':>9} {'threads':>8}"
        )
        for name in processes:
            ticks = after[name].ticks - before[name].ticks
            oncpu = (after[name].oncpu_ns - before[name].oncpu_ns) / 1e9
            wakeups = (after[name].switches - before[name].switches) / wall
            print(
                f"{name:16} {ticks / CLOCK_TICKS / wall * 100:7.3f} {oncpu / wall * 100:9.3f} "
                f"{ticks / CLOCK_TICKS * 1000:7.0f} {wakeups:10.1f} {rss[name] / 1024:8.1f} "
                f"{hwm[name] / 1024:9.1f} {nthreads[name]:8d}"
            )
        daemon = (after["ingestd"].ticks - before["ingestd"].ticks) / CLOCK_TICKS / wall * 100
        verdict = "PASS" if daemon < GOAL_PERCENT else "FAIL"
        print(f"goal: the daemon under {GOAL_PERCENT:g} % CPU idle: {daemon:.3f} % {verdict}")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            terminate(process, timeout=15)
        out.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
