"""What each project holds, cheaply: ``DOMAIN/_projects.json`` and ``PROJECT.DOMAIN/_stream/``.

A project's summary is one statement of six primary-key lookups, whatever its
size: ``_id`` is gapless, so a table's count is ``max(_id) - min(_id) + 1``
(still exact if old records are ever expired from the front) rather than a
``count(*)`` that reads a whole index. Each database is opened only for that
statement, so listing hundreds of projects leaves no connections behind.

Summaries are cached by :func:`file_signature`, so listing 300 projects costs
300 ``stat`` calls plus one statement per project that changed. A commit
changes the files a few milliseconds before readers see it, so a summary read
while the files were that fresh is not cached.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from datasette.utils.asgi import Request

from ..projects import is_valid_project_name

_SUMMARY_SQL = """
select
    (select min(_id) from records), (select max(_id) from records),
    (select _received from records order by _id desc limit 1),
    (select min(_id) from rejects), (select max(_id) from rejects),
    (select _received from rejects order by _id desc limit 1)
"""
SETTLE_NS = 500_000_000
"""Files modified this recently may hold a commit readers cannot see yet."""

_cache: dict[Path, tuple[tuple, dict[str, object]]] = {}


def file_signature(db_path: Path) -> tuple:
    """(inode, size, mtime) of a database and of its WAL: it changes with every commit."""
    signature = []
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            signature.append(None)
        else:
            signature.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(signature)


def scheme(request: Request) -> str:
    """``https`` when nginx says TLS ended there (``X-Forwarded-Proto``), else the request's own."""
    forwarded = request.headers.get("x-forwarded-proto")
    return forwarded if forwarded in ("http", "https") else request.scheme


def _read_counts(db_path: Path) -> dict[str, object]:
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True)  # never creates a file
        try:
            row = conn.execute(_SUMMARY_SQL).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            return {"error": str(exc)}
        row = (None,) * 6  # the file is there, its tables are being created
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    first, last, last_record, reject_first, reject_last, last_reject = row
    return {
        "records": last - first + 1 if last else 0,
        "last_id": last or 0,
        "rejects": reject_last - reject_first + 1 if reject_last else 0,
        "last_post": max(filter(None, (last_record, last_reject)), default=None),
    }


def summary(db_path: Path, url: str) -> dict[str, object]:
    """One project: its URL, records, last ``_id``, rejects, bytes on disk, time of the last post.

    ``last_id`` is the end of the project's stream (0 while it is empty):
    ``/_stream/{last_id + 1}-`` fetches what arrived since. The size counts
    the WAL, where the latest commits live until a checkpoint. A file that
    cannot be read is listed with ``error`` instead of counts.
    """
    signature = file_signature(db_path)
    cached = _cache.get(db_path)
    if cached is not None and cached[0] == signature:
        counts = cached[1]
    else:
        counts = _read_counts(db_path)
        newest = max((entry[2] for entry in signature if entry), default=0)
        if "error" not in counts and time.time_ns() - newest > SETTLE_NS:
            _cache[db_path] = (signature, counts)
    size = sum(entry[1] for entry in signature if entry)
    return {"project": db_path.stem, "url": url, **counts, "size_bytes": size}


def summaries(data_dir: Path, request: Request) -> list[dict[str, object]]:
    """Every project database under ``data_dir``, by name (blocking: run it in a thread)."""
    paths = sorted(p for p in data_dir.glob("*.db") if is_valid_project_name(p.stem))
    for gone in _cache.keys() - set(paths):
        _cache.pop(gone, None)
    return [summary(path, f"{scheme(request)}://{path.stem}.{request.host}/") for path in paths]
