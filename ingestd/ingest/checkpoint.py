"""Durable, atomic checkpoints: where ingestd is in each log file it follows.

A checkpoint is a small JSON document written to a temporary file, fsynced,
renamed over the old one and made durable by an fsync of the directory. A reader
therefore sees the old checkpoint or the new one, never a mix. It is written
only after the records before it are committed.
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from ..support import failpoints
from ..support.durable import write_all_and_sync

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
    size: int = 0
    """The file's size when the checkpoint was saved (0 when unknown): a file that
    vanishes later had been read to its end if ``offset`` reached it."""


def save(path: Path, positions: list[FilePosition]) -> None:
    """Write ``positions`` to ``path`` atomically and durably."""
    data = json.dumps(
        {"version": CHECKPOINT_VERSION, "files": [asdict(p) for p in positions]},
        separators=(",", ":"),
    ).encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all_and_sync(fd, data)
        finally:
            os.close(fd)
        failpoints.hit("checkpoint.after_temp_write")
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    failpoints.hit("checkpoint.after_rename")
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_FIELD_TYPES = {
    "fingerprint": str,
    "dev": int,
    "ino": int,
    "offset": int,
    "path": str,
    "done": bool,
    "size": int,
}


def _position(item: object) -> FilePosition:
    """One saved file position, checked field by field: a wrong type is a bad checkpoint."""
    if not isinstance(item, dict):
        raise ValueError(f"a file entry is not an object: {item!r}")
    position = FilePosition(**item)
    for name, kind in _FIELD_TYPES.items():
        value = getattr(position, name)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise ValueError(f"bad {name} {value!r} in {item!r}")
    return position


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
        return [_position(item) for item in data["files"]]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({len(raw)} bytes): {exc}") from None
