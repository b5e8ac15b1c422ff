"""Quota levels for nginx: how full each nearly-full project is, in every write's answer.

nginx answers writes before ingestd sees them, so it learns how full a project
is from a map file that ingestd writes (``STATE_DIR/quota.map``) and nginx
includes: one line per project at or above ``projects.quota_warning``, in steps
of 5 %. nginx puts the value in the ``X-SmallTable-Quota`` header of the
answer, and says ``"status": "held"`` once a project is at 100 %. ingestd
rewrites the file only when a project changes step, then asks nginx to reload
(a HUP to the pid in ``paths.nginx_pid``; where ingestd may not signal nginx,
as under systemd, ``smalltable-quota.path`` reloads it when the file changes).
"""

from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path

from ..model.project import quota_level

log = logging.getLogger("ingestd")

STEP = 5
"""Percent: the header moves in steps this big, so nginx reloads at most every few %."""


def level(used: float, quota_mb: float, warning: float) -> str | None:
    """The header for a project using ``used`` of its quota; None below the warning share."""
    state = quota_level(used, warning)
    if state == "ok":
        return None
    percent = math.floor(used * 100 / STEP) * STEP
    quota = f"{quota_mb:g} MiB"
    if state == "over":
        return f"{percent}% of {quota} used: over quota, new posts are held until the quota is raised"
    return f"{percent}% of {quota} used"


def render(levels: dict[str, str]) -> str:
    """The map file's text: ``project "header";`` lines, for nginx's ``map`` block."""
    lines = ["# Written by ingestd (ingestd/store/quota.py): projects near or over their quota."]
    lines += [f'{project} "{value}";' for project, value in sorted(levels.items())]
    return "\n".join(lines) + "\n"


class QuotaMap:
    """The levels nginx knows, kept in step with the projects' sizes."""

    def __init__(self, path: Path, nginx_pid: Path) -> None:
        self.path = path
        self.nginx_pid = nginx_pid
        self.levels: dict[str, str] = {}
        self._said_cannot_signal = False

    def update(self, changes: dict[str, str | None]) -> bool:
        """Apply ``{project: level or None}``; rewrite the file and reload nginx if any changed."""
        levels = dict(self.levels)
        for project, value in changes.items():
            if value is None:
                levels.pop(project, None)
            else:
                levels[project] = value
        changed = levels != self.levels
        if not changed and self.path.exists():
            return False
        # Derived from the databases, so no fsync: only never half a file for nginx.
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(render(levels))
        os.replace(tmp, self.path)
        self.levels = levels
        if changed:  # (a first, empty file is what nginx started with: no reload)
            self._reload_nginx()
        return True

    def _reload_nginx(self) -> None:
        problem = signal_nginx(self.nginx_pid)
        if problem and not self._said_cannot_signal:
            self._said_cannot_signal = True
            log.info(
                "wrote %s; cannot signal nginx myself (%s): smalltable-quota.path reloads it",
                self.path,
                problem,
            )


def signal_nginx(nginx_pid: Path) -> str | None:
    """Reload nginx (a HUP to the pid in ``nginx_pid``) for a map file ingestd changed.

    None when signalled; else why not (under systemd a .path unit reloads it instead).
    """
    try:
        os.kill(int(nginx_pid.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None
