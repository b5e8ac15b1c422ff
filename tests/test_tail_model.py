"""Property-based test of ingestd.ingest.tail against a model of nginx, logrotate and the daemon.

A hypothesis state machine drives a real directory (real files, real renames,
real gzip, real truncation) through random sequences of what happens to an
ingest log in production, and checks the tailer against a model that knows
every byte written:

* nginx appends lines through one ``O_APPEND`` descriptor that it keeps across
  renames until it is told to reopen (USR1); a line may be half written;
* logrotate rotates by rename+create, compresses (delaycompress: never the file
  nginx still writes to; the .gz is whole before the plain file goes), deletes
  the oldest file (only once everything in it is committed: deleting unread
  lines is the operator's loss, not the tailer's), or copies and truncates;
* the daemon scans and reads with random budgets, commits (loads, then saves a
  real checkpoint) or not, and is killed (no close, no checkpoint) and
  restarted from its last checkpoint.

Invariants: every committed line is a line of a file, byte-exact and whole,
and is committed once; offsets in ``positions()`` sit just after a newline and
everything before them was handed out; ``vanished`` names no file whose lines
were not all committed; at the end, after a full drain, every line is committed
exactly once. copytruncate loses only what it must: lines written between the
copy and the truncation (the model can put writes there) may be missed, and a
line half written at the truncation is cut in two -- its head stays unterminated
at the end of the copy and is never handed out, its tail becomes the first line
of the truncated file (a whole line of that file, so it is handed out once).

``make test`` runs 300 examples of up to 50 steps (about 15 s). Explore longer with
``TAIL_MODEL_EXAMPLES=20000 TAIL_MODEL_STEPS=120 .venv/bin/pytest tests/test_tail_model.py``.
The plain tests at the end are the bugs the model found, each as a small example.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ingestd.ingest import checkpoint, tail
from ingestd.ingest.tail import FINGERPRINT_BYTES, OVERLONG_HEAD, Line, Tailer

LIVE = "ingest.log"
ROTATED = re.compile(r"^ingest\.log\.(\d+)(\.gz)?$")
TAIL_ID = 40
"""Every line ends with ``"z":"<its 32-hex id>"}`` + newline (40 bytes): a cut
leaving at least that much makes a tail that is unique too."""


def fingerprint(content: bytes) -> str | None:
    """The model's idea of a file's identity: the hash of its first line (ingest/fingerprint.py)."""
    newline = content.find(b"\n")
    if newline >= 0:
        head = content[: newline + 1]
    elif len(content) < FINGERPRINT_BYTES:
        return None
    else:
        head = content
    return hashlib.sha256(head[:FINGERPRINT_BYTES]).hexdigest()[:32]


def whole_lines(content: bytes) -> list[bytes]:
    """The newline-terminated lines of ``content`` (an unterminated tail is not one)."""
    lines = content.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()
    return lines


_PAD = bytes(b for b in range(0x20, 0x100) if b not in b'"\\\x7f')


def make_line(number: int, length: int) -> bytes:
    """A unique log line of about ``length`` bytes with its id at both ends."""
    ident = hashlib.md5(b"line %d" % number).hexdigest().encode()
    head = b'{"id":"%s","n":%d,"p":"' % (ident, number)
    end = b'","z":"%s"}\n' % ident
    assert len(end) == TAIL_ID + 2
    seed = hashlib.sha256(ident).digest() * 20
    pad = bytes(_PAD[b % len(_PAD)] for b in seed[: max(0, length - len(head) - len(end))])
    return head + pad + end


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(eq=False)
class MFile:
    """One file in the model (an inode; a .gz stands in for the plain file it replaced)."""

    name: str | None
    content: bytearray = field(default_factory=bytearray)
    line_start: int = 0
    compressed: bool = False

    def fingerprint(self) -> str | None:
        return fingerprint(bytes(self.content))


@dataclass(frozen=True)
class ReadSpec:
    budget: int
    scan: bool
    repeat: bool
    commit: bool


reads = st.builds(
    ReadSpec,
    budget=st.integers(1, 50),
    scan=st.booleans() | st.just(True),
    repeat=st.booleans(),
    commit=st.booleans() | st.just(True),
)
line_lengths = st.integers(90, 600)
CRASH = "crash"
midways = st.none() | reads | st.just(CRASH)
"""What happens in the middle of a logrotate step: nothing, a read, or a crash."""


class TailerModel(RuleBasedStateMachine):
    base: Path = Path(tempfile.gettempdir())

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(dir=self.base))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.live = self.logs / LIVE
        self.checkpoint_path = self.root / "checkpoint.json"
        self.tailer: Tailer | None = None
        self.nginx: MFile | None = None
        self.nginx_fd: int | None = None
        self.files: dict[str, MFile] = {}
        """The model files on disk, by name."""
        self.every_file: list[MFile] = []
        self.ghosts: list[bytes] = []
        """What truncated files held before truncation (lines read from them then)."""
        self.numbers = 0
        self.intended: list[bytes] = []
        """Every line nginx set out to write."""
        self.pending: bytes = b""
        self.pending_line: bytes = b""
        self.lines: dict[bytes, str] = {}
        """Every whole line that was ever in a file: 'must' be committed once, or 'may'."""
        self.cut: set[bytes] = set()
        """Lines that copytruncate cut in two: in no file whole, never committed."""
        self.in_flight: list[bytes] = []
        self.committed: dict[bytes, int] = {}
        self.saved_read_size = tail.READ_SIZE
        self.clock = time.time_ns()

    def _touch(self, target: int | Path) -> None:
        """Give a file just changed a new mtime of its own: the tailer orders files by
        mtime, and coarse clocks make ties that would make runs differ (hypothesis
        needs them to repeat). 10 µs apart: the tailer's float mtimes tell them apart."""
        self.clock += 10_000
        os.utime(target, ns=(self.clock, self.clock))

    # -- the model's files -------------------------------------------------

    def _new_file(self, name: str) -> MFile:
        m = MFile(name)
        self.files[name] = m
        self.every_file.append(m)
        return m

    def _streams(self, fp: str) -> list[bytes]:
        contents = [bytes(m.content) for m in self.every_file] + self.ghosts
        return [c for c in contents if fingerprint(c) == fp]

    def _append(self, m: MFile, data: bytes) -> None:
        """nginx appends ``data`` to the file it has open; register the lines it completes."""
        assert m is self.nginx and self.nginx_fd is not None
        write_all(self.nginx_fd, data)
        self._touch(self.nginx_fd)
        m.content += data
        while (newline := m.content.find(b"\n", m.line_start)) >= 0:
            line = bytes(m.content[m.line_start : newline + 1])
            assert line not in self.lines, "the model wrote a line twice"
            self.lines[line] = "must"
            m.line_start = newline + 1

    def _finish_partial(self) -> None:
        if self.pending:
            assert self.nginx is not None
            rest, self.pending = self.pending, b""
            self._append(self.nginx, rest)

    def _next_line(self, length: int) -> bytes:
        self.numbers += 1
        line = make_line(self.numbers, length)
        self.intended.append(line)
        return line

    def _rotated(self) -> list[tuple[int, str]]:
        """(number, name) of the rotated files, oldest (highest number) first."""
        found = [(int(m.group(1)), name) for name in self.files if (m := ROTATED.match(name))]
        return sorted(found, reverse=True)

    def _rename(self, old: str, new: str) -> None:
        assert not (self.logs / new).exists()
        os.rename(self.logs / old, self.logs / new)
        m = self.files.pop(old)
        m.name = new
        self.files[new] = m

    def _shift(self) -> None:
        for number, name in self._rotated():
            self._rename(name, name.replace(f".{number}", f".{number + 1}", 1))

    def _new_tailer(self) -> None:
        positions = checkpoint.load(self.checkpoint_path)
        self.tailer = Tailer(self.live, self.max_line, positions, close_rotated_after=self.close_after)

    # -- the daemon ----------------------------------------------------------

    def _check_line(self, line: Line) -> bytes:
        """The model's line that ``line`` is; fails unless it is whole and byte-exact."""
        for content in self._streams(line.fingerprint):
            whole = content[line.start : line.end]
            if not (whole.endswith(b"\n") and line.end - line.start == len(whole)):
                continue
            if line.start and content[line.start - 1] != ord("\n"):
                continue
            if line.overlong:
                shortest = min(len(whole) - 1, OVERLONG_HEAD, tail.READ_SIZE)
                ok = len(whole) - 1 > self.max_line and whole.startswith(line.data)
                if ok and len(line.data) >= shortest:
                    break
            elif whole == line.data + b"\n" and len(line.data) <= self.max_line:
                break
        else:
            raise AssertionError(f"not a whole line of any file with its fingerprint: {line!r}")
        assert whole in self.lines, f"a line nobody wrote: {whole!r}"
        return whole

    def _commit(self) -> None:
        assert self.tailer is not None
        checkpoint.save(self.checkpoint_path, self.tailer.positions())
        for line in self.in_flight:
            self.committed[line] = self.committed.get(line, 0) + 1
            assert self.committed[line] == 1, f"committed twice: {line!r}"
        self.in_flight = []

    def _read(self, spec: ReadSpec) -> int:
        assert self.tailer is not None
        if spec.scan:
            self.tailer.scan()
            self._check_vanished()
        count = 0
        while batch := self.tailer.read(spec.budget):
            assert len(batch) <= spec.budget
            self.in_flight += [self._check_line(line) for line in batch]
            count += len(batch)
            if spec.commit:
                self._commit()
            if not spec.repeat:
                break
        return count

    def _midway(self, what: ReadSpec | str | None) -> None:
        if what == CRASH:
            self.crash()
        elif isinstance(what, ReadSpec):
            self._read(what)

    def _check_vanished(self) -> None:
        assert self.tailer is not None
        for gone in self.tailer.vanished:
            lost = [
                line
                for content in self._streams(gone.fingerprint)
                for line in whole_lines(content)
                if line not in self.committed and self.lines[line] == "must"
            ]
            assert not lost, f"{gone.path} vanished with {len(lost)} lines not committed: {lost[:3]}"
        self.tailer.vanished.clear()

    # -- rules -----------------------------------------------------------------

    @initialize(
        max_line=st.sampled_from([1 << 20, 300]),
        close_after=st.sampled_from([300.0, -1.0]),
        read_size=st.sampled_from([tail.READ_SIZE, 4096, 100]),
    )
    def start(self, max_line: int, close_after: float, read_size: int) -> None:
        """``close_after=-1``: a rotated file read to its end is idle at once."""
        self.max_line, self.close_after = max_line, close_after
        tail.READ_SIZE = read_size
        self.nginx = self._new_file(LIVE)
        self.nginx_fd = os.open(self.live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._touch(self.nginx_fd)
        self._new_tailer()

    @rule(lengths=st.lists(line_lengths, min_size=1, max_size=5))
    def write(self, lengths: list[int]) -> None:
        """Finish the half-written line, then write whole lines."""
        assert self.nginx is not None
        self._finish_partial()
        for length in lengths:
            self._append(self.nginx, self._next_line(length))

    @precondition(lambda self: not self.pending)
    @rule(length=line_lengths, data=st.data())
    def write_partial(self, length: int, data: st.DataObject) -> None:
        assert self.nginx is not None
        line = self._next_line(length)
        cut = data.draw(st.integers(1, len(line) - TAIL_ID), label="cut")
        self.pending, self.pending_line = line[cut:], line
        self._append(self.nginx, line[:cut])

    @precondition(lambda self: LIVE in self.files)
    @rule(midway=midways, create=st.booleans())
    def rotate(self, midway: ReadSpec | str | None, create: bool) -> None:
        """logrotate's rename (+create, unless ``nocreate``: then nginx creates the file
        when it reopens); nginx writes on to the renamed file until reopened."""
        self._shift()
        self._rename(LIVE, f"{LIVE}.1")
        self._midway(midway)
        if create:
            fd = os.open(self.live, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self._touch(fd)
            os.close(fd)
            self._new_file(LIVE)

    @rule()
    def reopen(self) -> None:
        """USR1: nginx finishes the line it is writing and reopens ingest.log."""
        assert self.nginx_fd is not None
        self._finish_partial()
        os.close(self.nginx_fd)
        self.nginx_fd = os.open(self.live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if LIVE not in self.files:  # nocreate: nginx creates it
            self._touch(self.nginx_fd)
            self._new_file(LIVE)
        self.nginx = self.files[LIVE]

    def _compressible(self) -> MFile | None:
        for _, name in self._rotated():
            m = self.files[name]
            if not m.compressed and m is not self.nginx:
                return m
        return None

    @precondition(lambda self: self._compressible() is not None)
    @rule(in_two=st.booleans(), midway=midways, level=st.sampled_from([1, 6, 9]))
    def compress(self, in_two: bool, midway: ReadSpec | str | None, level: int) -> None:
        """gzip the oldest plain rotated file nginx is done with; the .gz is whole before
        the plain file goes. ``in_two``: the tailer may see the .gz half written."""
        m = self._compressible()
        assert m is not None and m.name is not None
        plain = self.logs / m.name
        assert plain.read_bytes() == m.content
        packed = gzip.compress(bytes(m.content), compresslevel=level, mtime=0)
        target = plain.with_name(plain.name + ".gz")
        with open(target, "xb") as f:
            if in_two:
                f.write(packed[: len(packed) // 2])
                f.flush()
                self._touch(f.fileno())
                self._midway(midway)
            f.write(packed[len(packed) // 2 :] if in_two else packed)
            f.flush()
            self._touch(f.fileno())
        if not in_two:
            self._midway(midway)
        plain.unlink()
        del self.files[m.name]
        m.name, m.compressed = target.name, True
        self.files[m.name] = m

    def _deletable(self) -> MFile | None:
        rotated = self._rotated()
        if not rotated:
            return None
        m = self.files[rotated[0][1]]
        if m is self.nginx or any(line not in self.committed for line in whole_lines(bytes(m.content))):
            return None
        return m

    @precondition(lambda self: self._deletable() is not None)
    @rule()
    def delete_oldest(self) -> None:
        """logrotate's ``rotate N``: the oldest file goes, once it is all committed."""
        m = self._deletable()
        assert m is not None and m.name is not None
        (self.logs / m.name).unlink()
        del self.files[m.name]
        m.name = None

    @precondition(lambda self: LIVE in self.files)
    @rule(between=st.lists(line_lengths, max_size=3), midway=midways)
    def copytruncate(self, between: list[int], midway: ReadSpec | str | None) -> None:
        """logrotate's copytruncate, with optional writes (and a read) between copy and truncate."""
        self._shift()
        live = self.files[LIVE]
        shutil.copyfile(self.live, self.logs / f"{LIVE}.1")
        self._touch(self.logs / f"{LIVE}.1")
        copy = self._new_file(f"{LIVE}.1")
        copy.content = bytearray(live.content)
        copy.line_start = copy.content.rfind(b"\n") + 1  # nobody writes to the copy
        if between:
            self.write(between)
        self._midway(midway)
        # Lines completed after the copy are only in the file about to be truncated.
        start = 0
        for line in whole_lines(bytes(live.content)):
            if start + len(line) > len(copy.content):
                self.lines[line] = "may"
            start += len(line)
        if live.line_start < len(live.content):  # a line half written: cut in two
            assert live is self.nginx and self.pending
            self.cut.add(self.pending_line)
        self.ghosts.append(bytes(live.content))
        os.truncate(self.live, 0)
        self._touch(self.live)
        live.content = bytearray()
        live.line_start = 0

    @rule(spec=reads)
    def read(self, spec: ReadSpec) -> None:
        self._read(spec)

    @rule(lengths=st.lists(line_lengths, min_size=1, max_size=5), spec=reads)
    def write_and_read(self, lengths: list[int], spec: ReadSpec) -> None:
        """The common case, made more common."""
        self.write(lengths)
        self._read(spec)

    @rule()
    def crash(self) -> None:
        """kill -9: what was handed out since the last checkpoint is not committed."""
        assert self.tailer is not None
        self.tailer.close()  # only so that no descriptor leaks: the daemon saves nothing
        self.in_flight = []
        self._new_tailer()

    # -- invariants ------------------------------------------------------------

    @invariant()
    def offsets_follow_a_newline_and_everything_before_was_handed_out(self) -> None:
        if self.tailer is None:
            return
        handed = set(self.committed) | set(self.in_flight)
        for p in self.tailer.positions():
            if p.offset == 0:
                continue
            streams = [c for c in self._streams(p.fingerprint) if len(c) >= p.offset]
            assert streams, f"offset past the end of every file with that fingerprint: {p}"
            at_line_end = [c for c in streams if c[p.offset - 1] == ord("\n")]
            assert at_line_end, f"offset inside a line: {p}"
            skipped = [line for line in whole_lines(at_line_end[0][: p.offset]) if line not in handed]
            assert not skipped, f"{p} is past {len(skipped)} lines never handed out: {skipped[:2]}"

    @invariant()
    def nothing_committed_twice(self) -> None:
        assert all(count == 1 for count in self.committed.values())
        assert len(set(self.in_flight)) == len(self.in_flight), "handed out twice"
        assert not set(self.in_flight) & set(self.committed), "committed line handed out again"

    def teardown(self) -> None:
        try:
            # hypothesis tears down in a ``finally``: after a failed step, only clean up
            if self.tailer is not None and sys.exc_info()[1] is None:
                self._drain_and_check()
        finally:
            tail.READ_SIZE = self.saved_read_size
            if self.tailer is not None:
                self.tailer.close()
            if self.nginx_fd is not None:
                os.close(self.nginx_fd)
            shutil.rmtree(self.root, ignore_errors=True)

    def _drain_and_check(self) -> None:
        assert self.tailer is not None
        self._finish_partial()
        drain = ReadSpec(budget=50, scan=True, repeat=True, commit=True)
        quiet = 0
        while quiet < 2:
            quiet = 0 if self._read(drain) else quiet + 1
        if self.in_flight:  # handed out by an earlier read that did not commit
            self._commit()
        self.offsets_follow_a_newline_and_everything_before_was_handed_out()
        missing = [
            line for line, status in self.lines.items() if status == "must" and line not in self.committed
        ]
        assert not missing, f"{len(missing)} lines never committed, e.g. {missing[:2]}"
        unknown = [line for line in self.intended if line not in self.lines and line not in self.cut]
        assert not unknown, f"model: lines written but in no file {unknown[:2]}"
        on_disk = {m.fingerprint() for m in self.files.values()} - {None}
        followed = {p.fingerprint for p in self.tailer.positions()}
        # A deleted file that ends in a cut line is held open until idle (a writer may finish it).
        held = {m.fingerprint() for m in self.every_file if m.name is None and m.content[m.line_start :]}
        assert on_disk <= followed <= on_disk | (held if self.close_after > 0 else set()), (
            "followed != on disk"
        )
        if not any(m.content[m.line_start :] for m in self.every_file):
            assert self.tailer.pending_bytes() == 0


def test_tailer_against_the_model(tmp_path: Path) -> None:
    TailerModel.base = tmp_path
    run_state_machine_as_test(
        TailerModel,
        settings=settings(
            max_examples=int(os.environ.get("TAIL_MODEL_EXAMPLES", "300")),
            stateful_step_count=int(os.environ.get("TAIL_MODEL_STEPS", "50")),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# Bugs the model found, as small deterministic examples.


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _drain(tailer: Tailer) -> list[bytes]:
    tailer.scan()
    out: list[bytes] = []
    while batch := tailer.read(50):
        out += [line.data + b"\n" for line in batch]
    return out


@pytest.mark.parametrize("restart", [False, True])
def test_copytruncate_after_lines_were_read_past_the_end_of_the_copy(tmp_path: Path, restart: bool) -> None:
    """Lines written between the copy and the truncation, and read from the live file
    then, leave the offset past the end of the copy: the copy is not a file that lost
    its tail, and must not be read again from its start (every line in it twice)."""
    live = tmp_path / LIVE
    first, between, after = (make_line(n, 100) for n in (1, 2, 3))
    fd = _open_append(live)
    tailer = Tailer(live, 1 << 20)
    write_all(fd, first)
    assert _drain(tailer) == [first]
    shutil.copyfile(live, tmp_path / f"{LIVE}.1")
    write_all(fd, between)
    assert _drain(tailer) == [between]
    os.truncate(live, 0)
    if restart:
        positions = tailer.positions()
        tailer.close()
        tailer = Tailer(live, 1 << 20, positions)
    assert _drain(tailer) == []
    write_all(fd, after)
    assert _drain(tailer) == [after]
    assert [(Path(p.path).name, p.offset) for p in tailer.positions()] == [
        (f"{LIVE}.1", len(first)),
        (LIVE, len(after)),
    ]
    tailer.close()
    os.close(fd)


@pytest.mark.parametrize("restart", [False, True])
def test_a_file_closed_as_idle_that_grew_then_was_compressed_is_read_to_its_end(
    tmp_path: Path, restart: bool
) -> None:
    """A rotated file read to its end and idle is closed as done; nginx, not reopened
    yet, then writes to it, and it is compressed before the tailer looks again (or
    while the daemon is down): the .gz holds lines that were never handed out."""
    live, rotated = tmp_path / LIVE, tmp_path / f"{LIVE}.1"
    first, late = make_line(1, 100), make_line(2, 100)
    fd = _open_append(live)
    write_all(fd, first)
    live.rename(rotated)
    os.utime(rotated, (1, 1))  # long idle: closed as done once read to its end
    tailer = Tailer(live, 1 << 20, close_rotated_after=300.0)
    assert _drain(tailer) == [first]
    assert [p.done for p in tailer.positions()] == [True]
    if restart:
        positions = tailer.positions()
        tailer.close()
    write_all(fd, late)  # nginx had not reopened yet
    os.close(fd)
    with open(rotated, "rb") as src, gzip.open(rotated.with_name(f"{LIVE}.1.gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    rotated.unlink()
    if restart:
        tailer = Tailer(live, 1 << 20, positions, close_rotated_after=300.0)
    assert _drain(tailer) == [late]
    assert [(p.done, p.offset) for p in tailer.positions()] == [(True, len(first) + len(late))]
    assert _drain(tailer) == []
    tailer.close()


def test_a_gz_renamed_between_the_scan_and_the_read_is_not_read_under_its_old_name(tmp_path: Path) -> None:
    """A scan finds ``ingest.log.1.gz``; before the tailer first reads it (a long batch,
    or a restart whose checkpoint names it), logrotate shifts it to ``.2.gz`` and
    another file is compressed to ``.1.gz``: that one must not be read as the first."""
    old, new = tmp_path / f"{LIVE}.1.gz", tmp_path / f"{LIVE}.2.gz"
    first = [make_line(n, 100 + 10 * n) for n in range(1, 4)]
    second = [make_line(n, 100 + 10 * n) for n in range(4, 6)]
    old.write_bytes(gzip.compress(b"".join(first)))
    tailer = Tailer(tmp_path / LIVE, 1 << 20)
    tailer.scan()
    old.rename(new)
    old.write_bytes(gzip.compress(b"".join(second)))
    got = [line.data + b"\n" for line in tailer.read(50)]
    got += _drain(tailer)
    assert sorted(got) == sorted(first + second)
    assert [p.done for p in tailer.positions()] == [True, True]
    tailer.close()


def test_a_deleted_file_that_ends_in_a_cut_line_is_let_go_once_idle(tmp_path: Path) -> None:
    """copytruncate cut a line: its head ends the copy, with no newline, forever. Once
    the copy is deleted (rotated away, or replaced by its .gz) and idle, the tailer
    lets it go instead of holding a deleted file (and its disk space) open for good;
    the lost head is reported in ``vanished``."""
    live, copy = tmp_path / LIVE, tmp_path / f"{LIVE}.1"
    first, cut = make_line(1, 100), make_line(2, 100)
    copy.write_bytes(first + cut[:50])
    tailer = Tailer(live, 1 << 20)
    assert _drain(tailer) == [first]
    os.utime(copy, (1, 1))
    copy.unlink()
    assert _drain(tailer) == []
    assert [f.fd for f in tailer.files.values()] == [None]
    tailer.scan()
    assert [(Path(f.path).name, f.offset) for f in tailer.vanished] == [(copy.name, len(first))]
    assert tailer.files == {}
    tailer.close()
