"""Tests for ingestd.checkpoint: durable, atomic save and a strict load."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import pytest

from ingestd.ingest.checkpoint import CHECKPOINT_VERSION, CheckpointError, FilePosition, load, save

POSITIONS = [
    FilePosition("0" * 32, 2049, 131, 1048576, "/var/lib/smalltable/logs/ingest.log.2.gz", done=True),
    FilePosition("f" * 32, 2049, 7, 0, "/var/lib/smalltable/logs/ingest.log.1"),
    FilePosition("ab" * 16, 2049, 2**40, 2**40 + 1, "/var/lib/smalltable/logs/ingest.log ünïcødé"),
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "checkpoint.json"


def write_json(path: Path, document: object) -> None:
    path.write_text(json.dumps(document))


def entry(**changes: object) -> dict:
    return {"fingerprint": "a" * 32, "dev": 1, "ino": 2, "offset": 3, "path": "/x", "done": False, **changes}


# Round trip


def test_save_then_load_returns_the_same_positions(path):
    save(path, POSITIONS)
    assert load(path) == POSITIONS


def test_an_empty_list_round_trips(path):
    save(path, [])
    assert load(path) == []


def test_a_later_save_replaces_the_earlier_one(path):
    save(path, POSITIONS)
    save(path, POSITIONS[:1])
    assert load(path) == POSITIONS[:1]


def test_the_file_is_versioned_json(path):
    save(path, POSITIONS[1:2])
    assert json.loads(path.read_bytes()) == {
        "version": CHECKPOINT_VERSION,
        "files": [
            {
                "fingerprint": "f" * 32,
                "dev": 2049,
                "ino": 7,
                "offset": 0,
                "path": "/var/lib/smalltable/logs/ingest.log.1",
                "done": False,
                "size": 0,
            }
        ],
    }


def test_a_checkpoint_written_before_sizes_were_saved_still_loads(path):
    """Checkpoints from before ``size`` existed load, with the size unknown (0)."""
    entry = {"fingerprint": "a" * 32, "dev": 1, "ino": 2, "offset": 30, "path": "/l/ingest.log", "done": True}
    path.write_text(json.dumps({"version": CHECKPOINT_VERSION, "files": [entry]}))
    assert load(path) == [FilePosition("a" * 32, 1, 2, 30, "/l/ingest.log", True, 0)]


def test_done_defaults_to_false_when_absent(path):
    item = entry()
    del item["done"]
    write_json(path, {"version": 1, "files": [item]})
    assert load(path) == [FilePosition("a" * 32, 1, 2, 3, "/x", False)]


# Atomic


def test_save_leaves_no_temporary_file(path):
    save(path, POSITIONS)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.json"]


def test_a_leftover_tmp_file_does_not_matter(path):
    save(path, POSITIONS[:1])
    tmp = path.with_name("checkpoint.json.tmp")
    tmp.write_bytes(b'{"version": 1, "files": [{"torn')  # a crash in the middle of an earlier save
    assert load(path) == POSITIONS[:1]
    save(path, POSITIONS)
    assert load(path) == POSITIONS
    assert not tmp.exists()


def test_a_larger_checkpoint_is_written_whole(path):
    many = [FilePosition(f"{n:032x}", 1, n, n * 1000, f"/logs/ingest.log.{n}.gz", True) for n in range(5000)]
    save(path, many)
    assert load(path) == many


def test_save_replaces_the_file_rather_than_rewriting_it(path):
    save(path, POSITIONS[:1])
    before = path.stat().st_ino
    save(path, POSITIONS)
    assert path.stat().st_ino != before


@pytest.fixture
def file_size_limit():
    """Set RLIMIT_FSIZE for this process: writes past it are cut short, then fail (EFBIG)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(size: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, old_limit[1]))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_a_save_cut_short_keeps_the_previous_checkpoint(path, file_size_limit):
    save(path, POSITIONS[:1])
    many = [FilePosition(f"{n:032x}", 1, n, n, f"/logs/ingest.log.{n}", False) for n in range(100)]
    file_size_limit(1000)  # like a disk filling up: the first write is cut short
    with pytest.raises(OSError, match="too large"):
        save(path, many)
    file_size_limit(resource.RLIM_INFINITY)
    assert load(path) == POSITIONS[:1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.json"]


# Missing and broken


def test_missing_checkpoint_is_none(path):
    assert load(path) is None


@pytest.mark.parametrize(
    ("content", "problem"),
    # None: the problem is worded by Python (its JSON parser, a TypeError), not by SmallTable
    [
        (b"", None),
        (b'{"version": 1, "files": [{"fingerprint": "ab', None),
        (b"\x00" * 64, None),
        (b"\xff\xfe garbage", None),
        (b"[]", None),
        (b"null", None),
        (b'{"version": 2, "files": []}', "unknown version 2"),
        (b'{"files": []}', "unknown version None"),
        (b'{"version": "1", "files": []}', "unknown version '1'"),
        (b'{"version": 1}', None),
        (b'{"version": 1, "files": 5}', None),
        (b'{"version": 1, "files": ["x"]}', "not an object"),
        (b'{"version": 1, "files": [{"fingerprint": "a"}]}', None),
        (b'{"version": 1, "files": [{"colour": "red"}]}', None),
    ],
)
def test_a_broken_checkpoint_is_an_error_naming_the_file(path, content, problem):
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as raised:
        load(path)
    prefix = f"{path}: cannot read the checkpoint ({len(content)} bytes): "
    assert str(raised.value).startswith(prefix) and len(str(raised.value)) > len(prefix)


@pytest.mark.parametrize(
    "bad",
    [
        {"fingerprint": 5},
        {"dev": "1"},
        {"ino": None},
        {"offset": -1},
        {"offset": 1.5},
        {"offset": True},
        {"path": ["/x"]},
        {"done": "no"},
        {"done": 0},
    ],
)
def test_a_field_of_the_wrong_type_is_an_error(path, bad):
    write_json(path, {"version": 1, "files": [entry(**bad)]})
    name = next(iter(bad))
    with pytest.raises(CheckpointError, match=f"bad {name} "):
        load(path)


def test_a_directory_in_the_way_is_not_taken_for_no_checkpoint(path):
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        load(path)
