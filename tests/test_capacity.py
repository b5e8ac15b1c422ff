"""The data directory's fill as flags nginx reads (ingestd/store/capacity.py), real files."""

from __future__ import annotations

from ingestd.store.capacity import FULL_DATA, FULL_PROJECTS, Capacity, measure


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
    assert measure(data) == (1, 1000)
