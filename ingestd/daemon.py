"""The ingest loop: tail → parse → records → store → checkpoint, woken by watchdog.

Each pass reads every whole line not yet loaded (in batches of
``ingest.batch_lines``), loads each project's share in one transaction, appends
unparsable lines to the dead-letter file, and only then saves the checkpoint.
A crash anywhere re-reads from the last checkpoint; loading is idempotent, so
nothing is stored twice.

If loading fails (disk full, read-only data directory), the loop says why,
rewinds to the last checkpoint and retries every rescan interval: it keeps its
place and resumes by itself. nginx keeps accepting meanwhile; the log is the
buffer.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections import defaultdict

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from . import checkpoint, deadletter, failpoints
from . import metrics as m
from .config import Config
from .logline import LineError, parse_line
from .records import Record, build
from .store import Store
from .tail import Line, Tailer

log = logging.getLogger("ingestd")


class _Wake(FileSystemEventHandler):
    """Any change in the log directory wakes the loop."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.event.set()


def max_line_bytes(max_body_bytes: int) -> int:
    """The longest line nginx can write: escape=json turns a byte into at most 6."""
    return max_body_bytes * 6 + 16384


class Daemon:
    """ingestd: follows the ingest log and loads it into the project databases."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.live = config.path("ingest_log")
        self.state_dir = config.path("state_dir")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.live.parent.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.state_dir / "checkpoint.json"
        self.deadletter_path = self.state_dir / "deadletter.ndjson"
        self.store = Store(
            config.path("data_dir"), config["ingest.max_columns"], config["ingest.open_databases"]
        )
        self.tailer = self._new_tailer()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.loaded_lines = 0
        self._newest_loaded = 0.0

    def _new_tailer(self) -> Tailer:
        """A tailer positioned at the last checkpoint (or at the start of every file)."""
        try:
            positions = checkpoint.load(self.checkpoint_path)
        except checkpoint.CheckpointError as exc:
            aside = self.checkpoint_path.with_name(f"checkpoint.corrupt-{int(time.time())}.json")
            self.checkpoint_path.rename(aside)
            log.error(
                "%s; kept it as %s and re-reading every log from its start: "
                "lines already loaded are recognised by request id and skipped",
                exc,
                aside,
            )
            positions = None
        return Tailer(
            self.live,
            max_line_bytes(self.config["nginx.max_body_bytes"]),
            positions,
            close_rotated_after=self.config["ingest.close_rotated_after"],
        )

    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint and return."""
        self.stopping.set()
        self.wake.set()

    def load(self, lines: list[Line]) -> None:
        """Parse, load and checkpoint one batch of lines."""
        started = time.monotonic()
        by_project: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        dead: list[tuple[Line, str]] = []
        newest = 0.0
        for line in lines:
            if line.overlong:
                dead.append((line, f"line longer than {self.tailer.max_line} bytes"))
                m.DEAD_LETTERS.labels("overlong").inc()
                continue
            try:
                request = parse_line(line.data)
            except LineError as exc:
                dead.append((line, str(exc)))
                m.DEAD_LETTERS.labels("unparsable").inc()
                continue
            newest = max(newest, request.received)
            item = build(request)
            records, rejects = by_project[request.project]
            (records if isinstance(item, Record) else rejects).append(item)
        if dead:
            deadletter.append(self.deadletter_path, dead)
            for line, error in dead:
                log.warning("dead letter: %s at bytes %d-%d: %s", line.path, line.start, line.end, error)
        for number, (project, (records, rejects)) in enumerate(by_project.items()):
            if number == 1:
                failpoints.hit("load.after_first_project")
            result = self.store.write(project, records, rejects)
            m.RECORDS_STORED.labels(project).inc(result.stored)
            m.RECORDS_REJECTED.labels(project).inc(result.rejected)
            m.DUPLICATES.inc(result.duplicates)
            if result.columns_added:
                log.info("%s: new columns %s", project, ", ".join(result.columns_added))
        failpoints.hit("load.before_checkpoint")
        checkpoint.save(self.checkpoint_path, self.tailer.positions())
        m.LAST_CHECKPOINT.set_to_current_time()
        m.LINES_READ.inc(len(lines))
        m.BATCH_LINES.observe(len(lines))
        m.BATCH_SECONDS.observe(time.monotonic() - started)
        self.loaded_lines += len(lines)
        self._newest_loaded = newest

    def step(self) -> int:
        """Load everything written so far; return the number of lines loaded."""
        self.tailer.scan()
        for gone in self.tailer.vanished:
            log.error(
                "%s disappeared after %d bytes were loaded, before it was read to its end: "
                "lines after that point are lost (was it deleted or truncated by hand?)",
                gone.path,
                gone.offset,
            )
        self.tailer.vanished.clear()
        total = 0
        self._newest_loaded = 0.0
        while not self.stopping.is_set():
            lines = self.tailer.read(self.config["ingest.batch_lines"])
            if not lines:
                break
            self.load(lines)
            total += len(lines)
            pending = self.tailer.pending_bytes()
            m.LAG_BYTES.set(pending)
            m.LAG_SECONDS.set(max(0.0, time.time() - self._newest_loaded) if pending else 0.0)
        m.LAG_BYTES.set(self.tailer.pending_bytes())
        m.LAG_SECONDS.set(0.0)
        m.FILES_FOLLOWED.set(len(self.tailer.files))
        return total

    def _recover(self, exc: Exception) -> None:
        """A batch failed to load: rewind to the checkpoint and say why."""
        m.LOAD_ERRORS.inc()
        log.error(
            "cannot load into %s: %s; holding at the last checkpoint and retrying every %.1fs "
            "(nginx keeps accepting, nothing is lost)",
            self.config.path("data_dir"),
            exc,
            self.config["ingest.rescan_interval"],
        )
        self.tailer.close()
        self.store.close()
        self.tailer = self._new_tailer()

    def _watch(self) -> Observer | None:
        """Wake on file events in the log directory; without them, rescanning still works."""
        observer = Observer()
        try:
            observer.schedule(_Wake(self.wake), str(self.live.parent), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning(
                "cannot watch %s for changes (%s); rescanning every %.1fs instead",
                self.live.parent,
                exc,
                self.config["ingest.rescan_interval"],
            )
            return None
        return observer

    def run(self) -> None:
        """Follow the log until :meth:`stop` (or SIGTERM/SIGINT in the main thread)."""
        observer = self._watch()
        failing = False
        log.info("following %s into %s", self.live, self.config.path("data_dir"))
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                try:
                    self.step()
                    if failing:
                        log.info("loading again: the data directory accepts writes")
                        failing = False
                except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
                    failing = True
                    self._recover(exc)
                self.wake.wait(self.config["ingest.rescan_interval"])
        finally:
            if observer is not None:
                observer.stop()
                observer.join()
            self.tailer.close()
            self.store.close()
            log.info("stopped after loading %d lines", self.loaded_lines)


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM and SIGINT stop the loop cleanly after the current batch."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())


def run_daemon(config: Config) -> None:
    """What ``smalltable ingest`` runs: metrics server, signals, loop."""
    from prometheus_client import start_http_server

    port = config["metrics.port"]
    if port:
        try:
            start_http_server(port, addr="127.0.0.1")
        except OSError as exc:
            raise SystemExit(
                f"ingestd: cannot serve metrics on 127.0.0.1:{port}: {exc.strerror} "
                f"(set metrics.port in {config.source}, or --metrics-port)"
            ) from None
    daemon = Daemon(config)
    install_signal_handlers(daemon)
    daemon.run()
