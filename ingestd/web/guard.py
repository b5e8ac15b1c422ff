"""What a public SQL query may do: how long a value may grow, which functions it may call,
and which rows of the holding area it may see.

Anyone may send SQL (``?sql=``, ``_where=``) to any project, so every
connection Datasette opens is bounded before it serves one:

- ``SQLITE_LIMIT_LENGTH``: no string, BLOB or row may grow past
  ``datasette.max_value_bytes`` (SQLite's default is 1 GB, and
  ``zeroblob(1000000000)`` grew Datasette to 24 GB). A stored value is never
  bigger than a body, so every record can still be read.
- an authorizer denies the functions that leak the process's internals:
  ``fts3_tokenizer()`` answers a memory address.
- on the holding area's connections (``_smalltable``), a temporary view named
  ``held`` hides the real table: unqualified names find ``temp`` first, so
  Datasette's table page, filters, facets, exports and ``select … from held``
  see only the rows ``shown(project)`` allows (issue 20: a private project's
  held posts are not listed), and the authorizer refuses reading ``main.held``
  other than through that view (a query that tries is an error, not an empty
  answer). The view names ``_id`` ``rowid`` too, so that
  Datasette, which finds no primary key on a view, still links each row's page.
- on the holding area's connections, the client address and user agent of held
  posts and of its rejects read as NULL (the authorizer's ``SQLITE_IGNORE``), in
  what a query shows and in what it filters on: ingestd keeps them to load a held
  post into its project later (where the project's ``store_client`` decides), but
  no owner has agreed to publish them here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

DENIED_FUNCTIONS = frozenset({"fts3_tokenizer"})
"""SQL functions no query may call (lowercase)."""
HELD_TABLE = "held"
"""The holding area's table of held posts (:mod:`ingestd.store.holding`)."""
SHOWN_FUNCTION = "smalltable_shown"
HIDDEN_CLIENT_COLUMNS = frozenset(
    {
        (HELD_TABLE, "remote_addr"),
        (HELD_TABLE, "user_agent"),
        ("rejects", "_remote_addr"),
        ("rejects", "_user_agent"),
    }
)
"""(table, column) of the holding area that no public query may read: who sent a post."""
_HELD_VIEW = (
    f"CREATE TEMP VIEW {HELD_TABLE} AS "
    f"SELECT _id AS rowid, * FROM main.{HELD_TABLE} WHERE {SHOWN_FUNCTION}(project)"
)


def _authorize(
    action: int, arg1: str | None, arg2: str | None, database: str | None, inner: str | None
) -> int:
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _authorize_holding(
    action: int, arg1: str | None, arg2: str | None, database: str | None, inner: str | None
) -> int:
    if action == sqlite3.SQLITE_READ and database == "main":
        if arg1 == HELD_TABLE and inner != HELD_TABLE:
            return sqlite3.SQLITE_DENY
        if (arg1, arg2) in HIDDEN_CLIENT_COLUMNS:
            return sqlite3.SQLITE_IGNORE
    return _authorize(action, arg1, arg2, database, inner)


def bound_connection(
    conn: sqlite3.Connection, max_value_bytes: int, shown: Callable[[str], bool] | None = None
) -> None:
    """Bound ``conn`` for public queries: value length and denied functions; with ``shown``
    (the holding area's connections), only the held posts of projects it allows."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
    if shown is None:
        conn.set_authorizer(_authorize)
        return
    conn.create_function(SHOWN_FUNCTION, 1, shown)
    conn.execute(_HELD_VIEW)  # made even before the table is: SQLite resolves it when it is read
    conn.set_authorizer(_authorize_holding)
