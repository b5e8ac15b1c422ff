"""The dead-letter file: log lines ingestd could not parse, kept with their position.

One JSON object per line in ``STATE_DIR/deadletter.ndjson``::

    {"time": "...", "file": "logs/ingest.log", "fingerprint": "...",
     "start": 1234, "end": 1300, "error": "not JSON: ...", "line": "..."}

``line`` holds the raw bytes read as Latin-1 (so it round-trips exactly), cut at
64 KiB. Entries are fsynced before the checkpoint moves past their lines, so none
is lost. A line is known by its file's fingerprint and its start: read again
(after a crash, a lost checkpoint, a failed batch, or from the copy a rotation
made), :class:`DeadLetters` does not write it twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..support.durable import write_all_and_sync
from ..support.timefmt import iso_time
from .tail import Line

KEEP_BYTES = 65536


def append(path: Path, entries: list[tuple[Line, str]], prefix: bytes = b"") -> None:
    """Append ``(line, error)`` entries durably (after ``prefix``)."""
    now = iso_time(time.time())
    data = "".join(
        json.dumps(
            {
                "time": now,
                "file": line.path,
                "fingerprint": line.fingerprint,
                "start": line.start,
                "end": line.end,
                "error": error,
                "line": line.data[:KEEP_BYTES].decode("latin-1"),
            }
        )
        + "\n"
        for line, error in entries
    ).encode()
    data = prefix + data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        write_all_and_sync(fd, data)
    finally:
        os.close(fd)


class DeadLetters:
    """The dead-letter file, holding each line at most once.

    The keys of the entries already in the file are read on the first append
    (a daemon that never meets a bad line never reads the file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: set[tuple[str, int]] | None = None
        self._torn = False
        """The file ends inside an entry (a crash or a full disk in the middle of a write)."""

    def _load(self) -> set[tuple[str, int]]:
        known: set[tuple[str, int]] = set()
        self._torn = False
        try:
            with open(self.path, "rb") as f:
                for raw in f:
                    self._torn = not raw.endswith(b"\n")
                    try:
                        entry = json.loads(raw)
                        known.add((entry["fingerprint"], entry["start"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn entry: its line is written again
        except FileNotFoundError:
            pass
        return known

    def append(self, entries: list[tuple[Line, str]]) -> set[tuple[str, int]]:
        """Append, durably, the entries whose line is not in the file yet; return their keys."""
        if self._known is None:
            self._known = self._load()
        new: list[tuple[Line, str]] = []
        keys: set[tuple[str, int]] = set()
        for line, error in entries:
            key = (line.fingerprint, line.start)
            if key not in self._known and key not in keys:
                keys.add(key)
                new.append((line, error))
        if new:
            try:
                append(self.path, new, prefix=b"\n" if self._torn else b"")
            except BaseException:
                self._known = None  # the file may end inside an entry now: look again
                raise
            self._torn = False
            self._known |= keys
        return keys
