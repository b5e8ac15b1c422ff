"""How the daemon cuts the log into batches: bounded, and wider when they name many projects.

Every project a batch names costs an opening of its database (past
``ingest.open_databases``), a commit and a sync, so a batch that names more projects
than are kept open reads on to ``ingest.many_projects_batch_bytes`` while lines wait.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.config import load_config
from ingestd.daemon import Daemon

from .daemonlib import DaemonRunner

BODY = b'{"note":"' + b"x" * 200 + b'"}'


def batches_of(runner: DaemonRunner) -> list[int]:
    """Load everything the log holds with one step of the daemon; the bytes of each batch
    (its lines without their newlines, as the bounds count them)."""
    daemon = Daemon(load_config(runner.config_path))
    sizes: list[int] = []
    load = daemon.load

    def measured(lines) -> None:
        sizes.append(sum(len(line.data) for line in lines))
        load(lines)

    daemon.load = measured
    try:
        daemon.step()
    finally:
        daemon.close()
    return sizes


def write_round_robin(runner: DaemonRunner, projects: list[str], lines: int) -> dict[str, list[str]]:
    """``lines`` posts, one project after the other; the request ids of each project."""
    ids: dict[str, list[str]] = {p: [] for p in projects}
    for n in range(lines):
        project = projects[n % len(projects)]
        ids[project] += runner.write(project, 1, BODY)
    return ids


@pytest.fixture
def runner(tmp_path: Path) -> DaemonRunner:
    ingest = {"batch_bytes": 4000, "many_projects_batch_bytes": 20000, "open_databases": 3}
    # batch by batch: no backlog is loaded in passes (tests/test_daemon_backlog.py)
    return DaemonRunner(tmp_path / "home", ingest={**ingest, "catch_up_bytes": 20000})


def test_a_batch_of_more_projects_than_are_kept_open_reads_on_to_the_wider_bound(runner):
    ids = write_round_robin(runner, [f"p{n}" for n in range(8)], 200)
    line = runner.log_path.stat().st_size // 200
    sizes = batches_of(runner)
    assert sum(sizes) + 200 == runner.log_path.stat().st_size  # every line once
    assert all(20000 <= size < 20000 + line for size in sizes[:-1]), sizes
    for project, project_ids in ids.items():
        runner.assert_exactly(project, project_ids)


def test_a_batch_of_few_projects_stops_at_batch_bytes(runner):
    ids = write_round_robin(runner, ["a", "b", "c"], 120)
    line = runner.log_path.stat().st_size // 120
    sizes = batches_of(runner)
    assert len(sizes) > 1
    assert all(4000 <= size < 4000 + line for size in sizes[:-1]), sizes
    for project, project_ids in ids.items():
        runner.assert_exactly(project, project_ids)


def test_a_wide_batch_still_keeps_to_batch_lines(tmp_path):
    ingest = {"batch_bytes": 4000, "many_projects_batch_bytes": 10**6, "open_databases": 3, "batch_lines": 50}
    runner = DaemonRunner(tmp_path / "home", ingest=ingest)
    ids = write_round_robin(runner, [f"p{n}" for n in range(8)], 120)
    line = runner.log_path.stat().st_size // 120
    assert batches_of(runner) == [50 * (line - 1), 50 * (line - 1), 20 * (line - 1)]
    for project, project_ids in ids.items():
        runner.assert_exactly(project, project_ids)


def test_the_retention_pass_leaves_no_database_open_that_was_not(runner):
    """The pass opens every project; it closes those it opened, so idle projects do not
    keep the memory of open databases until posts come."""
    projects = [f"p{n}" for n in range(6)]
    write_round_robin(runner, projects[::-1], 12)  # p2, p1, p0 last: the pass ends on p5
    daemon = Daemon(load_config(runner.config_path))
    try:
        daemon.step()
        before = {p for p in projects if daemon.store.is_open(p)}
        assert before == {"p0", "p1", "p2"}  # ingest.open_databases: 3
        daemon.expire()
        assert {p for p in projects if daemon.store.is_open(p)} <= before
    finally:
        daemon.close()
