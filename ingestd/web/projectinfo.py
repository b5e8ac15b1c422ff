"""A project's settings as they stand, how full it is, its retention and what waits for it.

ingestd writes each accepted settings change as a row of the project's
``settings`` table (the last row is current) and each retention pass that
deleted something as a row of ``expiry``. A project without either table, or
without a settings row, was created by a post and nobody has claimed it: it
has the configured defaults and the owner ``unclaimed``.

The project page, ``/_stats.json`` and ``GET /_project`` all show what
:class:`ProjectInfo` holds, so they agree.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..model.project import Settings, quota_level
from ..store.pending import pending
from ..store.schema import EXPIRY_COLUMNS, database_bytes, read_settings
from .dbfiles import fetch_one, is_missing_table
from .holding_area import held_for

if TYPE_CHECKING:
    from datasette.database import Database

HISTORY_LIMIT = 100
"""The most settings changes ``GET /_project`` lists, newest first."""
_EXPIRY_COLUMNS = tuple(name for name in EXPIRY_COLUMNS if name != "_id")


@dataclass(frozen=True)
class ProjectInfo:
    """What a project is set to, and how it stands against those settings."""

    settings: Settings
    version: int
    """The current settings' row (``_id`` of ``settings``); 0 while unclaimed."""
    database_bytes: int
    held: int
    """Posts waiting in the holding area for this project."""
    last_expiry: dict | None
    """The last retention pass that deleted something (a row of ``expiry``)."""
    waiting: list[dict] = field(default_factory=list)
    """Destructive settings changes waiting for their grace period: ``{"settings", "from"}``."""

    @property
    def quota_used(self) -> float:
        """The database's size as a fraction of the quota (1.0 is full)."""
        return self.settings.used(self.database_bytes)

    def level(self, warning: float) -> str:
        """How full the project is: ``ok``, ``warning`` or ``over`` (:func:`.quota_level`)."""
        return quota_level(self.quota_used, warning)

    def as_json(self) -> dict[str, object]:
        """The settings and standing, flat, as ``/_stats.json`` has them."""
        return {
            **self.settings.as_dict(),
            "claimed": self.settings.claimed,
            "settings_version": self.version,
            "quota_bytes": self.settings.quota_bytes,
            "quota_used": round(self.quota_used, 4),
            "held": self.held,
            "last_expiry": self.last_expiry,
            "waiting": self.waiting,
        }


def version_of(conn: sqlite3.Connection) -> int:
    """The current settings' ``_id``; 0 when the project has none."""
    row = fetch_one(conn, "select coalesce(max(_id), 0) from settings")
    return row[0] if row else 0


def last_expiry(conn: sqlite3.Connection) -> dict | None:
    """The newest row of ``expiry``, or None (no retention pass has deleted anything)."""
    row = fetch_one(conn, f"select {', '.join(_EXPIRY_COLUMNS)} from expiry order by _id desc limit 1")
    return dict(zip(_EXPIRY_COLUMNS, row, strict=True)) if row else None


def history(conn: sqlite3.Connection, limit: int = HISTORY_LIMIT) -> list[dict]:
    """The settings changes, newest first: version, when, which settings, from where."""
    sql = (
        "select _id, _received, changed, _remote_addr, _user_agent from settings "
        f"order by _id desc limit {int(limit)}"
    )
    try:
        rows = conn.execute(sql).fetchall()
    except sqlite3.Error as exc:
        if is_missing_table(exc):
            return []
        raise
    return [
        {
            "version": version,
            "at": received,
            "changed": json.loads(changed),
            "by": {"addr": addr, "user_agent": user_agent},
        }
        for version, received, changed, addr, user_agent in rows
    ]


def _read(conn: sqlite3.Connection) -> tuple[Settings | None, int, dict | None, list[dict]]:
    waiting = [{"settings": change, "from": due_at} for _, _, due_at, change in pending(conn)]
    return read_settings(conn), version_of(conn), last_expiry(conn), waiting


async def project_info(db: Database, defaults: Settings) -> ProjectInfo:
    """The project's :class:`ProjectInfo`; ``defaults`` while nobody has claimed it."""
    settings, version, expiry, waiting = await db.execute_fn(_read)
    path = Path(db.path)
    held = await asyncio.to_thread(held_for, path.parent, db.name)
    return ProjectInfo(settings or defaults, version, database_bytes(path), held, expiry, waiting)
