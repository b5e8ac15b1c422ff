"""``smalltable replay``: load project databases from the logs, all of them, again.

The log is the source of truth. Replay reads every log file (the live one and every
rotated one, plain or compressed, oldest first) or the files given, and loads each
line as the daemon would. Loading is keyed by request id, so replaying what is
already loaded changes nothing: replay is idempotent, and safe while the daemon
runs (both take SQLite's write lock per batch). It ignores and never moves the
daemon's checkpoint, and does not write the dead-letter file (it counts instead).

To rebuild a project from scratch (after a validator change, or into a fresh
host), replay into another data directory and swap it in: docs/ops.md.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .logline import LineError, Request, parse_line
from .projects import SettingsError
from .registry import Registry, named_project

CHUNK = 1 << 20


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
    seconds: float = 0.0
    per_project: Counter = field(default_factory=Counter)
    """New rows (records and rejects) per project."""
    per_project_seen: Counter = field(default_factory=Counter)
    """Lines per project that were already loaded."""


def _lines(path: Path, advance: Callable[[int], None], summary: Summary) -> Iterator[bytes]:
    """Whole lines of a plain or gzip file; ``advance(n)`` reports bytes of the file read.

    A last line without its newline is still being written: it is left for the
    daemon (or a later replay), and counted.
    """
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        reported = 0
        rest = b""
        while chunk := stream.read(CHUNK):
            advance(raw.tell() - reported)
            reported = raw.tell()
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        summary.partial_lines += bool(rest)


def replay(
    registry: Registry,
    files: list[Path],
    batch_lines: int,
    project: str | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> Summary:
    """Load ``files`` through ``registry`` (only ``project``'s lines, if given)."""
    started = time.monotonic()
    summary = Summary(files=len(files))
    markers = (f'"project":"{project}"'.encode(), b'"project":""') if project else None
    batch: list[bytes] = []

    def flush() -> None:
        requests: list[Request] = []
        for line in batch:
            try:
                request = parse_line(line)
            except LineError:
                summary.unparsable += 1
                continue
            if project and not _for_project(request, project):
                summary.skipped_other_projects += 1
                continue
            requests.append(request)
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
        batch.clear()

    for path in files:
        for line in _lines(path, advance, summary):
            summary.lines += 1
            if markers is not None and not any(marker in line for marker in markers):
                summary.skipped_other_projects += 1
                continue
            batch.append(line)
            if len(batch) >= batch_lines:
                flush()
    flush()
    summary.seconds = time.monotonic() - started
    return summary


def _for_project(request: Request, project: str) -> bool:
    """True when ``request`` is ``project``'s (an apex settings write names it in its body)."""
    if request.project:
        return request.project == project
    try:
        return named_project(request) == project
    except SettingsError:
        return False
