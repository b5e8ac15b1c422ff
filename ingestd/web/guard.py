"""What a public SQL query may do: how long a value may grow, and which functions it may call.

Anyone may send SQL (``?sql=``, ``_where=``) to any project, so every
connection Datasette opens is bounded before it serves one:

- ``SQLITE_LIMIT_LENGTH``: no string, BLOB or row may grow past
  ``datasette.max_value_bytes`` (SQLite's default is 1 GB, and
  ``zeroblob(1000000000)`` grew Datasette to 24 GB). A stored value is never
  bigger than a body, so every record can still be read.
- an authorizer denies the functions that leak the process's internals:
  ``fts3_tokenizer()`` answers a memory address.
"""

from __future__ import annotations

import sqlite3

DENIED_FUNCTIONS = frozenset({"fts3_tokenizer"})
"""SQL functions no query may call (lowercase)."""


def _authorize(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def bound_connection(conn: sqlite3.Connection, max_value_bytes: int) -> None:
    """Bound ``conn`` for public queries: value length and denied functions."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
    conn.set_authorizer(_authorize)
