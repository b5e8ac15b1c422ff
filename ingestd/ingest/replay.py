"""``smalltable replay``: load project databases from the logs, all of them, again.

The log is the source of truth. Replay reads every log file (the live one and every
rotated one, plain or compressed, oldest first) or the files given, and loads each
line as the daemon would. Loading is keyed by request id, so replaying what is
already loaded changes nothing: replay is idempotent, and safe while the daemon
runs (both take SQLite's write lock per batch). It ignores and never moves the
daemon's checkpoint, and does not write the dead-letter file (it counts instead).

Projects are independent, so replay runs in several processes (``--jobs``), each
loading a share of the projects: every line of a project goes to the same process,
in log order. A first pass counts each project's lines so the shares are of about
equal size. A share of more projects than ``ingest.open_databases`` is loaded in
passes over the log, each of that many projects, so no database is closed and
opened again on the way.

To rebuild a project from scratch (after a validator change, or into a fresh
host), replay into another data directory and swap it in: docs/ops.md.
"""

from __future__ import annotations

import gzip
import multiprocessing
import re
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..model.project import is_valid_project_name
from ..model.request import Request
from ..store.holding import Holding
from ..store.keys import KeyStore
from ..store.pool import for_config as store_for_config
from ..support import gcpause
from .logline import LineError, parse_line
from .registry import Registry, for_config
from .routing import route
from .shares import EVERY_LINE, Share

CHUNK = 1 << 20
PLAN_SAMPLES = 64
"""How many blocks of :data:`CHUNK` bytes :func:`plan` reads from a big plain file."""
_PROJECT_FIELDS = re.compile(rb'"project":"([^"\n]*)"')
_APEX_FIELD = b'"project":""'


@dataclass
class Summary:
    """What a replay did."""

    files: int = 0
    lines: int = 0
    stored: int = 0
    rejected: int = 0
    already_loaded: int = 0
    held: int = 0
    released: int = 0
    settings_changed: int = 0
    settings_refused: int = 0
    unparsable: int = 0
    skipped_other_projects: int = 0
    partial_lines: int = 0
    per_project: Counter = field(default_factory=Counter)
    """New rows (records and rejects) per project."""
    per_project_seen: Counter = field(default_factory=Counter)
    """Lines per project that were already loaded."""


def _runs(path: Path, advance: Callable[[int], None], summary: Summary) -> Iterator[list[bytes]]:
    """Runs of whole lines of a plain or gzip file, in order, without their newlines;
    ``advance(n)`` reports bytes of the file read.

    Each chunk read is split as it is, and only the line cut at its end is carried to
    the next: no chunk is copied. A last line without its newline is still being
    written: it is left for the daemon (or a later replay), and counted.
    """
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        reported = 0
        rest = b""
        while chunk := stream.read(CHUNK):
            advance(raw.tell() - reported)
            reported = raw.tell()
            lines = chunk.split(b"\n")
            lines[0] = rest + lines[0]
            rest = lines.pop()
            if lines:
                yield lines
        summary.partial_lines += bool(rest)


def _blocks(path: Path, advance: Callable[[int], None], summary: Summary) -> Iterator[bytes]:
    """The runs of :func:`_runs` as blocks of bytes, for :func:`plan` to search."""
    for lines in _runs(path, advance, summary):
        yield b"\n".join(lines)


def replay(
    registry: Registry,
    files: list[Path],
    batch_lines: int,
    batch_bytes: int,
    share: Share = EVERY_LINE,
    advance: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Load the lines of ``files`` that ``share`` wants through ``registry``, in one process.

    A batch is loaded once it has ``batch_lines`` lines or ``batch_bytes`` bytes of
    them, whichever comes first: its lines and what they are parsed into are all
    replay holds, so its memory is bounded whatever the log's length or its bodies'
    sizes (at most ``batch_bytes`` and one read's :data:`CHUNK` of lines).
    """
    summary = Summary(files=len(files))
    batch: list[bytes] = []
    held = 0
    """Bytes of the lines in ``batch``."""

    def flush(count: int) -> None:
        nonlocal held
        lines = batch[:count]
        del batch[:count]
        held -= sum(map(len, lines))
        with gcpause.paused():
            load(lines)

    def load(lines: list[bytes]) -> None:
        requests: list[Request] = []
        for line in lines:
            try:
                requests.append(parse_line(line))
            except LineError:
                summary.unparsable += 1
        for name, outcome in registry.load(requests).items():
            result = outcome.write
            summary.stored += result.stored
            summary.rejected += result.rejected
            summary.already_loaded += result.duplicates
            summary.held += outcome.held
            summary.released += outcome.released
            summary.settings_changed += outcome.settings_changed
            summary.settings_refused += outcome.settings_refused
            summary.per_project[name] += result.stored + result.rejected
            summary.per_project_seen[name] += result.duplicates

    for path in files:
        for lines in _runs(path, advance, summary):
            chosen = share.select(lines)
            summary.lines += len(lines)
            summary.skipped_other_projects += len(lines) - len(chosen)
            batch += chosen
            held += sum(map(len, chosen))
            while len(batch) >= batch_lines or (batch and held >= batch_bytes):
                flush(batch_lines)
    flush(len(batch))
    return summary


def replay_in_passes(
    registry: Registry,
    files: list[Path],
    batch_lines: int,
    batch_bytes: int,
    share: Share,
    most: int,
    advance: Callable[[int], None] = lambda n: None,
) -> Summary:
    """:func:`replay` of ``share`` in its :meth:`Share.passes` of at most ``most`` projects,
    one after the other; ``advance`` hears of the files as if they were read once."""
    passes = share.passes(most)
    if len(passes) == 1:
        return replay(registry, files, batch_lines, batch_bytes, share, advance)
    read = 0.0
    shown = 0

    def scaled(n: int) -> None:
        nonlocal read, shown
        read += n / len(passes)
        advance(int(read) - shown)
        shown = int(read)

    return _sum([replay(registry, files, batch_lines, batch_bytes, part, scaled) for part in passes])


@contextmanager
def open_registry(config: Config, data_dir: Path) -> Iterator[Registry]:
    """The registry of ``config``'s projects, loading into ``data_dir``; closed on exit.

    Replay moves no checkpoint and is rerun if it stops half way, so its commits
    need not reach the disk one by one: each database is synced once, as it is
    closed (on exit, or when more than ``ingest.open_databases`` are open).
    """
    store = store_for_config(config, data_dir, sync_commits=False)
    holding = Holding(data_dir)
    try:
        # Keys decide from the log alone (ingest/keychange.py): replay keeps them in memory
        # and never touches the ones nginx reads.
        yield for_config(config, store, holding, KeyStore(None, None))
    finally:
        store.close()
        holding.close()


def _sample(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    """Runs of whole lines from all over ``path``, to count projects' shares of it.

    A plain file bigger than :data:`PLAN_SAMPLES` blocks gives that many blocks,
    spread evenly from its start to its end (each cut to whole lines); any other
    file, every line. A gzip file cannot be read from the middle.
    """
    size = path.stat().st_size
    if path.suffix == ".gz" or size <= PLAN_SAMPLES * CHUNK:
        yield from _blocks(path, advance, Summary())
        return
    with open(path, "rb") as stream:
        for number in range(PLAN_SAMPLES):
            stream.seek(number * size // PLAN_SAMPLES)
            chunk = stream.read(CHUNK)
            advance(size // PLAN_SAMPLES)
            yield chunk[chunk.find(b"\n") + 1 : chunk.rfind(b"\n")]


def plan(files: list[Path], jobs: int, advance: Callable[[int], None] = lambda n: None) -> list[Share]:
    """Split the projects of ``files`` into at most ``jobs`` shares of about equal lines.

    A first pass counts the lines per project; then each project, biggest first, goes
    to the share with the fewest lines so far. The first share also takes every
    line of a project the count missed (a small project between the samples, a
    malformed line) and every line that names no valid project, so each line is
    loaded (or counted as unparsable) once, and the refused settings writes reach
    the holding area in log order.

    The count only balances the shares, so it takes the short way. It reads a big
    plain file in samples (:func:`_sample`). One regular expression over a block of
    lines finds each line's ``"project":"…"`` (nginx escapes every quote inside a
    value, so the field is the only match). Settings writes to the apex log the
    project as ``""`` and name it in their body: those lines are routed one by one.
    """
    fields: Counter[bytes] = Counter()
    apex: Counter[str | None] = Counter()
    for path in files:
        for block in _sample(path, advance):
            fields.update(_PROJECT_FIELDS.findall(block))
            if _APEX_FIELD in block:
                apex.update(route(line) or "" for line in block.split(b"\n") if _APEX_FIELD in line)
    sizes = Counter({name.decode("latin-1"): lines for name, lines in fields.items()}) + apex
    for name in [name for name in sizes if not is_valid_project_name(name)]:
        del sizes[name]  # "" (the apex) and refused names: the first share's, in log order
    loads = [0] * max(1, min(jobs, len(sizes)))
    names: list[set[str]] = [set() for _ in loads]
    for name, lines in sizes.most_common():
        lightest = loads.index(min(loads))
        loads[lightest] += lines
        names[lightest].add(name)
    planned = frozenset(sizes)
    return [
        Share(frozenset(share), rest=planned if number == 0 else None) for number, share in enumerate(names)
    ]


_progress: list[int] = []
"""Bytes read by each process of a parallel replay (shared memory, set in each worker)."""


def _set_progress(progress: list[int]) -> None:
    global _progress
    _progress = progress


def _replay_share(config: Config, data_dir: Path, files: list[Path], share: Share, slot: int) -> Summary:
    def advance(n: int) -> None:
        _progress[slot] += n

    with open_registry(config, data_dir) as registry:
        batching = config["ingest.batch_lines"], config["ingest.batch_bytes"]
        return replay_in_passes(registry, files, *batching, share, config["ingest.open_databases"], advance)


def replay_in_parallel(
    config: Config,
    data_dir: Path,
    files: list[Path],
    shares: list[Share],
    advance: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Replay each share of the projects in a process of its own; what they did, summed.

    ``advance`` hears of the bytes read by the processes on average.
    """
    # The data directory and the holding area's database exist before the processes
    # start, so that none of them races another to create them.
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    Holding(data_dir).conn.close()
    context = multiprocessing.get_context("fork")
    progress = context.Array("q", len(shares), lock=False)
    with ProcessPoolExecutor(
        len(shares), mp_context=context, initializer=_set_progress, initargs=(progress,)
    ) as pool:
        futures = [
            pool.submit(_replay_share, config, data_dir, files, share, slot)
            for slot, share in enumerate(shares)
        ]
        shown = 0
        while True:
            _, running = wait(futures, timeout=0.2)
            average = sum(progress) // len(shares)
            advance(average - shown)
            shown = average
            if not running:
                break
        parts = [future.result() for future in futures]
    return _sum(parts)


def _sum(parts: list[Summary]) -> Summary:
    """The summaries of processes (or passes) that each read every line but loaded a share of them."""
    first = parts[0]
    total = Summary(files=first.files, lines=first.lines, partial_lines=first.partial_lines)
    counted = ("stored", "rejected", "already_loaded", "held", "released")
    counted += ("settings_changed", "settings_refused", "unparsable")
    for part in parts:
        for name in counted:
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.per_project.update(part.per_project)
        total.per_project_seen.update(part.per_project_seen)
    return total
