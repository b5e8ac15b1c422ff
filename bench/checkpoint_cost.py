"""What a checkpoint costs, against baselines measured in the same run.

A checkpoint is written after every loaded batch: temp file, fsync, rename,
fsync of the directory. Baselines on the same disk:

- ``sqlite commit``: one INSERT committed with synchronous=FULL in WAL mode,
  which every batch pays per project anyway;
- ``write+rename, no fsync``: the same atomic replace without durability.

    .venv/bin/python bench/checkpoint_cost.py [--short] [--rounds 500] [--files 5] [--dir /real/disk]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from ingestd.ingest import checkpoint
from ingestd.ingest.checkpoint import FilePosition


def timed(fn, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="100 rounds (a quick look)")
    parser.add_argument("--rounds", type=int, help="rounds [500; --short 100]")
    parser.add_argument("--files", type=int, default=5, help="log files in the checkpoint")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    rounds = args.rounds or (100 if args.short else 500)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        positions = [
            FilePosition(f"{i:032x}", 2049, 1000 + i, 123456789 * i, f"/srv/logs/ingest.log.{i}", i > 1)
            for i in range(args.files)
        ]
        target = root / "checkpoint.json"

        def no_fsync() -> None:
            tmp_path = root / "plain.tmp"
            tmp_path.write_bytes(b"x" * 600)
            os.replace(tmp_path, root / "plain.json")

        conn = sqlite3.connect(root / "bench.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (v)")

        def sqlite_commit() -> None:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("COMMIT")

        results = {
            "checkpoint.save": timed(lambda: checkpoint.save(target, positions), rounds),
            "sqlite commit (FULL, WAL)": timed(sqlite_commit, rounds),
            "write+rename, no fsync": timed(no_fsync, rounds),
        }
    base = statistics.median(results["sqlite commit (FULL, WAL)"])
    print(f"{'':28} {'p50 ms':>8} {'p99 ms':>8} {'vs sqlite commit':>17}")
    for name, times in results.items():
        times.sort()
        p50, p99 = statistics.median(times), times[int(0.99 * len(times))]
        print(f"{name:28} {p50 * 1000:8.3f} {p99 * 1000:8.3f} {p50 / base:16.2f}x")


if __name__ == "__main__":
    main()
