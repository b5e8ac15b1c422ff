"""What the ingest loop tells the world: every metric it moves and every log line it writes.

The loop (:mod:`ingestd.daemon`) reports each thing that happened with one call
here, the way Vector routes a source's events through one internal-events
module: which metrics move and what is logged is decided in one place, and the
loop stays a loop. The metrics themselves are defined in :mod:`.metrics`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from ..ingest.registry import Outcome
from ..store.holding import CODES
from . import metrics as m

if TYPE_CHECKING:
    from ..ingest.tail import Line, Tailer
    from ..model.project import Settings
    from ..store.retention import Expired

log = logging.getLogger("ingestd")


def batch_loaded(outcomes: dict[str, Outcome], max_projects: int) -> None:
    """A batch went into its projects: counts per project (labels bounded by ``max_projects``).

    A project the batch did nothing to (the retention pass visits every project) gets no
    series: otherwise idle projects would take the labels from the projects that post."""
    for project, outcome in outcomes.items():
        if outcome == _NOTHING:
            continue
        result = outcome.write
        label = m.project_label(project, max_projects)
        m.RECORDS_STORED.labels(label).inc(result.stored)
        for code, count in result.rejected_by_code.items():
            m.RECORDS_REJECTED.labels(label, code).inc(count)
        m.DUPLICATES.inc(result.duplicates)
        m.SETTINGS_CHANGES.labels("applied").inc(outcome.settings_changed)
        m.SETTINGS_CHANGES.labels("refused").inc(outcome.settings_refused)
        m.RELEASED.inc(outcome.released)
        if result.columns_added:
            log.info("%s: new columns %s", project, ", ".join(result.columns_added))
        if label == m.OTHER_PROJECTS:
            continue
        if outcome.settings is not None:
            m.PROJECT_DATABASE_BYTES.labels(label).set(outcome.database_bytes)
            m.PROJECT_QUOTA_RATIO.labels(label).set(outcome.settings.used(outcome.database_bytes))
        if outcome.last_post is not None:
            m.PROJECT_LAST_POST.labels(label).set(outcome.last_post)


_NOTHING = Outcome()


def held_now(waiting: Counter) -> None:
    """The posts waiting in the holding area, by ``(project, code)``."""
    for code in CODES:
        m.HELD.labels(code).set(sum(n for (_, c), n in waiting.items() if c == code))


def dead_letter(line: Line, error: str, reason: str) -> None:
    """A line that could not be parsed was kept in the dead-letter file."""
    m.DEAD_LETTERS.labels(reason).inc()
    log.warning("dead letter: %s at bytes %d-%d: %s", line.path, line.start, line.end, error)


def checkpointed(lines: int, seconds: float) -> None:
    """A batch of ``lines`` was parsed, loaded and checkpointed in ``seconds``."""
    m.LAST_CHECKPOINT.set_to_current_time()
    m.LINES_READ.inc(lines)
    m.BATCH_LINES.observe(lines)
    m.BATCH_SECONDS.observe(seconds)


def files_followed(tailer: Tailer) -> None:
    """How many files the tailer follows, and the rotations and truncations it saw (then reset)."""
    m.FILES_FOLLOWED.set(sum(not f.done for f in tailer.files.values()))
    m.ROTATIONS.inc(tailer.rotations_seen)
    m.TRUNCATIONS.inc(tailer.truncations)
    tailer.rotations_seen = tailer.truncations = 0


def vanished(path: str, offset: int, saved_size: int) -> None:
    """A followed file disappeared: harmless if it had been read to its end, else lines are lost."""
    if saved_size and offset >= saved_size:
        log.warning(
            "%s was deleted while ingestd was down; all %d bytes it held at the last "
            "checkpoint had been loaded",
            path,
            offset,
        )
        return
    log.error(
        "%s disappeared after %d bytes were loaded, before it was read to its end: "
        "lines after that point are lost (was it deleted or truncated by hand?)",
        path,
        offset,
    )


def expired(project: str, gone: Expired, settings: Settings) -> None:
    """A retention pass deleted rows of ``project`` (or nothing)."""
    if not (gone.records or gone.rejects):
        return
    m.EXPIRED.labels("records").inc(gone.records)
    m.EXPIRED.labels("rejects").inc(gone.rejects)
    log.info(
        "%s: deleted %d records and %d rejects older than %d days (%d → %d bytes)",
        project,
        gone.records,
        gone.rejects,
        settings.retention_days,
        gone.bytes_before,
        gone.bytes_after,
    )


def load_failed() -> None:
    """A batch failed to load (it is retried)."""
    m.LOAD_ERRORS.inc()


def watching(active: bool) -> None:
    """Whether the loop waits for file events (1) or polls (0)."""
    m.WATCHING.set(int(active))
