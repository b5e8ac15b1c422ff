"""What the benchmarks share: free loopback ports, waiting for a server to listen,
stopping a server, a process's CPU time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port nothing listens on, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    """Return once something listens on 127.0.0.1:``port``; exit the benchmark if nothing does."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on {port}")
        time.sleep(0.1)


def interrupt(process: subprocess.Popen, timeout: float) -> None:
    """Stop ``process`` as Ctrl-C would; kill it if it has not exited within ``timeout`` s."""
    _stop(process, signal.SIGINT, timeout)


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """Stop ``process`` as systemd would (SIGTERM); kill it if it has not exited within ``timeout`` s."""
    _stop(process, signal.SIGTERM, timeout)


def _stop(process: subprocess.Popen, sig: signal.Signals, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
