"""The ingest loop: tail → parse → records → store → checkpoint, woken by watchdog.

Each pass reads every whole line not yet loaded (in batches of
``ingest.batch_lines``), loads each project's share in one transaction, appends
unparsable lines to the dead-letter file, and only then saves the checkpoint.
A crash anywhere re-reads from the last checkpoint; loading is idempotent, so
nothing is stored twice. A backlog over more projects than it keeps open is
loaded in passes of that many projects, as replay loads a log (:meth:`Daemon.catch_up`).

If loading fails (disk full, read-only data directory), the loop says why
(once, then a reminder every few minutes), keeps the batch it could not load and
retries it every rescan interval — not at every file event — until it goes in: it
keeps its place, and its open files (a rotated file deleted meanwhile is still
read to its end), and resumes by itself. nginx keeps accepting meanwhile; the
log is the buffer. A failure while reading rewinds to the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time

from .config import Config
from .ingest import backlog, checkpoint, deadletter
from .ingest.checkpoint import FilePosition
from .ingest.logline import LineError, parse_line
from .ingest.registry import Outcome, for_config
from .ingest.routing import route
from .ingest.shares import Share
from .ingest.tail import Line, Tailer
from .ingest.watch import Watch
from .model.request import Request
from .ops import archive, events
from .store import capacity, quota, retention
from .store.holding import Holding
from .store.keys import KeyStore
from .store.pool import for_config as store_for_config
from .store.schema import read_settings
from .support import failpoints, filesystem, gcpause, heap, sdnotify

log = logging.getLogger("ingestd")


REPEAT_ERROR_AFTER = 300.0
"""While loading keeps failing, the error is logged again this often (seconds)."""


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
        self.deadletters = deadletter.DeadLetters(self.deadletter_path)
        self.store = store_for_config(config)
        self.holding = Holding(config.path("data_dir"))
        self.keys = KeyStore(self.state_dir, config.path("nginx_pid"))
        self.keys.save()  # the maps nginx reads, if they are missing
        self.registry = for_config(config, self.store, self.holding, self.keys)
        self.quota_map = quota.QuotaMap(self.state_dir / "quota.map", config.path("nginx_pid"))
        self.capacity = capacity.Capacity(
            config.path("data_dir"),
            self.state_dir,
            config["projects.max_projects"],
            config["projects.max_data_mb"],
        )
        self.capacity.update(force=True)
        self._expired_at: float | None = None
        self.tailer = self._new_tailer()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.loaded_lines = 0
        self._unloaded: list[Line] = []
        """A batch handed out by the tailer and not loaded yet: retried as it is."""
        self._failures = 0
        self._error_logged_at = 0.0
        self.watchdog = sdnotify.Watchdog()

    def _new_tailer(self) -> Tailer:
        """A tailer positioned at the last checkpoint (or at the start of every file)."""
        try:
            positions = checkpoint.load(self.checkpoint_path)
        except checkpoint.CheckpointError as exc:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = self.checkpoint_path.with_name(f"checkpoint.corrupt-{stamp}.json")
            for n in range(1, 1000):  # never replace the one kept from an earlier failure
                if not aside.exists():
                    break
                aside = self.checkpoint_path.with_name(f"checkpoint.corrupt-{stamp}-{n}.json")
            self.checkpoint_path.rename(aside)
            log.error(
                "%s; kept it as %s and re-reading every log from its start: "
                "lines already loaded are recognised by request id and skipped",
                exc,
                aside,
            )
            positions = None
        self.committed = positions or []
        return Tailer(
            self.live,
            max_line_bytes(self.config["nginx.max_body_bytes"]),
            positions,
            close_rotated_after=self.config["ingest.close_rotated_after"],
        )

    def close(self) -> None:
        """Close the log files, the project databases and the holding area."""
        self.tailer.close()
        self.store.close()
        self.holding.close()

    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint and return."""
        self.stopping.set()
        self.wake.set()

    def load(self, lines: list[Line]) -> None:
        """Parse, load and checkpoint one batch of lines.

        Records first, then the dead letters, then the checkpoint: a batch that
        fails anywhere is retried whole, and neither the databases nor the
        dead-letter file take anything twice.
        """
        started = time.monotonic()
        self._load_lines(lines)
        self._checkpoint(self.tailer.positions(), len(lines), started)

    def _load_lines(self, lines: list[Line]) -> None:
        """Parse and load ``lines``, the dead letters among them into the dead-letter file."""
        requests: list[Request] = []
        dead: list[tuple[Line, str, str]] = []
        for line in lines:
            if line.overlong:
                dead.append((line, f"line longer than {self.tailer.max_line} bytes", "overlong"))
                continue
            try:
                requests.append(parse_line(line.data))
            except LineError as exc:
                dead.append((line, str(exc), "unparsable"))
        outcomes = self.registry.load(requests)
        self._report(outcomes)
        if dead:
            added = self.deadletters.append([(line, error) for line, error, _ in dead])
            for line, error, reason in dead:
                if (line.fingerprint, line.start) in added:
                    events.dead_letter(line, error, reason)
        self.loaded_lines += len(lines)

    def _checkpoint(self, positions: list[FilePosition], lines: int, started: float) -> None:
        """Save ``positions``: everything before them is loaded."""
        failpoints.hit("load.before_checkpoint")
        checkpoint.save(self.checkpoint_path, positions)
        self.committed = positions
        events.checkpointed(lines, time.monotonic() - started)

    def catch_up(self, size: int, projects: set[str | None]) -> int:
        """Load the backlog after the checkpoint as replay loads a log: in passes of at
        most ``ingest.open_databases`` projects (:meth:`Share.passes`), so that each
        project's database is opened once for the whole backlog, not once per batch.

        The tailer has handed out ``size`` bytes of lines naming ``projects`` already
        (a batch as wide as ``ingest.many_projects_batch_bytes``); it reads on, keeping
        only the names, to ``ingest.catch_up_bytes``. Each pass then reads the backlog
        again from the checkpoint with a tailer of its own, up to where this one
        stopped, and loads its projects' lines in log order (the first pass also every
        line no pass names: dead letters, say). The checkpoint moves once, past the
        whole backlog: a crash or a failure on the way loads it all again, and loading
        is idempotent by request id, dead letters by their place in the log. Returns the
        lines loaded.
        """
        started = time.monotonic()
        most_lines, most_bytes = self.config["ingest.batch_lines"], self.config["ingest.batch_bytes"]
        while size < self.config["ingest.catch_up_bytes"] and not self.stopping.is_set():
            more = self.tailer.read(most_lines, most_bytes)
            if not more:
                break
            size += sum(len(line.data) for line in more)
            projects.update(route(line.data) for line in more)
        end = self.tailer.positions()
        names = frozenset(name for name in projects if name is not None)
        shares = Share(names, rest=names).passes(self.store.open_databases)
        log.info("catching up: %d MiB of lines, %d projects, %d passes", size >> 20, len(names), len(shares))
        start = [p for p in self.committed if p.fingerprint in self.tailer.files]  # not those said gone
        lines = 0
        for share in shares:
            reader = Tailer(self.live, self.tailer.max_line, start, self.tailer.close_rotated_after)
            try:
                reader.scan()
                for gone in reader.vanished:  # deleted since the planning read: said, as at a start
                    events.vanished(gone.path, gone.offset, gone.saved_size)
                for batch in backlog.batches(reader, share, end, most_lines, most_bytes):
                    if self.stopping.is_set():  # the checkpoint stays before the backlog
                        return lines
                    self._load_lines(batch)
                    lines += len(batch)
                    self.watchdog.ping()
            finally:
                reader.close()
        self._checkpoint(end, lines, started)
        return lines

    def _report(self, outcomes: dict[str, Outcome], recount_held: bool = False) -> None:
        """Tell the metrics what a batch did, and nginx how full its projects are now; the
        held posts too when any were held or released."""
        events.batch_loaded(outcomes, self.config["metrics.max_projects"])
        warning = self.config["projects.quota_warning"]
        self.quota_map.update(
            {
                project: quota.level(o.settings.used(o.database_bytes), o.settings.quota_mb, warning)
                for project, o in outcomes.items()
                if o.settings is not None
            }
        )
        if recount_held or any(o.held or o.released for o in outcomes.values()):
            events.held_now(self.holding.waiting())
        self.capacity.update({p: o.database_bytes for p, o in outcomes.items() if o.settings is not None})

    def expire(self) -> None:
        """One retention pass over every project; then load what waits where room was made.

        A database the pass opened is closed after it, so idle projects do not keep the
        memory of ``ingest.open_databases`` open databases until posts come (12 MiB with
        2,000 idle projects, bench/idle_projects.py), and what the openings left in
        malloc's heap is given back: an idle project costs the daemon nothing between passes.
        """
        outcomes: dict[str, Outcome] = {}
        for project in self.store.projects():
            was_open = self.store.is_open(project)
            db = self.store.project(project)
            settings = read_settings(db.conn) or self.registry.defaults
            gone = retention.expire(db.conn, db.path, settings.retention_days, retention.now())
            events.expired(project, gone, settings)
            outcomes[project] = self.registry.release(project)
            if not was_open:
                self.store.close_project(project)
            self.watchdog.ping()
        self._report(outcomes, recount_held=True)
        heap.trim()

    def step(self) -> int:
        """Load everything written so far; return the number of lines loaded."""
        self.tailer.scan()
        for gone in self.tailer.vanished:
            events.vanished(gone.path, gone.offset, gone.saved_size)
        self.tailer.vanished.clear()
        total = 0
        while not self.stopping.is_set():
            lines, backlog_start = (self._unloaded, None) if self._unloaded else self._read_batch()
            if not lines:
                break
            if backlog_start is not None:  # a backlog over many projects: read again in passes
                lines = []
                with gcpause.paused():
                    total += self.catch_up(*backlog_start)
                continue
            self._unloaded = lines
            with gcpause.paused():
                self.load(lines)
            self._unloaded = []
            total += len(lines)
            self.watchdog.ping()
        events.files_followed(self.tailer)
        return total

    def _read_batch(self) -> tuple[list[Line], tuple[int, set[str | None]] | None]:
        """The next batch: ``ingest.batch_lines`` lines or ``ingest.batch_bytes`` bytes of
        them; and, when it is the start of a backlog to load in passes (:meth:`catch_up`),
        its size and the projects it names (else None).

        A batch that stopped at its bytes (more lines wait) and names more projects than
        ``ingest.open_databases`` reads on, up to ``ingest.many_projects_batch_bytes``:
        every project a batch names costs an opening of its database, a commit and a
        sync, so with hundreds of projects posting big bodies at once a batch of 4 MiB
        (about a line per project) spent most of its time opening and closing them. One
        that reaches that bound and still names too many is the start of a backlog.
        """
        most_lines, most_bytes = self.config["ingest.batch_lines"], self.config["ingest.batch_bytes"]
        wide = self.config["ingest.many_projects_batch_bytes"]
        lines = self.tailer.read(most_lines, most_bytes)
        size = sum(len(line.data) for line in lines)
        if size < most_bytes or size >= wide:
            return lines, None  # all that waits (or batch_lines of it), or as much as it may be
        projects = {route(line.data) for line in lines}
        while size < wide and len(projects) > self.store.open_databases:
            more = self.tailer.read(most_lines - len(lines), min(most_bytes, wide - size))
            if not more:
                break
            lines += more
            size += sum(len(line.data) for line in more)
            projects.update(route(line.data) for line in more)
        too_wide = size >= wide and len(projects) > self.store.open_databases
        return lines, (size, projects) if too_wide and self.config["ingest.catch_up_bytes"] > size else None

    def _recover(self, exc: Exception) -> None:
        """A step failed: say why (not at every retry) and get ready to retry.

        A batch that failed to load is kept and retried as it is, with the
        tailer and its open files untouched: nothing after the batch has been
        handed out, so the checkpoint saved once it loads is right. A failure
        while reading may have lost lines the tailer handed out: the tailer
        starts again from the last checkpoint.
        """
        events.load_failed()
        self._failures += 1
        now = time.monotonic()
        if self._failures == 1 or now - self._error_logged_at >= REPEAT_ERROR_AFTER:
            self._error_logged_at = now
            log.error(
                "cannot load into %s%s: %s; holding at the last checkpoint and retrying every %.1fs "
                "(nginx keeps accepting, nothing is lost)%s",
                self.config.path("data_dir"),
                filesystem.trouble(self.config.path("data_dir")),
                exc,
                self.config["ingest.rescan_interval"],
                f"; {self._failures} attempts so far" if self._failures > 1 else "",
            )
        self.store.close()
        self.holding.close()
        if not self._unloaded:
            self.tailer.close()
            self.tailer = self._new_tailer()

    def run(self) -> None:
        """Follow the log until :meth:`stop` (or SIGTERM/SIGINT in the main thread).

        Idle, the loop sleeps until a file event (or ``ingest.rescan_interval``).
        Woken by an event, or having loaded lines, it stops watching and looks
        again every ``ingest.poll_interval`` while lines keep coming: see
        :mod:`ingestd.ingest.watch` for why, and why nothing is missed.
        """
        watch = Watch(self.live.parent, self.wake, self.config["ingest.rescan_interval"])
        watch.resume()
        failing = False
        log.info("following %s into %s", self.live, self.config.path("data_dir"))
        sdnotify.notify(f"READY=1\nSTATUS=following {self.live}")
        try:
            while not self.stopping.is_set():
                self.watchdog.ping()
                self.wake.clear()
                loaded = 0
                try:
                    if self._expired_at is None or (
                        time.monotonic() - self._expired_at >= self.config["projects.retention_interval"]
                    ):
                        self.expire()
                        self._expired_at = time.monotonic()
                    loaded = self.step()
                    if failing:
                        log.info("loading again after %d failed attempts", self._failures)
                        failing, self._failures = False, 0
                except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
                    failing = True
                    self._recover(exc)
                self._rest(watch, loaded, failing)
        finally:
            sdnotify.notify("STOPPING=1")
            watch.stop()
            self.close()
            log.info("stopped after loading %d lines", self.loaded_lines)

    def _rest(self, watch: Watch, loaded: int, failing: bool) -> None:
        """Wait until the next look at the logs; watch them only while idle."""
        if failing or loaded:
            watch.pause()
            events.watching(False)
            # failing: retry at the interval; lines coming: look again soon; never at every write
            self.stopping.wait(self.config["ingest.rescan_interval" if failing else "ingest.poll_interval"])
            return
        if not watch.active and watch.resume():
            events.watching(True)
            return  # quiet again: look once more, for lines written while nobody watched
        events.watching(watch.active)
        if self.wake.wait(self.config["ingest.rescan_interval"]):
            watch.pause()  # a change: lines are coming, and the next look reads them
            events.watching(False)


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM and SIGINT stop the loop cleanly after the current batch."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())


def lower_priority(nice: int) -> None:
    """Run at CPU priority ``nice`` or lower, before any thread starts (Linux sets a
    thread's priority; new threads inherit it). Raising priority needs privileges, so
    a higher nice already set is kept."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def run_daemon(config: Config) -> None:
    """What ``smalltable ingest`` runs: metrics server, signals, loop."""
    from prometheus_client import REGISTRY, start_http_server

    from .ops import replicate
    from .ops.blobmetrics import BlobFigures
    from .ops.metrics import ScrapeTime

    lower_priority(config["ingest.nice"])
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
    REGISTRY.register(
        ScrapeTime(
            daemon.live,
            lambda: daemon.committed,
            {"logs": config.path("log_dir"), "data": config.path("data_dir")},
        )
    )
    REGISTRY.register(BlobFigures(config.path("state_dir") / "blobs.json"))
    replicate.run_in_background(config, daemon.stopping)  # blobs (issue 23): copies kept on min_copies stores
    REGISTRY.register(archive.ArchiveScrape(config))
    archive.start(config, daemon.stopping)
    install_signal_handlers(daemon)
    daemon.run()
