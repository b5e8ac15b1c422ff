"""``smalltable up``: nginx, ingestd and Datasette together, for development and tests.

Everything lives under the config's ``home``: the rendered nginx config, logs,
data, state and sockets. nginx runs unprivileged (``-p HOME``) in the
foreground. Ctrl-C (or SIGTERM) stops all three. ``up`` supervises them as
systemd does in production: a service that dies is started again after a
delay that doubles with each quick death (``up.restart_delay`` up to
``up.restart_delay_max``), and ``up`` says so on its output. nginx is never
stopped because something behind it died: writes are still accepted, and the
log holds them until ingestd is back (promise 2).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..support.programs import ProgramNotFound, find_program
from . import render


class StackError(Exception):
    """The stack cannot start; the message says why and what to do."""


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    log: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    memory_limit: int | None = None

    def spawn(self) -> None:
        """Start the process, its output appended to its log, its data limited to ``memory_limit``."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        limit = self.memory_limit

        def limit_memory() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

        prepare = nginx_preexec() if self.name == "nginx" else limit_memory if limit else None
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=prepare,
            )
        self.started = time.monotonic()


def rotate_logs(config: Config, force: bool = False) -> subprocess.CompletedProcess:
    """Run the real logrotate on the deployment's logrotate.conf (``force``: rotate now).

    Its state file lives in the run directory, so dev rotations never touch the
    system's /var/lib/logrotate/status. It runs at the lowest CPU priority and the lowest
    best-effort I/O priority, as the systemd unit has it: compressing a big rotated log
    is background work. (``ionice -t``: where the I/O priority cannot be set, run anyway.)
    """
    argv = [
        find_program("nice"),
        "-n19",
        find_program("ionice"),
        "-t",
        "-c2",
        "-n7",
        find_program("logrotate"),
    ]
    if force:
        argv.append("--force")
    argv += [
        "--state",
        str(config.path("state_dir") / "logrotate.state"),
        str(config.home / "conf" / "logrotate.conf"),
    ]
    return subprocess.run(argv, capture_output=True, text=True)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def write_runtime_files(config: Config) -> tuple[Path, Path]:
    """Render every config file into HOME/conf; return the effective config and metadata paths."""
    conf_dir = config.home / "conf"
    try:
        render.write(config, conf_dir)
    except render.RenderError as exc:
        raise StackError(str(exc)) from None
    for key in ("data_dir", "state_dir"):
        config.path(key).mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        let_workers_reach(config)
    return conf_dir / "smalltable.yaml", conf_dir / "datasette.json"


def let_workers_reach(config: Config) -> None:
    """Started as root, nginx's workers run as ``nginx.worker_user``: they open the ack
    socket and temp files in the run directory, and reopen the logs, by path. Give every
    directory above those search permission for others (o+x: pass through, not list), and
    the data and state directories nginx checks for new projects. ``up`` checks again as
    it supervises: a program that resets a parent's mode (pytest does, for its temporary
    directories) would otherwise cut the workers off."""
    for key in ("run_dir", "log_dir", "data_dir", "state_dir"):
        for directory in config.path(key).parents:
            mode = directory.stat().st_mode
            if not mode & 0o001:
                directory.chmod(mode | 0o001)


def services(config: Config, effective: Path, metadata: Path) -> list[Service]:
    """The three processes, in the order they start."""
    logs = config.path("log_dir")
    return [
        Service(
            "datasette",
            [sys.executable, "-m", "datasette", "serve", *render.datasette_options(config, metadata)],
            config["datasette.port"],
            logs / "datasette.log",
            memory_limit=config["datasette.memory_max_mb"] * 1048576,
        ),
        Service(
            "ingestd",
            [sys.executable, "-m", "ingestd", "ingest", "--config", str(effective)],
            config["metrics.port"],
            logs / "ingestd.log",
        ),
        Service("nginx", nginx_argv(config), config["nginx.port"], logs / "nginx-error.log"),
    ]


def nginx_argv(config: Config, *extra: str) -> list[str]:
    """The unprivileged nginx of this home (``extra``: e.g. ``-t``, ``-s reload``)."""
    home = config.home
    return [
        find_program("nginx"),
        *extra,
        "-p",
        str(home),
        "-c",
        str(home / "conf" / "nginx.conf"),
        "-e",
        str(config.path("log_dir") / "nginx-error.log"),
    ]


def _socket_for_workers() -> None:
    os.umask(0o000)


def nginx_preexec() -> Callable[[], None] | None:
    """What nginx needs before it starts. As root, its workers run as ``nginx.worker_user``
    and must connect to the ack socket the master creates: with no umask it is created
    0777 (nginx gives every file it makes an explicit mode, and temp directories 0700)."""
    return _socket_for_workers if os.geteuid() == 0 else None


def remove_stale_ack_socket(config: Config) -> None:
    """Remove the ack server's unix socket a dead nginx left behind.

    nginx never removes a unix socket it did not close itself: after a kill -9, a crash
    or a power loss the file stays, and every later start fails on it ("bind() to
    unix:... failed (98: Address already in use)"), so writes would stay refused. Call
    it only when no nginx of this home runs.
    """
    (config.path("run_dir") / "ack.sock").unlink(missing_ok=True)


def check_nginx_config(config: Config) -> None:
    result = subprocess.run(nginx_argv(config, "-t", "-q"), capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"the rendered nginx config does not load:\n{result.stderr.strip()}")


def _wait_listening(service: Service, deadline: float) -> None:
    while not port_in_use(service.port):
        if service.process.poll() is not None:
            raise StackError(
                f"{service.name} exited with status {service.process.returncode} while starting; "
                f"see {service.log}"
            )
        if time.monotonic() > deadline:
            raise StackError(f"{service.name} did not listen on port {service.port}; see {service.log}")
        time.sleep(0.05)


def stop(running: list[Service]) -> None:
    """Stop nginx first (no new writes), then ingestd (finishes its batch), then Datasette."""
    for service in reversed(running):
        if service.process and service.process.poll() is None:
            service.process.send_signal(signal.SIGQUIT if service.name == "nginx" else signal.SIGTERM)
            try:
                service.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def _refuse_if_busy(config: Config) -> None:
    """Before anything is written: the ports must be free and the home not in use."""
    pid_file = config.path("nginx_pid")
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        pass
    else:
        raise StackError(f"{config.home} is in use by a running stack (nginx pid {pid}); stop it first")
    ports = {
        "nginx": config["nginx.port"],
        "datasette": config["datasette.port"],
        "ingestd": config["metrics.port"],
    }
    busy = [f"{name} port {port}" for name, port in ports.items() if port and port_in_use(port)]
    if busy:
        raise StackError(
            "already in use: " + ", ".join(busy) + " (choose others with --port, "
            "--datasette-port and --metrics-port)"
        )


def start(config: Config) -> list[Service]:
    """Start the stack and return once all three listen (or raise StackError)."""
    _refuse_if_busy(config)
    try:
        effective, metadata = write_runtime_files(config)
    except ProgramNotFound as exc:
        raise StackError(str(exc)) from None
    check_nginx_config(config)
    remove_stale_ack_socket(config)  # _refuse_if_busy found no nginx of this home running
    planned = services(config, effective, metadata)
    running: list[Service] = []
    try:
        for service in planned:
            service.spawn()
            running.append(service)
            if service.port:
                _wait_listening(service, time.monotonic() + 30)
    except BaseException:
        stop(running)
        raise
    return running


def banner(config: Config) -> str:
    port, domain = config["nginx.port"], config["domain"]
    rotation = (
        f"logrotate checks every {config['logrotate.interval']:g}s: "
        f"daily, or once over {config['logrotate.max_size']}"
    )
    return f"""SmallTable is up (home: {config.home})

  post:    curl -d '{{"user":"ann","score":3}}' -H 'Content-Type: application/json' http://demo.{domain}:{port}/
  browse:  http://demo.{domain}:{port}/        every project: http://{domain}:{port}/
  metrics: http://127.0.0.1:{config["metrics.port"]}/metrics
  logs:    {config.path("log_dir")} ({rotation})

A service that dies is restarted (and said so here).
Ctrl-C stops nginx, ingestd and Datasette."""


def _rotate_in_background(config: Config) -> None:
    """What cron or the systemd timer does in production, with the same config."""
    result = rotate_logs(config)
    if result.returncode != 0 or result.stderr:
        with open(config.path("log_dir") / "logrotate.log", "a") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} exit {result.returncode}\n{result.stderr}")


def _exit_words(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def supervise(config: Config, service: Service, now: float) -> str | None:
    """Look after one service: schedule a restart when it has died, start it when due.

    Returns what ``up`` should say about it, if anything. A service that ran at
    least ``up.restart_delay_max`` seconds died of something new: its delay starts
    again from ``up.restart_delay``; each quicker death doubles it, up to the max,
    so a service that cannot start does not spin.
    """
    first, most = config["up.restart_delay"], config["up.restart_delay_max"]
    if service.restart_at is None:
        code = service.process.poll()
        if code is None:
            return None
        service.quick_deaths = service.quick_deaths + 1 if now - service.started < most else 1
        delay = min(first * 2 ** (service.quick_deaths - 1), most)
        service.restart_at = now + delay
        return f"{service.name} {_exit_words(code)}; restarting it in {delay:g}s. See {service.log}"
    if now < service.restart_at:
        return None
    service.restart_at = None
    if service.name == "nginx":
        remove_stale_ack_socket(config)
    service.spawn()
    return f"{service.name} restarted (pid {service.process.pid})"


def run(config: Config) -> int:
    """Start the stack and supervise it until Ctrl-C or SIGTERM; return an exit code."""
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    running = start(config)
    print(banner(config), flush=True)
    next_rotation = time.monotonic() + config["logrotate.interval"]
    try:
        while not stopping:
            if time.monotonic() >= next_rotation:
                _rotate_in_background(config)
                next_rotation = time.monotonic() + config["logrotate.interval"]
            if os.geteuid() == 0:
                let_workers_reach(config)
            for service in running:
                said = supervise(config, service, time.monotonic())
                if said:
                    print(said, flush=True)
            time.sleep(0.2)
        print("stopping...", flush=True)
        return 0
    finally:
        stop(running)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
