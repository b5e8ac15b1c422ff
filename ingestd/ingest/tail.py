"""Follow the live ingest log and its rotated copies; hand out whole lines.

A file is known by its fingerprint (:mod:`.fingerprint`), never by its name:
``ingest.log`` renamed to ``ingest.log.1`` and later compressed to
``ingest.log.2.gz`` is one file all along, and a new file on a recycled inode is
a new file. Each plain file being
followed stays open, so renames and deletion do not stop it being read to its
end (and its inode cannot be recycled while it is open).

The tailer only reads. It hands out :class:`Line` objects; the caller loads
them, commits, and only then saves :meth:`Tailer.positions` as its checkpoint.
A line is handed out only once its newline has been written.
"""

from __future__ import annotations

import gzip
import os
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import FilePosition
from .fingerprint import FINGERPRINT_BYTES, fingerprint_of, gzip_head, log_files

READ_SIZE = 1 << 20
OVERLONG_HEAD = 4096
"""How much of an overlong line :attr:`Line.data` keeps."""


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
    scan_pos: int = 0
    """Inside an unfinished overlong line at ``offset``: no newline before this position."""
    seen: bool = field(default=True, compare=False)
    seq: int = 0
    """Discovery order: older files are read first."""
    gzip_buffer: bytes = b""
    """Decompressed bytes from ``gzip_buffer_start``, up to the gzip file's position."""
    gzip_buffer_start: int = 0
    gzip_failed: tuple[int, int] | None = None
    """(size, mtime) of the .gz when reading it failed: retried only once it changes."""
    gzip_done: tuple[int, int] | None = None
    """(size, mtime) of the .gz this file was read to the end of."""
    saved_size: int = 0
    """Its size in the checkpoint it was restored from (0: not restored, or unknown)."""


def _last_line_end(fd: int, size: int) -> int:
    """Just past the last newline in the first ``size`` bytes of ``fd`` (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - READ_SIZE)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Tailer:
    """Follows ``live`` (e.g. ``logs/ingest.log``) and every rotated file beside it."""

    def __init__(
        self,
        live: Path,
        max_line: int,
        positions: list[FilePosition] | None = None,
        close_rotated_after: float = 300.0,
    ) -> None:
        self.live = Path(live)
        self.max_line = max_line
        self.close_rotated_after = close_rotated_after
        self.files: dict[str, Followed] = {}
        self._next_seq = 0
        self._taken, self._max_bytes = 0, None
        for p in positions or []:
            self._add(Followed(p.fingerprint, p.dev, p.ino, p.path, p.offset, done=p.done, saved_size=p.size))
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

    def scan(self) -> None:
        """Match the files on disk to the files followed; start following new ones."""
        for f in list(self.files.values()):
            if f.fd is not None:
                self._check_truncated(f)
        by_inode = {(f.dev, f.ino): f for f in self.files.values() if f.fd is not None}
        for f in self.files.values():
            f.seen = f.fd is not None
        for path in log_files(self.live):
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
            if gone.gzip_file is not None:
                gone.gzip_file.close()
                gone.gzip_file = None
            if not gone.done:
                self.vanished.append(gone)

    def _discover(self, path: Path, st: os.stat_result) -> None:
        compressed = path.suffix == ".gz"
        gzip_size = None
        if compressed:
            head_and_size = gzip_head(path, st)
            head, gzip_size = head_and_size or (None, None)
            fd = None
        else:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
        fingerprint = fingerprint_of(head) if head is not None else None
        if fingerprint is None:
            if fd is not None:
                os.close(fd)
            return
        followed = self.files.get(fingerprint)
        if followed is None:
            followed = self._add(Followed(fingerprint, st.st_dev, st.st_ino, str(path)))
        followed.seen = True
        if followed.done:
            followed.path = str(path)
            if fd is not None:
                grown = st.st_size > followed.offset
            else:
                # Compressed since: its trailer tells whether it grew first (read again
                # to make sure, unless this very .gz was read to its end).
                signature = (st.st_size, st.st_mtime_ns)
                grown = gzip_size != followed.offset % 2**32 and followed.gzip_done != signature
            if grown:
                # a rotated file closed as idle has grown after all: follow it again
                followed.done = False
        if followed.fd is not None or followed.done:
            if fd is not None:
                os.close(fd)
            return
        if fd is not None:
            # The plain file is preferred to a compressed copy of it: it may still grow.
            self._close_gzip(followed)
            size = os.fstat(fd).st_size
            if (followed.dev, followed.ino) != (st.st_dev, st.st_ino) and size < followed.offset:
                # Another file with this first line, shorter than what was read: the copy
                # copytruncate made before the lines after its end were read from the
                # original. Everything up to its last line end was handed out; it is not a
                # file that lost its tail, to be read again from its start.
                followed.offset, followed.scan_pos = _last_line_end(fd, size), 0
            followed.fd, followed.dev, followed.ino, followed.path = fd, st.st_dev, st.st_ino, str(path)
        elif followed.gzip_file is None:
            followed.path = str(path)

    # -- reading -------------------------------------------------------------

    def _check_truncated(self, f: Followed) -> None:
        """copytruncate: the open file shrank, or regrew with another first line.

        A file that kept its first line but no longer has a line end just
        before the offset (shorter than that, or changed there) is not what
        was handed out: it lost its tail in a crash before the page cache was
        flushed, and nginx appended after what was left. Reading starts again
        from its start; the store skips the lines it already has, and no line
        written after the crash is skipped.
        """
        assert f.fd is not None
        size = os.fstat(f.fd).st_size
        same = fingerprint_of(os.pread(f.fd, FINGERPRINT_BYTES, 0)) == f.fingerprint
        if same and (f.offset == 0 or (size >= f.offset and os.pread(f.fd, 1, f.offset - 1) == b"\n")):
            return
        self.truncations += 1
        f.scan_pos = 0
        if same:
            f.offset = 0
            return
        os.close(f.fd)
        f.fd = None
        f.seen = False

    def _close_gzip(self, f: Followed) -> None:
        if f.gzip_file is not None:
            f.gzip_file.close()
            f.gzip_file = None
        f.gzip_buffer, f.gzip_buffer_start = b"", 0

    def _read_at(self, f: Followed, offset: int, size: int) -> bytes:
        """``size`` bytes of ``f`` at ``offset``; nothing if it is no longer the same file.

        A plain file is checked again after the read, not only before it: copied,
        truncated and regrown past ``offset`` in between (copytruncate while the
        daemon was descheduled), it would hand out the middle of the new content
        and skip the unread lines, which are only in the copy. The next look at
        it finds the truncation and follows the copy.
        """
        if f.fd is None:
            return self._read_gzip(f, offset, size)
        data = os.pread(f.fd, size, offset)
        if data and fingerprint_of(os.pread(f.fd, FINGERPRINT_BYTES, 0)) != f.fingerprint:
            return b""
        return data

    def _read_gzip(self, f: Followed, offset: int, size: int) -> bytes:
        """Read a .gz at ``offset``, moving forward through it without rewinding.

        Reading resumes at the start of a partial line, which lies before the
        gzip file's position; a buffer of what was last read saves
        decompressing the whole file again from its start (a gzip file cannot
        seek backwards). An unreadable .gz (truncated, corrupt, gone) reads as
        empty, is not marked done, and is tried again once it changes. So does
        a .gz that is not this file (its first line differs): the path is only
        as fresh as the last scan, and logrotate renames .gz files.
        """
        try:
            if f.gzip_file is None:
                f.gzip_file = gzip.open(f.path, "rb")
                f.gzip_buffer, f.gzip_buffer_start = f.gzip_file.read(FINGERPRINT_BYTES), 0
                if fingerprint_of(f.gzip_buffer) != f.fingerprint:
                    # Renamed since the scan that found it, and another file has its
                    # name now (logrotate shifting .N.gz): the next scan finds it again.
                    self._close_gzip(f)
                    f.gzip_failed = (-1, -1)
                    return b""
            buffer_end = f.gzip_buffer_start + len(f.gzip_buffer)
            if f.gzip_buffer_start <= offset <= buffer_end:
                f.gzip_buffer = f.gzip_buffer[offset - f.gzip_buffer_start :]
            else:
                f.gzip_file.seek(offset)
                f.gzip_buffer = b""
            f.gzip_buffer_start = offset
            if len(f.gzip_buffer) < size:
                f.gzip_buffer += f.gzip_file.read(size - len(f.gzip_buffer))
        except (EOFError, zlib.error, OSError):
            self._close_gzip(f)
            f.gzip_failed = _signature(f.path) or (-1, -1)
            return b""
        f.gzip_failed = None
        return f.gzip_buffer[:size]

    def _hand_out(self, f: Followed, start: int, data: bytes, out: list[Line]) -> None:
        """Append the line at ``start`` (``data`` without its newline)."""
        end = start + len(data) + 1
        self._taken += end - start
        if len(data) > self.max_line:
            out.append(Line(f.fingerprint, f.path, start, end, data[:OVERLONG_HEAD], overlong=True))
        else:
            out.append(Line(f.fingerprint, f.path, start, end, data))

    def _read_file(self, f: Followed, budget: int, out: list[Line]) -> None:
        while self._room(budget, out):
            chunk = self._read_at(f, f.offset, READ_SIZE)
            start = 0
            while self._room(budget, out):
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    break
                self._hand_out(f, f.offset + start, chunk[start:newline], out)
                start = newline + 1
            if start:
                f.offset += start
                f.scan_pos = 0
                continue
            if len(chunk) < READ_SIZE or not self._read_long_line(f, chunk, out):
                return

    def _read_long_line(self, f: Followed, head: bytes, out: list[Line]) -> bool:
        """Hand out the line at ``f.offset``, longer than one read; False if not whole yet.

        A line up to ``max_line`` is handed out whole; a longer one as its first
        bytes with ``overlong=True``, once its newline has arrived. The offset
        never stops inside a line, so a checkpoint never does either.
        """
        pos = f.offset + len(head)
        parts: list[bytes] | None = [head] if len(head) <= self.max_line else None
        if f.scan_pos - f.offset > self.max_line:
            pos, parts = f.scan_pos, None
        while True:
            chunk = self._read_at(f, pos, READ_SIZE)
            newline = chunk.find(b"\n")
            if newline >= 0:
                end = pos + newline
                if parts is not None and end - f.offset <= self.max_line:
                    parts.append(chunk[:newline])
                    self._hand_out(f, f.offset, b"".join(parts), out)
                else:
                    self._taken += end + 1 - f.offset
                    out.append(Line(f.fingerprint, f.path, f.offset, end + 1, head[:OVERLONG_HEAD], True))
                f.offset, f.scan_pos = end + 1, 0
                return True
            pos += len(chunk)
            if len(chunk) < READ_SIZE:
                if pos - f.offset > self.max_line:
                    f.scan_pos = pos
                return False
            if parts is not None:
                parts.append(chunk)
                if pos - f.offset > self.max_line:
                    parts = None

    def read(self, budget: int, max_bytes: int | None = None) -> list[Line]:
        """Up to ``budget`` whole lines not yet handed out, oldest file first.

        With ``max_bytes``, reading also stops once the lines handed out add up to
        that many bytes (the line that crosses it included), so that a batch of
        large bodies holds bounded memory however many lines it may have.
        """
        out: list[Line] = []
        self._taken, self._max_bytes = 0, max_bytes
        for f in sorted(self.files.values(), key=lambda f: f.seq):
            if f.done or not self._room(budget, out):
                continue
            if self._readable(f):
                self._read_file(f, budget, out)
                self._retire(f)
        return out

    def _room(self, budget: int, out: list[Line]) -> bool:
        """True while this read may hand out another line."""
        return len(out) < budget and (self._max_bytes is None or self._taken < self._max_bytes)

    def _readable(self, f: Followed) -> bool:
        """True for an open plain file (not truncated under us) or a .gz worth trying."""
        if f.fd is not None:
            self._check_truncated(f)
            return f.fd is not None
        if not f.path.endswith(".gz"):
            return False
        return f.gzip_failed is None or f.gzip_failed != _signature(f.path)

    def _retire(self, f: Followed) -> None:
        """Close a file read to its end that can grow no more: deleted (compressed
        by logrotate, say), or rotated and unchanged for ``close_rotated_after``.

        A deleted file that ends in a line nobody finishes (copytruncate cut it:
        its head ends the copy) is closed too once idle, not done: the next scan
        follows it on in its .gz if there is one, else reports it in ``vanished``.
        """
        if f.fd is not None:
            st = os.fstat(f.fd)
            at_end = f.offset >= st.st_size
            deleted = st.st_nlink == 0
            idle = f.path != str(self.live) and time.time() - st.st_mtime > self.close_rotated_after
            if at_end and (deleted or idle):
                os.close(f.fd)
                f.fd = None
                f.done = True
            elif deleted and idle and not self._has_newline(f.fd, max(f.offset, f.scan_pos), st.st_size):
                os.close(f.fd)
                f.fd = None
        elif f.gzip_failed is None and not self._read_at(f, f.offset, 1) and f.gzip_failed is None:
            # Done only at a clean end of the stream, not when reading it failed.
            self._close_gzip(f)
            f.done, f.gzip_done = True, _signature(f.path)

    @staticmethod
    def _has_newline(fd: int, start: int, end: int) -> bool:
        while start < end:
            chunk = os.pread(fd, min(READ_SIZE, end - start), start)
            if b"\n" in chunk:
                return True
            if not chunk:
                return False
            start += len(chunk)
        return False

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
            FilePosition(
                f.fingerprint,
                f.dev,
                f.ino,
                f.offset,
                f.path,
                f.done,
                os.fstat(f.fd).st_size if f.fd is not None else f.offset,
            )
            for f in self.files.values()
        ]

    def close(self) -> None:
        for f in self.files.values():
            if f.fd is not None:
                os.close(f.fd)
                f.fd = None
            self._close_gzip(f)
