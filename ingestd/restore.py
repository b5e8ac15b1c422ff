"""``smalltable restore``: rebuild a lost host in a new home from the archive's chain.

It walks the chain (:mod:`ingestd.ops.chain`) oldest first, verifying each
segment (size and SHA-256 against its manifest, each manifest against the one
before) as it downloads it into the new home's log directory, with the time it
was last written, so the rotated files are in their original order. Then the
normal loader (:class:`ingestd.daemon.Daemon`, one pass) loads them as ingestd
would have: databases, rejects, settings, keys and the maps nginx reads, and a
checkpoint at the end of every file. ``smalltable up`` (or ingestd) in that home
then continues with whatever the live log holds, and its archiver continues the
chain (``archive.json`` names the restored head). At the first hole or corrupt
segment nothing is loaded and :class:`ChainBroken` names it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Config
from .daemon import Daemon
from .ops import archive, chain
from .support import s3


@dataclass
class Restored:
    """What a restore did."""

    segments: int = 0
    bytes: int = 0
    lines: int = 0
    download_seconds: float = 0.0
    load_seconds: float = 0.0


def download(
    config: Config, bucket: s3.Bucket, advance: Callable[[int], None] = lambda n: None
) -> tuple[Restored, list[chain.Manifest]]:
    """Every segment, verified, into the log directory (``advance``: bytes done); raises
    ChainBroken at the first missing or corrupt segment, S3Error when S3 fails, and then
    leaves no segment behind."""
    logs = config.path("log_dir")
    logs.mkdir(parents=True, exist_ok=True)
    spool = logs / "restore.tmp"
    spool.mkdir(exist_ok=True)
    done, manifests = Restored(), []
    started = time.monotonic()
    try:
        for manifest, _ in chain.walk(bucket, spool):
            manifests.append(manifest)
            done.segments += 1
            done.bytes += manifest.size
            done.lines += manifest.lines
            advance(manifest.size)
    except BaseException:
        shutil.rmtree(spool)  # a broken chain leaves the new home as it found it
        raise
    for manifest in manifests:  # the whole chain is verified: the segments become rotated logs
        suffix = ".gz" if manifest.segment.endswith(".gz") else ""
        target = logs / f"{config.path('ingest_log').name}.archived-{manifest.seq:010d}{suffix}"
        os.replace(spool / Path(manifest.segment).name, target)
        os.utime(target, (manifest.time, manifest.time))
    spool.rmdir()
    done.download_seconds = time.monotonic() - started
    return done, manifests


def load(config: Config, total_lines: int, advance: Callable[[int], None] = lambda n: None) -> int:
    """Load every log file in the home with the daemon's own loader, once, through to a
    checkpoint at each file's end (``advance``: lines loaded); the lines loaded."""
    daemon = Daemon(config)
    failed: list[BaseException] = []

    def step() -> None:
        try:
            daemon.step()
        except BaseException as exc:  # handed to the caller below, in its own thread
            failed.append(exc)

    worker = threading.Thread(target=step, name="restore-load")
    worker.start()
    shown = 0
    while worker.is_alive():
        worker.join(0.2)
        advance(min(total_lines, daemon.loaded_lines) - shown)
        shown = min(total_lines, daemon.loaded_lines)
    daemon.close()
    if failed:
        raise failed[0]
    return daemon.loaded_lines


def remember(config: Config, manifests: list[chain.Manifest]) -> None:
    """Record the restored segments as archived, so this home's archiver continues the chain."""
    state = archive.State()
    by_name = {m.seq: m for m in manifests}
    for rotated in archive.rotated_files(config):
        seq = rotated.path.name.rsplit("-", 1)[-1].removesuffix(".gz")
        manifest = by_name.get(int(seq)) if seq.isdigit() else None
        if manifest is not None and rotated.fingerprint:
            state.segments[rotated.fingerprint] = {
                "segment": manifest.segment,
                "size": manifest.size,
                "sha256": manifest.sha256,
            }
    if manifests:
        state.head = asdict(manifests[-1])
        state.last_verified = time.time()
    archive.save_state(config, state)
