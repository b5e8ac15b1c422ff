"""The dead-letter file: log lines ingestd could not parse, kept with their position.

One JSON object per line in ``STATE_DIR/deadletter.ndjson``::

    {"time": "...", "file": "logs/ingest.log", "fingerprint": "...",
     "start": 1234, "end": 1300, "error": "not JSON: ...", "line": "..."}

``line`` holds the raw bytes read as Latin-1 (so it round-trips exactly), cut at
64 KiB. Entries are fsynced before the checkpoint moves past their lines, so none
is lost; after a crash a line may be written twice (same fingerprint and start).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .store import iso_time
from .tail import Line

KEEP_BYTES = 65536


def append(path: Path, entries: list[tuple[Line, str]]) -> None:
    """Append ``(line, error)`` entries durably."""
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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
