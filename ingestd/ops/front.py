"""The front tier's kept writes handed over to their host (``smalltable front handoff``).

While a host is down the front tier answers its projects' writes itself and logs them to
its own ingest log in the hosts' format, with the owner's address in ``host``
(nginx/front.conf.j2). Handing over copies the owner's lines, in log order, into one new
file beside the owner's ingest log, where its ingestd loads it like any rotated log.
Loading is keyed by request id, so handing over the same lines again (after a crash, or
with more lines kept since) stores nothing twice: each write lands exactly once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from ..config import Config
from ..ingest.fingerprint import log_files
from ..support.durable import write_all_and_sync


def _whole_lines(path: Path) -> list[bytes]:
    """The file's whole lines (a torn last line, still being written, is left for later)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def _owner(line: bytes) -> str | None:
    try:
        return json.loads(line.decode("latin-1")).get("host")
    except (ValueError, AttributeError):
        return None


def kept_lines(front: Config, host: str) -> list[bytes]:
    """Every line the front kept for ``host`` (ADDRESS:PORT), oldest log file first."""
    lines = []
    for path in log_files(front.path("ingest_log")):
        lines += [line for line in _whole_lines(path) if _owner(line) == host]
    return lines


def handoff(front: Config, host: str, target: Config) -> tuple[Path | None, int]:
    """Hand ``host``'s kept lines to the home ``target`` (that host's); the file written (or
    found already there) and the number of lines, ``(None, 0)`` when nothing was kept."""
    lines = kept_lines(front, host)
    if not lines:
        return None, 0
    data = b"".join(lines)
    live = target.path("ingest_log")
    path = live.parent / f"{live.name}.front-{hashlib.sha256(data).hexdigest()[:16]}"
    if path.exists() or path.with_name(path.name + ".gz").exists():
        return path, len(lines)
    live.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        write_all_and_sync(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path, len(lines)
