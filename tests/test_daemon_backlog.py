"""A backlog over more projects than the daemon keeps open is loaded in passes, as replay loads a log.

With 3 databases kept open and 8 projects posting in turn, every batch names every
project: loaded batch by batch, each batch opens (and closes) all 8. Loaded as a
backlog (``Daemon.catch_up``), each pass reads the log again from the checkpoint and
loads 3 of them, so each database is opened once; the checkpoint moves once, past it all.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

import ingestd.store.pool as pool_module
from ingestd.config import load_config
from ingestd.daemon import Daemon
from ingestd.ingest import checkpoint

from .daemonlib import DaemonRunner
from .test_faults import Feed

PROJECTS = [f"p{n}" for n in range(8)]
BODY = b'{"note":"' + b"x" * 200 + b'"}'
BATCHES = {"batch_bytes": 4000, "many_projects_batch_bytes": 20000, "open_databases": 3}


def home(tmp_path: Path, catch_up_bytes: int) -> DaemonRunner:
    return DaemonRunner(tmp_path / "home", ingest={**BATCHES, "catch_up_bytes": catch_up_bytes})


def feed_round_robin(feed: Feed, lines: int, path: Path | None = None) -> None:
    """``lines`` posts, one project after the other (every batch names them all)."""
    for n in range(lines):
        feed.records(PROJECTS[n % len(PROJECTS)], 1, path)


def openings(monkeypatch) -> Counter:
    """Counts each project database's openings from now on."""
    opened: Counter = Counter()
    real = pool_module.ProjectDatabase

    def counted(path, *args, **kwargs):
        opened[Path(path).stem] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pool_module, "ProjectDatabase", counted)
    return opened


def step_once(runner: DaemonRunner, before_each_load=None) -> Daemon:
    """One step of a daemon over the runner's home (everything written so far, and
    whatever ``before_each_load`` writes meanwhile); the daemon, closed."""
    daemon = Daemon(load_config(runner.config_path))
    if before_each_load is not None:
        load_lines = daemon._load_lines

        def hooked(lines) -> None:
            before_each_load()
            load_lines(lines)

        daemon._load_lines = hooked
    try:
        daemon.step()
    finally:
        daemon.close()
    return daemon


def test_a_backlog_is_loaded_in_passes_opening_each_database_once(tmp_path, monkeypatch):
    runner = home(tmp_path, catch_up_bytes=10**6)
    feed = Feed(runner)
    rotated = runner.log_path.with_name("ingest.log.1")
    feed_round_robin(feed, 120)
    feed.garbage()
    feed.reject("p3")
    os.rename(runner.log_path, rotated)  # the backlog spans a rotated file and the live one
    feed_round_robin(feed, 120)
    feed.garbage()
    opened = openings(monkeypatch)
    step_once(runner)
    feed.check()  # every line once, in its table; each unparsable line once in the dead letters
    assert opened == Counter(PROJECTS), opened
    saved = {Path(p.path).name: p.offset for p in checkpoint.load(runner.checkpoint_path)}
    assert saved == {"ingest.log.1": rotated.stat().st_size, "ingest.log": runner.log_path.stat().st_size}


def test_a_file_compressed_while_the_passes_run_is_read_on_in_its_gz(tmp_path):
    """logrotate compresses a rotated file one rotation late and deletes it: a pass that
    starts after that reads the backlog's lines from the compressed copy."""
    runner = home(tmp_path, catch_up_bytes=10**6)
    feed = Feed(runner)
    rotated = runner.log_path.with_name("ingest.log.1")
    feed_round_robin(feed, 200)
    os.rename(runner.log_path, rotated)
    feed_round_robin(feed, 60)

    def compress() -> None:  # after the first batch of the first pass, as logrotate would
        if rotated.exists():
            with open(rotated, "rb") as plain, gzip.open(f"{rotated}.gz", "wb") as packed:
                shutil.copyfileobj(plain, packed)
            rotated.unlink()

    step_once(runner, compress)
    assert not rotated.exists()
    feed.check()


def test_batch_by_batch_the_same_log_opens_the_databases_again_and_again(tmp_path, monkeypatch):
    """What the passes save: at ingest.many_projects_batch_bytes, backlogs are not caught up."""
    runner = home(tmp_path, catch_up_bytes=BATCHES["many_projects_batch_bytes"])
    feed = Feed(runner)
    feed_round_robin(feed, 240)
    opened = openings(monkeypatch)
    step_once(runner)
    feed.check()
    assert min(opened.values()) > 1, opened


def test_lines_written_while_the_passes_run_are_loaded_after_them_once(tmp_path):
    runner = home(tmp_path, catch_up_bytes=10**6)
    feed = Feed(runner)
    feed_round_robin(feed, 240)
    written = []

    def nginx_goes_on() -> None:  # the live log grows past where the backlog ends
        if len(written) < 5:
            written.append(True)
            feed_round_robin(feed, 16)

    step_once(runner, nginx_goes_on)
    assert written
    step_once(runner)  # whatever the first step read after the backlog is loaded by now
    feed.check()


def test_the_backlog_ends_where_the_daemon_stopped_reading(tmp_path):
    """catch_up_bytes bounds one backlog; what lies beyond waits for the next."""
    runner = home(tmp_path, catch_up_bytes=30000)
    feed = Feed(runner)
    feed_round_robin(feed, 400)  # about 100 KB: a backlog of 30 KB, then more
    daemon = Daemon(load_config(runner.config_path))
    try:
        daemon.tailer.scan()
        _, backlog_start = daemon._read_batch()
        assert backlog_start is not None and len(backlog_start[1]) == len(PROJECTS)
        loaded = daemon.catch_up(*backlog_start)
        assert 30000 // 300 <= loaded < 40000 // 200
        assert daemon.committed and daemon.committed[0].offset < runner.log_path.stat().st_size
        daemon.step()
    finally:
        daemon.close()
    feed.check()


@pytest.mark.parametrize("failpoint", ["store.before_commit@5", "load.before_checkpoint"])
def test_a_crash_in_the_middle_of_a_backlog_loads_it_again_exactly_once(tmp_path, failpoint):
    runner = home(tmp_path, catch_up_bytes=10**6)
    feed = Feed(runner)
    feed_round_robin(feed, 240)
    feed.garbage()
    runner.start(failpoints=failpoint, wait=False)
    assert runner.wait_exit() != 0  # killed in the first pass, or before the checkpoint
    assert not runner.checkpoint_path.exists()  # no checkpoint inside a backlog
    runner.start()
    try:
        feed.wait()
    finally:
        runner.stop()
    feed.check()
