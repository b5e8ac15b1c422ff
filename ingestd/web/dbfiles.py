"""Reading SQLite files beside Datasette: open without creating, and cache until they change.

The project list, the holding area and the status lookups read databases that
ingestd writes, many of them per request, so they open each file only for
the statement they need (no connection left behind) and never create one.

A commit changes a database's files (its size or mtime, or its WAL's), so what
was read stays valid while :func:`file_signature` is the same: reading 300
projects costs 300 ``stat`` calls plus one read per project that changed. A
commit changes the files a few milliseconds before readers see it, so a value
read while the files were that fresh is not cached.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

SETTLE_NS = 500_000_000
"""Files modified this recently may hold a commit readers cannot see yet."""

T = TypeVar("T")


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


def signature_bytes(signature: tuple) -> int:
    """A database's size on disk from its signature: the file and its WAL."""
    return sum(entry[1] for entry in signature if entry)


def open_existing(path: Path) -> sqlite3.Connection:
    """A connection to a database that must already exist (``sqlite3.OperationalError`` if not)."""
    return sqlite3.connect(f"file:{path}?mode=rw", uri=True)


def is_missing_table(exc: sqlite3.Error) -> bool:
    """True for the error of a table not created yet (an old database, or one being created)."""
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


def fetch_one(conn: sqlite3.Connection, sql: str, params: list | tuple = ()) -> tuple | None:
    """The first row of a query; None when there is none, or its table does not exist (yet)."""
    try:
        return conn.execute(sql, params).fetchone()
    except sqlite3.Error as exc:
        if is_missing_table(exc):
            return None
        raise


class FileCache(Generic[T]):
    """Values read from database files, each kept until its file's signature changes."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple, T]] = {}

    def get(self, path: Path, read: Callable[[Path], T], keep: Callable[[T], bool]) -> tuple[T, tuple]:
        """``read(path)``, or the value it gave while the files were the same; also the signature.

        A value for which ``keep`` is false (an error) is read again next time.
        """
        signature = file_signature(path)
        cached = self._entries.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1], signature
        value = read(path)
        newest = max((entry[2] for entry in signature if entry), default=0)
        if keep(value) and time.time_ns() - newest > SETTLE_NS:
            self._entries[path] = (signature, value)
        return value, signature

    def keep_only(self, paths: Iterable[Path]) -> None:
        """Forget every file not in ``paths`` (deleted projects)."""
        for gone in self._entries.keys() - set(paths):
            self._entries.pop(gone, None)
