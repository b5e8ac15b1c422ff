"""The test helpers: they fail loudly (one that returns quietly lets a test pass on
nothing), and they start again on new ports when a free port was taken meanwhile."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator

import pytest

from . import conftest, nginxlib
from .conftest import free_port, free_ports, stop_stack
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


@pytest.fixture(params=["listening", "bound"])
def taken_port(request) -> Iterator[int]:
    """A loopback port another process took after it was handed out as free.

    One listening on it is seen before the start; one only bound (not listening yet) is
    not, and only the failed bind tells: that is the race the start-again loop is for.
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        if request.param == "listening":
            holder.listen()
        yield holder.getsockname()[1]


def test_the_daemon_starts_again_when_its_metrics_port_was_taken(tmp_path, taken_port):
    runner = DaemonRunner(tmp_path / "home", metrics={"port": taken_port})
    try:
        runner.start()
        assert runner.metrics_port != taken_port
        assert "smalltable_" in runner.metrics()
    finally:
        runner.kill()


def test_nginx_starts_again_when_its_port_was_taken(tmp_path, taken_port, monkeypatch):
    ports = iter([taken_port])
    monkeypatch.setattr(nginxlib, "_free_port", lambda: next(ports, None) or free_port())
    front = NginxFront(DaemonRunner(tmp_path / "home"))
    try:
        assert front.port != taken_port
        front.post("again")
    finally:
        front.stop()


def test_a_stack_starts_again_when_a_port_was_taken(tmp_path, taken_port, monkeypatch):
    tries = iter([[taken_port, *free_ports(2)]])
    monkeypatch.setattr(conftest, "free_ports", lambda count: next(tries, None) or free_ports(count))
    stack = conftest.start_stack(tmp_path / "home")
    try:
        assert stack.port != taken_port
        assert stack.post("again", b"x").status_code == 202
    finally:
        stop_stack(stack)
