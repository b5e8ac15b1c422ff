"""How full the data directory is: the number of projects and their size, as flags nginx reads.

nginx answers writes before ingestd sees them, so it cannot count projects. ingestd
counts them (the ``PROJECT.db`` files in the data directory, and their size with
their write-ahead logs) after each batch, at most once a second, and keeps two
flag files in the state directory: ``full-projects`` once there are
``projects.max_projects`` projects, ``full-data`` once they take
``projects.max_data_mb``. nginx checks them (a ``stat``) for each write to a
project that has no database yet and answers 507: existing projects keep
accepting writes. A flag appears within about a second of the batch that filled
the directory, so a few new projects may get in past the cap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..model.project import is_valid_project_name

FULL_PROJECTS = "full-projects"
FULL_DATA = "full-data"
EVERY_SECONDS = 1.0


def measure(data_dir: Path) -> tuple[int, int]:
    """(projects, bytes) of the project databases in ``data_dir`` (with their WALs)."""
    projects, size = 0, 0
    with os.scandir(data_dir) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(".db") and is_valid_project_name(name[:-3]):
                projects += 1
                size += entry.stat().st_size
            elif name.endswith(".db-wal") and is_valid_project_name(name[:-7]):
                size += entry.stat().st_size
    return projects, size


def _flag(path: Path, on: bool) -> None:
    if on:
        path.touch()
    else:
        path.unlink(missing_ok=True)


class Capacity:
    """The flags of one data directory, brought up to date by :meth:`update`."""

    def __init__(self, data_dir: Path, state_dir: Path, max_projects: int, max_data_mb: int) -> None:
        self.data_dir, self.state_dir = data_dir, state_dir
        self.max_projects, self.max_bytes = max_projects, max_data_mb * 1048576
        self._checked = -EVERY_SECONDS

    def update(self, force: bool = False) -> tuple[int, int] | None:
        """Count again (at most once a second unless ``force``) and set the flags; the counts."""
        now = time.monotonic()
        if not force and now - self._checked < EVERY_SECONDS:
            return None
        self._checked = now
        projects, size = measure(self.data_dir)
        _flag(self.state_dir / FULL_PROJECTS, projects >= self.max_projects)
        _flag(self.state_dir / FULL_DATA, size >= self.max_bytes)
        return projects, size
