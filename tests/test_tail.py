"""Tests for ingestd.ingest.tail: whole lines, exactly once, across rotation and restarts.

Log files are real files in tmp_path. :class:`Writer` writes like nginx does:
one ``O_APPEND`` descriptor kept open across renames until it is reopened. A
"restart" is a new :class:`Tailer` built from the old one's ``positions()``,
which is what the daemon does with its checkpoint.
"""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
from pathlib import Path

import pytest

from ingestd.ingest import checkpoint
from ingestd.ingest.checkpoint import FilePosition
from ingestd.ingest.tail import OVERLONG_HEAD, READ_SIZE, Line, Tailer

MAX_LINE = 1000
_ids = itertools.count(1)


def make_line(tag: str = "x", pad: int = 0) -> bytes:
    """A log line with a unique 32-hex request id near its start, like nginx's."""
    return b'{"v":1,"id":"%032x","tag":"%s","pad":"%s"}\n' % (next(_ids), tag.encode(), b"p" * pad)


def make_lines(count: int, tag: str = "x", pad: int = 0) -> list[bytes]:
    return [make_line(f"{tag}{n}", pad) for n in range(count)]


class Writer:
    """Appends to a log file through one O_APPEND descriptor, as nginx does."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *chunks: bytes) -> None:
        os.write(self.fd, b"".join(chunks))

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


@pytest.fixture
def live(logs: Path) -> Path:
    return logs / "ingest.log"


@pytest.fixture
def writer(live: Path):
    w = Writer(live)
    yield w
    w.close()


@pytest.fixture
def tailer(live: Path):
    t = Tailer(live, MAX_LINE)
    yield t
    t.close()


def read_all(tailer: Tailer, budget: int = 1000) -> list[Line]:
    """What one daemon step gets: a scan, then reads until nothing is left."""
    tailer.scan()
    out: list[Line] = []
    while batch := tailer.read(budget):
        out.extend(batch)
    return out


def data(lines: list[Line]) -> list[bytes]:
    return [line.data + b"\n" for line in lines]


def restart(tailer: Tailer) -> Tailer:
    """Stop ``tailer`` and start a new one from its positions, via a real checkpoint file."""
    positions = tailer.positions()
    tailer.close()
    path = tailer.live.parent.parent / "checkpoint.json"
    checkpoint.save(path, positions)
    return Tailer(tailer.live, tailer.max_line, checkpoint.load(path))


def offsets(tailer: Tailer) -> dict[str, int]:
    return {Path(p.path).name: p.offset for p in tailer.positions()}


def gzip_file(plain: Path, keep: bool = False) -> Path:
    """Compress ``plain`` to ``plain.gz`` as logrotate does (then delete it)."""
    target = plain.with_name(plain.name + ".gz")
    with open(plain, "rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    if not keep:
        plain.unlink()
    return target


# Whole lines only


def test_lines_come_out_whole_with_their_positions(tailer, writer, live):
    written = make_lines(3)
    writer.write(*written)
    lines = read_all(tailer)
    assert data(lines) == written
    assert [(line.start, line.end) for line in lines] == [
        (0, len(written[0])),
        (len(written[0]), len(written[0]) + len(written[1])),
        (len(written[0]) + len(written[1]), sum(map(len, written))),
    ]
    assert all(line.path == str(live) and not line.overlong for line in lines)
    assert len({line.fingerprint for line in lines}) == 1
    content = live.read_bytes()
    assert [content[line.start : line.end] for line in lines] == written


def test_a_partial_last_line_is_held_back_until_its_newline(tailer, writer):
    first, second = make_line(), make_line()
    writer.write(first, second[:10])
    assert data(read_all(tailer)) == [first]
    assert offsets(tailer) == {"ingest.log": len(first)}
    writer.write(second[10:-1])
    assert read_all(tailer) == []
    writer.write(b"\n")
    assert data(read_all(tailer)) == [second]
    assert offsets(tailer) == {"ingest.log": len(first) + len(second)}


def test_a_partial_line_is_completed_across_a_restart(tailer, writer):
    first, second, third = make_line(), make_line(), make_line()
    writer.write(first, second[:-5])
    assert data(read_all(tailer)) == [first]
    again = restart(tailer)
    assert read_all(again) == []
    writer.write(second[-5:], third)
    lines = read_all(again)
    assert data(lines) == [second, third]
    assert lines[0].start == len(first)
    again.close()


def test_a_new_file_without_a_whole_first_line_is_not_followed_yet(tailer, writer):
    first = make_line(pad=400)  # longer than the fingerprint's 256 bytes
    writer.write(first[:100])
    assert read_all(tailer) == []
    assert tailer.files == {}
    writer.write(first[100:])
    assert data(read_all(tailer)) == [first]


def test_offsets_equal_the_bytes_handed_out(tailer, writer):
    written = make_lines(10)
    writer.write(*written, b"partial")
    tailer.scan()
    handed = []
    while batch := tailer.read(3):
        handed.extend(batch)
        assert offsets(tailer) == {"ingest.log": sum(len(line.data) + 1 for line in handed)}
    assert data(handed) == written


def test_budget_limits_lines_per_read(tailer, writer):
    written = make_lines(5)
    writer.write(*written)
    tailer.scan()
    assert data(tailer.read(2)) == written[:2]
    assert data(tailer.read(2)) == written[2:4]
    assert data(tailer.read(2)) == written[4:]
    assert tailer.read(2) == []


def test_byte_budget_limits_bytes_per_read(tailer, writer):
    """A batch of big lines stops at max_bytes (the line that crosses it included), not at
    the line budget: the daemon's memory per batch is bounded whatever the bodies' sizes."""
    written = make_lines(10, pad=900)
    writer.write(*written)
    tailer.scan()
    assert data(tailer.read(100, max_bytes=len(written[0]) * 2 + 1)) == written[:3]
    assert data(tailer.read(100, max_bytes=1)) == written[3:4]
    assert data(tailer.read(100)) == written[4:]


def test_empty_lines_and_odd_bytes_are_lines_too(tailer, writer):
    first = make_line()
    writer.write(first, b"\n", b"\x00\xff\r\x1b\n")
    assert data(read_all(tailer)) == [first, b"\n", b"\x00\xff\r\x1b\n"]


def test_no_log_yet_reads_nothing(tmp_path):
    t = Tailer(tmp_path / "missing" / "ingest.log", MAX_LINE)
    assert read_all(t) == []
    assert t.positions() == []
    t.close()


def test_only_the_live_log_and_its_siblings_are_followed(logs, tailer, writer):
    (logs / "access.log").write_bytes(make_line())
    (logs / "ingest.log.tmp").write_bytes(make_line())
    (logs / "ingest.log.d").mkdir()
    rotated = make_line("dated")
    (logs / "ingest.log-20250101").write_bytes(rotated)
    live_line = make_line("live")
    writer.write(live_line)
    assert data(read_all(tailer)) == [rotated, live_line]


# Rotation by rename


def test_rename_rotation_while_the_old_file_is_still_written(tailer, writer, live, logs):
    before = make_lines(3, "a")
    writer.write(*before)
    got = read_all(tailer)
    live.rename(logs / "ingest.log.1")
    late = make_lines(2, "late")
    writer.write(late[0])  # nginx keeps writing to the renamed file until it reopens
    new_writer = Writer(live)
    after = make_lines(2, "b")
    new_writer.write(after[0])
    writer.write(late[1])
    got += read_all(tailer)
    new_writer.write(after[1])
    got += read_all(tailer)
    assert data(got) == before + late + [after[0], after[1]]
    assert tailer.rotations_seen == 1
    assert offsets(tailer) == {
        "ingest.log.1": sum(map(len, before + late)),
        "ingest.log": sum(map(len, after)),
    }
    new_writer.close()


def test_several_rotations_between_two_reads(tailer, live, logs):
    written = []
    for generation in range(4):
        w = Writer(live)
        lines = make_lines(3, f"g{generation}")
        w.write(*lines)
        w.close()
        written += lines
        if generation == 0:
            assert data(read_all(tailer)) == lines
        if generation < 3:
            for n in range(generation, 0, -1):
                (logs / f"ingest.log.{n}").rename(logs / f"ingest.log.{n + 1}")
            live.rename(logs / "ingest.log.1")
    got = read_all(tailer)
    assert data(got) == written[3:]
    assert [Path(line.path).name for line in got] == ["ingest.log.2"] * 3 + ["ingest.log.1"] * 3 + [
        "ingest.log"
    ] * 3


def test_rotations_during_downtime_are_read_after_a_restart(tailer, live, logs, writer):
    first = make_lines(2, "a")
    writer.write(*first)
    assert data(read_all(tailer)) == first
    positions_before = tailer.positions()
    tailer.close()
    more = make_lines(2, "a-more")
    writer.write(*more)
    live.rename(logs / "ingest.log.1")
    second = make_lines(2, "b")
    Path(live).write_bytes(b"".join(second))
    again = Tailer(live, MAX_LINE, positions_before)
    assert data(read_all(again)) == more + second
    again.close()


# Compressed rotated files


def test_a_file_compressed_before_it_was_finished_is_read_from_the_gz_after_restart(
    tailer, writer, live, logs
):
    written = make_lines(6, "a")
    writer.write(*written)
    tailer.scan()
    assert data(tailer.read(2)) == written[:2]
    positions = tailer.positions()
    tailer.close()
    # Downtime: rotate and compress (delaycompress has run by now), plain deleted.
    live.rename(logs / "ingest.log.1")
    gzip_file(logs / "ingest.log.1")
    fresh = make_line("b")
    (logs / "ingest.log").write_bytes(fresh)
    again = Tailer(live, MAX_LINE, positions)
    got = read_all(again, budget=2)
    assert data(got) == [*written[2:], fresh]
    assert [Path(line.path).name for line in got] == ["ingest.log.1.gz"] * 4 + ["ingest.log"]
    assert got[0].start == len(written[0]) + len(written[1])
    gz = next(p for p in again.positions() if p.path.endswith(".gz"))
    assert (gz.done, gz.offset) == (True, sum(map(len, written)))
    assert read_all(again) == []
    third = restart(again)
    assert read_all(third) == []
    third.close()


def test_a_gz_of_a_file_already_done_is_not_read_again(tailer, writer, live, logs):
    written = make_lines(3)
    writer.write(*written)
    assert data(read_all(tailer)) == written
    live.rename(logs / "ingest.log.1")
    writer.close()
    writer.fd = os.open(live, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    gzip_file(logs / "ingest.log.1")  # the tailer has it open: it reads on to its end, then it is done
    assert read_all(tailer) == []
    assert [p.done for p in tailer.positions()] == [True]
    (logs / "ingest.log.1.gz").rename(logs / "ingest.log.2.gz")
    assert read_all(tailer) == []
    again = restart(tailer)
    assert read_all(again) == []
    assert [(p.done, Path(p.path).name) for p in again.positions()] == [(True, "ingest.log.2.gz")]
    again.close()


def test_a_gz_larger_than_one_read_is_read_exactly_once(logs, live):
    written = make_lines(3000, pad=900)  # about 3 MiB: several reads, lines across their edges
    assert sum(map(len, written)) > 2 * READ_SIZE
    plain = logs / "ingest.log.1"
    plain.write_bytes(b"".join(written))
    gzip_file(plain)
    t = Tailer(live, MAX_LINE)
    got = read_all(t, budget=700)
    assert data(got) == written
    assert [line.start for line in got[1:]] == [line.end for line in got[:-1]]
    assert [p.done for p in t.positions()] == [True]
    t.close()


def test_a_truncated_gz_is_not_taken_as_finished(tailer, writer, live, logs):
    written = make_lines(200, pad=50)
    writer.write(*written)
    tailer.scan()
    assert data(tailer.read(10)) == written[:10]
    positions = tailer.positions()
    tailer.close()
    live.rename(logs / "ingest.log.1")
    complete = gzip_file(logs / "ingest.log.1").read_bytes()
    gz = logs / "ingest.log.1.gz"
    gz.write_bytes(complete[: len(complete) // 2])  # e.g. still being written, or cut short
    again = Tailer(live, MAX_LINE, positions)
    got = read_all(again)
    assert [p.done for p in again.positions()] == [False]
    assert again.vanished == []
    gz.write_bytes(complete)
    got += read_all(again)
    assert data(got) == written[10:]
    assert [p.done for p in again.positions()] == [True]
    again.close()


# Deleted files


def test_a_file_deleted_while_being_read_is_drained(tailer, writer, live, logs):
    written = make_lines(10)
    writer.write(*written)
    tailer.scan()
    got = tailer.read(3)
    live.rename(logs / "ingest.log.1")
    (logs / "ingest.log.1").unlink()
    got += read_all(tailer)
    assert data(got) == written
    assert tailer.vanished == []
    assert [p.done for p in tailer.positions()] == [True]
    tailer.scan()
    assert tailer.files == {}
    assert tailer.vanished == []


def test_vanished_reports_a_file_deleted_before_it_was_finished(tailer, writer, live, logs):
    written = make_lines(5)
    writer.write(*written)
    tailer.scan()
    tailer.read(2)
    live.rename(logs / "ingest.log.1")
    tailer.scan()
    positions = tailer.positions()
    tailer.close()
    (logs / "ingest.log.1").unlink()
    again = Tailer(live, MAX_LINE, positions)
    again.scan()
    assert [(Path(f.path).name, f.offset) for f in again.vanished] == [("ingest.log.1", len(written[0]) * 2)]
    assert again.files == {}
    assert again.read(10) == []
    again.close()


def test_a_finished_file_deleted_during_downtime_is_not_vanished(tailer, writer, live, logs):
    writer.write(*make_lines(2))
    read_all(tailer)
    live.rename(logs / "ingest.log.1")
    (logs / "ingest.log.1").unlink()
    read_all(tailer)  # done now
    again = restart(tailer)
    again.scan()
    assert (again.vanished, again.files) == ([], {})
    again.close()


# copytruncate


def copytruncate(live: Path) -> None:
    shutil.copyfile(live, live.with_name(live.name + ".1"))
    os.truncate(live, 0)


def test_copytruncate_yields_no_duplicates_and_no_nul_bytes(tailer, writer, live):
    before = make_lines(3, "a")
    writer.write(*before)
    got = read_all(tailer)
    unread = make_line("a-unread")
    writer.write(unread)
    copytruncate(live)
    after = make_lines(2, "b")
    writer.write(*after)
    got += read_all(tailer)
    assert data(got) == [*before, unread, *after]
    assert all(b"\x00" not in line.data for line in got)
    assert got[-2].start == 0
    assert tailer.truncations == 1
    more = make_line("b-more")
    writer.write(more)
    assert data(read_all(tailer)) == [more]


def test_truncate_then_regrow_past_the_old_size_reads_the_new_content_from_zero(tailer, writer, live):
    before = make_lines(2, "a")
    writer.write(*before)
    assert data(read_all(tailer)) == before
    old_size = live.stat().st_size
    os.truncate(live, 0)
    after = make_lines(6, "b")
    writer.write(*after)
    assert live.stat().st_size > old_size
    got = read_all(tailer)
    assert data(got) == after
    assert got[0].start == 0
    assert all(b"\x00" not in line.data for line in got)
    assert tailer.truncations == 1


class LateTailer(Tailer):
    """A tailer that is descheduled right after it checked a file for truncation: the
    test's ``late`` runs between that check and the read that trusts it."""

    late = None

    def _check_truncated(self, f):
        super()._check_truncated(f)
        late, self.late = self.late, None
        if late is not None:
            late()


def test_a_copytruncate_between_the_truncation_check_and_the_read_loses_nothing(live, writer):
    """The file is copied, truncated and regrown past the offset after the tailer found it
    whole and before it read on: what it reads at the old offset is the middle of the new
    content, not the unread lines (which are only in the copy)."""
    tailer = LateTailer(live, MAX_LINE)
    before = make_lines(5, "a")
    writer.write(*before)
    assert data(read_all(tailer)) == before
    unread = make_lines(2, "unread")
    writer.write(*unread)
    after = make_lines(20, "b")

    def copytruncate_and_regrow() -> None:
        copytruncate(live)
        writer.write(*after)
        assert live.stat().st_size > len(b"".join(before + unread))

    tailer.scan()
    tailer.late = copytruncate_and_regrow
    got = []
    while batch := tailer.read(1000):
        got.extend(batch)
    got += read_all(tailer)
    assert data(got) == [*unread, *after]
    tailer.close()


def test_truncation_to_an_empty_file_then_new_lines(tailer, writer, live):
    writer.write(*make_lines(2))
    read_all(tailer)
    os.truncate(live, 0)
    assert read_all(tailer) == []
    after = make_line("b")
    writer.write(after)
    assert data(read_all(tailer)) == [after]


@pytest.mark.parametrize("kept_lines", [0.5, 3, 4.5])
@pytest.mark.parametrize("new_lines", [1, 3, 8])
def test_a_file_that_lost_its_tail_is_read_again_from_its_start(tailer, writer, live, kept_lines, new_lines):
    """A power loss kept only part of what was read; nginx then appended after it.

    Whether the file is now shorter or longer than the checkpoint's offset, no
    line written after the crash may be skipped: the file is read again from
    its start (the store skips what it already has).
    """
    written = make_lines(5)
    writer.write(*written)
    assert data(read_all(tailer)) == written
    positions = tailer.positions()
    tailer.close()
    kept = sum(map(len, written[: int(kept_lines)]))
    if kept_lines % 1:
        kept += len(written[int(kept_lines)]) // 2
    os.truncate(live, kept)
    after = make_lines(new_lines, "after-crash")
    writer.write(*after)
    again = Tailer(live, MAX_LINE, positions)
    got = read_all(again)
    content = live.read_bytes()
    assert data(got) == content.splitlines(keepends=True)
    assert all(line in data(got) for line in after[1:])
    if kept_lines < 1:  # the first line is cut: another file as far as anyone can tell
        assert (again.truncations, [f.offset for f in again.vanished]) == (0, [sum(map(len, written))])
    else:
        assert (again.truncations, again.vanished) == (1, [])
    again.close()


def test_a_running_tailer_notices_a_file_that_lost_its_tail(tailer, writer, live):
    written = make_lines(4)
    writer.write(*written)
    assert data(read_all(tailer)) == written
    os.truncate(live, sum(map(len, written[:2])))
    after = make_line("after")
    writer.write(after)
    assert data(read_all(tailer)) == [*written[:2], after]
    assert tailer.truncations == 1


# Identity: fingerprints, not inodes


def test_a_new_file_on_a_recycled_inode_is_a_new_file(tailer, writer, live, logs):
    old = make_lines(3, "old")
    writer.write(*old)
    assert data(read_all(tailer)) == old
    positions = tailer.positions()
    tailer.close()
    writer.close()
    live.unlink()
    new = make_lines(2, "new")
    writer.fd = os.open(live, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    writer.write(*new)
    st = live.stat()
    # Whether or not the file system reused the inode, say the checkpoint's file had it.
    recycled = [
        FilePosition(p.fingerprint, st.st_dev, st.st_ino, p.offset, p.path, p.done) for p in positions
    ]
    again = Tailer(live, MAX_LINE, recycled)
    got = read_all(again)
    assert data(got) == new
    assert got[0].start == 0
    assert [(Path(f.path).name, f.offset) for f in again.vanished] == [("ingest.log", sum(map(len, old)))]
    again.close()


def test_a_recycled_inode_of_a_done_file_is_read_from_zero(tailer, live, logs):
    rotated = logs / "ingest.log.1"
    old = make_lines(2, "old")
    rotated.write_bytes(b"".join(old))
    assert data(read_all(tailer)) == old
    rotated.unlink()
    assert read_all(tailer) == []  # read to its end and deleted: done and closed
    done = tailer.positions()
    assert [p.done for p in done] == [True]
    new = make_lines(2, "new")
    rotated.write_bytes(b"".join(new))
    st = rotated.stat()
    recycled = [FilePosition(p.fingerprint, st.st_dev, st.st_ino, p.offset, p.path, True) for p in done]
    assert data(read_all(tailer)) == new
    again = Tailer(live, MAX_LINE, recycled)
    assert data(read_all(again)) == new
    assert again.vanished == []
    again.close()


def test_a_copy_of_a_finished_file_is_not_read_again(tailer, writer, live, logs):
    written = make_lines(3)
    writer.write(*written)
    assert data(read_all(tailer)) == written
    shutil.copyfile(live, logs / "ingest.log.copy")
    assert read_all(tailer) == []


# Overlong lines


def test_a_line_longer_than_max_line_comes_out_once_as_overlong(tailer, writer):
    short, long, after = make_line("s"), make_line("l", pad=MAX_LINE), make_line("a")
    exact = make_line("e")
    exact = exact[:-3] + b"e" * (MAX_LINE - len(exact) + 1) + exact[-3:]
    assert len(exact) == MAX_LINE + 1
    writer.write(short, long, exact, after)
    got = read_all(tailer)
    assert [(line.overlong, line.data + b"\n") for line in got] == [
        (False, short),
        (True, long[:-1] + b"\n"),
        (False, exact),
        (False, after),
    ]
    assert (got[1].start, got[1].end) == (len(short), len(short) + len(long))


def test_an_overlong_line_bigger_than_one_read_keeps_only_its_start(logs, live, writer):
    t = Tailer(live, 2 * READ_SIZE)
    ok = make_line("ok", pad=READ_SIZE + 10)  # longer than one read, shorter than max_line
    long = make_line("long", pad=3 * READ_SIZE)
    after = make_line("after")
    writer.write(ok, long, after)
    got = read_all(t)
    assert [line.overlong for line in got] == [False, True, False]
    assert data(got)[0] == ok
    assert got[1].data == long[:OVERLONG_HEAD]
    assert (got[1].start, got[1].end) == (len(ok), len(ok) + len(long))
    assert data(got)[2] == after
    t.close()


def test_an_overlong_line_still_being_written_is_held_back_even_across_a_restart(live, writer):
    t = Tailer(live, READ_SIZE)
    first, long, after = make_line("first"), make_line("long", pad=3 * READ_SIZE), make_line("after")
    writer.write(first, long[: 2 * READ_SIZE])
    assert data(read_all(t)) == [first]
    assert offsets(t) == {"ingest.log": len(first)}
    writer.write(long[2 * READ_SIZE : -100])
    assert read_all(t) == []
    assert offsets(t) == {"ingest.log": len(first)}
    again = restart(t)
    assert read_all(again) == []
    writer.write(long[-100:], after)
    got = read_all(again)
    assert [(line.overlong, line.start, line.end) for line in got] == [
        (True, len(first), len(first) + len(long)),
        (False, len(first) + len(long), len(first) + len(long) + len(after)),
    ]
    assert got[1].data + b"\n" == after
    again.close()


def test_an_overlong_line_in_a_gz(logs, live):
    written = [make_line("a"), make_line("long", pad=2 * READ_SIZE), make_line("b")]
    plain = logs / "ingest.log.1"
    plain.write_bytes(b"".join(written))
    gzip_file(plain)
    t = Tailer(live, MAX_LINE)
    got = read_all(t)
    assert [line.overlong for line in got] == [False, True, False]
    assert data(got)[::2] == written[::2]
    t.close()


# Lag


def test_pending_bytes(tailer, writer, live, logs):
    written = make_lines(3)
    writer.write(*written, b"part")
    tailer.scan()
    assert tailer.pending_bytes() == sum(map(len, written)) + 4
    tailer.read(1)
    assert tailer.pending_bytes() == sum(map(len, written[1:])) + 4
    tailer.read(10)
    assert tailer.pending_bytes() == 4
    live.rename(logs / "ingest.log.1")
    fresh = make_line()
    (logs / "ingest.log").write_bytes(fresh)
    tailer.scan()
    assert tailer.pending_bytes() == 4 + len(fresh)
