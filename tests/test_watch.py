"""Tests for ingestd.watch and the loop's policy: watch the logs while idle, poll while busy.

The watch is real inotify through watchdog on a directory in tmp_path. The loop
tests run the real daemon: in a thread (to make a write land at the one moment
that matters) and as ``smalltable ingest`` (to see its metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from ingestd import daemon as daemon_module
from ingestd.config import load_config
from ingestd.daemon import Daemon
from ingestd.ingest.watch import Watch

from .daemonlib import DaemonRunner

NO_EVENT_WAIT = 0.5
"""How long a test waits to be sure an event is not coming (watchdog delivers in ms)."""


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    return logs


@pytest.fixture
def wake() -> threading.Event:
    return threading.Event()


@pytest.fixture
def watch(directory: Path, wake: threading.Event):
    w = Watch(directory, wake, rescan_interval=1.0)
    yield w
    w.stop()


def append(path: Path, data: bytes = b"a line\n") -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_a_write_wakes_the_loop_while_watching(watch, wake, directory):
    assert watch.resume() and watch.active
    append(directory / "ingest.log")
    assert wake.wait(5)


def test_no_write_wakes_it_while_paused_and_watching_again_works(watch, wake, directory):
    watch.resume()
    watch.pause()
    assert not watch.active
    append(directory / "ingest.log")
    assert not wake.wait(NO_EVENT_WAIT)
    assert watch.resume()
    append(directory / "ingest.log")
    assert wake.wait(5)


def test_pausing_and_resuming_again_and_again_keeps_one_watch(watch, wake, directory):
    watch.resume()
    watching = threading.active_count()  # one watch's threads, and what earlier tests left running
    for _ in range(50):
        watch.resume()
        watch.resume()
        watch.pause()
        watch.pause()
    watch.resume()
    append(directory / "ingest.log")
    assert wake.wait(5)
    assert threading.active_count() <= watching  # no thread left behind by each pause


def test_a_directory_it_cannot_watch_is_said_once_and_resume_says_false(tmp_path, wake, caplog):
    gone = tmp_path / "missing"
    w = Watch(gone, wake, rescan_interval=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="ingestd"):
            assert not w.resume()
            assert not w.resume()
        warnings = [r.getMessage() for r in caplog.records if "cannot watch" in r.getMessage()]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"cannot watch {gone} for changes ([Errno 2] No such file")
        assert warnings[0].endswith("rescanning every 1.0s instead")
        gone.mkdir()
        with caplog.at_level(logging.INFO, logger="ingestd"):
            assert w.resume()
        assert f"watching {gone} for changes again" in caplog.text
    finally:
        w.stop()


# -- the loop ---------------------------------------------------------------------


def run_in_thread(runner: DaemonRunner) -> tuple[Daemon, threading.Thread]:
    """The daemon of ``runner``'s home, run in this process (no metrics server)."""
    d = Daemon(load_config(runner.config_path))
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    return d, thread


def test_a_line_written_just_before_the_watch_resumes_is_loaded_at_once(tmp_path, monkeypatch):
    """Lines stop; a look finds nothing; a line is written; then the watch resumes.

    That line made no event (nobody watched), so the loop must look once more after
    it watches again, not sleep until the rescan interval (60 s here)."""
    late: list[bytes] = []
    resumes = []

    class LateWatch(Watch):
        def resume(self) -> bool:
            resumes.append(1)
            if len(resumes) == 2:  # the first is at start; the second once lines stopped
                append(log_path, late.pop())
            return super().resume()

    monkeypatch.setattr(daemon_module, "Watch", LateWatch)
    runner = DaemonRunner(tmp_path / "home", ingest={"rescan_interval": 60.0, "poll_interval": 0.05})
    log_path = runner.log_path
    rid, line = DaemonRunner.line("late", b'{"n":1}')
    late_rid, late_line = DaemonRunner.line("late", b'{"n":2}')
    late.append(late_line)
    d, thread = run_in_thread(runner)
    try:
        append(log_path, line)  # an event: the loop stops watching, loads it, and polls
        runner.wait_loaded("late", [rid, late_rid], timeout=5)
        assert not late, "the watch never resumed"
    finally:
        d.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_the_daemon_polls_while_lines_keep_coming_and_watches_again_after(tmp_path):
    runner = DaemonRunner(tmp_path / "home", ingest={"rescan_interval": 30.0, "poll_interval": 0.05})
    runner.start()
    try:
        watching = lambda: runner.metric("smalltable_ingest_watching")  # noqa: E731
        deadline = time.monotonic() + 10
        while watching() != 1:
            assert time.monotonic() < deadline, "ingestd never started watching"
            time.sleep(0.02)
        ids, seen = [], set()
        for _ in range(60):  # a line every 20 ms for 1.2 s: faster than it polls
            ids += runner.write("busy", 1)
            seen.add(watching())
            time.sleep(0.02)
        assert 0 in seen, "ingestd kept watching for events while lines kept coming"
        runner.wait_loaded("busy", ids, timeout=5)
        deadline = time.monotonic() + 5
        while watching() != 1:
            assert time.monotonic() < deadline, "ingestd did not watch again once lines stopped"
            time.sleep(0.02)
        more = runner.write("busy", 1)  # now an event wakes it: loaded long before the 30 s rescan
        runner.wait_loaded("busy", ids + more, timeout=5)
        runner.assert_exactly("busy", ids + more)
    finally:
        runner.stop()
