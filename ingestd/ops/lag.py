"""Ingest lag, measured from the log files and a checkpoint's positions.

*Lag bytes* is what nginx has written and the checkpoint has not passed, over all
log files. *Lag seconds* is the age of the oldest such request: the arrival time
(``t - rt``) written in the first line past the checkpoint, read from the file
itself. Both describe what is committed, not what the loop has in hand, so a
daemon that is alive but stuck shows a growing lag; and ``smalltable status``
can compute them from the checkpoint file with no daemon at all.
"""

from __future__ import annotations

import gzip
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..ingest.checkpoint import FilePosition
from ..ingest.fingerprint import FINGERPRINT_BYTES, fingerprint_of, gzip_head, log_files

_TIMES = re.compile(rb'"t":([0-9.]+),"rt":([0-9.]+)')


@dataclass(frozen=True)
class Lag:
    bytes: int
    seconds: float
    files: int
    """Log files with something left to load."""


def _read(path: Path, offset: int, size: int) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _arrival(path: Path, offset: int) -> float | None:
    """When the request logged at ``offset`` of ``path`` arrived, if readable there."""
    try:
        match = _TIMES.search(_read(path, offset, 256))
    except (OSError, EOFError, zlib.error):
        return None
    return float(match.group(1)) - float(match.group(2)) if match else None


def measure(live: Path, positions: list[FilePosition], now: float | None = None) -> Lag:
    """The lag of ``positions`` (a checkpoint) against the log files on disk now."""
    now = time.time() if now is None else now
    known = {p.fingerprint: p for p in positions}
    total, oldest, files = 0, None, 0
    for path in log_files(live):
        try:
            st = path.stat()
            if path.suffix == ".gz":
                head, size = gzip_head(path, st) or (b"", 0)
            else:
                head, size = _read(path, 0, FINGERPRINT_BYTES), st.st_size
        except OSError:
            continue
        fingerprint = fingerprint_of(head)
        if fingerprint is None:
            continue
        position = known.get(fingerprint)
        if position is not None and position.done:
            continue
        offset = position.offset if position else 0
        pending = max(0, size - offset)
        if not pending:
            continue
        total += pending
        files += 1
        arrived = _arrival(path, offset)
        if arrived is not None and (oldest is None or arrived < oldest):
            oldest = arrived
    seconds = max(0.0, now - oldest) if oldest is not None else 0.0
    return Lag(total, seconds, files)
