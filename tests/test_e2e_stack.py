"""`smalltable up` as a user runs it: start, stop with Ctrl-C, refuse clearly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from .conftest import free_port, start_stack, stop_stack

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_nginx_ingestd_and_datasette(fresh_stack):
    ports = (fresh_stack.port, fresh_stack.datasette_port, fresh_stack.metrics_port)
    assert all(listening(p) for p in ports)
    assert stop_stack(fresh_stack) == 0
    assert not any(listening(p) for p in ports)
    leftover = subprocess.run(["pgrep", "-f", str(fresh_stack.home)], capture_output=True, text=True)
    assert leftover.stdout == ""


def test_writes_are_accepted_while_ingestd_and_datasette_are_down(fresh_stack, project):
    """nginx alone answers writes; what was accepted meanwhile is loaded later."""
    daemon = subprocess.run(
        ["pgrep", "-f", "ingestd ingest --config " + str(fresh_stack.home)], capture_output=True, text=True
    ).stdout.split()
    datasette = subprocess.run(
        ["pgrep", "-f", f"datasette serve --host 127.0.0.1 --port {fresh_stack.datasette_port}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(daemon) == 1 and len(datasette) == 1
    for pid in daemon + datasette:
        os.kill(int(pid), signal.SIGSTOP)
    try:
        answers = [fresh_stack.post(project, f"while down {i}").json() for i in range(5)]
    finally:
        for pid in daemon + datasette:
            os.kill(int(pid), signal.SIGCONT)
    # nginx alone says the project is new: none of them is loaded yet
    assert [a["created"] for a in answers] == [True] * 5
    ids = [a["id"] for a in answers]
    for i, rid in enumerate(ids):
        assert fresh_stack.wait_row(project, rid)["_body"] == f"while down {i}"


def test_busy_port_is_refused_with_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ingestd",
                "up",
                "--home",
                str(tmp_path),
                "--port",
                str(port),
                "--datasette-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"already in use: nginx port {port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "smalltable.yaml"
    config.write_text("nginx:\n  prot: 80\n")
    result = subprocess.run(
        [sys.executable, "-m", "ingestd", "up", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{config}: unknown key 'nginx.prot' (did you mean 'nginx.port'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_stack_stops_when_a_service_dies(fresh_stack):
    datasette = subprocess.run(
        ["pgrep", "-f", f"datasette serve --host 127.0.0.1 --port {fresh_stack.datasette_port}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    os.kill(int(datasette[0]), signal.SIGKILL)
    assert fresh_stack.process.wait(timeout=30) == 1
    output = fresh_stack.process.stdout.read()
    assert "datasette exited" in output
    deadline = time.monotonic() + 5
    while listening(fresh_stack.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not listening(fresh_stack.port)


def test_up_rotates_the_ingest_log_with_logrotate(tmp_path, project):
    """Dev rotates like production: the same logrotate template, run by `up` every
    logrotate.interval; records posted across rotations are all loaded once."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("logrotate:\n  max_size: 1k\n  interval: 0.3\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        ids = []
        deadline = time.monotonic() + 30
        logs = running.home / "logs"
        while not list(logs.glob("ingest.log.*.gz")):
            assert time.monotonic() < deadline, "up never rotated the ingest log"
            ids.append(running.post(project, b'{"pad":"' + b"x" * 400 + b'"}').json()["id"])
            time.sleep(0.05)
        for rid in ids:
            running.wait_row(project, rid)
        assert len(running.rows(project)) == len(ids)
    finally:
        stop_stack(running)


def test_a_second_up_on_a_running_home_changes_nothing(fresh_stack):
    """It refuses before writing a file: the running stack keeps its config."""
    conf = fresh_stack.home / "conf" / "smalltable.conf"
    before = conf.read_text()
    result = subprocess.run(
        [sys.executable, "-m", "ingestd", "up", "--home", str(fresh_stack.home), "--port", str(free_port()),
         "--datasette-port", str(free_port()), "--metrics-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{fresh_stack.home} is in use by a running stack" in result.stderr
    assert conf.read_text() == before


def smalltable(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingestd", *args], capture_output=True, text=True, timeout=60
    )


def test_status_of_a_home_uses_the_ports_up_ran_it_with(stack):
    result = smalltable("status", "--home", str(stack.home))
    assert result.returncode == 0, result.stderr
    assert "ingestd: up;" in result.stdout


def test_status_shows_each_projects_own_quota(stack, project):
    answer = stack.post(project, '{"owner": "ann", "quota_mb": 5}', path="/_project")
    deadline = time.monotonic() + 15
    status_path = "/" + answer.json()["status_url"].split("/", 3)[3]
    while stack.request("GET", project, status_path).json()["status"] != "applied":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    data = json.loads(smalltable("status", "--home", str(stack.home), "--json").stdout)
    mine = next(p for p in data["projects"] if p["project"] == project)
    assert mine["quota_bytes"] == 5 * 1024 * 1024
    table = smalltable("status", "--home", str(stack.home)).stdout
    row = next(line for line in table.splitlines() if line.startswith(project))
    assert row.split()[5:7] == ["5.0", "MiB"]


@pytest.mark.parametrize("made", [False, True])
def test_status_of_a_home_that_is_not_one_says_so(tmp_path, made):
    home = tmp_path / "no-home"
    if made:
        home.mkdir()
    result = smalltable("status", "--home", str(home))
    assert result.returncode == 1
    assert result.stdout == ""
    expected = "is not a SmallTable home: it has no data directory" if made else "does not exist"
    assert f"Error: {home} {expected}" in result.stderr
