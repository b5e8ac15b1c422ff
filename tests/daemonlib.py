"""Run the real ingest daemon (``smalltable ingest``) as a subprocess for fault tests.

A :class:`DaemonRunner` owns a home directory; tests append log lines the way
nginx writes them (:meth:`DaemonRunner.line`), start, SIGKILL and restart the
daemon (optionally with failpoints armed, see ingestd/support/failpoints.py) and read
the project databases directly with sqlite3.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from .linelib import make_line

BIND_ATTEMPTS = 5
"""A free port is closed before the daemon or nginx binds it, and another process may
take it first: they start again on a new port, this many times in all."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table_request_ids(path: Path, table: str = "records", timeout: float = 10) -> list[str]:
    """Every ``_request_id`` of ``table`` in the database at ``path``, in ``_id`` order.

    A database or table not made yet holds nothing: ``[]``. Any other error (a locked,
    corrupt or unreadable database) raises, so "exactly these rows" never passes on a
    database that could not be read.
    """
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        return [row[0] for row in conn.execute(f"select _request_id from {table} order by _id")]
    except sqlite3.DatabaseError as exc:
        if str(exc) == f"no such table: {table}":
            return []
        raise AssertionError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class DaemonRunner:
    """One daemon's home, process and helpers."""

    def __init__(self, home: Path, **settings: object) -> None:
        self.home = home
        self.config = {
            "home": str(home),
            "metrics": {"port": _free_port(), **settings.pop("metrics", {})},
            "ingest": {"rescan_interval": 0.2, **settings.pop("ingest", {})},
            **settings,
        }
        home.mkdir(parents=True, exist_ok=True)
        self.config_path = home / "smalltable.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.output = home / "ingestd.out"

    # -- paths ---------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "ingest.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def checkpoint_path(self) -> Path:
        return self.home / "state" / "checkpoint.json"

    @property
    def deadletter_path(self) -> Path:
        return self.home / "state" / "deadletter.ndjson"

    # -- the process ---------------------------------------------------------

    @property
    def metrics_port(self) -> int:
        return self.config["metrics"]["port"]

    def start(self, failpoints: str = "", wait: bool = True) -> DaemonRunner:
        """Start the daemon; with ``wait``, return once it serves its metrics (is up).

        The metrics port was free when it was chosen, not necessarily now: if another
        process took it meanwhile, the daemon starts again on a new one.
        """
        assert self.process is None or self.process.poll() is not None, "already running"
        attempt = 1
        while True:
            if _listening(self.metrics_port):  # taken since: the answer would not be ours
                self._move_metrics_port()
            said_before = self.output.stat().st_size if self.output.exists() else 0
            self._spawn(failpoints)
            if not wait or self._wait_up():
                return self
            said = self.output.read_bytes()[said_before:]
            if b"cannot serve metrics" in said and attempt < BIND_ATTEMPTS:
                attempt += 1
                self._move_metrics_port()
            elif failpoints:
                return self
            else:
                raise AssertionError(f"ingestd exited at start:\n{self.log_text()}")

    def _move_metrics_port(self) -> None:
        self.config["metrics"]["port"] = _free_port()
        self.config_path.write_text(yaml.safe_dump(self.config))

    def _spawn(self, failpoints: str) -> None:
        env = {**os.environ, "SMALLTABLE_FAILPOINTS": failpoints}
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingestd", "ingest", "--config", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def _wait_up(self) -> bool:
        """True once the daemon serves its metrics, False if it exited first."""
        deadline = time.monotonic() + 20
        while not _listening(self.metrics_port):
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"ingestd did not start:\n{self.log_text()}"
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last checkpoint."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int:
        """SIGTERM: finish the batch, checkpoint, exit."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=30)
        return self.process.returncode if self.process else 0

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait for the daemon to die by itself (at a failpoint); return its status."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def wait_logged(self, text: str, count: int, timeout: float = 10) -> str:
        """The daemon's log once ``text`` is in it ``count`` times, or as it is after
        ``timeout``: it serves its metrics (start() returns) before it reads its checkpoint."""
        deadline = time.monotonic() + timeout
        while (log := self.log_text()).count(text) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return log

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the daemon's /metrics (0 when absent)."""
        sample = name + ("{" + labels + "}" if labels else "")
        for line in self.metrics().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_metric(self, name: str, value: float, labels: str = "", timeout: float = 10) -> float:
        """The sample once it equals ``value``, or as it is after ``timeout``: the daemon
        counts a batch's lines after its commit, so a test that saw the rows may look
        before the counter moved."""
        deadline = time.monotonic() + timeout
        while (found := self.metric(name, labels)) != value and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    # -- writing the log -------------------------------------------------------

    @staticmethod
    def line(
        project: str, body: bytes = b"", request_id: str | None = None, **fields: str
    ) -> tuple[str, bytes]:
        """A log line exactly as nginx writes it (with its newline), and its request id."""
        rid = request_id or secrets.token_hex(16)
        return rid, make_line(body, id=rid, project=project, **fields) + b"\n"

    def write(
        self, project: str, count: int, body: bytes = b'{"n":1}', path: Path | None = None
    ) -> list[str]:
        """Append ``count`` lines for ``project`` to the live log (or ``path``); return their ids."""
        ids, data = [], []
        for _ in range(count):
            rid, raw = self.line(project, body)
            ids.append(rid)
            data.append(raw)
        with open(path or self.log_path, "ab") as log:
            log.write(b"".join(data))
        return ids

    # -- reading the databases -------------------------------------------------

    def request_ids(self, project: str, table: str = "records", timeout: float = 10) -> list[str]:
        """Every ``_request_id`` in a project's table, in ``_id`` order (duplicates kept)."""
        return table_request_ids(self.data_dir / f"{project}.db", table, timeout)

    def wait_loaded(self, project: str, ids: list[str], table: str = "records", timeout: float = 20) -> None:
        """Wait until every id in ``ids`` is in the table; fail on a duplicate."""
        deadline = time.monotonic() + timeout
        wanted = set(ids)
        while True:
            found = self.request_ids(project, table)
            duplicates = [rid for rid, n in Counter(found).items() if n > 1]
            assert not duplicates, f"loaded twice: {duplicates[:5]}"
            if wanted <= set(found):
                return
            if time.monotonic() > deadline:
                missing = wanted - set(found)
                raise AssertionError(
                    f"{len(missing)} of {len(wanted)} ids not in {project}.{table} after {timeout}s\n"
                    f"{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)

    def assert_exactly(self, project: str, ids: list[str], table: str = "records") -> None:
        """The table holds exactly ``ids``, each once, nothing else."""
        found = self.request_ids(project, table)
        assert Counter(found) == Counter(ids), (
            f"{project}.{table}: {len(found)} rows, {len(set(found))} distinct, expected {len(ids)}; "
            f"missing {len(set(ids) - set(found))}, unexpected {len(set(found) - set(ids))}"
        )
