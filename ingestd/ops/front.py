"""The front tier's kept writes handed over to their host (``smalltable front handoff``).

While a host is down the front tier answers its projects' writes itself and logs them to
its own ingest log in the hosts' format, with the owner's address in ``host``
(nginx/front.conf.j2). Handing over copies the owner's lines, in log order, into one new
file beside the owner's ingest log, where its ingestd loads it like any rotated log.
Loading is keyed by request id, so handing over the same lines again (after a crash, or
with more lines kept since) stores nothing twice: each write lands exactly once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from ..config import Config
from ..ingest.fingerprint import log_files
from ..ingest.routing import route
from ..support.durable import write_all_and_sync


def _whole_lines(path: Path) -> list[bytes]:
    """The file's whole lines (a torn last line, still being written, is left for later)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def _owner(line: bytes) -> str | None:
    try:
        return json.loads(line.decode("latin-1")).get("host")
    except (ValueError, AttributeError):
        return None


def kept_lines(front: Config, host: str) -> list[bytes]:
    """Every line the front kept for ``host`` (ADDRESS:PORT), oldest log file first."""
    lines = []
    for path in log_files(front.path("ingest_log")):
        lines += [line for line in _whole_lines(path) if _owner(line) == host]
    return lines


def handoff(front: Config, host: str, target: Config) -> tuple[Path | None, int]:
    """Hand ``host``'s kept lines to the home ``target`` (that host's): the file written
    (None when nothing is new to it) and the number of lines kept for it in all."""
    lines = kept_lines(front, host)
    return (_deliver(target, "front", lines) if lines else None), len(lines)


class MoveError(Exception):
    """A move cannot start or finish; the message says why and what state it left."""


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (nginx's workers, for its master)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry))
    return found


def _master(front: Config) -> int:
    """The front's nginx master, or MoveError when it is not running."""
    try:
        master = int(front.path("nginx_pid").read_text().strip())
        os.kill(master, 0)
    except (OSError, ValueError) as exc:
        raise MoveError(
            f"the front's nginx is not running (its pid file {front.path('nginx_pid')}: {exc})"
        ) from None
    return master


def reload_front(front: Config, timeout: float = 60.0) -> None:
    """Reload the front's nginx and return once every old worker has exited: from then on
    no request is routed by the old config (old workers finish theirs first)."""
    master = _master(front)
    old = child_pids(master)
    os.kill(master, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while old & child_pids(master):
        if time.monotonic() > deadline:
            raise MoveError(f"the front's old nginx workers did not exit within {timeout:.0f} s")
        time.sleep(0.05)


def _write_map(path: Path, entries: dict[str, str]) -> None:
    """An nginx map file, written whole (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(f"{name} {value};\n" for name, value in sorted(entries.items())))
    os.replace(temporary, path)


def _read_map(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.rstrip(";").split(" ", 1) for line in path.read_text().splitlines() if line)


def _project_lines(config: Config, project: str) -> list[bytes]:
    """Every whole line of ``project`` in a host's logs (its apex settings writes too),
    oldest file first."""
    lines = []
    for path in log_files(config.path("ingest_log")):
        lines += [line for line in _whole_lines(path) if route(line) == project]
    return lines


def _line_id(line: bytes) -> str | None:
    try:
        return json.loads(line.decode("latin-1")).get("id")
    except (ValueError, AttributeError):
        return None


def _deliver(target: Config, tag: str, lines: list[bytes]) -> Path | None:
    """The ``lines`` no earlier handoff or move gave ``target``, as a new log file beside its
    ingest log (synced, then renamed in); None when every line was given already.

    Only new lines: ingestd knows a log file by its first bytes, so a file that began
    with the lines of an earlier one would be taken for it."""
    live = target.path("ingest_log")
    given = set()
    for pattern in (f"{live.name}.front-*", f"{live.name}.moved-*"):
        for path in live.parent.glob(pattern):
            if not path.name.endswith(".tmp"):
                given.update(_line_id(line) for line in _whole_lines(path))
    new = [line for line in lines if _line_id(line) not in given]
    if not new:
        return None
    data = b"".join(new)
    path = live.parent / f"{live.name}.{tag}-{hashlib.sha256(data).hexdigest()[:16]}"
    live.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        write_all_and_sync(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def _loaded(target: Config, request_id: str) -> bool:
    """Whether ``target``'s databases hold the line with ``request_id`` (any table)."""
    for path in target.path("data_dir").glob("*.db"):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            for table in ("records", "rejects", "settings"):
                try:
                    if conn.execute(f"select 1 from {table} where _request_id = ?", (request_id,)).fetchone():
                        return True
                except sqlite3.OperationalError:
                    continue
        finally:
            conn.close()
    return False


def move(
    front: Config, project: str, source: Config, target: Config, address: str, timeout: float = 300.0
) -> int:
    """Move ``project`` to the host at ``address`` (home ``target``); the lines copied.

    1. the front keeps the project's writes (for ``address``) and reloads;
    2. the project's lines in ``source``'s logs are copied to ``target``, which loads them;
    3. the front routes the project to ``address`` and reloads; the project's lines are
       copied once more: those the front kept meanwhile, and a write that was still being
       logged at the old host at step 1. Request ids make every copy load each write once.
    """
    if address not in front["front.hosts"]:
        raise MoveError(f"{address!r} is not one of front.hosts {front['front.hosts']}")
    _master(front)  # before anything changes
    state = front.path("state_dir")
    moving, routes = _read_map(state / "front-moving.map"), _read_map(state / "front-routes.map")
    resumed = moving.get(project) == address  # a move that stopped half-way, run again
    if (target.path("data_dir") / f"{project}.db").exists() and not resumed:
        raise MoveError(f"{target.home} already has a database for {project}: it is not moved there twice")
    _write_map(state / "front-moving.map", {**moving, project: address})
    reload_front(front)
    # Its lines on the old host, then those the front kept for it (while it moves, or
    # while the old host was down and not handed over yet): the new host gets them all.
    lines = _project_lines(source, project) + _project_lines(front, project)
    if lines:
        _deliver(target, f"moved-{project}", lines)
        last = json.loads(lines[-1].decode("latin-1"))["id"]
        deadline = time.monotonic() + timeout
        while not _loaded(target, last):
            if time.monotonic() > deadline:
                raise MoveError(
                    f"{target.home} has not loaded {project}'s {len(lines)} lines within {timeout:.0f} s "
                    "(is its ingestd running?); its writes are still kept at the front: run the move again"
                )
            time.sleep(0.1)
    index = front["front.hosts"].index(address)
    _write_map(state / "front-routes.map", {**routes, project: f"smalltable_host_{index}"})
    moving.pop(project, None)
    _write_map(state / "front-moving.map", moving)
    reload_front(front)
    late = _project_lines(source, project) + _project_lines(front, project)
    _deliver(target, f"moved-{project}", late)
    return len(late)
