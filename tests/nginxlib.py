"""The real nginx in front of a :class:`DaemonRunner`'s home, for rotation tests.

nginx and the daemon share one config file, so nginx writes the ingest log the
daemon follows, and logrotate (``rotate()``) rotates it with the production
template, signalling nginx with USR1 as in production.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ingestd.config import load_config
from ingestd.ops.stack import nginx_argv, nginx_preexec, rotate_logs, write_runtime_files

from .daemonlib import BIND_ATTEMPTS, DaemonRunner, _free_port, _listening


class NginxFront:
    """nginx running for ``runner``'s home; ``post`` writes through it."""

    def __init__(self, runner: DaemonRunner) -> None:
        self.runner = runner
        for attempt in range(1, BIND_ATTEMPTS + 1):
            if self._start():
                break
            # the free port was taken between choosing and binding it: choose again
            assert "Address already in use" in self._said() and attempt < BIND_ATTEMPTS, (
                f"nginx exited at start: {self._said()}"
            )
            # nginx leaves the unix socket it had bound when it gives up on the port
            (self.config.path("run_dir") / "ack.sock").unlink(missing_ok=True)
        self.client = httpx.Client(timeout=30)

    def _start(self) -> bool:
        """Start nginx on free ports; True once it listens, False if it exited."""
        self.port = _free_port()
        while _listening(self.port):  # taken since (a port that answers is not nginx's yet)
            self.port = _free_port()
        # Tests post to many new projects from one address: the new-project rate is raised.
        overrides = {"nginx.port": self.port, "datasette.port": _free_port()}
        overrides |= {"projects.new_per_minute": 60000, "projects.new_burst": 10000}
        self.config = load_config(self.runner.config_path, overrides)
        write_runtime_files(self.config)
        with open(self._output, "wb") as out:
            self.process = subprocess.Popen(
                nginx_argv(self.config), stdout=out, stderr=subprocess.STDOUT, preexec_fn=nginx_preexec()
            )
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.02)
        return True

    @property
    def _output(self) -> Path:
        return self.runner.home / "nginx.out"

    def _said(self) -> str:
        """What nginx printed at its last start."""
        return self._output.read_text(errors="replace")

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
        the 202 may miss it. Fewer lines after ``timeout`` seconds fail the test: a
        test that goes on would assert on a log that is not what it thinks.
        """
        deadline = time.monotonic() + timeout
        while True:
            total = 0
            for path in self.runner.log_path.parent.glob("ingest.log*"):
                opener = gzip.open if path.suffix == ".gz" else open
                with opener(path, "rb") as f:
                    total += f.read().count(b"\n")
            if total >= count:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx logged {total} of {count} lines in {timeout}s")
            time.sleep(0.01)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
