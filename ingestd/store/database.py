"""The project database writer: idempotent batch loads, columns added as keys appear, settings rows.

A commit is on disk before the checkpoint that follows it (``synchronous=FULL``).
(``smalltable replay`` moves no checkpoint: its store syncs each database once,
when it closes it, rather than at every commit.) The tables are
:mod:`ingestd.store.schema`'s.

Loading is keyed by ``_request_id`` (unique in both tables): replaying lines that
were already loaded inserts nothing, and ``_id`` stays gapless because an
ignored insert takes no rowid.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import orjson

from ..model.record import Record, Reject
from ..model.request import Request
from ..support import failpoints
from ..support.timefmt import iso_time
from .schema import SYSTEM_COLUMNS, add_columns, column_for_key, open_database, quote


@dataclass
class WriteResult:
    """What one batch did to one project."""

    stored: int = 0
    rejected: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    columns_added: list[str] = field(default_factory=list)
    keys_without_column: int = 0

    def add(self, other: WriteResult) -> None:
        """Count ``other`` in too (several writes of one batch to one project)."""
        self.stored += other.stored
        self.rejected += other.rejected
        self.duplicates += other.duplicates
        self.columns_added += other.columns_added
        self.keys_without_column += other.keys_without_column
        for code, n in other.rejected_by_code.items():
            self.rejected_by_code[code] = self.rejected_by_code.get(code, 0) + n


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the values of records with one key tuple go."""

    columns: tuple[str, ...]
    """The columns they fill, in key order."""
    pick: Callable[[dict], Iterable]
    """A record's fields → the value of each of those columns."""
    dropped: int
    """Keys that get no column (see :func:`column_for_key` and ``max_columns``)."""


def _picker(keep: list[int], keys: int) -> Callable[[dict], Iterable]:
    """A function that picks the values at positions ``keep`` of a dict of ``keys`` keys."""
    if keep == list(range(keys)):  # the common case: every key has a column of its own
        return dict.values
    if not keep:
        return lambda fields: ()
    pick = operator.itemgetter(*keep, 0)  # the extra position keeps the result a tuple
    return lambda fields: pick(tuple(fields.values()))[:-1]


_Item = TypeVar("_Item", Record, Reject)


def _request_values(request: Request, store_client: bool, last: str, body: str | bytes) -> tuple:
    """The system-column values of a stored or rejected request, in the order of
    ``_RECORD_INSERT_COLUMNS`` (``last``: its kind) or ``_REJECT_INSERT_COLUMNS`` (its
    reason); the client's address and user agent only where the project's owner turned
    ``store_client`` on."""
    path, sep, query = request.uri.partition("?")
    return (
        request.request_id,
        iso_time(request.received),
        request.method,
        path,
        query if sep else None,
        request.content_type,
        len(request.body),
        request.remote_addr if store_client else None,
        request.user_agent if store_client else None,
        last,
        body,
    )


class ProjectDatabase:
    """One project's open database and what it knows of its columns."""

    def __init__(
        self,
        path: Path,
        max_columns: int,
        cache_mb: int = 2,
        sync_commits: bool = True,
        max_new_columns_per_post: int = 20,
    ) -> None:
        self.path = path
        self.max_columns = max_columns
        self.max_new_columns_per_post = max_new_columns_per_post
        self.column_keys: frozenset[str] | None = None
        self.store_client = False
        """Whether posts keep their client's address and user agent (a project setting)."""
        """When the owner set a schema: the only keys that may become columns."""
        self.sync_commits = sync_commits
        self.conn = open_database(path, cache_mb, sync_commits)
        self._load_columns()

    def _load_columns(self) -> None:
        """Read the user columns from the table, and the schema version they belong to."""
        names = [row[1] for row in self.conn.execute("PRAGMA table_info(records)")]
        self.user_columns = {name.lower(): name for name in names if name not in SYSTEM_COLUMNS}
        """Lowercase name → column, in the table's order (SQLite's names ignore case)."""
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        """Key tuples already mapped to existing columns (bounded), so a row skips the checks."""
        self.schema_version = self.conn.execute("PRAGMA schema_version").fetchone()[0]

    def _sync_columns(self) -> None:
        """Inside a write transaction: reload the columns if another writer (a replay
        running beside the daemon) changed the schema since we last looked."""
        if self.conn.execute("PRAGMA schema_version").fetchone()[0] != self.schema_version:
            self._load_columns()

    def close(self) -> None:
        """Close the database; if commits were not synced one by one, sync them all now.

        The write-ahead log holds every commit not yet copied into the database
        file (SQLite syncs the file when it copies), so one fsync of the log makes
        every commit so far durable.
        """
        if not self.sync_commits:
            with suppress(FileNotFoundError):
                fd = os.open(f"{self.path}-wal", os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.conn.close()

    def _new_layout(self, keys: tuple[str, ...], result: WriteResult) -> _Layout:
        """Where a record with these keys (in this order) puts its values, naming columns
        for keys never seen before (in ``result.columns_added``: :meth:`write` makes them
        before its first insert). Records of one source share a few key tuples, so the
        answer is kept in ``_layouts`` for the next record with the same keys."""
        columns: list[str] = []
        keep: list[int] = []
        added = 0
        for position, key in enumerate(keys):
            column = column_for_key(key)
            if column is None:
                continue
            existing = self.user_columns.get(column.lower())
            if existing is None:
                # One post may not take the project's column slots (max_new_columns_per_post),
                # and with a schema only its keys become columns: squatters stay in the body.
                if len(self.user_columns) >= self.max_columns or added >= self.max_new_columns_per_post:
                    continue
                if self.column_keys is not None and key not in self.column_keys:
                    continue
                added += 1
                self.user_columns[column.lower()] = column
                result.columns_added.append(column)
                existing = column
            if existing not in columns:  # two keys for one column ("a" and "A"): the first wins
                columns.append(existing)
                keep.append(position)
        layout = _Layout(tuple(columns), _picker(keep, len(keys)), len(keys) - len(keep))
        if len(self._layouts) >= 10000:
            self._layouts.clear()
        self._layouts[keys] = layout
        return layout

    def follow(self, keys: frozenset[str] | None, store_client: bool) -> None:
        """The owner's settings for what comes next: only ``keys`` may get new columns
        (None: any key), and whether the client's address and user agent are kept."""
        self.store_client = store_client
        if keys != self.column_keys:
            self.column_keys = keys
            self._layouts = {}

    def write(self, records: list[Record], rejects: list[Reject]) -> WriteResult:
        """Load one batch in one transaction; already-loaded request ids are skipped.

        Records get their ``_id`` in the order they are given (the order of the
        log). A request id already in ``rejects`` is not stored in ``records``
        and vice versa: a request ends up in one table, never both.
        """
        result = WriteResult()
        given = len(records) + len(rejects)
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._sync_columns()
            known_columns = dict(self.user_columns), self.schema_version
            floor = self._hold_id_floor() if records else None
            if records:
                records = self._not_in("rejects", records)
            if rejects:
                rejects = self._not_in("records", rejects)
            run: list[tuple] = []
            run_columns: tuple[str, ...] = ()
            layouts = self._layouts
            placed = [layouts.get(keys := tuple(r.fields)) or self._new_layout(keys, result) for r in records]
            if result.columns_added:  # all at once, before the first insert (schema.add_columns)
                add_columns(conn, result.columns_added)
            for record, layout in zip(records, placed, strict=True):
                fields = record.fields
                if layout.dropped:
                    result.keys_without_column += layout.dropped
                values = (
                    *_request_values(record.request, self.store_client, record.kind, record.body),
                    *layout.pick(fields),
                )
                if run and (record.files or layout.columns != run_columns):
                    result.stored += self._insert_rows(run_columns, run)
                    run = []
                if record.files:
                    result.stored += self._insert_with_files(layout.columns, record, values)
                else:
                    run_columns = layout.columns
                    run.append(values)
            if run:
                result.stored += self._insert_rows(run_columns, run)
            if floor is not None:
                conn.execute("DELETE FROM records WHERE _id = ?", (floor,))
            by_code: dict[str, list[tuple]] = {}
            for r in rejects:
                by_code.setdefault(r.code, []).append(
                    _request_values(r.request, self.store_client, r.reason, r.body)
                )
            for code, reject_rows in by_code.items():
                before = conn.total_changes
                conn.executemany(_insert_sql("rejects", _REJECT_INSERT_COLUMNS), reject_rows)
                if conn.total_changes > before:
                    result.rejected_by_code[code] = conn.total_changes - before
            result.rejected = sum(result.rejected_by_code.values())
            failpoints.hit("store.before_commit")
            conn.execute("COMMIT")
            if result.columns_added:
                self.schema_version = conn.execute("PRAGMA schema_version").fetchone()[0]
        except BaseException:
            if "known_columns" in locals():
                self.user_columns, self.schema_version = known_columns
                self._layouts = {}  # may name columns the rollback took away
            # The connection may be gone (closed, or the error already rolled the
            # transaction back): the original error is the one worth raising.
            with suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        result.duplicates = given - result.stored - result.rejected
        return result

    def _not_in(self, table: str, items: list[_Item]) -> list[_Item]:
        """The records or rejects whose request id is not in ``table`` (one query for all):
        a request ends up in one table, never both, even when a replay classifies it
        differently from the first load.

        nginx makes request ids in time order, so a new batch's ids are usually all
        past the greatest in ``table``: one look at the end of its index says so,
        and the batch needs no probe.
        """
        ids = [item.request.request_id for item in items]
        last = self.conn.execute(f"SELECT max(_request_id) FROM {table}").fetchone()[0]
        if last is None or min(ids) > last:
            return items
        sql = f"SELECT _request_id FROM {table} WHERE _request_id IN (SELECT value FROM json_each(?))"
        taken = {row[0] for row in self.conn.execute(sql, (orjson.dumps(ids),))}
        return [item for item in items if item.request.request_id not in taken] if taken else items

    def _hold_id_floor(self) -> int | None:
        """When retention has emptied ``records``, a placeholder row at the last ``_id``.

        SQLite numbers a row one past the largest ``_id`` in the table, so in an
        empty table numbering would start again at 1, and ``_id`` would no longer
        name one record for good. The placeholder (deleted before the commit: no
        reader ever sees it) keeps numbering going from where it was.
        """
        if self.conn.execute("SELECT 1 FROM records LIMIT 1").fetchone():
            return None
        floor = self.conn.execute("SELECT max(through_id) FROM expiry").fetchone()[0]
        if floor is None:
            return None
        self.conn.execute(
            "INSERT INTO records (_id, _request_id, _received, _method, _path, _size, _kind) "
            "VALUES (?, '', '', '', '', 0, '')",
            (floor,),
        )
        return floor

    def change_settings(self, request: Request, settings: dict[str, object], changed: list[str]) -> bool:
        """Record a settings change (idempotent, by request id); True when it was new. Who made
        it (address, user agent) is kept only when the settings keep clients' (``store_client``)."""
        keep_client = bool(settings.get("store_client"))
        row = (
            request.request_id,
            iso_time(request.received),
            request.remote_addr if keep_client else None,
            request.user_agent if keep_client else None,
            settings["owner"],
            settings["description"],
            settings["type"],
            None if settings["schema"] is None else json.dumps(settings["schema"], ensure_ascii=False),
            settings["retention_days"],
            settings["quota_mb"],
            json.dumps(changed),
            settings["write"],
            settings["read"],
            int(keep_client),
        )
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            before = self.conn.total_changes
            self.conn.execute(
                "INSERT INTO settings (_request_id, _received, _remote_addr, _user_agent, owner, "
                "description, type, schema, retention_days, quota_mb, changed, write, read, store_client) "
                "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 "
                "WHERE NOT EXISTS (SELECT 1 FROM rejects WHERE _request_id = ?1) "
                "ON CONFLICT (_request_id) DO NOTHING",
                row,
            )
            return self.conn.total_changes > before

    def _insert_rows(self, columns: tuple[str, ...], rows: list[tuple]) -> int:
        """Insert records without files that share their user columns; the number stored."""
        before = self.conn.total_changes
        self.conn.executemany(_insert_sql("records", _RECORD_INSERT_COLUMNS + columns), rows)
        return self.conn.total_changes - before

    def _insert_with_files(self, columns: tuple[str, ...], record: Record, values: tuple) -> int:
        sql = _insert_sql("records", _RECORD_INSERT_COLUMNS + columns) + " RETURNING _id"
        inserted = self.conn.execute(sql, values).fetchall()
        if not inserted:
            return 0
        self.conn.executemany(
            "INSERT INTO files (record_id, field, filename, content_type, size, content) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (inserted[0][0], f.field, f.filename, f.content_type, len(f.content), f.content)
                for f in record.files
            ],
        )
        return 1


_RECORD_INSERT_COLUMNS = (
    "_request_id",
    "_received",
    "_method",
    "_path",
    "_query",
    "_content_type",
    "_size",
    "_remote_addr",
    "_user_agent",
    "_kind",
    "_body",
)
_REJECT_INSERT_COLUMNS = (*_RECORD_INSERT_COLUMNS[:9], "_reason", "_body")


@functools.lru_cache(maxsize=1024)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """An insert of one row into ``table`` that does nothing if its request id is there."""
    params = ", ".join("?" * len(columns))
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) VALUES ({params}) "
        "ON CONFLICT (_request_id) DO NOTHING"
    )
