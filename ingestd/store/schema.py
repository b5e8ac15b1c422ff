"""A project database's schema: its tables and columns, how names are quoted, how it is opened.

One SQLite file per project, ``DATA_DIR/PROJECT.db``, in WAL mode. Tables:

``records``
    One row per stored request. System columns start with ``_``; every
    top-level key of a JSON object (or form field) gets a column of its own, up
    to ``max_columns`` per project. User columns have no declared type, so a
    value keeps the type it was posted with (``"007"`` stays text).
``files``
    The file parts of multipart posts, linked to their record.
``rejects``
    Every request that was accepted but not stored, with the reason.
``settings``
    The project's settings, one row per accepted change (``POST /_project``):
    the last row is the current settings (:func:`read_settings`).
``expiry``
    One row per retention pass that deleted something (:mod:`ingestd.store.retention`).

Writing into them is :mod:`ingestd.store.database`'s job; readers (the web pages,
``smalltable status``) use the names and helpers here.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import sqlite_utils

from ..model.project import Settings, is_valid_project_name

SYSTEM_COLUMNS: dict[str, str] = {
    "_id": "INTEGER",
    "_request_id": "TEXT",
    "_received": "TEXT",
    "_method": "TEXT",
    "_path": "TEXT",
    "_query": "TEXT",
    "_content_type": "TEXT",
    "_size": "INTEGER",
    "_remote_addr": "TEXT",
    "_user_agent": "TEXT",
    "_kind": "TEXT",
    "_body": "BLOB",
}
REJECT_COLUMNS: dict[str, str] = {
    **{name: kind for name, kind in SYSTEM_COLUMNS.items() if name != "_kind"},
    "_reason": "TEXT",
}
FILE_COLUMNS: dict[str, str] = {
    "_id": "INTEGER",
    "record_id": "INTEGER",
    "field": "TEXT",
    "filename": "TEXT",
    "content_type": "TEXT",
    "size": "INTEGER",
    "content": "BLOB",
}
SETTINGS_COLUMNS: dict[str, str] = {
    "_id": "INTEGER",
    "_request_id": "TEXT",
    "_received": "TEXT",
    "_remote_addr": "TEXT",
    "_user_agent": "TEXT",
    "owner": "TEXT",
    "description": "TEXT",
    "type": "TEXT",
    "schema": "TEXT",
    "retention_days": "INTEGER",
    "quota_mb": "REAL",
    "changed": "TEXT",
    "write": "TEXT",
    "read": "TEXT",
    "store_client": "INTEGER",
}
_POLICY_COLUMNS = ("write", "read")
"""Settings columns added with keys: NULL (the default policy) in rows from before."""
EXPIRY_COLUMNS: dict[str, str] = {
    "_id": "INTEGER",
    "at": "TEXT",
    "cutoff": "TEXT",
    "records": "INTEGER",
    "rejects": "INTEGER",
    "through_id": "INTEGER",
    "bytes_before": "INTEGER",
    "bytes_after": "INTEGER",
}
_SYSTEM_LOWER = {name.lower() for name in SYSTEM_COLUMNS}
MAX_KEY_LENGTH = 128
CACHED_STATEMENTS = 512
"""Compiled statements kept per open database (about 6 KiB each). Each set of keys a
project's posts come with has an insert of its own: a source that sends a few of many
optional keys makes hundreds (368 in a project of the load-rate benchmark), and
compiling one again costs more than the row it inserts. Python's default is 128."""


def quote(name: str) -> str:
    """Quote an SQLite identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def database_bytes(path: Path) -> int:
    """A project's size on disk: its database file and its write-ahead log."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


class FileStamp(NamedTuple):
    """What :func:`project_files` keeps of a file's ``stat``: enough to tell it changed."""

    ino: int
    size: int
    mtime_ns: int


def project_files(data_dir: Path) -> dict[str, tuple[FileStamp, FileStamp | None]]:
    """Every project database in ``data_dir``: project → the stamp of its file and of its
    WAL (None without one), from one listing. A file removed between the listing and its
    ``stat`` (a WAL its last connection just removed) is left out, as is a WAL without its
    database. Stamps, not ``stat`` results: with 10,000 projects those left 7 MiB of
    Python's heap behind them after each count (bench/idle_projects.py)."""
    databases: dict[str, FileStamp] = {}
    wals: dict[str, FileStamp] = {}
    with os.scandir(data_dir) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(".db"):
                found, project = databases, name[:-3]
            elif name.endswith(".db-wal"):
                found, project = wals, name[:-7]
            else:
                continue
            if is_valid_project_name(project):
                with suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    found[project] = FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)
    return {project: (stamp, wals.get(project)) for project, stamp in databases.items()}


def column_for_key(key: str) -> str | None:
    """The column a top-level key is stored in, or None when it gets no column.

    Keys that clash with a system column get a trailing ``_`` (``_id`` → ``_id_``);
    empty keys, very long keys and keys with control characters stay in the
    body only.
    """
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        return None
    if key.lower() in _SYSTEM_LOWER:
        return key + "_"
    return key


def add_columns(conn: sqlite3.Connection, columns: list[str]) -> None:
    """Add user columns (no type, as sqlite-utils adds them) to ``records``, inside a write
    transaction: while the table is empty (a new project's first batch), by making it
    again with them, else by an ALTER each.

    Each ALTER re-reads the whole schema: 90 µs a column at 200 columns, 18 ms for a
    new project of 200 keys, most of what 2,000 new projects cost. The table made again
    has the SQL the ALTERs would have written, so a project's schema does not depend
    on how its posts were batched.
    """
    if conn.execute("SELECT 1 FROM records LIMIT 1").fetchone() is not None:
        for column in columns:
            conn.execute(f"ALTER TABLE records ADD COLUMN {quote(column)}")
        return
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchone()
    indexes = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL"
    ).fetchall()
    conn.execute("DROP TABLE records")
    conn.execute(with_columns(sql, columns))
    for (index,) in indexes:
        conn.execute(index)


def with_columns(create_table: str, columns: list[str]) -> str:
    """``CREATE TABLE`` SQL with ``columns`` added as ``ALTER TABLE … ADD COLUMN`` adds each:
    ``, "name"`` before the closing parenthesis."""
    end = create_table.rindex(")")
    return create_table[:end] + "".join(f", {quote(c)}" for c in columns) + create_table[end:]


def open_database(path: Path, cache_mb: int = 2, sync_commits: bool = True) -> sqlite3.Connection:
    """Open (creating if need be) a project database with its tables, in WAL mode.

    ``cache_mb`` is the most memory SQLite keeps pages of this database in. nginx
    makes request ids in time order, so a batch adds to the end of their index;
    ids that are not (from another front end, say) touch pages all over it, and
    a big project then loads faster when more of the index stays in memory.

    With ``sync_commits`` a commit returns once it is on disk (``synchronous=FULL``);
    without, SQLite syncs only at its WAL checkpoints, and a power loss can undo
    the last commits (never corrupt the database): see :meth:`ProjectDatabase.close`.

    A new file is a copy of :func:`_template_file` (the tables of :func:`_template`),
    and a file that has them all is left as it is: asking sqlite-utils for each table
    cost a new project about 2.8 ms of CPU and every reopening 1.3 ms (with thousands
    of projects, more than loading their posts). Only a file from before some column
    gets the full treatment of :func:`_create_tables`.
    """
    made = not path.exists() and _make_from_template(path, sync_commits)
    empty = not made and (not path.exists() or path.stat().st_size == 0)
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, cached_statements=CACHED_STATEMENTS
    )
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute(f"PRAGMA cache_size = {-1024 * int(cache_mb)}")  # negative: in KiB
    if empty:  # lets retention give freed pages back; set on a file that has tables already,
        # it changes nothing, but costs a reopening 0.4 ms of CPU and a write lock
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = wal")
    conn.execute(f"PRAGMA synchronous = {'FULL' if sync_commits else 'NORMAL'}")
    if made or _is_current(conn):  # a copy of the template has every table (0.09 ms to ask)
        return conn
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # another writer may be making it: look again, locked
        if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            for sql in _template().sql.values():
                conn.execute(sql)
        else:
            _create_tables(conn)
    return conn


def _create_tables(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: every table and index a project database has, made
    by sqlite-utils where missing, and the columns added since the first databases."""
    db = sqlite_utils.Database(conn)
    db["records"].create(
        SYSTEM_COLUMNS,
        pk="_id",
        not_null={"_request_id", "_received", "_method", "_path", "_size", "_kind"},
        if_not_exists=True,
    )
    db["rejects"].create(REJECT_COLUMNS, pk="_id", not_null={"_request_id", "_reason"}, if_not_exists=True)
    db["files"].create(
        FILE_COLUMNS,
        pk="_id",
        not_null={"record_id", "field", "size", "content"},
        foreign_keys=[("record_id", "records", "_id")],
        if_not_exists=True,
    )
    db["settings"].create(
        SETTINGS_COLUMNS,
        pk="_id",
        not_null=set(SETTINGS_COLUMNS)
        - {"_id", "_remote_addr", "_user_agent", "schema", "store_client", *_POLICY_COLUMNS},
        if_not_exists=True,
    )
    existing = {row[1] for row in conn.execute("PRAGMA table_info(settings)")}
    for column in _POLICY_COLUMNS:  # a database made before keys
        if column not in existing:
            conn.execute(f"ALTER TABLE settings ADD COLUMN {quote(column)} TEXT")
    if "store_client" not in existing:  # a database made before the setting
        conn.execute("ALTER TABLE settings ADD COLUMN store_client INTEGER")
    db["expiry"].create(EXPIRY_COLUMNS, pk="_id", not_null={"at", "cutoff"}, if_not_exists=True)
    conn.execute('CREATE UNIQUE INDEX IF NOT EXISTS "idx_settings_request_id" ON settings (_request_id)')
    conn.execute('CREATE UNIQUE INDEX IF NOT EXISTS "idx_records_request_id" ON records (_request_id)')
    conn.execute('CREATE UNIQUE INDEX IF NOT EXISTS "idx_rejects_request_id" ON rejects (_request_id)')
    conn.execute('CREATE INDEX IF NOT EXISTS "idx_files_record_id" ON files (record_id)')


_COLUMNS_SQL = (
    "SELECT m.name, c.name FROM sqlite_master AS m, pragma_table_info(m.name) AS c WHERE m.type = 'table'"
)
"""(table, column) of every table, in one query."""


@dataclass(frozen=True)
class _Template:
    """What a new project database has: :func:`_create_tables` run once in memory."""

    sql: dict[str, str]
    """Name → SQL of every table and index, in the order they are made."""
    columns: frozenset[tuple[str, str]]
    """(table, column) of every table's columns."""


@functools.cache
def _template() -> _Template:
    """A new project database, made once in memory, so a new file is made with exactly
    the SQL sqlite-utils writes."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        _create_tables(conn)
    made = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid").fetchall()
    columns = frozenset(conn.execute(_COLUMNS_SQL).fetchall())
    conn.close()
    return _Template(dict(made), columns)


@functools.cache
def _template_file() -> bytes:
    """A new project database as the bytes of its file: what :func:`open_database` makes of
    an empty file (the tables of :func:`_template`, incremental auto-vacuum, WAL mode);
    made once per process in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="smalltable-template-") as scratch:
        path = Path(scratch) / "template.db"
        path.touch()  # there already: made as an empty file is, not from this template
        # The last connection copies the WAL into the file and removes it.
        open_database(path, sync_commits=False).close()
        return path.read_bytes()


def _make_from_template(path: Path, sync: bool) -> bool:
    """Make the database file at ``path`` as a copy of :func:`_template_file`, unless it exists;
    True when this call made it.

    Making the tables costs a new project about 2 ms of CPU and several syncs; a copy
    is one write. The copy is written (and with ``sync``, synced: the commits that
    follow go to the WAL, and need the file they belong to) under another name, then
    linked in place, which fails if the file is there: a writer that opens ``path``
    meanwhile sees either no file or the whole of it.
    """
    spare = path.with_name(f".{path.name}.{os.getpid()}.new")
    # 0o644 (less the umask) is the mode SQLite gives the files it makes.
    with os.fdopen(os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "wb") as new:
        new.write(_template_file())
        if sync:
            new.flush()
            os.fsync(new.fileno())
    try:
        os.link(spare, path)
        return True
    except OSError:  # another writer made it first (theirs is the database), or the file
        return False  # system has no hard links: SQLite makes the file, as it did before templates
    finally:
        spare.unlink()


def remove_stale_spares(data_dir: Path) -> list[Path]:
    """Remove the copies of the template a process wrote and died before linking into place
    (``.NAME.db.PID.new``, PID no longer running: :func:`_make_from_template`); the ones removed.

    Nothing reads them (each is the template's 44 KiB). A running process's spare is left
    alone: it is linked into place and removed in a moment.
    """
    removed = []
    for spare in data_dir.glob(".*.db.*.new"):
        pid = spare.name.rsplit(".", 2)[1]
        if pid.isdigit() and not _running(int(pid)):
            with suppress(FileNotFoundError):
                spare.unlink()
                removed.append(spare)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def _is_current(conn: sqlite3.Connection) -> bool:
    """Whether the database already has every table, index and column of :func:`_template`."""
    template = _template()
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    return names >= template.sql.keys() and set(conn.execute(_COLUMNS_SQL).fetchall()) >= template.columns


def read_settings(conn: sqlite3.Connection) -> Settings | None:
    """The project's settings from its last ``settings`` row; None when it has none (unclaimed).

    ``quota_mb`` is a REAL column, so 100 comes back as 100.0: a whole quota is an integer again.
    """
    try:
        row = conn.execute(
            "SELECT owner, description, type, schema, retention_days, quota_mb, "
            "coalesce(write, 'open'), coalesce(read, 'public'), store_client "
            "FROM settings ORDER BY _id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    if row is None:
        return None
    owner, description, type_, schema, retention_days, quota_mb, write, read, store_client = row
    schema = None if schema is None else json.loads(schema)
    quota_mb = int(quota_mb) if float(quota_mb).is_integer() else quota_mb
    return Settings(
        owner, description or "", type_, schema, retention_days, quota_mb, write, read, bool(store_client)
    )
