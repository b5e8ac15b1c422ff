"""Destructive settings wait: which part of a change waits for the grace period.

A leaked owner key must not wipe a project in one request, so a change that could
lose data or refuse later posts takes effect only ``projects.grace_hours`` after
it was sent (unless it says ``"now": true``): lowering ``retention_days`` (records
would be deleted) or ``quota_mb`` (posts would be held), and a new ``schema`` or a
``type`` other than ``any`` (posts would be refused). The rest applies at once.
The wait ends at the first line of the project written at or after the due time
(times come from the log, so a replay decides the same).

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

from dataclasses import replace

from ..model.project import Settings


def destructive(current: Settings, updated: Settings) -> dict[str, object]:
    """The settings of ``updated`` that would lose data or refuse posts, ``{key: new value}``."""
    waiting: dict[str, object] = {}
    if updated.retention_days < current.retention_days:
        waiting["retention_days"] = updated.retention_days
    if updated.quota_mb < current.quota_mb:
        waiting["quota_mb"] = updated.quota_mb
    if updated.schema is not None and updated.schema != current.schema:
        waiting["schema"] = updated.schema
    if updated.type != current.type and updated.type != "any":
        waiting["type"] = updated.type
    return waiting


def split(current: Settings, updated: Settings) -> tuple[Settings, dict[str, object]]:
    """``updated`` without its destructive part (kept as it is in ``current``), and that part."""
    waiting = destructive(current, updated)
    return replace(updated, **{key: getattr(current, key) for key in waiting}), waiting


def announcement(waiting: dict[str, object], due: str) -> str:
    """The words the project page and the write answers' header say, e.g.
    ``retention_days 7 from 2026-12-07T19:30:00.000Z``."""
    shown = ", ".join(
        f"{key} {'(a new schema)' if key == 'schema' else value}" for key, value in waiting.items()
    )
    return f"{shown} from {due}"
