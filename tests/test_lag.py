"""Ingest lag from a checkpoint's positions and the log files on disk."""

from __future__ import annotations

import gzip
import os

from ingestd.ingest.checkpoint import FilePosition
from ingestd.ingest.fingerprint import FINGERPRINT_BYTES, fingerprint_of, log_files
from ingestd.ops.lag import measure

from .linelib import make_line


def lines(first_time: float, count: int, tag: str) -> bytes:
    return b"".join(
        make_line(b'{"x":1}', t=f"{first_time + i:.3f}", rt="0.000", uri=f"/{tag}{i}") + b"\n"
        for i in range(count)
    )


def position(data: bytes, offset: int, done: bool = False, path: str = "") -> FilePosition:
    return FilePosition(fingerprint_of(data[:FINGERPRINT_BYTES]), 0, 0, offset, path, done)


def test_caught_up_is_zero(tmp_path):
    live = tmp_path / "ingest.log"
    live.write_bytes(data := lines(1000.0, 3, "a"))
    lag = measure(live, [position(data, len(data))], now=2000.0)
    assert (lag.bytes, lag.seconds, lag.files) == (0, 0.0, 0)


def test_the_age_is_the_oldest_unloaded_lines_own_time(tmp_path):
    live = tmp_path / "ingest.log"
    live.write_bytes(data := lines(1000.0, 5, "a"))
    first_two = len(b"".join(data.splitlines(keepends=True)[:2]))
    lag = measure(live, [position(data, first_two)], now=1010.0)
    assert lag.bytes == len(data) - first_two
    assert lag.seconds == 1010.0 - 1002.0  # the third line, written at t=1002


def test_a_half_loaded_rotated_gz_counts_by_its_trailer_and_a_done_one_not_at_all(tmp_path):
    live = tmp_path / "ingest.log"
    old = lines(900.0, 4, "old")
    older = lines(800.0, 2, "older")
    (tmp_path / "ingest.log.2.gz").write_bytes(gzip.compress(older))
    (tmp_path / "ingest.log.1.gz").write_bytes(gzip.compress(old))
    live.write_bytes(new := lines(1000.0, 2, "new"))
    one_line = len(old.splitlines(keepends=True)[0])
    positions = [position(older, len(older), done=True), position(old, one_line), position(new, len(new))]
    lag = measure(live, positions, now=1000.0)
    assert lag.bytes == len(old) - one_line
    assert lag.seconds == 1000.0 - 901.0
    assert lag.files == 1


def test_a_file_the_checkpoint_never_saw_counts_whole(tmp_path):
    live = tmp_path / "ingest.log"
    live.write_bytes(data := lines(1000.0, 3, "a"))
    lag = measure(live, [], now=1001.5)
    assert (lag.bytes, lag.seconds) == (len(data), 1.5)


def test_log_files_are_oldest_first_and_ignore_others(tmp_path):
    for name in ("ingest.log.2.gz", "ingest.log.1", "ingest.log", "access.log", "ingest.log.1.tmp"):
        (tmp_path / name).write_bytes(b"x\n")
    os.utime(tmp_path / "ingest.log.2.gz", (1, 1))
    os.utime(tmp_path / "ingest.log.1", (2, 2))
    assert [p.name for p in log_files(tmp_path / "ingest.log")] == [
        "ingest.log.2.gz",
        "ingest.log.1",
        "ingest.log",
    ]
