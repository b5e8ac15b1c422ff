"""Load rate: ``smalltable replay`` of an ingest log, against sqlite-utils and a minimal loop.

An ingest log of N lines is generated exactly as nginx writes it (the lines come
from ``tests/test_logline.py::make_line``, which mimics ``escape=json``): ~200-byte
bodies, 20 projects of skewed popularity, a realistic mix (JSON objects of 5-8
keys, some JSON sent as a form by ``curl -d``, text, form posts, JSON arrays,
~1% malformed JSON, a few binary and empty bodies). It is cached under
``bench/.data/``. Then, in the same run, each contender loads it into empty
databases in a fresh temp dir, as a subprocess whose wall clock and peak memory
(the larger of ``ru_maxrss`` from ``wait4`` and the RSS of its whole process tree
sampled every 50 ms) are measured:

- SmallTable: ``smalltable replay --config CFG --from LOG`` (the real CLI: parsing,
  validation, classification, identity by request id, columns per key, one
  database per project, ``synchronous=FULL``), as users run it (``--jobs``: one
  process per CPU, each loading a share of the projects) and with ``--jobs 1``;
- sqlite-utils: ``sqlite-utils insert db.db records NDJSON --nl --alter``, its
  defaults plus ``--alter`` (without it, it stops at the first key its first
  batch did not have). NDJSON, prepared before timing, holds one object per log
  line: the system fields ``_request_id _received _method _uri _content_type
  _size _remote_addr _user_agent _project`` and ``_body`` (the body as UTF-8 text,
  undecodable bytes as U+FFFD), plus, when the body is a JSON object, its keys;
- minimal: :func:`minimal_loop` below, a plain loop (orjson, ``executemany`` in
  batches of 50,000, one table of fixed columns, WAL, ``synchronous=NORMAL``).

Rates are log lines (= rows) per second and MiB of log per second, wall clock
including interpreter start-up; CPU time (user + system) is shown too, as it
depends less on the disk and on other work on the machine. Printed: a table with
the ratios, the goals of issue 7 and issue 25's goal 1 (one job's CPU per row at most
2x the minimal loop's) with where a row's CPU goes (:func:`sqlite_share`: SQLite's own
share; the least Python a row takes, ``floor.py``; the same rows by ``INSERT … SELECT FROM
json_each``), peak memory of replay at 1/10, 1/2 and all of
the log (it must not grow with the log), and a pyinstrument profile of replay
(top self time, and inclusive time of ingestd's functions). pyinstrument is setup.py's
``bench`` extra, which ``make bench`` installs (alone: ``.venv/bin/pip install -e
'.[test,bench]'``); ``--no-profile`` skips the profile.

    .venv/bin/python bench/load_rate.py            # 1,000,000 lines; memory also at 100k, 500k; profile 200k
    .venv/bin/python bench/load_rate.py --short    # 100,000 lines; memory also at 10k, 50k; profile 50k
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode

import orjson
from floor import least_python_cpu

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / ".data"
BIN = Path(sys.executable).parent
GENERATOR_VERSION = 3  # bump when the generator changes: the cached logs are keyed by it
MIB = 1 << 20

GOAL_VS_SQLITE_UTILS = 2.5
GOAL_VS_MINIMAL = 0.6
GOAL_CPU_PER_ROW = 2.0  # issue 25, goal 1: one job's CPU per row at most this many times the minimal loop's

# --- the log --------------------------------------------------------------------------

PROJECTS = [
    "shop-events", "iot-sensors", "signup", "webhooks", "analytics", "feedback", "crash-reports",
    "orders", "contact-form", "game-scores", "weather-station", "uptime", "chat-logs", "newsletter",
    "survey", "inventory", "github-hooks", "build-times", "notes", "payments",
]  # fmt: skip
WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "order", "item", "cart",
    "user", "login", "page", "click", "view", "error", "retry", "timeout", "payment", "shipped",
    "pending", "refund", "sensor", "reading", "battery", "low", "ok", "café", "naïve", "résumé",
    "Zürich", "日本語", "Привет", "👍",
]  # fmt: skip
PATHS = ["/", "/events", "/api/v1/ingest", "/hooks/incoming", "/log", "/submit"]
AGENTS = [
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/17.6 Safari/605.1.15",
    "ESP8266HTTPClient",
    "GitHub-Hookshot/a1b2c3d",
    "node-fetch/1.0",
]
MIX = [  # (kind, share %)
    ("json", 78.0),
    ("json via curl -d", 6.0),
    ("text", 7.0),
    ("form", 4.0),
    ("json array", 2.0),
    ("malformed json", 1.0),
    ("binary", 0.5),
    ("empty (DELETE)", 1.5),
]


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


VALUES = {
    "user_id": lambda r: f"user{r.randint(1, 5000)}",
    "email": lambda r: f"{r.choice(WORDS[:20])}{r.randint(1, 999)}@example.com",
    "event_type": lambda r: r.choice(["click", "view", "scroll", "submit", "error", "purchase"]),
    "page_url": lambda r: r.choice(
        ["/checkout/step-2", "/home", "/search?q=running+shoes&page=2", "/product/42-blue"]
    ),
    "duration_ms": lambda r: r.randint(1, 5000),
    "count": lambda r: r.randint(0, 100),
    "score": lambda r: round(r.random() * 100, 2),
    "temperature": lambda r: round(r.uniform(-10, 35), 1),
    "price": lambda r: round(r.uniform(1, 500), 2),
    "ok": lambda r: r.random() < 0.9,
    "timestamp": lambda r: (
        f"2026-11-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z"
    ),
    "session_id": lambda r: f"{r.getrandbits(128):032x}",
    "country": lambda r: r.choice(["DE", "FR", "US", "JP", "BR", "IN", "GB"]),
    "app_version": lambda r: f"{r.randint(1, 3)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
    "message": lambda r: _words(r, 4, 14),
    "tags": lambda r: r.sample(["a", "b", "new", "vip", "beta", "mobile"], r.randint(0, 3)),
    "meta": lambda r: {"browser": r.choice(["firefox", "chrome", "safari"]), "v": r.randint(90, 130)},
    "device_id": lambda r: f"dev-{r.randint(1, 64):03d}",
    "note": lambda r: None if r.random() < 0.3 else _words(r, 2, 8),
    "amount_cents": lambda r: r.randint(100, 99999),
    "currency": lambda r: r.choice(["EUR", "USD", "JPY"]),
    "status": lambda r: r.choice(["pending", "paid", "shipped", "refunded"]),
}


def _schemas() -> dict[str, tuple[list[str], list[str]]]:
    """Per project, the keys its client sends, always in the same order (the client's
    serializer): half the projects always send the same 5-8 keys; the other half send
    3 keys always and 2-5 of 7 optional ones, leaving the others out."""
    out = {}
    for number, name in enumerate(PROJECTS):
        rng = random.Random(name)
        keys = rng.sample(sorted(VALUES), 10)
        out[name] = (keys[: rng.randint(5, 8)], []) if number % 2 == 0 else (keys[:3], keys[3:])
    return out


def _json_object(rng: random.Random, project: str, schemas: dict) -> dict:
    core, optional = schemas[project]
    chosen = set(rng.sample(optional, rng.randint(2, 5))) if optional else set()
    obj = {key: VALUES[key](rng) for key in core + [key for key in optional if key in chosen]}
    if rng.random() < 0.002:  # a key seen rarely: columns keep being added through the log
        obj[f"extra_{rng.randint(0, 29)}"] = rng.randint(0, 9)
    return obj


def _body(rng: random.Random, kind: str, project: str, schemas: dict) -> tuple[bytes, str]:
    """(body, content type) of one request of ``kind``."""
    if kind in ("json", "json via curl -d"):
        body = json.dumps(_json_object(rng, project, schemas), ensure_ascii=rng.random() < 0.5)
        ctype = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
        return body.encode(), ctype
    if kind == "text":
        lines = [_words(rng, 6, 16) for _ in range(rng.randint(1, 3))]
        text = "\n".join(lines) + rng.choice(["", "\n", '\t"quoted"', " C:\\temp\\x"])
        return text.encode(), rng.choice(["text/plain", "text/plain; charset=utf-8"])
    if kind == "form":
        fields = {
            "name": _words(rng, 1, 2),
            "email": VALUES["email"](rng),
            "message": _words(rng, 6, 18),
            "plan": rng.choice(["free", "pro"]),
        }
        if rng.random() < 0.5:
            fields["agree"] = "on"
        return urlencode(fields).encode(), "application/x-www-form-urlencoded"
    if kind == "json array":
        items = [_json_object(rng, project, schemas) for _ in range(rng.randint(1, 2))]
        return json.dumps(items).encode(), "application/json"
    if kind == "malformed json":
        text = json.dumps(_json_object(rng, project, schemas))
        cut = rng.choice([text[: rng.randint(5, len(text) - 2)], text[:-1] + ",}", "{'single': 'quotes'}"])
        return cut.encode(), "application/json"
    if kind == "binary":
        return rng.randbytes(rng.randint(64, 320)), "application/octet-stream"
    return b"", ""


def log_lines(n: int, seed: int = 7):
    """The first ``n`` lines of the benchmark's log (the same prefix for any ``n``)."""
    sys.path.insert(0, str(REPO))
    from tests.test_logline import make_line  # nginx's escape=json, checked against nginx

    rng = random.Random(seed)
    schemas = _schemas()
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(PROJECTS))]
    kinds, shares = zip(*MIX, strict=True)
    addrs = [".".join(str(rng.randint(1, 254)) for _ in range(4)) for _ in range(2000)]
    clock = 1795250000.0
    for _ in range(n):
        project = rng.choices(PROJECTS, weights)[0]
        kind = rng.choices(kinds, shares)[0]
        body, ctype = _body(rng, kind, project, schemas)
        clock += rng.expovariate(20.0)
        method = "DELETE" if kind.startswith("empty") else ("PUT" if rng.random() < 0.08 else "POST")
        uri = f"/items/{rng.randint(1, 9999)}" if method == "DELETE" else rng.choice(PATHS)
        if rng.random() < 0.2:
            uri += f"?src={rng.choice(['app', 'web', 'cron'])}&n={rng.randint(1, 99)}"
        yield make_line(
            body,
            t=f"{clock:.3f}",
            rt=f"{rng.random() * 0.004:.3f}",
            id=f"{int(clock * 1000):013d}{rng.getrandbits(76):019x}",  # as nginx/smalltable.conf.j2 makes it
            project=project,
            method=method,
            uri=uri,
            ctype=ctype,
            clen=str(len(body)) if body else "",
            addr=rng.choice(addrs),
            ua=rng.choice(AGENTS),
        )


def cache_log(path: Path, lines: int, write: Callable[[BinaryIO], None]) -> Path:
    """``path``, made by ``write`` (``lines`` lines, for the message) unless it is there."""
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            write(out)
        tmp.rename(path)
        print(f"generated {path.name}: {lines:,} lines in {time.monotonic() - started:.0f} s", flush=True)
    return path


def ensure_log(n: int, whole: Path | None = None) -> Path:
    """The cached log of ``n`` lines: the first ``n`` lines of ``whole`` (the same as
    generating them, see :func:`log_lines`) when given, else generated."""

    def write(out: BinaryIO) -> None:
        if whole is None:
            for line in log_lines(n):
                out.write(line + b"\n")
        else:
            with open(whole, "rb") as lines:
                out.writelines(itertools.islice(lines, n))

    return cache_log(DATA / f"load-rate-v{GENERATOR_VERSION}-{n}.log", n, write)


def ensure_ndjson(log: Path, keys: bool = True) -> Path:
    """What sqlite-utils receives for ``log``: one object per line (see the module
    docstring); without ``keys``, only the request's fields and body (no JSON keys)."""
    from ingestd.ingest.logline import parse_line  # the documented reading of a line, byte-exact

    path = log.with_suffix(".sqlite-utils.ndjson" if keys else ".sqlite-utils-plain.ndjson")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(log, "rb") as lines, open(tmp, "wb") as out:
            for line in lines:
                request = parse_line(line.rstrip(b"\n"))
                row: dict[str, object] = {}
                declared = request.content_type and "json" in request.content_type
                if keys and (declared or request.body[:1] == b"{"):
                    try:
                        value = orjson.loads(request.body)
                    except orjson.JSONDecodeError:
                        value = None
                    if isinstance(value, dict):
                        row.update(value)
                row.update(
                    _request_id=request.request_id,
                    _received=request.received,
                    _method=request.method,
                    _uri=request.uri,
                    _content_type=request.content_type,
                    _size=len(request.body),
                    _remote_addr=request.remote_addr,
                    _user_agent=request.user_agent,
                    _project=request.project,
                    _body=request.body.decode("utf-8", "replace"),
                )
                out.write(orjson.dumps(row) + b"\n")
        tmp.rename(path)
    return path


def describe(log: Path) -> str:
    """A line about the log: size, mean body, projects, content types."""
    projects: Counter = Counter()
    bodies = 0
    lines = 0
    with open(log, "rb") as f:
        for line in f:
            fields = orjson.loads(line.decode("latin-1"))
            projects[fields["project"]] += 1
            bodies += len(fields["body"])
            lines += 1
    top = projects.most_common()
    return (
        f"{lines:,} lines, {log.stat().st_size / MIB:.0f} MiB, mean line {log.stat().st_size / lines:.0f} B, "
        f"mean body {bodies / lines:.0f} B; {len(projects)} projects, the biggest "
        f"{top[0][1] / lines:.0%}, the smallest {top[-1][1] / lines:.1%}"
    )


# --- the minimal loop -----------------------------------------------------------------

MINIMAL_COLUMNS = (
    "request_id", "project", "received", "method", "uri", "content_type", "size",
    "remote_addr", "user_agent", "kind", "body",
)  # fmt: skip


def minimal_loop(log: Path, db: Path, batch: int = 50_000) -> int:
    """Load ``log`` into one table the plain way; the number of rows.

    orjson reads a line as UTF-8 and only a line holding non-UTF-8 bytes (a binary
    body) is read again as Latin-1, which is still byte-exact (docs/log-format.md).
    A body declared JSON is parsed to tell JSON from malformed; nothing else is
    checked, no columns per key, no identity, one table for every project.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"CREATE TABLE records (id INTEGER PRIMARY KEY, {', '.join(MINIMAL_COLUMNS)})")
    params = ", ".join("?" * len(MINIMAL_COLUMNS))
    sql = f"INSERT INTO records ({', '.join(MINIMAL_COLUMNS)}) VALUES ({params})"
    rows: list[tuple] = []
    count = 0

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        rows.clear()

    with open(log, "rb") as f:
        for line in f:
            try:
                fields = orjson.loads(line)
                body = fields["body"]
            except orjson.JSONDecodeError:
                fields = orjson.loads(line.decode("latin-1"))
                body = fields["body"].encode("latin-1")
            ctype = fields["ctype"]
            kind = "text"
            if ctype.startswith("application/json"):
                try:
                    orjson.loads(body)
                    kind = "json"
                except orjson.JSONDecodeError:
                    kind = "malformed"
            rows.append(
                (fields["id"], fields["project"], fields["t"] - fields["rt"], fields["method"], fields["uri"],
                 ctype or None, len(body), fields["addr"], fields["ua"] or None, kind, body)
            )  # fmt: skip
            count += 1
            if len(rows) >= batch:
                flush()
    if rows:
        flush()
    conn.close()
    return count


# --- running and measuring ------------------------------------------------------------


@dataclass
class Run:
    """One contender's run: wall clock, CPU time (user + system), peak RSS, a note."""

    wall: float
    cpu: float
    rss_mib: float
    note: str = ""


def tree_rss_mib(pid: int) -> float:
    """The resident memory of a process and all its descendants now, in MiB."""
    total, pids = 0, [pid]
    while pids:
        pid = pids.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pids += [int(child) for child in f.read().split()]
        except (OSError, StopIteration):  # it ended meanwhile
            continue
    return total / 1024


def measure(argv: list[str], cwd: Path) -> tuple[Run, str]:
    """Run ``argv`` as a child and measure it; (run, its stdout). Exits on failure.

    Peak memory is the larger of the child's own peak (``wait4``) and the peak of
    its whole process tree sampled every 50 ms (``replay --jobs`` forks workers).
    """
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=stderr)
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_rss_mib(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"{argv[:3]} failed ({process.returncode}):\n{err.read_text()[-3000:]}")
    rss = max(usage.ru_maxrss / 1024, peak[0])
    return Run(wall, usage.ru_utime + usage.ru_stime, rss), out.read_text()


def count_rows(paths: list[Path], tables: tuple[str, ...]) -> int:
    total = 0
    for path in paths:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        total += sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
        conn.close()
    return total


def run_smalltable(log: Path, work: Path, *options: str) -> Run:
    config = work / "smalltable.yaml"
    # JSON is YAML. The quota is lifted: the biggest project outgrows the default 100 MiB,
    # and the benchmark is of loading, not of holding posts.
    config.write_text(json.dumps({"home": str(work / "home"), "projects": {"quota_mb": 100_000}}))
    argv = [str(BIN / "smalltable"), "replay", "--config", str(config), "--from", str(log), *options]
    run, out = measure(argv, work)
    projects = sorted(p for p in (work / "home" / "data").glob("*.db") if not p.name.startswith("_"))
    rows = count_rows(projects, ("records", "rejects"))
    run.note = out.splitlines()[0] + f" [{rows:,} rows in the databases]"
    return run


def run_smalltable_one_job(log: Path, work: Path) -> Run:
    return run_smalltable(log, work, "--jobs", "1")


def run_sqlite_utils(ndjson: Path, work: Path, alter: bool = True) -> Run:
    """``sqlite-utils insert db.db records NDJSON --nl`` (with ``--alter`` unless told not to)."""
    db = work / "db.db"
    argv = [str(BIN / "sqlite-utils"), "insert", str(db), "records", str(ndjson), "--nl"]
    run, _ = measure(argv + ["--alter"] * alter, work)
    run.note = f"{count_rows([db], ('records',)):,} rows"
    return run


def run_minimal(log: Path, work: Path) -> Run:
    db = work / "db.db"
    run, _ = measure([sys.executable, __file__, "--minimal-loop", str(log), str(db)], work)
    run.note = f"{count_rows([db], ('records',)):,} rows"
    return run


def in_temp_dir(root: Path | None, fn, *args) -> Run:
    work = Path(tempfile.mkdtemp(prefix="st-load-", dir=root))
    try:
        return fn(*args, work)
    finally:
        shutil.rmtree(work)


def run_rounds(
    contenders: dict[str, tuple], rounds: int, root: Path | None, show: bool = False
) -> dict[str, list[Run]]:
    """Each contender ``(fn, source)`` run ``rounds`` times, each run in a fresh temp dir
    under ``root``, in an order that rotates so that no one always goes first."""
    names = list(contenders)
    results: dict[str, list[Run]] = {name: [] for name in names}
    for round_ in range(rounds):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            fn, source = contenders[name]
            run = in_temp_dir(root, fn, source)
            results[name].append(run)
            if show:
                print(f"  round {round_ + 1} {name}: {run.wall:.1f} s, CPU {run.cpu:.1f} s, "
                      f"{run.rss_mib:.0f} MiB; {run.note}", flush=True)  # fmt: skip
    return results


def warm(*paths: Path) -> None:
    """Read files once so that no contender pays for the first read from disk."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(MIB * 8):
                pass


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- SQLite's share of a row -------------------------------------------------------------


def _replayed_rows(data: Path) -> list[tuple[str, str, str, tuple[str, ...], tuple]]:
    """Every row replay stored under ``data``, roughly in log order (request ids are made in
    time order): ``(request id, project, table, filled columns, their values)``, the columns
    those replay's insert named (a row's user columns are its keys; empty ones are left out)."""
    rows = []
    for path in sorted(data.glob("*.db")):
        if path.name.startswith("_"):
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for table in ("records", "rejects"):
            names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})") if row[1] != "_id"]
            system = sum(name.startswith("_") for name in names)
            quoted = ", ".join(f'"{name}"' for name in names)
            for values in conn.execute(f"SELECT {quoted} FROM {table} ORDER BY _id"):
                filled = [i for i in range(system, len(names)) if values[i] is not None]
                columns = tuple(names[:system]) + tuple(names[i] for i in filled)
                rows.append(
                    (values[0], path.stem, table, columns, values[:system] + tuple(values[i] for i in filled))
                )
        conn.close()
    rows.sort(key=lambda row: row[0])
    return rows


@dataclass
class SqliteShare:
    """What :func:`sqlite_share` measured: CPU seconds, and the rows."""

    inserts: float
    """Inserting the rows replay stored, as replay inserts them."""
    making: float
    """Making their databases (one per project, from the template, with their columns)."""
    json_each: float | None
    """The same rows by ``INSERT … SELECT FROM json_each(?)``, if asked for."""
    rows: int


def sqlite_share(log: Path, root: Path | None, json_each: bool = True) -> SqliteShare:
    """:func:`_sqlite_share`, measured in a child process: it holds every row at once, and a
    process started later by this one would report that peak as its own (``ru_maxrss`` counts
    what a child was forked with)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_sqlite_share, log, root, json_each).result()


def _sqlite_share(log: Path, root: Path | None, json_each: bool) -> SqliteShare:
    """CPU SQLite (with Python's sqlite3 binding) spends on the rows replay stores, alone.

    ``replay --jobs 1`` loads ``log``; its rows are read back and inserted again into fresh
    databases of the same schema as replay writes them: per batch (``ingest.batch_lines``) one
    transaction per project, an ``executemany`` per run of rows that fill the same columns,
    with replay's own statement (``ON CONFLICT (_request_id) DO NOTHING``). Only those calls
    are timed: nothing of SmallTable's parsing, classifying or routing. So is making the fresh
    databases, a cost of one database per project. The alternative issue
    25 suggests hands SQLite each run as one JSON array to unpack (the values still made in
    Python, so this is the cheapest any such insert can be: making the columns from the bodies
    would parse every body again besides).
    """
    sys.path.insert(0, str(REPO))
    from ingestd.config import SETTINGS
    from ingestd.store.database import _insert_sql  # the statement replay runs
    from ingestd.store.schema import add_columns, open_database

    work = Path(tempfile.mkdtemp(prefix="st-share-", dir=root))
    fresh: dict[tuple[str, str], list] = {}
    try:
        run_smalltable_one_job(log, work)
        rows = _replayed_rows(work / "home" / "data")
        started = time.process_time()
        for kind in ("executemany", "json_each") if json_each else ("executemany",):
            (work / kind).mkdir()
            for _, project, table, columns, _ in rows:
                if (kind, project) not in fresh:
                    fresh[kind, project] = [open_database(work / kind / f"{project}.db", 2, False), set()]
                if table == "records":
                    fresh[kind, project][1].update(c for c in columns if not c.startswith("_"))
            for (other, _), (conn, users) in fresh.items():
                if other == kind:
                    conn.execute("BEGIN IMMEDIATE")
                    add_columns(conn, sorted(users))
                    conn.execute("COMMIT")
        making = (time.process_time() - started) / (2 if json_each else 1)
        batch_lines = SETTINGS["ingest.batch_lines"].default
        transactions = []  # per batch and project: [(table, columns, rows)], in order
        for start in range(0, len(rows), batch_lines):
            by_project: dict[str, list] = {}
            for _, project, table, columns, values in rows[start : start + batch_lines]:
                runs = by_project.setdefault(project, [])
                if runs and runs[-1][:2] == (table, columns):
                    runs[-1][2].append(values)
                else:
                    runs.append((table, columns, [values]))
            transactions += by_project.items()

        gc.disable()  # as replay loads a batch (ingestd/support/gcpause.py): millions of rows are held here
        started = time.process_time()
        for project, runs in transactions:
            conn = fresh["executemany", project][0]
            conn.execute("BEGIN IMMEDIATE")
            for table, columns, values in runs:
                conn.executemany(_insert_sql(table, columns), values)
            conn.execute("COMMIT")
        inserts = time.process_time() - started
        gc.enable()
        if not json_each:
            return SqliteShare(inserts, making, None, len(rows))

        as_text = [  # JSON has no bytes: binary bodies go as Latin-1 text (the speed is what counts)
            (project, [(t, c, [tuple(v.decode("latin-1") if type(v) is bytes else v for v in r) for r in vs])
                       for t, c, vs in runs])
            for project, runs in transactions
        ]  # fmt: skip
        gc.disable()
        started = time.process_time()
        for project, runs in as_text:
            conn = fresh["json_each", project][0]
            conn.execute("BEGIN IMMEDIATE")
            for table, columns, values in runs:
                picks = ", ".join(f"value ->> {i}" for i in range(len(columns)))
                quoted = ", ".join(f'"{c}"' for c in columns)
                conn.execute(
                    f"INSERT INTO {table} ({quoted}) SELECT {picks} FROM json_each(?) WHERE true "
                    "ON CONFLICT (_request_id) DO NOTHING",
                    (orjson.dumps(values),),
                )
            conn.execute("COMMIT")
        return SqliteShare(inserts, making, time.process_time() - started, len(rows))
    finally:
        gc.enable()
        for conn, _ in fresh.values():
            conn.close()
        shutil.rmtree(work)


# --- the profile ----------------------------------------------------------------------


def profile(log: Path, root: Path | None, top: int = 10) -> None:
    """pyinstrument over ``smalltable replay`` of ``log``: the top self time, then the
    inclusive time of ingestd's functions."""
    from pyinstrument.session import Session

    work = Path(tempfile.mkdtemp(prefix="st-load-profile-", dir=root))
    try:
        config = work / "smalltable.yaml"
        config.write_text(json.dumps({"home": str(work / "home"), "projects": {"quota_mb": 100_000}}))
        session_file = DATA / f"{log.stem}.pyisession"
        argv = [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session_file),
                "-m", "ingestd", "replay", "--config", str(config), "--from", str(log),
                "--jobs", "1"]  # fmt: skip
        run, _ = measure(argv, work)
    finally:
        shutil.rmtree(work)
    session = Session.load(str(session_file))
    root_frame = session.root_frame()
    total = root_frame.time
    selfs: Counter = Counter()
    inclusive: Counter = Counter()

    def name(frame) -> str:
        """``function (file:line)``; SmallTable's files by their path in the repository
        (``ingestd/ingest/replay.py``), others by their last two parts."""
        path = frame.file_path or ""
        if path.startswith(f"{REPO}/"):
            where = path.removeprefix(f"{REPO}/")
        else:
            where = "/".join(path.split("/site-packages/")[-1].rsplit("/", 2)[-2:])
        return f"{frame.function} ({where}:{frame.line_no})" if path else frame.function

    def walk(frame, open_names: frozenset) -> None:
        key = name(frame)
        selfs[key] += frame.total_self_time  # includes the synthetic [self] children
        if key not in open_names:  # recursion counts once
            inclusive[key] += frame.time
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, open_names | {key})

    walk(root_frame, frozenset())
    print(f"\nprofile: smalltable replay of {log.name} under pyinstrument: {run.wall:.1f} s wall, "
          f"{total:.1f} s sampled; session in bench/.data/{session_file.name}")  # fmt: skip
    print(f"top {top} by self time (% of the run)")
    for key, seconds in selfs.most_common(top):
        print(f"  {seconds / total:6.1%}  {key}")
    print("inclusive time of ingestd's functions, >= 1% (% of the run)")
    ours = [(k, sec) for k, sec in inclusive.items() if "(ingestd/" in k and sec / total >= 0.01]
    for key, seconds in sorted(ours, key=lambda item: -item[1]):
        print(f"  {seconds / total:6.1%}  {key}")


# --- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="100,000 lines, profile 50,000 (a quick look)")
    parser.add_argument("--lines", type=int, help="lines in the log [1,000,000; --short 100,000]")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender; medians shown [3]")
    parser.add_argument("--profile-lines", type=int, help="lines replayed under pyinstrument [200,000]")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--dir", type=Path, help="where the temp dirs go (default: the system's)")
    parser.add_argument("--minimal-loop", nargs=2, type=Path, metavar=("LOG", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal_loop:
        minimal_loop(*args.minimal_loop)
        return
    lines = args.lines or (100_000 if args.short else 1_000_000)
    memory_sizes = (lines // 10, lines // 2)
    profile_lines = args.profile_lines or (50_000 if args.short else 200_000)

    log = ensure_log(lines)
    ndjson = ensure_ndjson(log)
    smaller = {n: ensure_log(n, log) for n in memory_sizes}
    warm(log, ndjson, *smaller.values())
    size = log.stat().st_size
    print(f"log: {describe(log)}")
    with open(ndjson, "rb") as f:
        example = f.readline().decode().strip()
    print(f"sqlite-utils reads {ndjson.name}, {ndjson.stat().st_size / MIB:.0f} MiB, e.g.\n  {example}")
    print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)", flush=True)

    contenders = {
        "SmallTable replay": (run_smalltable, log),
        "SmallTable replay --jobs 1": (run_smalltable_one_job, log),
        "sqlite-utils insert --nl": (run_sqlite_utils, ndjson),
        "minimal loop (orjson)": (run_minimal, log),
    }
    names = list(contenders)
    results = run_rounds(contenders, args.rounds, args.dir, show=True)
    memory_runs = {n: in_temp_dir(args.dir, run_smalltable, path) for n, path in smaller.items()}
    print(f"load average after the runs: {load_average()}")

    wall = {name: statistics.median(r.wall for r in runs) for name, runs in results.items()}
    cpu = {name: statistics.median(r.cpu for r in runs) for name, runs in results.items()}
    rss = {name: max(r.rss_mib for r in runs) for name, runs in results.items()}
    ours = "SmallTable replay"
    print(
        f"\n{lines:,} lines, {size / MIB:.0f} MiB of log; medians of {args.rounds} run(s), peak RSS the max"
    )
    print(f"{'':26} {'rows/s':>9} {'MiB/s':>7} {'wall s':>7} {'CPU s':>7} {'peak RSS MiB':>13} "
          f"{'SmallTable is':>14} {'by CPU':>7}")  # fmt: skip
    for name in names:
        print(
            f"{name:26} {lines / wall[name]:9,.0f} {size / MIB / wall[name]:7.1f} {wall[name]:7.1f} "
            f"{cpu[name]:7.1f} {rss[name]:13.0f} {wall[name] / wall[ours]:13.2f}x "
            f"{cpu[name] / cpu[ours]:6.2f}x"
        )
    goals = [
        ("sqlite-utils", wall["sqlite-utils insert --nl"], GOAL_VS_SQLITE_UTILS),
        ("the minimal loop", wall["minimal loop (orjson)"], GOAL_VS_MINIMAL),
    ]
    print(f"\n(SmallTable replay runs --jobs {len(os.sched_getaffinity(0))}, its default here: one per CPU)")
    for other, other_wall, goal in goals:
        ratio = other_wall / wall[ours]
        one_job = other_wall / wall["SmallTable replay --jobs 1"]
        verdict = "PASS" if ratio >= goal else "FAIL"
        print(f"goal: SmallTable >= {goal}x {other} (wall clock): {ratio:.2f}x  {verdict}  "
              f"(--jobs 1: {one_job:.2f}x)")  # fmt: skip
    one, loop = "SmallTable replay --jobs 1", "minimal loop (orjson)"
    per_row = {name: cpu[name] / lines * 1e6 for name in (one, loop)}
    ratio = per_row[one] / per_row[loop]
    verdict = "PASS" if ratio <= GOAL_CPU_PER_ROW else "FAIL"
    print(f"goal: SmallTable --jobs 1 CPU per row <= {GOAL_CPU_PER_ROW}x the minimal loop's: "
          f"{ratio:.2f}x  {verdict}  ({per_row[one]:.1f} against {per_row[loop]:.1f} µs)")  # fmt: skip
    measured = sqlite_share(log, args.dir)
    share = measured.inserts / measured.rows * 1e6
    print(f"  where a row's CPU goes: SQLite's own share (replay's rows inserted again alone, as replay "
          f"inserts them) {share:.1f} µs = {share / per_row[loop]:.2f}x the minimal loop's whole row; "
          f"the rest of replay's row {per_row[one] - share:.1f} µs. The goal leaves "
          f"{GOAL_CPU_PER_ROW * per_row[loop] - share:.1f} µs beside SQLite.")  # fmt: skip
    least, least_lines, _ = least_python_cpu(log)
    floor = least / least_lines * 1e6 + share
    print(f"  the least Python a row takes (bench/floor.py: one loop from a line to its row's values, JSON "
          f"objects only, everything else skipped) {least / least_lines * 1e6:.1f} µs a line; with SQLite's "
          f"share {floor:.1f} µs = {floor / per_row[loop]:.2f}x the minimal loop's row: the least this "
          f"goal's ratio can be here")  # fmt: skip
    print(f"  the same rows by INSERT … SELECT FROM json_each(?), one per run of rows: "
          f"{measured.json_each / measured.rows * 1e6:.1f} µs = {measured.json_each / measured.inserts:.2f}x "
          f"executemany's")  # fmt: skip

    print("\nmemory of SmallTable replay against the log's size (peak RSS)")
    for n, run in memory_runs.items():
        print(f"  {n:>9,} lines: {run.rss_mib:6.0f} MiB  ({n / run.wall:,.0f} rows/s, one run)")
    print(f"  {lines:>9,} lines: {rss[ours]:6.0f} MiB  ({lines / wall[ours]:,.0f} rows/s, max of the rounds)")
    first = memory_runs[memory_sizes[0]].rss_mib
    print(f"  {lines // memory_sizes[0]}x the lines: {rss[ours] / first:.2f}x the memory")

    if not args.no_profile:
        profile(ensure_log(profile_lines, log if profile_lines <= lines else None), args.dir)
        print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
