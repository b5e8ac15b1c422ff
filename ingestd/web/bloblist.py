"""A project's newest blobs, for its page: images shown inline, other files as links."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasette.database import Database

PAGE_BLOBS = 24
"""The most blobs the project page shows (the ``blobs`` table has them all)."""


async def recent_blobs(db: Database, limit: int = PAGE_BLOBS) -> list[dict]:
    """The newest blobs (none when the project has no ``blobs`` table yet), with their URL."""
    if not await db.table_exists("blobs"):
        return []
    sql = (
        "select id, size, content_type, filename, uploaded, copies from blobs "
        "order by uploaded desc, id limit :limit"
    )
    rows = (await db.execute(sql, {"limit": limit})).rows
    return [
        {
            **dict(row),
            "url": f"/_blobs/{row['id']}",
            "image": (row["content_type"] or "").startswith("image/"),
        }
        for row in rows
    ]
