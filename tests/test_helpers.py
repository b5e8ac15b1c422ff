"""The test helpers fail loudly: a helper that returns quietly lets a test pass on nothing."""

from __future__ import annotations

import sqlite3

import pytest

from .daemonlib import DaemonRunner
from .nginxlib import NginxFront


def test_request_ids_raise_on_a_database_that_cannot_be_read(tmp_path):
    runner = DaemonRunner(tmp_path / "home")
    runner.data_dir.mkdir()
    (runner.data_dir / "corrupt.db").write_bytes(b"not a database, " * 512)
    with pytest.raises(AssertionError, match="cannot read"):
        runner.request_ids("corrupt")


def test_request_ids_are_empty_only_before_the_database_or_table_exists(tmp_path):
    runner = DaemonRunner(tmp_path / "home")
    runner.data_dir.mkdir()
    assert runner.request_ids("p") == []
    with sqlite3.connect(runner.data_dir / "p.db") as conn:
        conn.execute("create table other (x)")
    assert runner.request_ids("p") == []


def test_request_ids_raise_on_a_locked_database(tmp_path):
    """A database another process holds locked is not an empty one."""
    runner = DaemonRunner(tmp_path / "home")
    runner.data_dir.mkdir()
    conn = sqlite3.connect(runner.data_dir / "locked.db", isolation_level=None)
    conn.execute("create table records (_id integer primary key, _request_id text)")
    conn.execute("begin exclusive")
    try:
        with pytest.raises(AssertionError, match="locked"):
            runner.request_ids("locked", timeout=0.2)
    finally:
        conn.close()


def test_wait_logged_fails_when_nginx_logged_fewer_lines(tmp_path):
    front = NginxFront(DaemonRunner(tmp_path / "home"))
    try:
        front.post("short")
        front.wait_logged(1)
        with pytest.raises(AssertionError, match="logged 1 of 2 lines"):
            front.wait_logged(2, timeout=0.5)
    finally:
        front.stop()
