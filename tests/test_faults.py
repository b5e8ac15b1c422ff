"""Faults the ingest daemon must survive, each against the REAL daemon (no mocks).

Every test writes log lines exactly as nginx does (tests/daemonlib.py), breaks
something — copytruncate, a recycled inode, a file deleted mid-read, a partial
or overlong line, a torn checkpoint, a full or read-only data directory, a
blind or overflowing watcher, ``kill -9`` at a failpoint — and asserts what a
user sees: every line written ends up in its project exactly once (``records``
or ``rejects``), or, when it cannot be parsed, exactly once in the dead-letter
file; and the checkpoint is never ahead of what is stored.

Tests that mount a tmpfs or change inotify limits need root: without it they
FAIL with a message saying so, they do not skip.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from ingestd.support import failpoints

from .daemonlib import DaemonRunner
from .linelib import make_line

RESCAN = 0.2
"""DaemonRunner's default ingest.rescan_interval."""
LOAD_ERRORS = "smalltable_ingest_load_errors_total"
ID_AND_PROJECT = re.compile(rb'"id":"([0-9a-f]{32})","project":"([^"]+)"')

# -- helpers ---------------------------------------------------------------------


def fast_lines(project: str, count: int, body: bytes = b'{"n":1}') -> tuple[list[str], bytes]:
    """``count`` log lines for ``project`` as nginx writes them (same line, fresh ids), quickly."""
    placeholder = "a5" * 16
    head, tail = (make_line(body, id=placeholder, project=project) + b"\n").split(placeholder.encode())
    ids = [secrets.token_hex(16) for _ in range(count)]
    return ids, b"".join(head + rid.encode() + tail for rid in ids)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as log:  # O_APPEND, like nginx
        log.write(data)


def shift_rotated(live: Path) -> None:
    """logrotate's numbering: ingest.log.N → ingest.log.N+1, oldest first."""
    last = 1
    while live.with_name(f"{live.name}.{last}").exists():
        last += 1
    for n in range(last - 1, 0, -1):
        os.rename(live.with_name(f"{live.name}.{n}"), live.with_name(f"{live.name}.{n + 1}"))


def rename_rotate(live: Path) -> None:
    """logrotate's default: rename the live log (the next write creates a new one)."""
    shift_rotated(live)
    os.rename(live, live.with_name(live.name + ".1"))


def copytruncate(live: Path) -> None:
    """logrotate's copytruncate: copy the live log to ingest.log.1, then truncate it in place."""
    shift_rotated(live)
    shutil.copyfile(live, live.with_name(live.name + ".1"))
    os.truncate(live, 0)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def wait_log(runner: DaemonRunner, text: str, timeout: float = 10) -> None:
    """Wait until the daemon's output holds ``text``; fail at once if it exits first."""
    deadline = time.monotonic() + timeout
    while text not in runner.log_text():
        status = runner.process.poll() if runner.process else None
        assert status is None, f"ingestd exited ({status}) before logging {text!r}:\n{runner.log_text()}"
        assert time.monotonic() < deadline, f"ingestd never logged {text!r}:\n{runner.log_text()[-3000:]}"
        time.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_paths(pid: int) -> list[str]:
    """What the process has open (``... (deleted)`` for deleted files)."""
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(FileNotFoundError):
            paths.append(os.readlink(fd))
    return paths


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"this test must run as root to {what}; it fails rather than skips", pytrace=False)


@contextmanager
def paused(runner: DaemonRunner) -> Iterator[None]:
    """SIGSTOP the daemon: it takes no look at the files until SIGCONT."""
    assert runner.process is not None
    os.kill(runner.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(runner.process.pid, signal.SIGCONT)


@contextmanager
def tmpfs(runner: DaemonRunner, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on the runner's data directory, unmounted whatever happens."""
    require_root("mount a tmpfs on the data directory")
    runner.data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(runner.data_dir)], check=True)
    try:
        yield runner.data_dir
    finally:
        runner.kill()
        subprocess.run(["umount", "-l", str(runner.data_dir)], check=False)


def remount(directory: Path, options: str) -> None:
    result = subprocess.run(
        ["mount", "-o", f"remount,{options}", str(directory)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"mount -o remount,{options} {directory}: {result.stderr}"


@contextmanager
def inotify_limit(name: str, value: int) -> Iterator[None]:
    """Lower /proc/sys/fs/inotify/NAME for a moment; the old value is always restored."""
    require_root(f"lower /proc/sys/fs/inotify/{name}")
    path = Path("/proc/sys/fs/inotify") / name
    # The limit is the whole machine's: a second test run at the same moment must wait,
    # or it would read the lowered value as the one to restore.
    with open("/tmp/smalltable-inotify-limit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = path.read_text()
        path.write_text(f"{value}\n")
        try:
            yield
        finally:
            path.write_text(old)


def start_with_inotify_limit(runner: DaemonRunner, name: str, value: int) -> None:
    """Start the daemon while an inotify limit is lowered, restored once its watcher is set up."""
    with inotify_limit(name, value):
        runner.start()
        wait_log(runner, "ingestd INFO following ")  # logged once the watcher is set up (or not)


class Feed:
    """Writes log lines into a runner's logs and remembers where each must end up."""

    def __init__(self, runner: DaemonRunner) -> None:
        self.runner = runner
        self.expected: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.garbage_lines: list[str] = []

    def _path(self, path: Path | None) -> Path:
        return path or self.runner.log_path

    def records(self, project: str, count: int, path: Path | None = None) -> bytes:
        ids, data = fast_lines(project, count)
        append(self._path(path), data)
        self.expected[(project, "records")] += ids
        return data

    def reject(self, project: str, path: Path | None = None) -> bytes:
        rid, data = DaemonRunner.line(project, b"{not json", ctype="application/json")
        append(self._path(path), data)
        self.expected[(project, "rejects")].append(rid)
        return data

    def garbage(self, path: Path | None = None) -> bytes:
        text = f"not a log line {secrets.token_hex(8)} \xff"
        append(self._path(path), text.encode("latin-1") + b"\n")
        self.garbage_lines.append(text)
        return text.encode("latin-1")

    def lines_written(self) -> int:
        return sum(len(ids) for ids in self.expected.values()) + len(self.garbage_lines)

    def projects(self) -> set[str]:
        return {project for project, _ in self.expected}

    def wait(self, timeout: float = 20) -> None:
        for (project, table), ids in self.expected.items():
            self.runner.wait_loaded(project, ids, table, timeout=timeout)
        if self.garbage_lines:
            wait_until(
                lambda: {e["line"] for e in self.dead_letters()} >= set(self.garbage_lines),
                timeout,
                "the unparsable lines in the dead-letter file",
            )

    def dead_letters(self) -> list[dict]:
        path = self.runner.deadletter_path
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def check(self, dead_letters: bool = True) -> None:
        """Every project holds exactly its ids, each once, in the right table; nothing else exists."""
        for (project, table), ids in self.expected.items():
            self.runner.assert_exactly(project, ids, table)
            other = "rejects" if table == "records" else "records"
            if (project, other) not in self.expected:
                self.runner.assert_exactly(project, [], other)
        databases = {p.stem for p in self.runner.data_dir.glob("*.db")}
        assert databases == self.projects(), f"unexpected project databases: {databases - self.projects()}"
        for project in self.projects():
            assert_no_nul_bytes(self.runner, project)
        if dead_letters:
            entries = self.dead_letters()
            assert Counter(e["line"] for e in entries) == Counter(self.garbage_lines), (
                f"dead letters: {len(entries)} entries for {len(self.garbage_lines)} unparsable lines"
            )
            keys = Counter((e["fingerprint"], e["start"]) for e in entries)
            assert max(keys.values(), default=1) == 1, "a line is in the dead-letter file twice"

    def assert_checkpoint_not_ahead(self) -> None:
        """Every line before each checkpointed offset is stored (or dead-lettered)."""
        path = self.runner.checkpoint_path
        if not path.exists():
            return
        stored = {
            project: set(stored_ids(self.runner, project)) | set(stored_ids(self.runner, project, "rejects"))
            for project in self.projects()
        }
        dead = {e["line"] for e in self.dead_letters()}
        for entry in json.loads(path.read_bytes())["files"]:
            log = Path(entry["path"])
            if log.suffix == ".gz" or not log.exists():
                continue
            before = log.read_bytes()[: entry["offset"]]
            assert not before or before.endswith(b"\n"), f"checkpoint inside a line of {log}: {entry}"
            unloaded = []
            for line in before.splitlines():
                found = ID_AND_PROJECT.search(line)
                if found:
                    rid, project = found.group(1).decode(), found.group(2).decode()
                    if rid not in stored.get(project, set()):
                        unloaded.append(rid)
                elif line.decode("latin-1") not in dead:
                    unloaded.append(line[:40].decode("latin-1"))
            assert not unloaded, (
                f"the checkpoint is at byte {entry['offset']} of {log} but {len(unloaded)} lines "
                f"before it are not loaded: {unloaded[:3]}"
            )


def stored_ids(runner: DaemonRunner, project: str, table: str = "records") -> list[str]:
    """Like ``runner.request_ids``, but also on a read-only data directory, and loud on errors."""
    path = runner.data_dir / f"{project}.db"
    if not path.exists():
        return []
    error: sqlite3.OperationalError | None = None
    # a WAL database on a read-only filesystem opens only as immutable (no -shm can be made)
    for mode in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"file:{path}?{mode}", uri=True)
        try:
            return [row[0] for row in conn.execute(f"SELECT _request_id FROM {table} ORDER BY _id")]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            error = exc
        finally:
            conn.close()
    raise AssertionError(f"cannot read {path}: {error}")


def row_count(runner: DaemonRunner, project: str) -> int:
    path = runner.data_dir / f"{project}.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError as exc:
        if str(exc) == "no such table: records":
            return 0
        raise
    finally:
        conn.close()


def assert_no_nul_bytes(runner: DaemonRunner, project: str) -> None:
    conn = sqlite3.connect(f"file:{runner.data_dir / f'{project}.db'}?mode=ro", uri=True)
    try:
        for table in ("records", "rejects"):
            (count,) = conn.execute(
                f"SELECT count(*) FROM {table} WHERE instr(CAST(_body AS BLOB), X'00') > 0"
            ).fetchone()
            assert count == 0, f"{project}.{table}: {count} bodies hold NUL bytes"
    finally:
        conn.close()


def stored_body(runner: DaemonRunner, project: str, rid: str) -> bytes:
    conn = sqlite3.connect(f"file:{runner.data_dir / f'{project}.db'}?mode=ro", uri=True)
    try:
        (body,) = conn.execute("SELECT _body FROM records WHERE _request_id = ?", (rid,)).fetchone()
    finally:
        conn.close()
    return body.encode() if isinstance(body, str) else body


def checkpoint_entry(runner: DaemonRunner, path: Path) -> dict:
    entries = json.loads(runner.checkpoint_path.read_bytes())["files"]
    [entry] = [e for e in entries if e["path"] == str(path)]
    return entry


def wait_idle(runner: DaemonRunner) -> None:
    """Wait until the checkpoint covers the whole live log: the daemon has nothing left to do."""
    size = runner.log_path.stat().st_size
    wait_until(
        lambda: (
            runner.checkpoint_path.exists() and checkpoint_entry(runner, runner.log_path)["offset"] == size
        ),
        10,
        "the checkpoint to reach the end of the live log",
    )


@pytest.fixture
def runners(tmp_path) -> Iterator[Callable[..., DaemonRunner]]:
    """Make daemons with settings of the test's own (e.g. ``ingest={"batch_lines": 50}``)."""
    made: list[DaemonRunner] = []

    def make(**settings: object) -> DaemonRunner:
        runner = DaemonRunner(tmp_path / f"home{len(made)}", **settings)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.kill()


# -- 4. copytruncate ------------------------------------------------------------


def test_copytruncate_while_the_daemon_runs(daemon):
    """nginx keeps writing at full speed; logrotate copytruncates six times (never in the
    middle of a write: copytruncate loses such lines whatever the reader does)."""
    feed = Feed(daemon)
    feed.records("ct", 50)
    daemon.start()
    lock, done = threading.Lock(), threading.Event()

    def nginx() -> None:
        while not done.is_set():
            with lock:
                feed.records("ct", 20)
                if len(feed.expected[("ct", "records")]) % 1000 == 0:
                    feed.reject("ct")
            time.sleep(0.002)

    writer = threading.Thread(target=nginx)
    writer.start()
    try:
        for _ in range(6):
            time.sleep(0.25)
            with lock:
                copytruncate(daemon.log_path)
    finally:
        done.set()
        writer.join()
    feed.wait()
    feed.check()
    assert daemon.log_path.with_name("ingest.log.6").exists()
    assert "disappeared" not in daemon.log_text()


@pytest.mark.parametrize(
    ("how", "compress"), [("stop", False), ("kill", False), ("kill", True)], ids=["stop", "kill", "kill-gz"]
)
def test_copytruncate_while_the_daemon_is_down(daemon, how, compress):
    feed = Feed(daemon)
    feed.records("ct-a", 100)
    feed.reject("ct-a")
    feed.records("ct-b", 50)
    daemon.start()
    feed.wait()
    getattr(daemon, how)()
    feed.records("ct-a", 70)  # never read from the live log: only from the copy
    copytruncate(daemon.log_path)
    if compress:  # copytruncate + compress without delaycompress: only ingest.log.1.gz is left
        copy = daemon.log_path.with_name("ingest.log.1")
        with open(copy, "rb") as plain, gzip.open(f"{copy}.gz", "wb") as packed:
            shutil.copyfileobj(plain, packed)
        os.unlink(copy)
    feed.records("ct-b", 30)
    daemon.start()
    feed.wait()
    feed.check()
    assert "disappeared" not in daemon.log_text()


@pytest.mark.parametrize("how", ["sigstop", "stopped"])
def test_truncate_then_regrow_past_the_old_size_between_two_looks(runners, how):
    """Copy, truncate and write more than the file held before, all between two looks."""
    runner = runners(ingest={"rescan_interval": 5.0})  # woken only by file events: no stray look
    feed = Feed(runner)
    feed.records("regrow", 100)
    runner.start()
    feed.wait()
    wait_idle(runner)
    if how == "sigstop":
        os.kill(runner.process.pid, signal.SIGSTOP)
    else:
        runner.stop()
    try:
        feed.records("regrow", 40)  # unread, only in the copy once truncated
        old_size = runner.log_path.stat().st_size
        copytruncate(runner.log_path)
        new = feed.records("regrow", 300)
        feed.reject("regrow")
        assert runner.log_path.stat().st_size > old_size
    finally:
        if how == "sigstop":
            os.kill(runner.process.pid, signal.SIGCONT)
    if how == "stopped":
        runner.start()
    feed.wait()
    feed.check()
    # the new content was read from its start: its first line is stored, after the copy's lines
    first_new = ID_AND_PROJECT.search(new).group(1).decode()
    ids = runner.request_ids("regrow")
    assert ids.index(first_new) == 140
    assert "disappeared" not in runner.log_text()


# -- 5. inode reuse ---------------------------------------------------------------


def test_a_new_file_on_a_recycled_inode_is_read_from_its_start(daemon):
    """While the daemon is down, logrotate deletes the oldest rotated file (fully
    loaded), renames the live log and creates a new one, which gets the deleted file's
    inode: the checkpoint holds that inode with an offset past the new file's first lines."""
    live, rotated = daemon.log_path, daemon.log_path.with_name("ingest.log.1")
    feed = Feed(daemon)
    feed.records("inode", 200)
    rename_rotate(live)
    feed.records("inode", 20)
    daemon.start()
    feed.wait()
    daemon.stop()
    old = checkpoint_entry(daemon, rotated)
    assert (old["offset"], old["ino"]) == (rotated.stat().st_size, rotated.stat().st_ino)
    feed.records("inode", 10)  # unread: loaded from ingest.log.1 after the rotation
    os.unlink(rotated)
    os.rename(live, rotated)
    os.close(os.open(live, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    if (live.stat().st_dev, live.stat().st_ino) != (old["dev"], old["ino"]):
        # this filesystem did not recycle the inode: make the checkpoint name the new file's
        checkpoint = json.loads(daemon.checkpoint_path.read_bytes())
        for entry in checkpoint["files"]:
            if entry["fingerprint"] == old["fingerprint"]:
                entry["dev"], entry["ino"] = live.stat().st_dev, live.stat().st_ino
        daemon.checkpoint_path.write_text(json.dumps(checkpoint))
        old = checkpoint_entry(daemon, rotated)
    assert live.stat().st_ino == old["ino"] and live.stat().st_dev == old["dev"]
    feed.records("inode-new", 400)  # longer than the old file: a mix-up would skip its start
    assert live.stat().st_size > old["offset"]
    daemon.start()
    feed.wait()
    feed.check()


def test_a_checkpoint_naming_the_new_files_inode_does_not_skip_its_lines(daemon):
    """Identity is the fingerprint: a checkpoint entry whose dev/ino is now another
    file's does not make that file's lines count as loaded."""
    feed = Feed(daemon)
    feed.records("ino-a", 200)
    daemon.start()
    feed.wait()
    daemon.stop()
    new_file = daemon.log_path.with_name("new-file.tmp")
    feed.records("ino-b", 300, path=new_file)
    os.rename(new_file, daemon.log_path)  # the old live log is gone, a new one in its place
    checkpoint = json.loads(daemon.checkpoint_path.read_bytes())
    [entry] = checkpoint["files"]
    assert entry["offset"] > 0 and entry["ino"] != daemon.log_path.stat().st_ino
    entry["dev"], entry["ino"] = daemon.log_path.stat().st_dev, daemon.log_path.stat().st_ino
    daemon.checkpoint_path.write_text(json.dumps(checkpoint))
    daemon.start()
    feed.wait()
    feed.check()
    assert daemon.wait_metric("smalltable_ingest_lines_read_total", 300) == 300


def test_the_same_first_line_on_another_inode_is_the_same_file(daemon):
    """The other way round: the live log restored on a new inode (a copy renamed into
    place) is the file the checkpoint knows: nothing is read again."""
    feed = Feed(daemon)
    feed.records("same", 200)
    daemon.start()
    feed.wait()
    daemon.stop()
    feed.records("same", 30)
    copy = daemon.log_path.with_name("copy.tmp")
    shutil.copyfile(daemon.log_path, copy)
    os.rename(copy, daemon.log_path)
    assert checkpoint_entry(daemon, daemon.log_path)["ino"] != daemon.log_path.stat().st_ino
    daemon.start()
    feed.wait()
    feed.check()
    assert daemon.wait_metric("smalltable_ingest_lines_read_total", 30) == 30
    assert daemon.metric("smalltable_ingest_duplicate_lines_total") == 0


# -- 6. a file deleted while being read ----------------------------------------------


def test_a_large_rotated_file_deleted_while_being_read_is_drained_to_its_end(daemon):
    feed = Feed(daemon)
    rotated = daemon.log_path.with_name("ingest.log.1")
    ids, data = fast_lines("big", 200_000)
    rotated.write_bytes(data)
    feed.expected[("big", "records")] += ids
    feed.records("small", 10)
    daemon.start()
    wait_until(lambda: row_count(daemon, "big"), 20, "the first batch of ingest.log.1")
    os.unlink(rotated)
    assert row_count(daemon, "big") < 200_000, "deleted too late to test anything"
    wait_until(lambda: row_count(daemon, "big") >= 200_000, 60, "all of ingest.log.1")
    feed.wait()
    feed.check()
    assert "disappeared" not in daemon.log_text()
    # drained, it is let go: the disk space of the deleted file is freed
    wait_until(
        lambda: not [p for p in open_paths(daemon.process.pid) if "ingest.log.1" in p],
        5,
        "the daemon to close the deleted ingest.log.1",
    )


# -- 7. partial last line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "restart"), [("short", "stop"), ("longer than one read", "kill")], ids=["short", "long"]
)
def test_a_partial_last_line_is_loaded_once_whole_across_a_restart(daemon, size, restart):
    feed = Feed(daemon)
    feed.records("partial", 10)
    daemon.start()
    feed.wait()
    if size == "short":
        body, ctype = b'{"note":"' + b"x" * 100 + b'"}', "application/json"
    else:  # escaped to 2.4 MB: longer than the 1 MiB a read takes
        body, ctype = b"\x01\xfe" * 200_000, "application/octet-stream"
    rid, raw = DaemonRunner.line("partial", body, ctype=ctype)
    cut = len(raw) // 2
    append(daemon.log_path, raw[:cut])

    def nothing_more_loaded() -> None:
        time.sleep(4 * RESCAN)
        daemon.assert_exactly("partial", feed.expected[("partial", "records")])
        assert not daemon.deadletter_path.exists(), daemon.deadletter_path.read_text()[:500]

    nothing_more_loaded()
    getattr(daemon, restart)()
    daemon.start()
    nothing_more_loaded()
    append(daemon.log_path, raw[cut:])
    feed.expected[("partial", "records")].append(rid)
    feed.wait()
    feed.check()
    assert stored_body(daemon, "partial", rid) == body


def test_a_partial_line_completed_after_its_file_was_rotated(daemon):
    """nginx's half-written line ends up in ingest.log.1: nginx finishes it there."""
    feed = Feed(daemon)
    feed.records("partial", 10)
    daemon.start()
    feed.wait()
    body = b'{"note":"' + b"y" * 5000 + b'"}'
    rid, raw = DaemonRunner.line("partial", body, ctype="application/json")
    with open(daemon.log_path, "ab", buffering=0) as nginx:
        nginx.write(raw[:2000])
        time.sleep(2 * RESCAN)
        rename_rotate(daemon.log_path)
        feed.records("partial", 5)  # into the new live log
        daemon.wait_loaded("partial", feed.expected[("partial", "records")])
        time.sleep(2 * RESCAN)
        assert rid not in daemon.request_ids("partial")
        nginx.write(raw[2000:])
    feed.expected[("partial", "records")].append(rid)
    feed.wait()
    feed.check()
    assert stored_body(daemon, "partial", rid) == body


# -- 8. a line longer than any buffer ----------------------------------------------


def test_a_line_longer_than_any_buffer_is_dead_lettered_and_tailing_goes_on(daemon):
    feed = Feed(daemon)
    feed.records("long", 20)
    daemon.start()
    feed.wait()
    start = daemon.log_path.stat().st_size
    overlong = 7 << 20  # the limit with the default 1 MiB body limit is about 6.3 MiB
    append(daemon.log_path, b"x" * overlong)  # no newline yet
    time.sleep(5 * RESCAN)
    assert not daemon.deadletter_path.exists(), "an unfinished line was dead-lettered"
    daemon.kill()
    daemon.start()
    time.sleep(5 * RESCAN)
    assert not daemon.deadletter_path.exists(), "an unfinished line was dead-lettered after a restart"
    append(daemon.log_path, b"\n")
    feed.records("long", 30)
    feed.reject("long")
    feed.wait()
    feed.check(dead_letters=False)
    [entry] = feed.dead_letters()
    assert (entry["file"], entry["start"], entry["end"]) == (
        str(daemon.log_path),
        start,
        start + overlong + 1,
    )
    assert "longer than" in entry["error"]
    assert entry["line"] and set(entry["line"]) == {"x"}
    assert daemon.metric("smalltable_ingest_dead_letter_lines_total", 'reason="overlong"') == 1
    assert f"bytes {start}-{start + overlong + 1}" in daemon.log_text()


# -- 10. a torn or empty checkpoint -----------------------------------------------------

DAMAGE = {
    "empty": lambda good: b"",
    "garbage": lambda good: b"\x00\xff\x13 not a checkpoint",
    "half": lambda good: good[: len(good) // 2],
    "not an object": lambda good: b"[1, 2]",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_torn_or_empty_checkpoint_is_kept_aside_and_nothing_is_stored_twice(daemon, damage):
    feed = Feed(daemon)
    feed.records("torn-a", 150)
    feed.reject("torn-a")
    feed.garbage()
    feed.records("torn-b", 80)
    rename_rotate(daemon.log_path)
    feed.records("torn-a", 60)
    feed.garbage()
    feed.records("torn-b", 40)
    daemon.start()
    feed.wait()
    daemon.stop()
    parsable = feed.lines_written() - len(feed.garbage_lines)
    feed.records("torn-a", 25)  # not loaded yet: must not be skipped
    feed.records("torn-c", 5)
    for attempt in (1, 2):
        bad = DAMAGE[damage](daemon.checkpoint_path.read_bytes())
        daemon.checkpoint_path.write_bytes(bad)
        daemon.start()
        feed.wait()
        feed.check()
        log = daemon.wait_logged("re-reading every log from its start", attempt)
        assert log.count("cannot read the checkpoint") == attempt
        assert log.count("re-reading every log from its start") == attempt
        aside = sorted(daemon.checkpoint_path.parent.glob("checkpoint.corrupt-*"))
        assert len(aside) == attempt, f"a bad checkpoint was not kept: {aside}"
        assert bad in [p.read_bytes() for p in aside]
        if attempt == 1:
            # every log was read again; what was loaded before was recognised, not stored again
            read = daemon.wait_metric("smalltable_ingest_lines_read_total", feed.lines_written())
            assert read == feed.lines_written()
            assert daemon.wait_metric("smalltable_ingest_duplicate_lines_total", parsable) == parsable
        daemon.stop()


# -- 11. disk full, read-only data directory --------------------------------------------


def test_a_full_data_directory_holds_its_place_and_resumes_by_itself(runners):
    runner = runners(ingest={"batch_lines": 200})
    with tmpfs(runner, "2m") as data:
        feed = Feed(runner)
        runner.start()
        for _ in range(60):
            for project in ("full-a", "full-b"):
                for _ in range(5):
                    feed.records(project, 48)
                    feed.garbage()
                feed.reject(project)
            wait_until(
                lambda: (
                    runner.metric(LOAD_ERRORS) > 0
                    or len(runner.request_ids("full-b")) == len(feed.expected[("full-b", "records")])
                ),
                20,
                "the daemon to load or to fail",
            )
            if runner.metric(LOAD_ERRORS) > 0:
                break
        else:
            pytest.fail("the 2 MiB data directory never filled up")
        wait_log(runner, f"cannot load into {data} (its filesystem is full")

        # more writes while it is full: each one is a file event; retries stay one per interval
        errors, since = runner.metric(LOAD_ERRORS), time.monotonic()
        for _ in range(25):
            feed.records("full-a", 5)
            feed.garbage()
            time.sleep(0.04)
        time.sleep(0.5)
        retries = runner.metric(LOAD_ERRORS) - errors
        elapsed = time.monotonic() - since
        assert retries <= elapsed / RESCAN + 3, f"{retries} retries in {elapsed:.1f}s: not one per interval"
        assert runner.metric(LOAD_ERRORS) >= 5
        assert runner.log_text().count("cannot load into") <= 2, "one error line per retry floods the log"
        feed.assert_checkpoint_not_ahead()
        assert len(runner.request_ids("full-a")) < len(feed.expected[("full-a", "records")])

        remount(data, "size=64m")
        feed.wait(timeout=30)
        feed.check()
        wait_log(runner, "loading again")
        feed.assert_checkpoint_not_ahead()


def test_a_read_only_data_directory_holds_its_place_and_resumes_by_itself(runners):
    runner = runners(ingest={"batch_lines": 100})
    with tmpfs(runner, "64m") as data:
        feed = Feed(runner)
        feed.records("ro-a", 50)
        feed.reject("ro-a")
        runner.start()
        feed.wait()
        # The kernel refuses `remount,ro` while the daemon holds its databases open for
        # writing (EBUSY): the data directory turns read-only while the daemon is down.
        runner.stop()
        remount(data, "ro")
        runner.start()
        feed.records("ro-a", 40)
        feed.garbage()
        feed.records("ro-b", 30)
        feed.reject("ro-b")
        wait_until(lambda: runner.metric(LOAD_ERRORS) >= 2, 10, "failed loads")
        wait_log(runner, f"cannot load into {data} (its filesystem is read-only)")
        feed.assert_checkpoint_not_ahead()
        assert len(stored_ids(runner, "ro-a")) == 50
        assert not (data / "ro-b.db").exists()

        remount(data, "rw")
        feed.wait()
        feed.check()
        wait_log(runner, "loading again")
        feed.assert_checkpoint_not_ahead()


def test_a_rotated_file_deleted_while_the_disk_is_full_is_still_drained(runners):
    """The daemon keeps its open files while it waits for space: a rotated file that
    logrotate deletes meanwhile (its rotate count reached) is still read to its end."""
    runner = runners(ingest={"batch_lines": 100})
    with tmpfs(runner, "4m") as data:
        feed = Feed(runner)
        feed.records("gone", 10)
        runner.start()
        feed.wait()
        filler = data / "filler"
        with open(filler, "wb", buffering=0) as out, suppress(OSError):
            while True:
                out.write(b"\xff" * 4096)
        feed.records("gone", 300)
        feed.garbage()
        feed.records("gone", 300)
        wait_until(lambda: runner.metric(LOAD_ERRORS) >= 2, 10, "failed loads")
        rename_rotate(runner.log_path)  # the unloaded lines are in ingest.log.1 now
        feed.records("gone", 10)
        time.sleep(3 * RESCAN)
        os.unlink(runner.log_path.with_name("ingest.log.1"))  # deleted before it was loaded
        time.sleep(3 * RESCAN)
        os.unlink(filler)
        feed.wait()
        feed.check()
        assert "disappeared" not in runner.log_text()


# -- 12. the watcher losing events ----------------------------------------------------------


@pytest.mark.parametrize("limit", ["max_user_instances", "max_user_watches"])
def test_without_inotify_the_daemon_falls_back_to_rescanning(runners, limit):
    runner = runners(ingest={"rescan_interval": 0.5})
    feed = Feed(runner)
    feed.records("blind", 10)
    start_with_inotify_limit(runner, limit, 0)
    assert "cannot watch" in runner.log_text()
    assert "rescanning every 0.5s instead" in runner.log_text()
    feed.wait(timeout=3)
    for _ in range(3):
        feed.records("blind", 20)
        feed.reject("blind")
        rename_rotate(runner.log_path)
        feed.records("blind", 5)
        feed.wait(timeout=3)  # a few rescan intervals
    feed.check()
    assert runner.stop() == 0


def test_a_burst_across_rotations_faster_than_events_are_processed(runners):
    runner = runners(ingest={"batch_lines": 500})
    feed = Feed(runner)
    feed.records("burst", 10)
    start_with_inotify_limit(runner, "max_queued_events", 4)
    live = runner.log_path

    def burst(rotations: int) -> None:
        nginx = open(live, "ab", buffering=0)
        try:
            for _ in range(rotations):
                for _ in range(50):
                    feed.records("burst", 20, path=Path(f"/proc/self/fd/{nginx.fileno()}"))
                rename_rotate(live)
                # nginx still writes to the renamed file until it is told to reopen
                feed.records("burst", 7, path=Path(f"/proc/self/fd/{nginx.fileno()}"))
                nginx.close()
                nginx = open(live, "ab", buffering=0)
                feed.reject("burst")
        finally:
            nginx.close()

    burst(5)
    feed.wait(timeout=30)
    wait_until(lambda: runner.metric("smalltable_ingest_watching") == 1, 10, "ingestd to watch again")
    with paused(runner):  # the kernel queues events meanwhile, far more than 4
        burst(4)
    feed.wait(timeout=30)
    feed.check()
    wait_log(runner, "overflow")  # the queue did overflow: events were lost, rescans found it all


@pytest.mark.parametrize("idle_file", ["empty live log", "finished rotated log"])
def test_an_idle_daemon_stays_idle(runners, idle_file):
    """Reading a file is no reason to wake up again: the daemon's own opens and closes
    of files in the log directory must not keep it busy (it would spin at 100% CPU)."""
    runner = runners(ingest={"rescan_interval": 10.0, "close_rotated_after": 0.3})
    feed = Feed(runner)
    if idle_file == "empty live log":
        runner.log_path.write_bytes(b"")  # logrotate's `create` right after a rotation
        runner.start()
    else:
        feed.records("idle", 10)
        runner.start()
        feed.wait()
        rename_rotate(runner.log_path)
        feed.records("idle", 1)
        feed.wait()
        time.sleep(0.5)
        feed.records("idle", 1)  # a look after ingest.log.1 has been idle long enough to close
        wait_until(
            lambda: not [p for p in open_paths(runner.process.pid) if p.endswith("ingest.log.1")],
            5,
            "the daemon to close the finished ingest.log.1",
        )
    time.sleep(0.3)
    before = cpu_seconds(runner.process.pid)
    time.sleep(2)
    busy = cpu_seconds(runner.process.pid) - before
    assert busy < 0.5, f"an idle daemon used {busy:.2f}s of CPU in 2s"
    feed.records("idle", 10)  # file events still wake it (the rescan interval is 10s)
    feed.wait(timeout=3)
    feed.check()


# -- kill -9 at the failpoints --------------------------------------------------------------


@pytest.mark.parametrize("nth", [1, 3])
@pytest.mark.parametrize("point", sorted(failpoints.LOAD_POINTS))
def test_kill_9_at_a_failpoint_loses_nothing_and_stores_nothing_twice(runners, point, nth):
    runner = runners(ingest={"batch_lines": 50})
    feed = Feed(runner)
    for rotation in range(2):
        for turn in range(4):
            for project in ("fp-a", "fp-b", "fp-c"):
                feed.records(project, 25)
            feed.reject(f"fp-{'abc'[turn % 3]}")
            if turn == 2:
                feed.garbage()
        if rotation == 0:
            rename_rotate(runner.log_path)
    runner.start(failpoints=f"{point}@{nth}")
    status = runner.wait_exit()
    assert status == -signal.SIGKILL, f"did not die at {point}@{nth} (status {status}):\n{runner.log_text()}"
    feed.assert_checkpoint_not_ahead()
    runner.start()
    feed.wait()
    feed.check()
    feed.records("fp-a", 10)  # and it goes on
    feed.wait()
    feed.check()


def test_a_fully_read_rotated_file_deleted_while_down_is_no_false_alarm(daemon):
    """Deleting a rotated log ingestd had read to its end, while it was down, loses
    nothing: the restart says so calmly, never 'lines are lost'."""
    ids = daemon.write("calm", 20)
    daemon.start()
    daemon.wait_loaded("calm", ids)
    rotated = daemon.log_path.with_name("ingest.log.1")
    os.rename(daemon.log_path, rotated)
    more = daemon.write("calm", 5)
    daemon.wait_loaded("calm", ids + more)
    assert daemon.stop() == 0
    rotated.unlink()
    daemon.start()
    wait_log(daemon, "was deleted while ingestd was down; all ")
    assert "lines after that point are lost" not in daemon.log_text()
    daemon.assert_exactly("calm", ids + more)


def test_a_rotated_file_deleted_before_it_was_read_is_reported_as_lost(daemon):
    ids = daemon.write("lost", 20)
    daemon.start()
    daemon.wait_loaded("lost", ids)
    rotated = daemon.log_path.with_name("ingest.log.1")
    os.rename(daemon.log_path, rotated)
    new = daemon.write("lost", 1)  # a new live log: once it is loaded, the rename was seen
    daemon.wait_loaded("lost", ids + new)
    assert daemon.stop() == 0
    saved = json.loads(daemon.checkpoint_path.read_text())
    for entry in saved["files"]:
        if entry["path"].endswith("ingest.log.1"):
            entry["offset"] = 0  # as if it had not been read at all
    daemon.checkpoint_path.write_text(json.dumps(saved))
    rotated.unlink()
    daemon.start()
    wait_log(daemon, "lines after that point are lost")
