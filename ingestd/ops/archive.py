"""The log archive: every rotated ingest log copied to S3, verified, chained (docs/archive.md).

A pass (every few seconds, in a thread of ingestd; or ``smalltable archive now``)
looks at the rotated files beside the live log, oldest first. A file nobody has
written to for :data:`SETTLE` seconds (nginx has reopened the live one) and not
archived yet is uploaded as the next segment of :mod:`.chain`, read back
(size and SHA-256 against the local file's), and only then given its manifest,
made the head, and recorded in ``STATE_DIR/archive.json`` by its fingerprint
(so the file is known again once logrotate renames or compresses it). A
failure stops the pass: segments are archived in order, or not at all.

With an archive configured, logrotate deletes nothing (its ``maxage`` is left
out, and its ``rotate`` count is too large to be reached): a pass deletes a
rotated file older than ``logrotate.keep_days`` only when its segment was
verified and the file is the one verified (same size, plain). So no rotated
file is ever deleted before its archive copy is verified.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..config import Config
from ..ingest.fingerprint import FINGERPRINT_BYTES, fingerprint_of, gzip_head, log_files
from ..support import s3
from ..support.durable import write_all_and_sync
from . import chain

log = logging.getLogger("ingestd.archive")

SETTLE = 2.0
"""A rotated file unchanged this long (seconds) is finished: nginx reopened the live log
within milliseconds of logrotate's USR1."""


@dataclass
class State:
    """What this host has archived: the chain's head and each archived file by fingerprint."""

    head: dict | None = None
    segments: dict[str, dict] = field(default_factory=dict)
    last_verified: float = 0.0
    chain_broken: str = ""
    last_error: str = ""


def state_path(config: Config) -> Path:
    return config.path("state_dir") / "archive.json"


def load_state(config: Config) -> State:
    """The saved state (an empty one before the first segment)."""
    try:
        return State(**json.loads(state_path(config).read_bytes()))
    except FileNotFoundError:
        return State()


def save_state(config: Config, state: State) -> None:
    """Write the state atomically and durably (temp file, fsync, rename)."""
    path = state_path(config)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all_and_sync(fd, json.dumps(asdict(state), indent=1).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextmanager
def locked(config: Config) -> Iterator[None]:
    """One pass at a time per home (the daemon's thread and ``archive now``)."""
    config.path("state_dir").mkdir(parents=True, exist_ok=True)
    with open(config.path("state_dir") / "archive.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Rotated:
    """A rotated log file as a pass sees it."""

    path: Path
    fingerprint: str | None
    st: os.stat_result


def rotated_files(config: Config) -> list[Rotated]:
    """The rotated ingest logs, oldest first, with their fingerprints (None: empty, or a
    .gz not readable yet; such a file is neither archived nor ever deleted)."""
    live = config.path("ingest_log")
    found = []
    for path in log_files(live):
        if path == live:
            continue
        try:
            st = path.stat()
            if path.name.endswith(".gz"):
                head = gzip_head(path, st)
                fp = fingerprint_of(head[0]) if head else None
            else:
                with path.open("rb") as f:
                    first = f.read(FINGERPRINT_BYTES)
                fp = fingerprint_of(first)
                if fp is None and first:  # a torn line alone (nginx died writing it): known by content
                    fp = "content-" + hashlib.sha256(first).hexdigest()[:32]
        except FileNotFoundError:
            continue
        found.append(Rotated(path, fp, st))
    return found


def digest(path: Path) -> tuple[int, str, int]:
    """The file's size, SHA-256 and line count; a .gz is read through (its CRC checked),
    so a half-written one raises instead of being archived."""
    sha, size, lines = hashlib.sha256(), 0, 0
    with path.open("rb") as f:
        while data := f.read(1 << 20):
            sha.update(data)
            size += len(data)
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            while data := f.read(1 << 20):
                lines += data.count(b"\n")
    else:
        with path.open("rb") as f:
            while data := f.read(1 << 20):
                lines += data.count(b"\n")
    return size, sha.hexdigest(), lines


class Archiver:
    """Passes over one home's rotated logs into one bucket."""

    def __init__(self, config: Config, bucket: s3.Bucket | None = None) -> None:
        self.config = config
        self.bucket = bucket or s3.bucket_from_url(config["archive"])

    def run_pass(self, now: float | None = None) -> list[str]:
        """Archive every settled, unarchived rotated file (oldest first), then delete the
        verified ones past ``logrotate.keep_days``; the segments archived. Raises S3Error
        when S3 fails, ChainBroken when the bucket's head is not ours (the state keeps
        either as ``last_error``)."""
        now = time.time() if now is None else now
        archived: list[str] = []
        with locked(self.config):
            state = load_state(self.config)
            try:
                self._check_head(state)
                for rotated in rotated_files(self.config):
                    if rotated.fingerprint is None or rotated.fingerprint in state.segments:
                        continue
                    if now - rotated.st.st_mtime < SETTLE:
                        break  # later files wait for this one: the chain keeps rotation order
                    archived.append(self._archive(state, rotated))
                state.last_error = ""
            except (s3.S3Error, chain.ChainBroken, OSError, EOFError, zlib.error) as exc:
                state.last_error = str(exc)
                raise
            finally:
                save_state(self.config, state)
            self._prune(state, now)
        return archived

    def _check_head(self, state: State) -> None:
        """The bucket's head must be the segment this host archived last. A head that is
        gone while this host's last manifest is there is put back; any other head (another
        writer on the prefix, objects replaced) stops archiving, rather than fork the
        chain, until someone looks: ChainBroken, and ``chain_broken`` says why."""
        theirs = s3.get_bytes(self.bucket, chain.HEAD)
        ours = chain.Manifest(**state.head).encode() if state.head else None
        last = chain.manifest_name(state.head["segment"]) if state.head else None
        if theirs is None and last is not None and s3.get_bytes(self.bucket, last) == ours:
            s3.put_bytes(self.bucket, chain.HEAD, ours)
            log.warning("%s was missing from the archive: put back (%s)", chain.HEAD, state.head["segment"])
            theirs = ours
        if theirs != ours:
            state.chain_broken = (
                f"{chain.HEAD} in the bucket is not the segment this host archived last "
                f"({state.head['segment'] if state.head else 'none yet'}): another host archives to "
                "this prefix, or objects were deleted or replaced; archiving stops until it is"
            )
            log.error("archive chain broken: %s", state.chain_broken)
            raise chain.ChainBroken(state.chain_broken)
        state.chain_broken = ""

    def _archive(self, state: State, rotated: Rotated) -> str:
        """Upload one file as the next segment and verify it; then its manifest and the head."""
        size, sha256, lines = digest(rotated.path)
        head = chain.Manifest(**state.head) if state.head else None
        seq = head.seq + 1 if head else 1
        when = max(rotated.st.st_mtime, head.time + 1e-6 if head else 0.0)
        name = chain.segment_name(seq, when, rotated.path.name.endswith(".gz"))
        self.bucket.put_file(name, rotated.path, "application/octet-stream")
        after = rotated.path.stat()
        if (after.st_size, after.st_mtime_ns) != (rotated.st.st_size, rotated.st.st_mtime_ns):
            raise OSError(f"{rotated.path} changed while it was uploaded: archived again at the next pass")
        if s3.sha256_of(self.bucket, name) != (size, sha256):
            raise s3.S3Error(f"verify {name}: what S3 holds differs from {rotated.path}")
        manifest = chain.Manifest(
            seq,
            name,
            size,
            sha256,
            when,
            head.segment if head else None,
            head.sha256 if head else None,
            lines,
        )
        body = manifest.encode()
        for target in (chain.manifest_name(name), chain.HEAD):
            s3.put_bytes(self.bucket, target, body)
            if s3.get_bytes(self.bucket, target) != body:
                raise s3.S3Error(f"verify {target}: what S3 holds differs from what was written")
        state.head = asdict(manifest)
        state.segments[rotated.fingerprint] = {"segment": name, "size": size, "sha256": sha256}
        state.last_verified = time.time()
        save_state(self.config, state)
        log.info("archived %s as %s (%d bytes, %d lines, verified)", rotated.path.name, name, size, lines)
        return name

    def _prune(self, state: State, now: float) -> None:
        """Delete rotated files past ``logrotate.keep_days`` whose verified copy is theirs."""
        keep = self.config["logrotate.keep_days"] * 86400
        for rotated in rotated_files(self.config):
            known = state.segments.get(rotated.fingerprint or "")
            if known is None or now - rotated.st.st_mtime < keep:
                continue
            same = rotated.path.name.endswith(".gz") == known["segment"].endswith(".gz")
            if same and rotated.st.st_size == known["size"]:
                rotated.path.unlink(missing_ok=True)
                log.info(
                    "deleted %s: past logrotate.keep_days, archived as %s", rotated.path, known["segment"]
                )


@dataclass(frozen=True)
class Status:
    """The archive as ``archive status`` and the metrics show it."""

    archive: str
    segments_archived: int
    segments_waiting: int
    oldest_unarchived_age_seconds: float
    last_verified: float
    head: str | None
    chain_broken: str
    last_error: str


def status(config: Config, now: float | None = None) -> Status:
    """The archive's figures from disk alone (no S3 call): a stuck archiver still shows."""
    now = time.time() if now is None else now
    state = load_state(config)
    rotated = rotated_files(config) if config["archive"] else []
    waiting = [r for r in rotated if r.fingerprint and r.fingerprint not in state.segments]
    oldest = min((r.st.st_mtime for r in waiting), default=now)
    return Status(
        config["archive"],
        len(state.segments),
        len(waiting),
        max(0.0, now - oldest),
        state.last_verified,
        state.head["segment"] if state.head else None,
        state.chain_broken,
        state.last_error,
    )


class ArchiveScrape(Collector):
    """The archive's metrics, computed from disk at each scrape (all 0 without an archive:
    nothing waits for one)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = status(self.config)
        yield GaugeMetricFamily(
            "smalltable_archive_segments_waiting",
            "Rotated log files not yet archived and verified.",
            value=figures.segments_waiting,
        )
        yield GaugeMetricFamily(
            "smalltable_archive_oldest_unarchived_age_seconds",
            "How long ago the oldest unarchived rotated file was last written; 0 when none waits.",
            value=figures.oldest_unarchived_age_seconds,
        )
        yield GaugeMetricFamily(
            "smalltable_archive_last_verified_timestamp_seconds",
            "When a segment was last uploaded and verified; 0 before the first.",
            value=figures.last_verified,
        )
        yield GaugeMetricFamily(
            "smalltable_archive_chain_broken",
            "1 when the bucket's head is not the segment this host archived last.",
            value=1 if figures.chain_broken else 0,
        )
        yield GaugeMetricFamily(
            "smalltable_archive_failing",
            "1 while the last pass failed (S3 down, refused).",
            value=1 if figures.last_error else 0,
        )


def start(config: Config, stopping: threading.Event) -> threading.Thread | None:
    """The archiver's thread for ingestd (None when no archive is configured): a pass
    every ``archive_delay`` / 6 seconds (at most 10), so each rotated file is archived
    well within ``archive_delay`` after rotation while S3 answers."""
    if not config["archive"]:
        return None
    archiver = Archiver(config)
    interval = min(10.0, max(0.5, config["archive_delay"] / 6))

    def loop() -> None:
        failing = False
        while not stopping.is_set():
            try:
                archiver.run_pass()
                if failing:
                    log.info("archiving again")
                failing = False
            except (s3.S3Error, chain.ChainBroken, OSError, EOFError, zlib.error) as exc:
                if not failing:
                    log.error(
                        "cannot archive to %s: %s; retrying every %.1fs", config["archive"], exc, interval
                    )
                failing = True
            stopping.wait(interval)

    thread = threading.Thread(target=loop, name="archive", daemon=True)
    thread.start()
    return thread
