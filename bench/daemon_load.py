"""The daemon's loader against replay, as the number of active projects grows.

Issue 25 (goals 1 and 4): the daemon must not spend more per row because many
projects post at once. ``smalltable replay`` loads a job's projects in passes of at
most ``ingest.open_databases`` (``Share.passes``); the daemon cannot wait for a
pass, so each batch (``ingest.batch_bytes`` of lines in log order, or up to
``ingest.many_projects_batch_bytes`` when it names more projects than databases are
kept open) goes to every project it names, and with more projects in it than are kept
open, every batch reopens the ones it names.

For logs made as ``varied_mix.py`` makes them (1, 50, 200 and 2,000 projects; bodies of
50 B to 20 KB; 1 to 200 keys), in the same run, each as a child process in a fresh temp
dir (``load_rate.measure``: wall clock, CPU, peak RSS):

- the daemon's loader: the log as a rotated file of a new home, loaded once by
  :func:`ingestd.restore.load` (``ingestd.daemon.Daemon.step``: the daemon's batches,
  synchronous commits, checkpoints; also what ``smalltable restore`` runs);
- baseline: ``smalltable replay --jobs 1`` of the same log.

Both must load the same rows, or it stops. Printed: each one's rows/s, CPU per row and
the daemon's CPU per row over replay's, with the goal (at most ``GOAL``x at every
project count) PASS/FAIL.

    .venv/bin/python bench/daemon_load.py           # 100,000 lines per log, 3 rounds
    .venv/bin/python bench/daemon_load.py --short   # 20,000 lines per log, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from load_rate import (  # noqa: E402
    BIN,
    MIB,
    Run,
    count_rows,
    load_average,
    measure,
    run_rounds,
    warm,
)
from varied_mix import ensure_log  # noqa: E402

PROJECT_COUNTS = (1, 50, 200, 2000)
GOAL = 1.5
"""The daemon's CPU per row at most this many times replay --jobs 1's, at every project count."""


def _config(work: Path) -> Path:
    """A home in ``work`` with the quota lifted (what is measured is loading, not holding)."""
    config = work / "smalltable.yaml"
    config.write_text(json.dumps({"home": str(work / "home"), "projects": {"quota_mb": 100_000}}))
    return config


def _rows(work: Path) -> int:
    projects = [p for p in (work / "home" / "data").glob("*.db") if not p.name.startswith("_")]
    return count_rows(projects, ("records", "rejects"))


def run_daemon(log: Path, work: Path) -> Run:
    """The daemon's loader over ``log`` placed as the home's only rotated file."""
    config = _config(work)
    logs = work / "home" / "logs"
    logs.mkdir(parents=True)
    shutil.copyfile(log, logs / "ingest.log.1")
    (logs / "ingest.log").touch()
    run, _ = measure([sys.executable, __file__, "--daemon-loader", str(config)], work)
    run.note = f"{_rows(work):,} rows"
    return run


def run_replay(log: Path, work: Path) -> Run:
    """``smalltable replay --jobs 1`` of ``log``."""
    config = _config(work)
    argv = [str(BIN / "smalltable"), "replay", "--config", str(config), "--from", str(log), "--jobs", "1"]
    run, _ = measure(argv, work)
    run.note = f"{_rows(work):,} rows"
    return run


def daemon_loader(config_file: Path) -> None:
    """In the child: one pass of the daemon's loader over the home's logs."""
    from ingestd import restore
    from ingestd.config import load_config

    restore.load(load_config(config_file), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="20,000 lines per log, one round")
    parser.add_argument("--lines", type=int, help="lines per log [100,000; --short 20,000]")
    parser.add_argument("--rounds", type=int, help="runs of each contender; medians shown [3; --short 1]")
    parser.add_argument("--projects", type=int, nargs="+", choices=PROJECT_COUNTS, help="only these logs")
    parser.add_argument("--dir", type=Path, help="where the temp dirs go (default: the system's)")
    parser.add_argument("--daemon-loader", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daemon_loader:
        daemon_loader(args.daemon_loader)
        return
    lines = args.lines or (20_000 if args.short else 100_000)
    rounds = args.rounds or (1 if args.short else 3)
    print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)")
    verdicts = []
    print(f"{'projects':>8} {'':22} {'rows/s':>8} {'wall s':>7} {'CPU s':>7} {'CPU µs/row':>10} "
          f"{'RSS MiB':>8}  rows")  # fmt: skip
    for projects in args.projects or PROJECT_COUNTS:
        log = ensure_log(lines, projects)
        warm(log)
        contenders = {"daemon's loader": (run_daemon, log), "replay --jobs 1": (run_replay, log)}
        runs = run_rounds(contenders, rounds, args.dir)
        notes = {name: {r.note for r in rs} for name, rs in runs.items()}
        if len(set().union(*notes.values())) != 1:
            sys.exit(f"{projects} projects: the contenders loaded different rows: {notes}")
        cpu = {}
        for name, rs in runs.items():
            wall = statistics.median(r.wall for r in rs)
            cpu[name] = statistics.median(r.cpu for r in rs)
            rss = max(r.rss_mib for r in rs)
            print(f"{projects:8,} {name:22} {lines / wall:8,.0f} {wall:7.1f} {cpu[name]:7.1f} "
                  f"{cpu[name] / lines * 1e6:10.1f} {rss:8.0f}  {rs[-1].note}")  # fmt: skip
        ratio = cpu["daemon's loader"] / cpu["replay --jobs 1"]
        verdicts.append((projects, ratio))
        size = log.stat().st_size / MIB
        print(f"{'':8} daemon / replay, CPU per row: {ratio:.2f}x   ({size:.0f} MiB of log)")
    print(f"load average after the runs: {load_average()}")
    worst = max(ratio for _, ratio in verdicts)
    shown = ", ".join(f"{p:,}: {r:.2f}x" for p, r in verdicts)
    print(f"goal: the daemon's CPU per row <= {GOAL}x replay --jobs 1's at every project count "
          f"({shown}): {'PASS' if worst <= GOAL else 'FAIL'}")  # fmt: skip


if __name__ == "__main__":
    os.chdir(REPO)
    main()
