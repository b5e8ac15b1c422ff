"""Replay against sqlite-utils on a mix not tuned for: body sizes, key counts, project counts.

Issue 25, goal 2. For each of three project counts (1, 50 and 2,000 projects), an
ingest log is generated as nginx writes it (``tests/linelib.make_line``): bodies of
50 B to 20 KB (log-uniform, so every order of magnitude is as common), JSON objects
of 1, 3, 10, 40 or 200 keys (a project always sends its own number of keys, drawn
from a vocabulary of 300 names all projects share), one post in ten plain text.
Each contender loads the same log into empty databases in a fresh temp dir, as a
subprocess whose wall clock, CPU time and peak memory are measured
(``load_rate.measure``):

- SmallTable: ``smalltable replay --config CFG --from LOG`` with its defaults (one job
  per CPU, a database per project, a column per key up to ``ingest.max_columns``);
- ``sqlite-utils insert db.db records NDJSON --nl`` (its defaults, one database): the
  same posts with their request fields and body, one row each. Without ``--alter`` it
  stops at the first key its first batch did not have, so this file holds no key
  columns: it stores what SmallTable stores, less the columns per key;
- ``sqlite-utils insert ... --nl --alter``: the same, plus each JSON object's keys as
  columns, as SmallTable makes them.

The NDJSON files are written before the timing starts. Printed: a table per project
count, then the goals on the summed wall clock of the three logs: SmallTable at least
3x sqlite-utils with its defaults and at least 2x sqlite-utils ``--alter``, PASS/FAIL.
Per log also SQLite's own share of SmallTable's rows (``load_rate.sqlite_share``: the rows
replay stored, inserted again alone as replay inserts them, and making their databases, one
per project): over the jobs that can share it, the least wall clock any SmallTable could load
them in. A goal that fails is shown against that bound.

    .venv/bin/python bench/varied_mix.py           # 100,000 lines per log, 3 rounds
    .venv/bin/python bench/varied_mix.py --short   # 20,000 lines per log, 1 round
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import sys
from pathlib import Path
from typing import BinaryIO

import orjson
from load_rate import (
    DATA,
    MIB,
    cache_log,
    ensure_ndjson,
    load_average,
    run_rounds,
    run_smalltable,
    run_sqlite_utils,
    sqlite_share,
    warm,
)

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 1  # bump when the generator changes: the cached logs are keyed by it
PROJECT_COUNTS = (1, 50, 2000)
KEY_COUNTS = (1, 3, 10, 40, 200)
VOCABULARY = [f"field_{n:03d}" for n in range(300)]
SMALLEST, BIGGEST = 50, 20_000
GOAL_VS_DEFAULTS = 3.0
GOAL_VS_ALTER = 2.0


def _object(rng: random.Random, keys: list[str], size: int) -> dict:
    """A JSON object with ``keys`` whose encoding is about ``size`` bytes (or the least
    those keys take): mostly text, some numbers and booleans."""
    share = max(1, (size - 12 * len(keys)) // len(keys))
    obj: dict[str, object] = {}
    for key in keys:
        roll = rng.random()
        if roll < 0.15:
            obj[key] = rng.randint(-(10**9), 10**9)
        elif roll < 0.25:
            obj[key] = round(rng.uniform(-1000, 1000), 3)
        elif roll < 0.30:
            obj[key] = rng.random() < 0.5
        else:
            obj[key] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz éü") for _ in range(share))
    return obj


def log_lines(n: int, projects: int, seed: int = 25):
    """``n`` log lines over ``projects`` projects (see the module docstring)."""
    sys.path.insert(0, str(REPO))
    from tests.linelib import make_line  # nginx's escape=json, checked against nginx

    rng = random.Random(seed)
    names = [f"mix-{number:04d}" for number in range(projects)]
    shapes = {}
    for number, name in enumerate(names):
        own = random.Random(name)
        shapes[name] = own.sample(VOCABULARY, KEY_COUNTS[number % len(KEY_COUNTS)])
    clock = 1795250000.0
    for _ in range(n):
        project = rng.choice(names)
        size = int(math.exp(rng.uniform(math.log(SMALLEST), math.log(BIGGEST))))
        if rng.random() < 0.1:
            body = "".join(rng.choice("lorem ipsum dolor sit amet\n") for _ in range(size)).encode()
            ctype = "text/plain"
        else:
            body = orjson.dumps(_object(rng, shapes[project], size))
            ctype = "application/json"
        clock += rng.expovariate(50.0)
        yield make_line(
            body,
            t=f"{clock:.3f}",
            rt="0.001",
            id=f"{int(clock * 1000):013d}{rng.getrandbits(76):019x}",  # as nginx/smalltable.conf.j2 makes it
            project=project,
            method="POST",
            uri="/",
            ctype=ctype,
            clen=str(len(body)),
            addr="203.0.113.7",
            ua="curl/8.5.0",
        )


def ensure_log(n: int, projects: int) -> Path:
    """The cached log of ``n`` lines over ``projects`` projects."""

    def write(out: BinaryIO) -> None:
        for line in log_lines(n, projects):
            out.write(line + b"\n")

    return cache_log(DATA / f"varied-mix-v{GENERATOR_VERSION}-{projects}p-{n}.log", n, write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="20,000 lines per log, one round")
    parser.add_argument("--lines", type=int, help="lines per log [100,000; --short 20,000]")
    parser.add_argument("--rounds", type=int, help="runs of each contender; medians shown [3; --short 1]")
    parser.add_argument("--dir", type=Path, help="where the temp dirs go (default: the system's)")
    args = parser.parse_args()
    lines = args.lines or (20_000 if args.short else 100_000)
    rounds = args.rounds or (1 if args.short else 3)
    print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)")
    totals: dict[str, float] = {}
    floors = 0.0
    """SQLite's share of SmallTable's rows, per log over the jobs that can share it, summed."""
    jobs = len(os.sched_getaffinity(0))  # replay's default
    for projects in PROJECT_COUNTS:
        log = ensure_log(lines, projects)
        plain = ensure_ndjson(log, keys=False)
        keyed = ensure_ndjson(log)
        warm(log, plain, keyed)
        contenders = {
            "SmallTable replay": (run_smalltable, log),
            "sqlite-utils insert --nl": (functools.partial(run_sqlite_utils, alter=False), plain),
            "sqlite-utils ... --alter": (run_sqlite_utils, keyed),
        }
        names = list(contenders)
        runs = run_rounds(contenders, rounds, args.dir)
        size = log.stat().st_size
        print(f"\n{projects:,} project(s): {lines:,} lines, {size / MIB:.0f} MiB of log; medians of {rounds}")
        print(f"{'':26} {'rows/s':>9} {'MiB/s':>7} {'wall s':>7} {'CPU s':>7} {'peak RSS MiB':>13}  note")
        for name in names:
            wall = statistics.median(r.wall for r in runs[name])
            cpu = statistics.median(r.cpu for r in runs[name])
            rss = max(r.rss_mib for r in runs[name])
            totals[name] = totals.get(name, 0.0) + wall
            print(f"{name:26} {lines / wall:9,.0f} {size / MIB / wall:7.1f} {wall:7.1f} {cpu:7.1f} "
                  f"{rss:13.0f}  {runs[name][-1].note}")  # fmt: skip
        share = sqlite_share(log, args.dir, json_each=False)
        floor = (share.inserts + share.making) / min(jobs, projects)  # a job loads whole projects
        floors += floor
        print(f"SQLite's own share: inserting SmallTable's {share.rows:,} rows again alone, as replay "
              f"inserts them, {share.inserts:.1f} s of CPU, making their {projects:,} database(s) "
              f"{share.making:.1f} s; at best {floor:.1f} s of wall clock over {min(jobs, projects)} "
              f"job(s)")  # fmt: skip
    ours = totals["SmallTable replay"]
    print(f"\nsummed over the {len(PROJECT_COUNTS)} logs (wall clock): SmallTable {ours:.1f} s")
    goals = (("sqlite-utils insert --nl", GOAL_VS_DEFAULTS), ("sqlite-utils ... --alter", GOAL_VS_ALTER))
    for name, goal in goals:
        ratio = totals[name] / ours
        verdict = "PASS" if ratio >= goal else "FAIL"
        print(f"goal: SmallTable >= {goal}x {name}: {ratio:.2f}x  {verdict}  ({totals[name]:.1f} s)")
        if verdict == "FAIL":
            bound = totals[name] / floors
            print(f"  SQLite's share of SmallTable's rows alone, at best {floors:.1f} s, bounds it at "
                  f"{bound:.2f}x (the goal needs SmallTable in {totals[name] / goal:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    os.chdir(REPO)
    main()
