"""The data directory's fill as flags nginx reads (ingestd/store/capacity.py), real files."""

from __future__ import annotations

from ingestd.store.capacity import FULL_DATA, FULL_PROJECTS, Capacity, project_sizes


def test_flags_follow_the_project_count_and_size(tmp_path):
    data, state = tmp_path / "data", tmp_path / "state"
    data.mkdir()
    state.mkdir()
    capacity = Capacity(data, state, max_projects=2, max_data_mb=1)
    (data / "a.db").write_bytes(b"x" * 1000)
    (data / "_smalltable.db").write_bytes(b"x" * 5_000_000)  # the holding area is no project
    assert capacity.update(force=True) == (1, 1000)
    assert not (state / FULL_PROJECTS).exists() and not (state / FULL_DATA).exists()
    (data / "b.db").write_bytes(b"")
    (data / "b.db-wal").write_bytes(b"x" * 1048576)
    assert capacity.update(force=True) == (2, 1049576)
    assert (state / FULL_PROJECTS).exists() and (state / FULL_DATA).exists()
    (data / "b.db").unlink()
    (data / "b.db-wal").unlink()
    capacity.update(force=True)
    assert not (state / FULL_PROJECTS).exists() and not (state / FULL_DATA).exists()
    assert project_sizes(data) == {"a": 1000}


def test_a_batch_counts_the_projects_it_wrote_without_looking_at_the_others(tmp_path):
    """Between counts of the directory a batch's own sizes keep the count: a new project
    fills the directory at once, and idle projects cost a batch nothing."""
    data, state = tmp_path / "data", tmp_path / "state"
    data.mkdir()
    state.mkdir()
    (data / "idle.db").write_bytes(b"x" * 100)
    capacity = Capacity(data, state, max_projects=3, max_data_mb=1)
    assert capacity.update(force=True) == (1, 100)
    (data / "behind-its-back.db").write_bytes(b"x" * 10)  # a replay beside the daemon, say
    assert capacity.update({"new": 500}) == (2, 600)
    assert capacity.update({"new": 2_000_000}) == (2, 2_000_100)  # the same project, grown
    assert (state / FULL_DATA).exists() and not (state / FULL_PROJECTS).exists()
    assert capacity.update({"other": 1}) == (3, 2_000_101)
    assert (state / FULL_PROJECTS).exists()
    (data / "new.db").write_bytes(b"x" * 500)
    (data / "other.db").write_bytes(b"x")
    assert capacity.update(force=True) == (4, 611)  # counted again: the file behind its back too
    assert not (state / FULL_DATA).exists()
