"""ingestd's Prometheus metrics: names, help texts and labels in one place (docs/metrics.md).

Most metrics are updated by the loop as it loads. The lag, the live log's age and
the free disk space are computed when Prometheus scrapes (:class:`ScrapeTime`),
from the committed checkpoint and the files themselves, so a daemon that is
alive but stuck still reports the truth.

The ``project`` label takes at most ``metrics.max_projects`` values
(:func:`project_label`); ``reason`` and ``dir`` are fixed sets. Nothing else a
user controls becomes a label.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import __version__
from ..ingest.checkpoint import FilePosition
from ..store.holding import CODES as HOLDING_CODES
from .lag import measure

BUILD_INFO = Info("smalltable_ingestd_build", "ingestd's version.")
BUILD_INFO.info({"version": __version__})

LINES_READ = Counter("smalltable_ingest_lines_read_total", "Whole log lines loaded.")
RECORDS_STORED = Counter("smalltable_records_stored_total", "Requests stored as records.", ["project"])
RECORDS_REJECTED = Counter(
    "smalltable_records_rejected_total",
    "Requests stored in a project's rejects table, by kind of reason.",
    ["project", "reason"],
)
PROJECT_DATABASE_BYTES = Gauge(
    "smalltable_project_database_bytes", "Size of PROJECT.db with its WAL.", ["project"]
)
PROJECT_QUOTA_RATIO = Gauge(
    "smalltable_project_quota_ratio", "Database bytes over the project's quota; 1 is full.", ["project"]
)
PROJECT_LAST_POST = Gauge(
    "smalltable_project_last_post_timestamp_seconds",
    "When the newest loaded record was received.",
    ["project"],
)
DUPLICATES = Counter(
    "smalltable_ingest_duplicate_lines_total",
    "Lines read again after a restart whose request was already loaded (skipped).",
)
DEAD_LETTERS = Counter(
    "smalltable_ingest_dead_letter_lines_total", "Log lines that could not be parsed.", ["reason"]
)
LOAD_ERRORS = Counter(
    "smalltable_ingest_load_errors_total", "Batches that failed to load (disk full, read-only...)."
)
ROTATIONS = Counter("smalltable_ingest_rotations_total", "Rotations of the live log seen.")
TRUNCATIONS = Counter("smalltable_ingest_truncations_total", "Log files truncated in place (copytruncate).")
WATCHING = Gauge(
    "smalltable_ingest_watching",
    "1 while ingestd waits for file events; 0 while it polls (lines keep coming).",
)
FILES_FOLLOWED = Gauge("smalltable_ingest_files_followed", "Log files followed, live and rotated.")
LAST_CHECKPOINT = Gauge(
    "smalltable_ingest_checkpoint_timestamp_seconds", "When the checkpoint was last saved."
)
BATCH_LINES = Histogram(
    "smalltable_ingest_batch_lines",
    "Lines per loaded batch.",
    buckets=(1, 10, 100, 1000, 10000, 100000),
)
BATCH_SECONDS = Histogram(
    "smalltable_ingest_batch_duration_seconds", "Time to parse, load and checkpoint one batch."
)

HELD = Gauge(
    "smalltable_held_requests",
    "Accepted posts waiting in the holding area, by why they wait (no_project, over_quota).",
    ["code"],
)
RELEASED = Counter(
    "smalltable_released_requests_total", "Posts loaded from the holding area into their project."
)
SETTINGS_CHANGES = Counter(
    "smalltable_settings_changes_total",
    "POST /_project requests, by result (applied, refused).",
    ["result"],
)
EXPIRED = Counter(
    "smalltable_expired_rows_total",
    "Records and rejects deleted by retention, by table.",
    ["table"],
)

for _code in HOLDING_CODES:
    HELD.labels(_code)
for _result in ("applied", "refused"):
    SETTINGS_CHANGES.labels(_result)
for _table in ("records", "rejects"):
    EXPIRED.labels(_table)

OTHER_PROJECTS = "_other"
_labelled: set[str] = set()


def project_label(project: str, limit: int) -> str:
    """``project`` itself for the first ``limit`` projects seen, then ``_other``."""
    if project in _labelled:
        return project
    if len(_labelled) < limit:
        _labelled.add(project)
        return project
    return OTHER_PROJECTS


_FIRST_TIME = re.compile(rb'"t":([0-9.]+)')


def _live_log_started(live: Path) -> float | None:
    """The time of the live log's first line: when it was last rotated (or created)."""
    try:
        with open(live, "rb") as f:
            match = _FIRST_TIME.search(f.read(128))
    except OSError:
        return None
    return float(match.group(1)) if match else None


class ScrapeTime(Collector):
    """Lag, the live log's start and free disk space, computed at each scrape."""

    def __init__(self, live: Path, positions: Callable[[], list[FilePosition]], dirs: dict[str, Path]):
        self.live = live
        self.positions = positions
        self.dirs = dirs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = measure(self.live, self.positions(), time.time())
        yield GaugeMetricFamily(
            "smalltable_ingest_lag_seconds",
            "Age of the oldest accepted request not yet loaded; 0 when caught up.",
            value=lag.seconds,
        )
        yield GaugeMetricFamily(
            "smalltable_ingest_lag_bytes", "Log bytes written and not yet loaded.", value=lag.bytes
        )
        started = _live_log_started(self.live)
        if started is not None:
            yield GaugeMetricFamily(
                "smalltable_ingest_live_log_started_timestamp_seconds",
                "When the first line of the live log was written: the last rotation.",
                value=started,
            )
        avail = GaugeMetricFamily(
            "smalltable_filesystem_avail_bytes",
            "Free space for the log and data directories.",
            labels=["dir"],
        )
        size = GaugeMetricFamily(
            "smalltable_filesystem_size_bytes", "Size of their filesystems.", labels=["dir"]
        )
        for name, path in self.dirs.items():
            try:
                st = os.statvfs(path)
            except OSError:
                continue
            avail.add_metric([name], st.f_bavail * st.f_frsize)
            size.add_metric([name], st.f_blocks * st.f_frsize)
        yield avail
        yield size
