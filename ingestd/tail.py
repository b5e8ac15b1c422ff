"""Follow the live ingest log and its rotated copies; hand out whole lines.

A file is known by its *fingerprint*, a hash of its first line (at most
``FINGERPRINT_BYTES``), never by its name: ``ingest.log`` renamed to
``ingest.log.1`` and later compressed to ``ingest.log.2.gz`` is one file all
along, and a new file on a recycled inode is a new file. Each plain file being
followed stays open, so renames and deletion do not stop it being read to its
end (and its inode cannot be recycled while it is open).

The tailer only reads. It hands out :class:`Line` objects; the caller loads
them, commits, and only then saves :meth:`Tailer.positions` as its checkpoint.
A line is handed out only once its newline has been written.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import FilePosition

FINGERPRINT_BYTES = 256
READ_SIZE = 1 << 20


@dataclass(slots=True)
class Line:
    """One whole line of a log file, without its newline."""

    fingerprint: str
    path: str
    start: int
    end: int
    data: bytes
    overlong: bool = False
    """True when the line was longer than the limit: ``data`` holds only its start."""


@dataclass(eq=False)
class Followed:
    """A log file being followed, and how far it has been handed out."""

    fingerprint: str
    dev: int
    ino: int
    path: str
    offset: int = 0
    fd: int | None = None
    gzip_file: gzip.GzipFile | None = None
    done: bool = False
    skipping: bool = False
    """Inside an overlong line: discard bytes up to the next newline."""
    seen: bool = field(default=True, compare=False)
    seq: int = 0
    """Discovery order: older files are read first."""


def _fingerprint(head: bytes) -> str | None:
    """The identity of a file whose first bytes are ``head``, once it has one."""
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[: newline + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.sha256(head[:FINGERPRINT_BYTES]).hexdigest()[:32]


def _gzip_head(path: Path) -> bytes | None:
    try:
        with gzip.open(path, "rb") as f:
            return f.read(FINGERPRINT_BYTES)
    except (OSError, EOFError, zlib.error):
        return None


class Tailer:
    """Follows ``live`` (e.g. ``logs/ingest.log``) and every rotated file beside it."""

    def __init__(self, live: Path, max_line: int, positions: list[FilePosition] | None = None) -> None:
        self.live = Path(live)
        self.max_line = max_line
        self.files: dict[str, Followed] = {}
        self._next_seq = 0
        for p in positions or []:
            self._add(Followed(p.fingerprint, p.dev, p.ino, p.path, p.offset, done=p.done))
        self.truncations = 0
        self.rotations_seen = 0
        self.vanished: list[Followed] = []
        """Files that disappeared before they were read to the end (deleted early)."""

    def _add(self, followed: Followed) -> Followed:
        followed.seq = self._next_seq
        self._next_seq += 1
        self.files[followed.fingerprint] = followed
        return followed

    # -- discovery ---------------------------------------------------------

    def _candidates(self) -> list[Path]:
        """The live log and its rotated siblings, oldest first, live last."""
        prefix = self.live.name
        try:
            names = [
                n for n in os.listdir(self.live.parent)
                if n.startswith(prefix) and n != prefix and not n.endswith(".tmp")
            ]
        except FileNotFoundError:
            return []
        paths = [self.live.parent / n for n in names]

        def age(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except FileNotFoundError:
                return 0.0

        paths.sort(key=age)
        return paths + [self.live]

    def scan(self) -> None:
        """Match the files on disk to the files followed; start following new ones."""
        by_inode = {(f.dev, f.ino): f for f in self.files.values() if f.fd is not None}
        for f in self.files.values():
            f.seen = f.fd is not None
        for path in self._candidates():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            known = by_inode.get((st.st_dev, st.st_ino))
            if known is not None:
                if known.path != str(path):
                    self.rotations_seen += known.path == str(self.live)
                known.path = str(path)
                continue
            self._discover(path, st)
        for fingerprint in [k for k, f in self.files.items() if not f.seen]:
            gone = self.files.pop(fingerprint)
            if not gone.done:
                self.vanished.append(gone)

    def _discover(self, path: Path, st: os.stat_result) -> None:
        compressed = path.suffix == ".gz"
        if compressed:
            head = _gzip_head(path)
            fd = None
        else:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
        fingerprint = _fingerprint(head) if head is not None else None
        if fingerprint is None:
            if fd is not None:
                os.close(fd)
            return
        followed = self.files.get(fingerprint)
        if followed is None:
            followed = self._add(Followed(fingerprint, st.st_dev, st.st_ino, str(path)))
        followed.seen = True
        if followed.fd is not None or followed.done or (compressed and followed.gzip_file):
            if fd is not None:
                os.close(fd)
            return
        if fd is not None:
            followed.fd, followed.dev, followed.ino, followed.path = fd, st.st_dev, st.st_ino, str(path)
        else:
            followed.path = str(path)

    # -- reading -------------------------------------------------------------

    def _check_truncated(self, f: Followed) -> None:
        """copytruncate: the open file shrank, or regrew with another first line."""
        size = os.fstat(f.fd).st_size
        if size >= f.offset and _fingerprint(os.pread(f.fd, FINGERPRINT_BYTES, 0)) == f.fingerprint:
            return
        self.truncations += 1
        os.close(f.fd)
        f.fd = None
        f.seen = False

    def _read_at(self, f: Followed, offset: int, size: int) -> bytes:
        if f.fd is not None:
            return os.pread(f.fd, size, offset)
        if f.gzip_file is None:
            f.gzip_file = gzip.open(f.path, "rb")
        if f.gzip_file.tell() != offset:
            f.gzip_file.seek(offset)
        try:
            return f.gzip_file.read(size)
        except (EOFError, zlib.error, OSError):
            return b""

    def _read_file(self, f: Followed, budget: int, out: list[Line]) -> None:
        while budget > len(out):
            want = READ_SIZE
            chunk = self._read_at(f, f.offset, want)
            while chunk and b"\n" not in chunk and len(chunk) == want and want < self.max_line:
                want = min(want * 4, self.max_line + 1)
                chunk = self._read_at(f, f.offset, want)
            if not chunk:
                return
            if f.skipping:
                newline = chunk.find(b"\n")
                if newline < 0:
                    f.offset += len(chunk)
                    continue
                f.offset += newline + 1
                f.skipping = False
                continue
            start = 0
            while len(out) < budget:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    break
                out.append(Line(f.fingerprint, f.path, f.offset + start, f.offset + newline + 1, chunk[start:newline]))
                start = newline + 1
            if start == 0 and len(chunk) > self.max_line:
                out.append(Line(f.fingerprint, f.path, f.offset, f.offset + len(chunk), chunk[:4096], overlong=True))
                f.offset += len(chunk)
                f.skipping = True
                continue
            f.offset += start
            if start == 0:
                return

    def read(self, budget: int) -> list[Line]:
        """Up to ``budget`` whole lines not yet handed out, oldest file first."""
        out: list[Line] = []
        for f in sorted(self.files.values(), key=lambda f: f.seq):
            if f.done or len(out) >= budget:
                continue
            if f.fd is not None:
                self._check_truncated(f)
                if f.fd is None:
                    continue
            elif not f.path.endswith(".gz"):
                continue
            self._read_file(f, budget, out)
            self._retire(f)
        return out

    def _retire(self, f: Followed) -> None:
        """Close a file that can grow no more and has been read to its end."""
        if f.fd is not None:
            st = os.fstat(f.fd)
            if st.st_nlink == 0 and f.offset >= st.st_size:
                os.close(f.fd)
                f.fd = None
                f.done = True
        elif f.gzip_file is not None and not self._read_at(f, f.offset, 1):
            f.gzip_file.close()
            f.gzip_file = None
            f.done = True

    def pending_bytes(self) -> int:
        """Bytes written to the followed plain files and not yet handed out."""
        total = 0
        for f in self.files.values():
            if f.fd is not None:
                total += max(0, os.fstat(f.fd).st_size - f.offset)
        return total

    def positions(self) -> list[FilePosition]:
        """Where each followed file stands: what a checkpoint saves."""
        return [
            FilePosition(f.fingerprint, f.dev, f.ino, f.offset, f.path, f.done)
            for f in self.files.values()
        ]

    def close(self) -> None:
        for f in self.files.values():
            if f.fd is not None:
                os.close(f.fd)
                f.fd = None
            if f.gzip_file is not None:
                f.gzip_file.close()
                f.gzip_file = None
