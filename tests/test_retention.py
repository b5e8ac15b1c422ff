"""Retention: old records go, from the front, the file shrinks, and numbering goes on."""

from __future__ import annotations

import time

import msgspec

from ingestd.model.record import FilePart, Record, Reject
from ingestd.store.pool import Store
from ingestd.store.retention import CHUNK, expire
from ingestd.store.schema import database_bytes

from .test_registry import req

DAY = 86400


def post(
    store: Store, project: str, count: int, age_days: float, size: int = 2000, files: int = 0
) -> list[str]:
    """``count`` records received ``age_days`` ago, each with ``files`` multipart files."""
    records = []
    for _ in range(count):
        request = req(project, b'{"pad":"' + b"x" * size + b'"}')
        request = msgspec.structs.replace(request, received=time.time() - age_days * DAY)
        parts = [FilePart(f"f{i}", f"f{i}.bin", "application/octet-stream", b"y" * 100) for i in range(files)]
        records.append(Record(request, request.body.decode(), "json", {"pad": "x" * size}, parts))
    store.write(project, records, [])
    return [r.request.request_id for r in records]


def reject(store: Store, project: str, count: int, age_days: float) -> list[str]:
    """``count`` rejects received ``age_days`` ago."""
    rejects = []
    for _ in range(count):
        request = req(project, b"{oops")
        request = msgspec.structs.replace(request, received=time.time() - age_days * DAY)
        rejects.append(Reject(request, "not JSON", request.body.decode(), "invalid_json"))
    store.write(project, [], rejects)
    return [r.request.request_id for r in rejects]


def request_ids(store: Store, project: str, table: str = "records") -> list[str]:
    conn = store.project(project).conn
    return [row[0] for row in conn.execute(f"select _request_id from {table} order by _id")]


def test_old_records_go_the_rest_stay_and_the_file_shrinks(tmp_path):
    store = Store(tmp_path, 200, 4)
    post(store, "p", 500, age_days=40)
    kept = post(store, "p", 20, age_days=1)
    db = store.project("p")
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = database_bytes(store.path("p"))
    expired = expire(db.conn, store.path("p"), 30, time.time())
    assert (expired.records, expired.rejects) == (500, 0)
    assert [r[0] for r in db.conn.execute("select _request_id from records order by _id")] == kept
    assert expired.bytes_before == before
    assert expired.bytes_after < before / 4, (before, expired.bytes_after)
    assert database_bytes(store.path("p")) < before / 4  # (the expiry row itself adds a WAL page)
    row = db.conn.execute("select records, rejects, through_id, bytes_after from expiry").fetchone()
    assert row == (500, 0, 500, expired.bytes_after)
    # nothing more to do: a second pass deletes nothing and writes no row
    assert expire(db.conn, store.path("p"), 30, time.time()).records == 0
    assert db.conn.execute("select count(*) from expiry").fetchone()[0] == 1
    store.close()


def test_numbering_continues_after_everything_expired(tmp_path):
    store = Store(tmp_path, 200, 4)
    post(store, "p", 12, age_days=10)
    db = store.project("p")
    assert expire(db.conn, store.path("p"), 5, time.time()).records == 12
    assert db.conn.execute("select count(*) from records").fetchone()[0] == 0
    post(store, "p", 2, age_days=0)
    assert [r[0] for r in db.conn.execute("select _id from records")] == [13, 14]
    store.close()


def test_a_record_received_late_in_the_log_keeps_everything_after_it(tmp_path):
    """Deletion stops at the first record to keep: the ``_id`` s left are one unbroken run."""
    store = Store(tmp_path, 200, 4)
    post(store, "p", 3, age_days=40)
    post(store, "p", 1, age_days=1)
    post(store, "p", 2, age_days=40)
    db = store.project("p")
    assert expire(db.conn, store.path("p"), 30, time.time()).records == 3
    assert [r[0] for r in db.conn.execute("select _id from records")] == [4, 5, 6]
    store.close()


def test_a_database_made_before_incremental_vacuum_is_converted(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("create table t (x)")
    conn.close()
    store = Store(tmp_path, 200, 4)
    db = store.project("old")
    assert db.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    post(store, "old", 200, age_days=40)
    expired = expire(db.conn, store.path("old"), 30, time.time())
    assert expired.records == 200 and expired.bytes_after < expired.bytes_before
    assert db.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    store.close()


def test_old_rejects_go_too_and_the_recent_ones_stay(tmp_path):
    store = Store(tmp_path, 200, 4)
    reject(store, "p", 30, age_days=40)
    kept = reject(store, "p", 5, age_days=1)
    db = store.project("p")
    expired = expire(db.conn, store.path("p"), 30, time.time())
    assert (expired.records, expired.rejects) == (0, 30)
    assert request_ids(store, "p", "rejects") == kept
    assert db.conn.execute("select records, rejects from expiry").fetchone() == (0, 30)
    store.close()


def test_no_file_outlives_its_record(tmp_path):
    """A multipart record's files go with it; a kept record keeps its files."""
    store = Store(tmp_path, 200, 4)
    post(store, "p", 10, age_days=40, size=10, files=2)
    post(store, "p", 3, age_days=1, size=10, files=2)
    db = store.project("p")
    assert expire(db.conn, store.path("p"), 30, time.time()).records == 10
    orphans = db.conn.execute(
        "select count(*) from files where record_id not in (select _id from records)"
    ).fetchone()[0]
    assert orphans == 0
    assert db.conn.execute("select count(*) from files").fetchone()[0] == 3 * 2
    store.close()


def test_more_rows_than_one_chunk_all_go_in_one_pass(tmp_path):
    """Deletion runs a chunk at a time; every chunk of the pass is done, and noted in one row."""
    store = Store(tmp_path, 200, 4)
    old = CHUNK * 2 + 7
    post(store, "p", old, age_days=40, size=10, files=0)
    reject(store, "p", CHUNK + 3, age_days=40)
    kept = post(store, "p", 4, age_days=1, size=10)
    db = store.project("p")
    expired = expire(db.conn, store.path("p"), 30, time.time())
    assert (expired.records, expired.rejects) == (old, CHUNK + 3)
    assert request_ids(store, "p") == kept
    assert request_ids(store, "p", "rejects") == []
    row = db.conn.execute(
        "select count(*), sum(records), sum(rejects), max(through_id) from expiry"
    ).fetchone()
    assert row == (1, old, CHUNK + 3, old)
    store.close()


def test_a_record_received_exactly_at_the_cutoff_is_kept(tmp_path):
    """Records are kept for ``retention_days``: one received exactly that long ago is still in."""
    store = Store(tmp_path, 200, 4)
    at = round(time.time()) + 0.5
    before, exactly = req("p"), req("p")
    records = [
        Record(msgspec.structs.replace(r, received=at - 30 * DAY + offset), "{}", "json", {}, [])
        for r, offset in ((before, -0.001), (exactly, 0))
    ]
    store.write("p", records, [])
    db = store.project("p")
    assert expire(db.conn, store.path("p"), 30, at).records == 1
    assert request_ids(store, "p") == [exactly.request_id]
    store.close()
