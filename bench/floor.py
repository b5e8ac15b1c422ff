"""The least CPU a row can take in Python: what bounds issue 25's goal 1 on this machine.

:func:`least_python` is one loop from a log line to its row's values, for the JSON objects
only (most of load_rate's mix), with none of SmallTable's objects between and nothing but
what the row itself needs. ``load_rate.py`` adds SQLite's own share of a row
(``sqlite_share``) to it: if even the two together take more than the goal allows, the goal
cannot be met with one database per project in Python here.

    .venv/bin/python bench/floor.py bench/.data/load-rate-v3-200000.log
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingestd.ingest.logline import _decode_fields  # noqa: E402  (the line into its fields, as replay reads it)
from ingestd.ingest.records import _sqlite_value  # noqa: E402  (a value as SQLite keeps it)
from ingestd.support.timefmt import iso_time  # noqa: E402

BATCH = 20000
"""Lines handed to :func:`least_python` at once, as a loader's batch."""


_decode_body = msgspec.json.Decoder().decode
_AS_THEY_ARE = frozenset({str, float, type(None)})


def least_python(lines: list[bytes]) -> dict[tuple, list[tuple]]:
    """The rows of the JSON objects of ``lines``, by project and key tuple, made the least
    way that still keeps SmallTable's promises for them: the line decoded (as replay
    decodes it) and checked (version, id, project, status), the body back to its bytes and
    checked against its length, stored as text, parsed; each value as SQLite stores it
    without loss, the time formatted, the path and query apart. Every other line is
    skipped, so this is a floor, not a loader: no rejects, no other kinds, no settings, no
    holding area."""
    rows: dict[tuple, list[tuple]] = {}
    for line in lines:
        try:
            f = _decode_fields(line if line.isascii() else line.decode("latin-1"))
        except msgspec.DecodeError:
            continue
        if f.v != 1 or len(f.id) != 32 or not f.project or not f.status.startswith("2"):
            continue
        body = f.body.encode("latin-1")
        if f.clen and int(f.clen) != len(body):
            continue
        try:
            text = body.decode()
            value = _decode_body(body)
        except (UnicodeDecodeError, msgspec.DecodeError):
            continue
        if type(value) is not dict:
            continue
        values = list(value.values())
        for number, item in enumerate(values):
            if type(item) not in _AS_THEY_ARE:
                values[number] = _sqlite_value(item)
        path, sep, query = f.uri.partition("?")
        row = (f.id, iso_time(f.t - f.rt), f.method, path, query if sep else None, f.ctype or None)
        row += (len(body), None, None, "json", text, *values)
        rows.setdefault((f.project, tuple(value)), []).append(row)
    return rows


def least_python_cpu(log: Path) -> tuple[float, int, int]:
    """CPU seconds :func:`least_python` takes over ``log`` (in batches of :data:`BATCH`
    lines, read before the clock starts, the collector paused), its lines and its rows;
    in a child process, so that this one's memory does not count."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_least_python_cpu, log).result()


def _least_python_cpu(log: Path) -> tuple[float, int, int]:
    seconds, lines, rows = 0.0, 0, 0
    with open(log, "rb") as f:
        while batch := [line.rstrip(b"\n") for _, line in zip(range(BATCH), f, strict=False)]:
            gc.collect()
            gc.disable()
            started = time.process_time()
            made = least_python(batch)
            seconds += time.process_time() - started
            gc.enable()
            lines += len(batch)
            rows += sum(map(len, made.values()))
    return seconds, lines, rows


if __name__ == "__main__":
    cpu, lines, rows = least_python_cpu(Path(sys.argv[1]))
    per_line, per_row = cpu / lines * 1e6, cpu / rows * 1e6
    print(f"least_python: {per_line:.2f} µs a line, {per_row:.2f} µs a JSON row ({lines:,} lines)")
