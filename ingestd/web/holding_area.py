"""The holding area, read-only: posts waiting for their project, in ``DATA_DIR/_smalltable.db``.

ingestd holds a post (table ``held``) when its project does not exist and
auto-create is off (code ``no_project``), or when the project is over its quota
(``over_quota``), and deletes the row when it releases the post into its
project. The same file's ``rejects`` table keeps refused settings requests for
projects that do not exist. The name can never be a project's (project names
start with a letter or digit); the file exists only once something was held.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..store.holding import DATABASE
from .dbfiles import FileCache, fetch_one, is_missing_table, open_existing

FILE_NAME = DATABASE
DATABASE_NAME = Path(DATABASE).stem
"""The name Datasette serves the file under: ``/_smalltable/held`` is its table of held posts."""
WHY = {
    "no_project": "the project does not exist yet (auto-create is off): create it to load them",
    "over_quota": "over quota: raise the quota or let retention free space",
}
"""Each hold code in plain words: why the posts wait, and what releases them."""

# The newest row of each project says why it waits now; its oldest, since when.
_WAITING_SQL = """
select g.project, g.waiting, oldest._received, newest.code, newest.reason
from (select project, count(*) as waiting, min(_id) as first, max(_id) as last
      from held group by project) as g
join held as oldest on oldest._id = g.first
join held as newest on newest._id = g.last
order by g.project
"""


@dataclass(frozen=True)
class Waiting:
    """The posts held for one project name."""

    project: str
    count: int
    oldest: str
    code: str
    reason: str

    @property
    def why(self) -> str:
        """Why they wait, in words, and what would release them."""
        return WHY.get(self.code, self.reason)


_cache: FileCache[dict[str, Waiting] | None] = FileCache()


def path_in(data_dir: Path) -> Path:
    """Where the holding area's database is."""
    return data_dir / FILE_NAME


def _read_waiting(path: Path) -> dict[str, Waiting] | None:
    if not path.exists():
        return {}
    try:
        conn = open_existing(path)
        try:
            rows = conn.execute(_WAITING_SQL).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {} if is_missing_table(exc) else None
    return {row[0]: Waiting(*row) for row in rows}


def waiting(data_dir: Path) -> dict[str, Waiting]:
    """Every project name with held posts, by name (blocking; cached until the file changes).

    Empty when nothing was ever held, and when the file cannot be read (it is
    read again next time).
    """
    found, _ = _cache.get(path_in(data_dir), _read_waiting, keep=lambda value: value is not None)
    return found or {}


def held_for(data_dir: Path, project: str) -> int:
    """How many posts wait for ``project`` (blocking)."""
    entry = waiting(data_dir).get(project)
    return entry.count if entry else 0


def find_request(data_dir: Path, request_id: str) -> dict | None:
    """What became of a request in SmallTable's own tables (blocking), or None.

    ``{"status": "held", "project", "code", "reason"}`` while it waits, or
    ``{"status": "rejected", "project", "reason"}`` for a refused settings
    request naming a project that does not exist (and its ``_path`` and
    ``_content_type``, which say whether a form sent it, for the page only).
    """
    path = path_in(data_dir)
    if not path.exists():
        return None
    conn = open_existing(path)
    try:
        held = fetch_one(conn, "select project, code, reason from held where _request_id = ?", [request_id])
        if held:
            return {"status": "held", "project": held[0], "code": held[1], "reason": held[2]}
        rejected = fetch_one(
            conn,
            "select project, _reason, _path, _content_type from rejects where _request_id = ?",
            [request_id],
        )
    finally:
        conn.close()
    if not rejected:
        return None
    project, reason, path, content_type = rejected
    return {
        "status": "rejected",
        "project": project,
        "reason": reason,
        "_path": path,
        "_content_type": content_type,
    }
