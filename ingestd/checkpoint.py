"""Durable, atomic checkpoints: where ingestd is in each log file it follows.

A checkpoint is a small JSON document written to a temporary file, fsynced,
renamed over the old one and made durable by an fsync of the directory. A reader
therefore sees the old checkpoint or the new one, never a mix. It is written
only after the records before it are committed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be trusted (torn, empty, foreign)."""


@dataclass(frozen=True)
class FilePosition:
    """How far one log file (known by its fingerprint) has been loaded."""

    fingerprint: str
    dev: int
    ino: int
    offset: int
    path: str
    done: bool = False
    """Read to its end and unable to grow: seen again (e.g. as .gz), it is skipped."""


def save(path: Path, positions: list[FilePosition]) -> None:
    """Write ``positions`` to ``path`` atomically and durably."""
    data = json.dumps(
        {"version": CHECKPOINT_VERSION, "files": [asdict(p) for p in positions]},
        separators=(",", ":"),
    ).encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path) -> list[FilePosition] | None:
    """The saved positions, or None when no checkpoint was ever written.

    Raises :class:`CheckpointError` when a file is there but unreadable, so the
    caller decides how to recover instead of silently starting over.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        if data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return [FilePosition(**item) for item in data["files"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({len(raw)} bytes): {exc}") from None
