"""Fixtures that run the real stack: nginx, ingestd and Datasette on loopback.

``stack`` starts ``smalltable up`` (the same command ``make run`` runs) once per
test session on free ports, in a temporary home. If nginx is not installed the
tests fail with the command to install it; they never skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from ingestd.support.programs import ProgramNotFound, find_program

from .daemonlib import BIND_ATTEMPTS, DaemonRunner
from .s3lib import Seaweed, start_seaweed

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# CI starts with no .hypothesis/ cache on a loaded 2-core machine: generating inputs
# may be slow there, and a test's speed is for bench/, not for a health check.
settings.register_profile(
    "smalltable", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "smalltable"))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different loopback ports free just now (all bound at once, then closed)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Stack:
    """A running ``smalltable up`` and helpers to talk to it as a user would."""

    home: Path
    port: int
    datasette_port: int
    metrics_port: int
    process: subprocess.Popen
    client: httpx.Client
    owner_keys: dict[str, str] = field(default_factory=dict)
    """The owner key each project's claim answered: sent with its later settings writes."""

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def host(self, project: str | None) -> str:
        return f"{project}.localhost:{self.port}" if project else f"localhost:{self.port}"

    def request(
        self, method: str, project: str | None, path: str = "/", as_owner: bool = True, **kwargs
    ) -> httpx.Response:
        """A request to nginx, sent again on a fresh connection if nginx closed the kept-alive
        one under it (a reload, after a quota or key change, closes idle ones).

        A settings write to a project this stack claimed carries its owner key, unless
        ``as_owner`` is false; a claim's answer keeps the key it gave.
        """
        headers = {"Host": self.host(project), **kwargs.pop("headers", {})}
        named = project or _named(kwargs.get("content"))
        settings_write = method != "GET" and path.startswith("/_project")
        if as_owner and settings_write and named in self.owner_keys:
            headers.setdefault("Authorization", f"Bearer {self.owner_keys[named]}")
        try:
            response = self.client.request(method, self.url(path), headers=headers, **kwargs)
        except httpx.RemoteProtocolError as exc:
            # A reload closes idle kept-alive connections; nginx finishes every request
            # it has read, so "disconnected without sending a response" means it read
            # none of this one and sending it again is safe, even for a write.
            if method != "GET" and "without sending a response" not in str(exc):
                raise
            response = self.client.request(method, self.url(path), headers=headers, **kwargs)
        if as_owner and settings_write and path == "/_project" and named and response.status_code == 202:
            with contextlib.suppress(ValueError):
                if key := response.json().get("key"):
                    self.owner_keys[named] = key
        return response

    def post(self, project: str, body: bytes | str = b"", path: str = "/", **kwargs) -> httpx.Response:
        return self.request("POST", project, path, content=body, **kwargs)

    def rows(self, project: str, table: str = "records", **filters: str) -> list[dict]:
        """Rows of a project's table through nginx and Datasette's JSON API."""
        params = {"_shape": "array", "_size": "max", **filters}
        response = self.request("GET", project, f"/{project}/{table}.json", params=params)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json()

    def wait_row(self, project: str, request_id: str, table: str = "records", timeout: float = 10) -> dict:
        """The row of ``request_id`` once ingestd has loaded it."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(project, table, _request_id__exact=request_id)
            if rows:
                # Datasette reads a table's columns and its rows in two queries: a row
                # committed between them (with a column added for it) comes back without
                # that column. Once the row is visible its columns are too: fetch again.
                return self.rows(project, table, _request_id__exact=request_id)[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"{request_id} did not reach {project}.{table} in {timeout}s")
            time.sleep(0.05)

    def datasette_pid(self) -> int:
        """The pid of this stack's Datasette (exactly one)."""
        found = subprocess.run(
            ["pgrep", "-f", f"datasette serve --host 127.0.0.1 --port {self.datasette_port}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(found) == 1, found
        return int(found[0])

    def databases(self) -> set[str]:
        response = self.client.get(f"http://127.0.0.1:{self.datasette_port}/-/databases.json")
        return {db["name"] for db in response.json()}

    @property
    def ingest_log(self) -> Path:
        return self.home / "logs" / "ingest.log"

    def log_lines(self) -> list[dict]:
        return [json.loads(line.decode("latin-1")) for line in self.ingest_log.read_bytes().splitlines()]


def _named(content: object) -> str | None:
    """The project an apex settings write names in its JSON body."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(content).get("name")
    return None


TEST_LIMITS = {"projects": {"new_per_minute": 60000, "new_burst": 10000}}
"""Tests post to hundreds of new projects from one address (and flood new ones faster than
ingestd creates them): a stack's new-project rate is raised unless the test sets its own."""


def with_test_limits(home: Path, extra_args: list[str]) -> list[str]:
    """``extra_args`` with a ``--config`` that has TEST_LIMITS where the test's config is silent."""
    import yaml

    args = list(extra_args)
    given = args.index("--config") if "--config" in args else None
    config = yaml.safe_load(Path(args[given + 1]).read_text()) or {} if given is not None else {}
    projects = config.setdefault("projects", {})
    for key, value in TEST_LIMITS["projects"].items():
        projects.setdefault(key, value)
    home.parent.mkdir(parents=True, exist_ok=True)
    path = home.parent / f"{home.name}-test-config.yaml"
    path.write_text(yaml.safe_dump(config))
    if given is None:
        return [*args, "--config", str(path)]
    args[given + 1] = str(path)
    return args


def smalltable(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The ``smalltable`` command with ``args``, its output as text (``env``: the whole
    environment, when given)."""
    return subprocess.run(
        [sys.executable, "-m", "ingestd", *args], capture_output=True, text=True, timeout=120, env=env
    )


def start_stack(home: Path, extra_args: list[str] | None = None) -> Stack:
    """``smalltable up`` in ``home`` on free ports, again on others if one was taken meanwhile."""
    try:
        find_program("nginx")
    except ProgramNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    extra_args = with_test_limits(home, extra_args or [])
    for _ in range(BIND_ATTEMPTS):
        sizes = _log_sizes(home)
        started, banner = _try_stack(home, extra_args)
        if started is not None:
            return started
        # up says so when a port is taken before it starts; taken after its check, the
        # part that lost the bind exits and only its log says why
        if "in use" not in banner and "already in use" not in _logged_since(home, sizes).lower():
            break
    pytest.fail(f"smalltable up did not start:\n{banner}", pytrace=False)


def _log_sizes(home: Path) -> dict[Path, int]:
    """How long each log of ``home`` is now (no logs before its first start)."""
    return {path: path.stat().st_size for path in (home / "logs").glob("*.log")}


def _logged_since(home: Path, sizes: dict[Path, int]) -> str:
    """What the logs of ``home`` got after ``sizes`` was taken."""
    text = []
    for path in sorted((home / "logs").glob("*.log")):
        with open(path, "rb") as log:
            log.seek(sizes.get(path, 0))
            text.append(log.read().decode(errors="replace"))
    return "".join(text)


def _try_stack(home: Path, extra_args: list[str] | None) -> tuple[Stack | None, str]:
    """One start of ``smalltable up``: the stack, or None and what it printed before it exited."""
    ports = free_ports(3)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingestd",
            "up",
            "--home",
            str(home),
            "--port",
            str(ports[0]),
            "--datasette-port",
            str(ports[1]),
            "--metrics-port",
            str(ports[2]),
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = []
    for line in process.stdout:
        banner.append(line)
        if "Ctrl-C stops" in line:
            break
    else:
        process.wait()
        return None, "".join(banner)
    return Stack(home, *ports, process, httpx.Client(timeout=30)), "".join(banner)


def stop_stack(stack: Stack) -> int:
    stack.client.close()
    stack.process.send_signal(signal.SIGINT)
    try:
        return stack.process.wait(timeout=30)
    finally:
        if stack.process.poll() is None:
            stack.process.kill()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """One stack for the session: tests use their own project names to stay independent."""
    running = start_stack(tmp_path_factory.mktemp("home"))
    yield running
    stop_stack(running)


@pytest.fixture
def fresh_stack(tmp_path) -> Iterator[Stack]:
    """A stack of the test's own, for tests that stop or break parts of it."""
    running = start_stack(tmp_path / "home")
    yield running
    if running.process.poll() is None:
        stop_stack(running)


@pytest.fixture
def project(request) -> str:
    """A project name unique to the test."""
    name = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")[:40].strip("-")
    digest = hashlib.sha1(f"{request.node.nodeid}{os.getpid()}".encode()).hexdigest()[:8]
    return f"{name}-{digest}"


@pytest.fixture
def daemon(tmp_path) -> Iterator[DaemonRunner]:
    """The real ingest daemon in a home of the test's own; call ``.start()`` to run it."""
    runner = DaemonRunner(tmp_path / "home")
    yield runner
    runner.kill()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[Seaweed]:
    """One real SeaweedFS S3 server for the session (tests use their own key prefixes)."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed") / "data", free_ports(10))
    yield server
    server.stop()


@pytest.fixture
def fresh_seaweed(tmp_path) -> Iterator[Seaweed]:
    """A SeaweedFS of the test's own, for tests that kill it."""
    server = start_seaweed(tmp_path / "seaweed", free_ports(10))
    yield server
    server.stop()
