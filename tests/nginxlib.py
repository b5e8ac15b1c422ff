"""The real nginx in front of a :class:`DaemonRunner`'s home, for rotation tests.

nginx and the daemon share one config file, so nginx writes the ingest log the
daemon follows, and logrotate (``rotate()``) rotates it with the production
template, signalling nginx with USR1 as in production.
"""

from __future__ import annotations

import signal
import subprocess
import time

import httpx

from ingestd.config import load_config
from ingestd.ops.stack import nginx_argv, nginx_preexec, rotate_logs, write_runtime_files

from .daemonlib import DaemonRunner, _free_port, _listening


class NginxFront:
    """nginx running for ``runner``'s home; ``post`` writes through it."""

    def __init__(self, runner: DaemonRunner) -> None:
        self.runner = runner
        self.port = _free_port()
        # Tests post to many new projects from one address: the new-project rate is raised.
        overrides = {"nginx.port": self.port, "datasette.port": _free_port()}
        overrides |= {"projects.new_per_minute": 60000, "projects.new_burst": 10000}
        config = load_config(runner.config_path, overrides)
        self.config = config
        write_runtime_files(config)
        self.process = subprocess.Popen(
            nginx_argv(config),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=nginx_preexec(),
        )
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            assert self.process.poll() is None, "nginx exited at start"
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.02)
        self.client = httpx.Client(timeout=30)

    def post(self, project: str, body: bytes = b'{"n":1}') -> str:
        """POST through nginx; return the request id of the 202."""
        response = self.client.post(
            f"http://127.0.0.1:{self.port}/",
            content=body,
            headers={"Host": f"{project}.localhost", "Content-Type": "application/json"},
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def rotate(self) -> None:
        """Force a rotation with the real logrotate and the production template."""
        result = rotate_logs(self.config, force=True)
        assert result.returncode == 0, result.stderr

    def reopen(self) -> None:
        """What logrotate's postrotate does: USR1 makes nginx reopen its logs."""
        self.process.send_signal(signal.SIGUSR1)

    def wait_logged(self, count: int, timeout: float = 10) -> None:
        """Wait until nginx has written ``count`` lines over all ingest log files.

        nginx writes a line just after it answers; reading the logs right after
        the 202 may miss it.
        """
        import gzip

        deadline = time.monotonic() + timeout
        while True:
            total = 0
            for path in self.runner.log_path.parent.glob("ingest.log*"):
                opener = gzip.open if path.suffix == ".gz" else open
                with opener(path, "rb") as f:
                    total += f.read().count(b"\n")
            if total >= count or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
