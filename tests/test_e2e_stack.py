"""`smalltable up` as a user runs it: start, stop with Ctrl-C, refuse clearly."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from ingestd.config import load_config
from ingestd.ops.stack import Service, supervise

from .conftest import free_port, smalltable, start_stack, stop_stack

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
    assert len(daemon) == 1
    stopped = [int(daemon[0]), fresh_stack.datasette_pid()]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        answers = [fresh_stack.post(project, f"while down {i}").json() for i in range(5)]
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
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


def pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def wait_for_new_pid(pattern: str, old: int, timeout: float = 30) -> int:
    """The pid of the process matching ``pattern`` once it is not ``old`` any more."""
    deadline = time.monotonic() + timeout
    while True:
        now = pids(pattern)
        if len(now) == 1 and now[0] != old:
            return now[0]
        assert time.monotonic() < deadline, f"nothing restarted {pattern!r} within {timeout}s"
        time.sleep(0.05)


class WriteLoad(threading.Thread):
    """Posts one write after another to a project until stopped; keeps every answer."""

    def __init__(self, stack, project: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.project = stack, project
        self.ids: list[str] = []
        self.refused: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self.done.is_set():
                n += 1
                try:
                    response = client.post(
                        self.stack.url("/"),
                        content=f"write {n}",
                        headers={"Host": self.stack.host(self.project)},
                    )
                except httpx.HTTPError as exc:
                    self.refused.append(repr(exc))
                    continue
                if response.status_code == 202:
                    self.ids.append(response.json()["id"])
                else:
                    self.refused.append(f"{response.status_code} {response.text}")


def stored_request_ids(stack, project: str) -> list[str]:
    with sqlite3.connect(f"file:{stack.home / 'data' / project}.db?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("select _request_id from records")]


def test_up_restarts_a_killed_daemon_and_nginx_keeps_accepting_writes(tmp_path, project):
    """kill -9 of ingestd, ten times during a write load: `up` restarts it each time and
    says so, nginx (the same master) refuses no write, and every accepted write is stored
    exactly once."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("up:\n  restart_delay: 0.1\n  restart_delay_max: 1\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    daemon = "ingestd ingest --config " + str(running.home)
    nginx_pid = running.home / "run" / "nginx.pid"
    nginx_before = nginx_pid.read_text()
    load = WriteLoad(running, project)
    load.start()
    try:
        pid = pids(daemon)[0]
        for _ in range(10):
            # Kill it only once it has loaded something written after its (re)start.
            deadline = time.monotonic() + 10
            while not load.ids:
                assert not load.refused, load.refused[:3]
                assert time.monotonic() < deadline, "no write was accepted"
                time.sleep(0.01)
            running.wait_row(project, load.ids[-1], timeout=30)
            os.kill(pid, signal.SIGKILL)
            pid = wait_for_new_pid(daemon, pid)
        load.done.set()
        load.join()
        assert load.refused == []
        running.wait_row(project, load.ids[-1], timeout=60)
        stored = stored_request_ids(running, project)
        assert len(load.ids) > 10
        assert sorted(stored) == sorted(load.ids)
        assert nginx_pid.read_text() == nginx_before
    finally:
        load.done.set()
        stop_stack(running)
    output = running.process.stdout.read()
    assert output.count("ingestd was killed by SIGKILL; restarting it in") == 10
    assert output.count("ingestd restarted (pid") == 10


def test_up_restarts_a_dead_datasette_and_never_stops_nginx(fresh_stack, project):
    datasette = f"datasette serve --host 127.0.0.1 --port {fresh_stack.datasette_port}"
    old = pids(datasette)[0]
    os.kill(old, signal.SIGKILL)
    rid = fresh_stack.post(project, "while Datasette is down").json()["id"]
    wait_for_new_pid(datasette, old)
    deadline = time.monotonic() + 30
    while not listening(fresh_stack.datasette_port):
        assert time.monotonic() < deadline, "the restarted Datasette never listened"
        time.sleep(0.05)
    assert fresh_stack.wait_row(project, rid, timeout=30)["_body"] == "while Datasette is down"
    assert fresh_stack.process.poll() is None


def test_a_service_that_keeps_dying_waits_twice_as_long_each_time(tmp_path):
    """up's backoff, on a real process that exits at once: each quick death doubles the
    delay up to up.restart_delay_max, no restart comes before it is due, and a death
    after a run of at least restart_delay_max starts again from up.restart_delay."""
    config = load_config(overrides={"up.restart_delay": 0.1, "up.restart_delay_max": 1})
    service = Service("ingestd", [sys.executable, "-c", "raise SystemExit(3)"], 0, tmp_path / "ingestd.log")
    service.spawn()
    said = []
    for _ in range(6):
        service.process.wait()
        said.append(supervise(config, service, service.started + 0.05))
        assert supervise(config, service, service.restart_at - 0.01) is None
        assert supervise(config, service, service.restart_at).startswith("ingestd restarted (pid ")
    delays = [line.partition("restarting it in ")[2].partition("s.")[0] for line in said]
    assert delays == ["0.1", "0.2", "0.4", "0.8", "1", "1"]
    assert said[0] == f"ingestd exited with status 3; restarting it in 0.1s. See {tmp_path / 'ingestd.log'}"
    service.process.wait()
    assert "restarting it in 0.1s." in supervise(config, service, service.started + 1)


def post_until_accepted(stack, project: str, body: str, timeout: float = 30) -> str:
    """Post ``body`` until nginx answers 202 (it may be restarting); the write's id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = stack.post(project, body)
            if response.status_code == 202:
                return response.json()["id"]
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "nginx never accepted a write again"
        time.sleep(0.1)


def test_up_restarts_nginx_killed_with_its_workers_and_writes_are_accepted_again(tmp_path, project):
    """kill -9 of nginx's master and workers leaves the ack server's unix socket behind,
    on which every later nginx start failed: up removes it and the restarted nginx
    answers writes."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("up:\n  restart_delay: 0.1\n  restart_delay_max: 1\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        master = int((running.home / "run" / "nginx.pid").read_text())
        workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        for pid in [master, *map(int, workers)]:
            os.kill(pid, signal.SIGKILL)
        rid = post_until_accepted(running, project, "after the crash")
        assert running.wait_row(project, rid, timeout=30)["_body"] == "after the crash"
    finally:
        stop_stack(running)
    output = running.process.stdout.read()
    assert "nginx was killed by SIGKILL" in output and "nginx restarted" in output


def test_up_starts_where_a_crashed_nginx_left_its_ack_socket(tmp_path, project):
    """A home whose nginx died with the machine still holds the socket file: up starts."""
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(home / "run" / "ack.sock"))  # the file stays after close, as after a crash
    running = start_stack(home)
    try:
        assert running.post(project, "after a crash").status_code == 202
    finally:
        stop_stack(running)


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


def test_one_address_cannot_take_every_connection(tmp_path, project):
    """Past nginx.connections_per_address requests in progress (3 here: slow uploads),
    one more from that address gets 429; another address is still served."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("nginx:\n  connections_per_address: 3\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    slow = []
    try:
        for _ in range(3):
            conn = socket.create_connection(("127.0.0.1", running.port), source_address=("127.0.0.21", 0))
            conn.sendall(
                f"POST / HTTP/1.1\r\nHost: {running.host(project)}\r\nContent-Length: 100\r\n\r\nx".encode()
            )
            slow.append(conn)
        transport = httpx.HTTPTransport(local_address="127.0.0.21")
        with httpx.Client(transport=transport, timeout=10) as crowd, httpx.Client(timeout=10) as other:
            deadline = time.monotonic() + 10
            while (
                answer := crowd.get(running.url("/"), headers={"Host": running.host(None)})
            ).status_code != 429:
                assert time.monotonic() < deadline, f"a 4th request was still served: {answer.status_code}"
                time.sleep(0.05)
            assert answer.json()["limits"]["connections_per_address"] == 3
            assert other.get(running.url("/"), headers={"Host": running.host(None)}).status_code == 200
    finally:
        for conn in slow:
            conn.close()
        stop_stack(running)


def post_from(stack, address: str, project: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.post(stack.url("/"), content=b"x", headers={"Host": stack.host(project)})


def test_new_projects_are_limited_per_address(tmp_path, project):
    """500 posts to 500 hosts once made 500 databases in 0.08 s: past
    projects.new_per_minute (+ new_burst) writes to new projects, an address gets 429;
    its existing projects and other addresses are not limited."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("projects:\n  new_per_minute: 1\n  new_burst: 2\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        answers = [post_from(running, "127.0.0.31", f"{project[:50]}-{n}") for n in range(5)]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
        assert answers[3].json()["error"] == "too many new projects"
        assert answers[3].json()["limits"] == {"new_projects_per_minute": 1, "burst": 2}
        running.wait_row(f"{project[:50]}-0", answers[0].json()["id"])
        assert post_from(running, "127.0.0.31", f"{project[:50]}-0").status_code == 202
        assert post_from(running, "127.0.0.32", f"{project[:50]}-9").status_code == 202
        logged = running.ingest_log.read_bytes()
        assert f"{project[:50]}-3".encode() not in logged
    finally:
        stop_stack(running)


def first_refused_new_project(running, project: str) -> httpx.Response:
    """Writes to new projects until one is refused (ingestd raises the flag within a second
    of the batch that filled the directory): that 507 answer."""
    deadline, n = time.monotonic() + 10, 0
    while (answer := running.post(f"{project[:50]}-new{n}", "x")).status_code != 507:
        assert answer.status_code == 202
        n += 1
        assert time.monotonic() < deadline, "a new project was still accepted"
        time.sleep(0.1)
    return answer


def test_a_full_data_directory_refuses_new_projects_with_507(tmp_path, project):
    """Past projects.max_projects, a write to a new project gets 507 JSON; the existing
    projects keep accepting writes."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("projects:\n  max_projects: 2\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        for n in range(2):
            name = f"{project[:50]}-{n}"
            running.wait_row(name, running.post(name, "x").json()["id"])
        answer = first_refused_new_project(running, project)
        assert answer.json()["error"] == "no room for new projects"
        assert answer.json()["full"] == "projects"
        assert answer.json()["limits"]["max_projects"] == 2
        assert running.post(f"{project[:50]}-0", "still").status_code == 202
    finally:
        stop_stack(running)


def test_a_data_directory_past_max_data_mb_refuses_new_projects_with_507(tmp_path, project):
    """Past projects.max_data_mb (1 MiB here, filled by two big records), a write to a new
    project gets 507 JSON saying the data is full; the existing project keeps accepting
    writes."""
    config = tmp_path / "smalltable.yaml"
    config.write_text("projects:\n  max_data_mb: 1\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        for _ in range(2):
            running.wait_row(project, running.post(project, "x" * 700_000).json()["id"])
        answer = first_refused_new_project(running, project)
        assert answer.json()["error"] == "no room for new projects"
        assert answer.json()["full"] == "data"
        assert answer.json()["limits"]["max_data_mb"] == 1
        assert running.post(project, "still").status_code == 202
    finally:
        stop_stack(running)
