"""Which file is which: a log file's fingerprint, the log files beside the live one, .gz heads.

A file is known by its *fingerprint*, a hash of its first line (at most
``FINGERPRINT_BYTES``), never by its name or inode: renamed by logrotate, then
compressed, it keeps its first line; a new file on a recycled inode has another.
The tailer (:mod:`.tail`) and the lag (:mod:`ingestd.ops.lag`) both ask here.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from pathlib import Path

FINGERPRINT_BYTES = 256


def fingerprint_of(head: bytes) -> str | None:
    """The identity of a file whose first bytes are ``head``, once it has one."""
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[: newline + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.sha256(head[:FINGERPRINT_BYTES]).hexdigest()[:32]


def log_files(live: Path) -> list[Path]:
    """The live log and its rotated siblings (same name prefix), oldest first, live last."""
    try:
        names = [
            n
            for n in os.listdir(live.parent)
            if n.startswith(live.name) and n != live.name and not n.endswith(".tmp")
        ]
    except FileNotFoundError:
        return []
    rotated = []
    for name in names:
        path = live.parent / name
        try:
            rotated.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    rotated.sort(key=lambda item: item[0])  # by mtime alone: ties keep directory order
    return [path for _, path in rotated] + ([live] if live.exists() else [])


def gzip_head(path: Path, st: os.stat_result) -> tuple[bytes, int] | None:
    """The first bytes of a .gz, decompressed, and the size its trailer gives (ISIZE:
    the uncompressed size modulo 2**32, of its last member); None if unreadable.

    Decompressed once per version of the file (device, inode, size, mtime): every
    scan of the tailer and every scrape of the lag looks at each rotated .gz.
    """
    return _gzip_head(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8192)
def _gzip_head(path: str, dev: int, ino: int, size: int, mtime_ns: int) -> tuple[bytes, int] | None:
    """:func:`gzip_head` of ``path``; the other arguments are the cache key."""
    try:
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            isize = int.from_bytes(raw.read(4), "little")
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return f.read(FINGERPRINT_BYTES), isize
    except (OSError, EOFError, zlib.error):
        return None
