"""The daemon beside idle projects: its CPU per post while posts trickle in (issue 25, goal 4).

"The daemon's memory and its per-batch cost must not grow with the number of idle
projects." Here the daemon (``smalltable ingest``) follows a live log that this script
appends to, one post at a time at ``--rate`` posts a second (so that about every post is
a batch of its own, as at a quiet moment in production), all to one project, while the
data directory holds 0, 2,000 or 10,000 idle projects beside it: copies of a project
database with one record, that nothing posts to. The home is made as ``idle_cost.py``
makes it, with ``projects.max_projects`` raised above the idle count.

Before measuring, the daemon loads a first post (its retention pass over every project
at start is over by then) and makes its first two blob replication passes (the first
reads every project, the next those that changed meanwhile; each waited for until the
daemon spends under 3 % of a core for a second), then settles: what is measured is the
daemon between its passes over every project, at a post's every batch. Measured over the window, from /proc as
``idle_cost.py`` does: the daemon's CPU (on-CPU time of all its threads), its CPU per
post, and its resident memory at the end. Printed per idle count, with the ratio to the
run without idle projects (the baseline, in the same run); goal: CPU per post and memory
at most ``GOAL``x the baseline's at every count, PASS/FAIL.

    .venv/bin/python bench/idle_projects.py           # 0, 2,000 and 10,000 idle projects, 30 s each
    .venv/bin/python bench/idle_projects.py --short   # 0 and 2,000, 10 s each
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from idle_cost import log_line, sample, status_kib

from benchlib import free_port, terminate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingestd.config import SETTINGS  # noqa: E402
from ingestd.ingest.logline import parse_line  # noqa: E402
from ingestd.ingest.records import build  # noqa: E402
from ingestd.store.pool import Store  # noqa: E402

GOAL = 1.2
"""CPU per post and memory with idle projects at most this many times without them."""
ACTIVE = "active"
QUIET = 0.03
"""A daemon under this share of a core is done with its passes at start."""


def make_home(home: Path, idle: int) -> Path:
    """A home whose data directory holds ``idle`` idle projects; its config file."""
    data = home / "data"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "ingest.log").touch()
    store = Store(data, max_columns=200, open_databases=1)
    store.write("idle-template", [build(parse_line(log_line("idle-template", 0, time.time())[:-1]))], [])
    store.close()
    template = data / "idle-template.db"
    for number in range(idle):
        shutil.copyfile(template, data / f"idle-{number:05d}.db")
    template.unlink()
    config = home / "smalltable.yaml"
    settings = {"home": str(home), "metrics": {"port": free_port()}, "projects": {"max_projects": idle + 100}}
    config.write_text(yaml.safe_dump(settings))
    return config


def loaded(home: Path) -> int:
    """Records in the active project so far."""
    db = home / "data" / f"{ACTIVE}.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("select count(*) from records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for(home: Path, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while loaded(home) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not load {count} posts within {timeout:.0f} s; see {home}")
        time.sleep(0.1)


def quiet(pid: int, timeout: float) -> None:
    """Until the daemon spends under QUIET of a core for a second: the passes over every
    project it makes as it starts (retention, blob replication) are over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sample(pid).oncpu_ns
        time.sleep(1.0)
        if (sample(pid).oncpu_ns - before) / 1e9 < QUIET:
            return
    raise SystemExit(f"the daemon was still busy after {timeout:.0f} s")


def run(idle: int, seconds: float, rate: float, settle: float, root: Path | None) -> tuple[float, float, int]:
    """(CPU seconds per post, resident MiB at the end, posts) of the daemon beside ``idle`` projects."""
    home = Path(tempfile.mkdtemp(prefix="st-idle-projects-", dir=root))
    config = make_home(home, idle)
    live = home / "logs" / "ingest.log"
    out = open(home / "ingestd.out", "wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "ingest", "--config", str(config)],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with open(live, "ab", buffering=0) as log:
            log.write(log_line(ACTIVE, 0, time.time()))
            wait_for(home, 1, timeout=120 + idle / 50)  # after its retention pass over every project
            # Its first blob replication pass reads every project, the next those the start changed:
            # after that, a pass reads the projects written to since the last one.
            for _ in range(2):
                quiet(daemon.pid, timeout=120 + idle / 50)
                time.sleep(SETTINGS["blobs.replicate_interval"].default)
            quiet(daemon.pid, timeout=120 + idle / 50)
            time.sleep(settle)
            before = sample(daemon.pid)
            started = time.monotonic()
            posts = 0
            while (now := time.monotonic()) < started + seconds:
                posts += 1
                log.write(log_line(ACTIVE, posts, time.time()))
                time.sleep(max(0.0, started + posts / rate - now))
            wait_for(home, posts + 1, timeout=60)
            after = sample(daemon.pid)
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with status {daemon.returncode}; see {home}")
        rss = status_kib(daemon.pid, "VmRSS") / 1024
        return (after.oncpu_ns - before.oncpu_ns) / 1e9 / posts, rss, posts
    finally:
        terminate(daemon, timeout=30)
        out.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="0 and 2,000 idle projects, 10 s each")
    parser.add_argument("--seconds", type=float, help="measurement window per run [30; --short 10]")
    parser.add_argument("--rate", type=float, default=20.0, help="posts a second [20]")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the first post [3]")
    parser.add_argument("--dir", type=Path, help="where the temp homes go (default: the system's)")
    args = parser.parse_args()
    counts = (0, 2000) if args.short else (0, 2000, 10_000)
    seconds = args.seconds or (10.0 if args.short else 30.0)
    print(f"one project posting {args.rate:g} posts/s for {seconds:g} s beside idle projects; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)", flush=True)  # fmt: skip
    results = {}
    for idle in counts:
        results[idle] = run(idle, seconds, args.rate, args.settle, args.dir)
        print(f"  {idle:,} idle: {results[idle][2]} posts, {results[idle][0] * 1e3:.2f} ms CPU per post, "
              f"{results[idle][1]:.0f} MiB", flush=True)  # fmt: skip
    per_post, rss, _ = results[0]
    print(f"\n{'idle projects':>14} {'CPU ms/post':>12} {'ratio':>7} {'RSS MiB':>8} {'ratio':>7}")
    verdicts = []
    for idle, (cpu, memory, _) in results.items():
        print(f"{idle:14,} {cpu * 1e3:12.2f} {cpu / per_post:6.2f}x {memory:8.0f} {memory / rss:6.2f}x")
        if idle:
            verdicts.append(cpu / per_post <= GOAL and memory / rss <= GOAL)
    verdict = "PASS" if all(verdicts) else "FAIL"
    print(f"goal: CPU per post and memory beside idle projects <= {GOAL}x without them: {verdict}")


if __name__ == "__main__":
    os.chdir(REPO)
    main()
