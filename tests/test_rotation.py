"""Rotation with the real nginx, the real logrotate and the real daemon: every write
nginx answered 202 is loaded exactly once, whatever happens to the files."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from .daemonlib import DaemonRunner
from .nginxlib import NginxFront

pytestmark = pytest.mark.e2e


@pytest.fixture
def front(tmp_path) -> Iterator[NginxFront]:
    runner = DaemonRunner(tmp_path / "home")
    nginx = NginxFront(runner)
    yield nginx
    runner.kill()
    nginx.stop()


def post_many(front: NginxFront, project: str, count: int) -> list[str]:
    return [front.post(project, b'{"i":%d}' % i) for i in range(count)]


def test_lines_written_to_the_renamed_file_before_reopen_are_read(front):
    """Case 1, step by step: rename, nginx still writes to the renamed file, then USR1."""
    daemon = front.runner.start()
    before = post_many(front, "ren", 20)
    os.rename(daemon.log_path, daemon.log_path.with_name("ingest.log.1"))
    daemon.log_path.touch()
    after_rename = post_many(front, "ren", 20)  # still go to ingest.log.1
    front.wait_logged(40)
    assert daemon.log_path.stat().st_size == 0
    front.reopen()
    after_reopen = post_many(front, "ren", 20)  # go to the new ingest.log
    daemon.wait_loaded("ren", before + after_rename + after_reopen)
    daemon.assert_exactly("ren", before + after_rename + after_reopen)


def test_logrotate_while_writes_continue(front):
    """Case 1 with logrotate itself (rename + create + USR1) during concurrent writes."""
    daemon = front.runner.start()
    stop = threading.Event()

    def client(n: int) -> list[str]:
        ids = []
        while not stop.is_set():
            ids.append(front.post(f"busy{n % 3}", b'{"client":%d}' % n))
        return ids

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, n) for n in range(4)]
        for _ in range(5):
            threading.Event().wait(0.15)
            front.rotate()
        stop.set()
        ids = [f.result() for f in futures]
    by_project: dict[str, list[str]] = {}
    for n, client_ids in enumerate(ids):
        by_project.setdefault(f"busy{n % 3}", []).extend(client_ids)
    for project, project_ids in by_project.items():
        daemon.wait_loaded(project, project_ids)
        daemon.assert_exactly(project, project_ids)
    assert sum(map(len, ids)) > 100


def test_rotations_while_the_daemon_is_behind(front):
    """Case 2: the daemon is frozen (SIGSTOP) across two rotations, then catches up."""
    daemon = front.runner.start()
    ids = post_many(front, "behind", 10)
    daemon.wait_loaded("behind", ids)
    os.kill(daemon.process.pid, signal.SIGSTOP)
    try:
        for _ in range(2):
            ids += post_many(front, "behind", 10)
            front.rotate()
        ids += post_many(front, "behind", 10)
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
    daemon.wait_loaded("behind", ids)
    daemon.assert_exactly("behind", ids)


def test_rotations_while_the_daemon_is_stopped(front):
    """Case 2: killed, two rotations, restart: the renamed file resumes at its offset,
    the new one is read from 0."""
    daemon = front.runner.start()
    ids = post_many(front, "down", 10)
    daemon.wait_loaded("down", ids)
    daemon.kill()
    ids += post_many(front, "down", 10)  # the rest of the file the daemon was reading
    front.rotate()
    ids += post_many(front, "down", 10)
    front.rotate()
    ids += post_many(front, "down", 10)
    front.wait_logged(40)
    daemon.start()
    daemon.wait_loaded("down", ids)
    daemon.assert_exactly("down", ids)


def test_file_compressed_before_the_daemon_finished_it(front):
    """Case 3: down across several rotations, so the file it was reading is now a .gz
    (delaycompress compresses it one rotation late): read from the .gz, no loss, no repeats."""
    daemon = front.runner.start()
    ids = post_many(front, "gz", 15)
    daemon.wait_loaded("gz", ids)
    daemon.kill()
    for _ in range(3):
        ids += post_many(front, "gz", 15)
        front.rotate()
    front.wait_logged(60)
    names = sorted(p.name for p in daemon.log_path.parent.glob("ingest.log*"))
    assert names == ["ingest.log", "ingest.log.1", "ingest.log.2.gz", "ingest.log.3.gz"]
    daemon.start()
    daemon.wait_loaded("gz", ids)
    daemon.assert_exactly("gz", ids)
    # and a later restart does not read the compressed files again
    daemon.stop()
    more = post_many(front, "gz", 5)
    daemon.start()
    daemon.wait_loaded("gz", ids + more)
    daemon.assert_exactly("gz", ids + more)
