"""CPU per row of each stage of replay's loader, each timed alone over a log held in memory.

Where ``load_rate.py``'s profile says how a run's time is shared, this says what each stage
costs a row by itself (issue 25, goal 1): parsing a line (``parse_line``), classifying a
request (``build``), the system columns' values of a record, and the registry's whole load
(routing, classifying and the write, SQLite included) in batches of ``ingest.batch_lines``
into a fresh data directory; and the least Python a row can take (``floor.least_python``).
Each stage runs ``--rounds`` times with the cycle collector off
(as replay loads a batch); the least CPU time is shown, in µs per line of the log.

    .venv/bin/python bench/row_stages.py                 # load_rate.py's 200,000-line log
    .venv/bin/python bench/row_stages.py --lines 100000
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from floor import least_python
from load_rate import REPO, ensure_log

sys.path.insert(0, str(REPO))

from ingestd.config import SETTINGS, load_config
from ingestd.ingest.logline import LineError, parse_line
from ingestd.ingest.records import build
from ingestd.ingest.replay import open_registry
from ingestd.model.record import Record
from ingestd.store.database import _request_values  # the values every record binds


def least_cpu(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    """The least CPU seconds of ``rounds`` calls of ``fn``, the collector off; its last result."""
    best, out = float("inf"), None
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        started = time.process_time()
        out = fn()
        best = min(best, time.process_time() - started)
        gc.enable()
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines of load_rate.py's log [200,000]")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each stage; the least is shown [3]")
    args = parser.parse_args()
    lines = ensure_log(args.lines).read_bytes().split(b"\n")[:-1]
    n = len(lines)

    def parsed() -> list:
        requests = []
        for line in lines:
            with suppress(LineError):
                requests.append(parse_line(line))
        return requests

    def show(label: str, seconds: float) -> None:
        print(f"{label:52} {seconds / n * 1e6:6.2f} µs per line", flush=True)

    seconds, requests = least_cpu(parsed, args.rounds)
    show("parse_line", seconds)
    seconds, items = least_cpu(lambda: [build(r) for r in requests], args.rounds)
    show("build (classify; a Record or a Reject)", seconds)
    records = [item for item in items if isinstance(item, Record)]
    values = [(r.request, False, r.kind, r.body) for r in records]
    seconds, _ = least_cpu(lambda: [_request_values(*v) for v in values], args.rounds)
    show("a record's system values", seconds)

    work = Path(tempfile.mkdtemp(prefix="st-stages-"))
    (work / "smalltable.yaml").write_text(json.dumps({"home": str(work), "projects": {"quota_mb": 100_000}}))
    config = load_config(work / "smalltable.yaml")
    batch = SETTINGS["ingest.batch_lines"].default
    fresh = iter(range(args.rounds))

    def load() -> None:
        with open_registry(config, work / f"data-{next(fresh)}") as registry:
            for start in range(0, len(requests), batch):
                registry.load(requests[start : start + batch])

    show(f"Registry.load, batches of {batch:,} (SQLite included)", least_cpu(load, args.rounds)[0])
    seconds, rows = least_cpu(lambda: least_python(lines), args.rounds)
    json_rows = sum(map(len, rows.values()))
    show("least_python (the JSON objects' rows; the rest skipped)", seconds)
    print(f"{'  the same, per JSON row':52} {seconds / json_rows * 1e6:6.2f} µs ({json_rows:,} rows)")
    print(f"({n:,} lines; the data directories are under {work})")


if __name__ == "__main__":
    main()
