"""What each project holds, cheaply: ``DOMAIN/_projects.json``, the apex page, ``PROJECT.DOMAIN/_stream/``.

A project's summary is one statement of six primary-key lookups, whatever its
size, and a read of its last settings row: ``_id`` is gapless, so a table's
count is ``max(_id) - min(_id) + 1`` (still exact when retention expires old
records from the front) rather than a ``count(*)`` that reads a whole index.
Each database is opened only for that, so listing hundreds of projects leaves
no connections behind, and what was read is cached until the files change
(:class:`~.dbfiles.FileCache`): listing 300 projects costs 300 ``stat`` calls
plus one read per project that changed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from datasette.utils.asgi import Request

from ..model.project import Settings, is_valid_project_name
from ..store.schema import read_settings
from . import holding_area
from .dbfiles import FileCache, is_missing_table, open_existing, signature_bytes
from .site import Site, project_address

_SUMMARY_SQL = """
select
    (select min(_id) from records), (select max(_id) from records),
    (select _received from records order by _id desc limit 1),
    (select min(_id) from rejects), (select max(_id) from rejects),
    (select _received from rejects order by _id desc limit 1)
"""

_cache: FileCache[dict[str, object]] = FileCache()


def _read(db_path: Path) -> dict[str, object]:
    """Counts and current settings (None: unclaimed); ``{"error": …}`` if the file cannot be read."""
    try:
        conn = open_existing(db_path)  # never creates a file
        try:
            try:
                row = conn.execute(_SUMMARY_SQL).fetchone()
            except sqlite3.Error as exc:
                if not is_missing_table(exc):
                    raise
                row = (None,) * 6  # the file is there, its tables are being created
            settings = read_settings(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    first, last, last_record, reject_first, reject_last, last_reject = row
    return {
        "records": last - first + 1 if last else 0,
        "last_id": last or 0,
        "rejects": reject_last - reject_first + 1 if reject_last else 0,
        "last_post": max(filter(None, (last_record, last_reject)), default=None),
        "settings": settings,
    }


def summary(db_path: Path, url: str, defaults: Settings, held: int = 0) -> dict[str, object]:
    """One project: URL, counts, size, last post, settings (``defaults`` if unclaimed), quota used.

    ``last_id`` is the end of the project's stream (0 while it is empty):
    ``/_stream/{last_id + 1}-`` fetches what arrived since. The size counts
    the WAL, where the latest commits live until a checkpoint. ``quota_used``
    is the size as a fraction of the quota; ``held`` the posts waiting for the
    project in the holding area. A file that cannot be read is listed with
    ``error`` instead of counts and settings.
    """
    read, signature = _cache.get(db_path, _read, keep=lambda value: "error" not in value)
    size = signature_bytes(signature)
    found = {"project": db_path.stem, "url": url, **read, "size_bytes": size}
    if "error" in found:
        return found
    settings = found.pop("settings") or defaults
    return {
        **found,
        "owner": public_owner(settings.owner),
        "description": settings.description,
        "type": settings.type,
        "retention_days": settings.retention_days,
        "quota_mb": settings.quota_mb,
        "quota_used": round(settings.used(size), 4),
        "held": held,
        "read": settings.read,
    }


def listed(entry: dict[str, object]) -> dict[str, object]:
    """A summary as every project's list shows it: of a private one, its name and owner only."""
    if entry.get("read") != "private":
        return entry
    return {"project": entry["project"], "url": entry["url"], "owner": entry["owner"], "private": True}


def public_owner(owner: str) -> str:
    """The owner as the project lists show it: an email address is never listed (it says
    ``claimed``); a project's own settings page still names its owner."""
    return "claimed" if "@" in owner else owner


def project_paths(config: Site) -> list[Path]:
    """Every project database under the data directory, by name."""
    if config.data_dir is None:
        return []
    # By name: sorting the paths would put "demo-2.db" before "demo.db" ("-" < ".").
    return sorted(
        (p for p in config.data_dir.glob("*.db") if is_valid_project_name(p.stem)), key=lambda p: p.stem
    )


def summaries(
    config: Site, request: Request, names: list[str] | None = None, paths: list[Path] | None = None
) -> list[dict[str, object]]:
    """The summaries of the projects ``names`` (None: every project), by name (blocking: run
    it in a thread). A page of a few projects reads only theirs. ``paths`` is
    :func:`project_paths`, if the caller has it already."""
    paths = project_paths(config) if paths is None else paths
    _cache.keep_only(paths)
    if names is not None:
        wanted = set(names)
        paths = [path for path in paths if path.stem in wanted]
    waiting = holding_area.waiting(config.data_dir) if paths else {}
    return [
        listed(
            summary(
                path,
                project_address(config, request, path.stem),
                config.defaults,
                waiting[path.stem].count if path.stem in waiting else 0,
            )
        )
        for path in paths
    ]
