"""Tests for ingestd.store.database: project databases, idempotent batches, rejects.

Every test uses a real SQLite file in tmp_path and reads back what a user of
Datasette would see, with plain SQL.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from ingestd.config import load_config
from ingestd.ingest.records import build
from ingestd.model.record import FilePart, Record, Reject
from ingestd.model.request import Request
from ingestd.store.database import WriteResult
from ingestd.store.pool import Store, for_config
from ingestd.store.schema import (
    SYSTEM_COLUMNS,
    _create_tables,
    _make_from_template,
    _template_file,
    open_database,
    quote,
)
from ingestd.support.timefmt import iso_time

ALL_BYTES = bytes(range(256))
_ids = itertools.count(1)


def request(body: bytes = b"", content_type: str | None = None, request_id: str | None = None) -> Request:
    """A POST to project "demo" with a fresh request id unless one is given."""
    return Request(
        request_id=request_id or f"{next(_ids):032x}",
        project="demo",
        received=1700000000.25,
        method="POST",
        uri="/hooks/github?attempt=1",
        content_type=content_type,
        content_length=len(body),
        remote_addr="203.0.113.7",
        user_agent="curl/8.5.0",
        body=body,
    )


def record(fields: dict[str, object] | None = None, body: str | bytes = "", **kwargs) -> Record:
    """A record built by hand, so a test says exactly which fields it has."""
    req = request(body.encode() if isinstance(body, str) else body, **kwargs)
    kind = "binary" if isinstance(body, bytes) else "json"
    return Record(req, body, kind, dict(fields or {}), [])


def json_record(body: bytes) -> Record:
    result = build(request(body, "application/json"))
    assert isinstance(result, Record), result
    return result


def reject(reason: str = "malformed JSON: nope", body: str | bytes = "{nope", **kwargs) -> Reject:
    req = request(body.encode() if isinstance(body, str) else body, "application/json", **kwargs)
    return Reject(req, reason, body)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "data", max_columns=200, open_databases=8)
    yield s
    s.close()


def rows(store: Store, sql: str, params: tuple = ()) -> list[tuple]:
    return store.project("demo").conn.execute(sql, params).fetchall()


def columns(store: Store, table: str = "records") -> list[str]:
    return [row[1] for row in rows(store, f"PRAGMA table_info({table})")]


def user_columns(store: Store) -> list[str]:
    return [name for name in columns(store) if name not in SYSTEM_COLUMNS]


# Ids and idempotency


def test_records_get_gapless_increasing_ids_in_batch_order(store):
    batch = [record({"a": 1}), record({"b": 2}), record({"a": 3}), record(), record({"b": 4, "a": 5})]
    result = store.write("demo", batch, [])
    assert result == WriteResult(stored=5, columns_added=["a", "b"])
    assert rows(store, "SELECT _id, _request_id, a, b FROM records ORDER BY _id") == [
        (1, batch[0].request.request_id, 1, None),
        (2, batch[1].request.request_id, None, 2),
        (3, batch[2].request.request_id, 3, None),
        (4, batch[3].request.request_id, None, None),
        (5, batch[4].request.request_id, 5, 4),
    ]


def test_ids_follow_batch_order_when_some_records_have_files(store):
    plain = record({"x": 1})
    upload = Record(request(b"..."), "...", "multipart", {"x": "a.png"}, [FilePart("x", "a.png", None, b"P")])
    last = record({"x": 2})
    store.write("demo", [plain, upload, last], [])
    assert rows(store, "SELECT _id, _request_id FROM records ORDER BY _id") == [
        (1, plain.request.request_id),
        (2, upload.request.request_id),
        (3, last.request.request_id),
    ]


def test_ids_continue_across_batches(store):
    store.write("demo", [record(), record()], [])
    store.write("demo", [record()], [])
    assert rows(store, "SELECT _id FROM records") == [(1,), (2,), (3,)]


def test_the_same_batch_twice_stores_nothing_twice(store):
    batch = [record({"a": 1}), record({"a": 2})]
    rejected = [reject()]
    assert store.write("demo", batch, rejected) == WriteResult(
        stored=2, rejected=1, rejected_by_code={"other": 1}, columns_added=["a"]
    )
    assert store.write("demo", batch, rejected) == WriteResult(duplicates=3)
    assert rows(store, "SELECT count(*) FROM records") == [(2,)]
    assert rows(store, "SELECT count(*) FROM rejects") == [(1,)]


def test_ids_stay_gapless_after_a_replayed_batch(store):
    first = [record(), record()]
    store.write("demo", first, [])
    result = store.write("demo", [first[1], record(), first[0], record()], [])
    assert (result.stored, result.duplicates) == (2, 2)
    assert rows(store, "SELECT _id FROM records") == [(1,), (2,), (3,), (4,)]


def test_a_request_id_twice_in_one_batch_is_stored_once(store):
    one = record({"a": 1}, request_id="f" * 32)
    again = record({"a": 1}, request_id="f" * 32)
    assert store.write("demo", [one, again], []) == WriteResult(stored=1, duplicates=1, columns_added=["a"])
    assert rows(store, "SELECT _id, _request_id FROM records") == [(1, "f" * 32)]


def test_system_columns_hold_the_request(store):
    """With the owner's store_client on; off (the default), see the test below."""
    req = Request(
        request_id="ab" * 16,
        project="demo",
        received=1700000000.9996,
        method="PUT",
        uri="/a/b?x=1&y=2",
        content_type="text/plain; charset=utf-8",
        content_length=5,
        remote_addr="2001:db8::1",
        user_agent="tester/1.0",
        body=b"hello",
    )
    store.write("demo", [Record(req, "hello", "text", {}, [])], [], store_client=True)
    names = ", ".join(quote(name) for name in SYSTEM_COLUMNS)
    assert rows(store, f"SELECT {names} FROM records") == [
        (
            1,
            "ab" * 16,
            "2023-11-14T22:13:21.000Z",
            "PUT",
            "/a/b",
            "x=1&y=2",
            "text/plain; charset=utf-8",
            5,
            "2001:db8::1",
            "tester/1.0",
            "text",
            "hello",
        )
    ]


def test_a_uri_without_query_stores_null_query(store):
    req = msgspec.structs.replace(request(b""), uri="/plain")
    store.write("demo", [Record(req, "", "empty", {}, [])], [])
    assert rows(store, "SELECT _path, _query, _size, _kind, _body FROM records") == [
        ("/plain", None, 0, "empty", "")
    ]


# Rejects


def test_rejects_keep_reason_and_raw_body(store):
    text = reject("malformed JSON: unexpected character", "{nope")
    binary = reject("JSON body is not valid UTF-8 (bad byte at offset 0)", b"\xff\xfe")
    result = store.write("demo", [], [text, binary])
    assert result == WriteResult(rejected=2, rejected_by_code={"other": 2})
    assert rows(store, "SELECT _id, _request_id, _reason, _body, typeof(_body), _size FROM rejects") == [
        (1, text.request.request_id, "malformed JSON: unexpected character", "{nope", "text", 5),
        (
            2,
            binary.request.request_id,
            "JSON body is not valid UTF-8 (bad byte at offset 0)",
            b"\xff\xfe",
            "blob",
            2,
        ),
    ]
    assert rows(store, "SELECT count(*) FROM records") == [(0,)]


def test_rejects_are_deduplicated(store):
    first = reject()
    store.write("demo", [], [first])
    assert store.write("demo", [], [first, reject()]) == WriteResult(
        rejected=1, rejected_by_code={"other": 1}, duplicates=1
    )
    assert rows(store, "SELECT _id FROM rejects") == [(1,), (2,)]


def test_a_request_is_never_in_both_tables(store):
    stored = record({"a": 1}, request_id="1" * 32)
    rejected = reject(request_id="2" * 32)
    store.write("demo", [stored], [rejected])
    # The same request ids loaded the other way round (e.g. after a validator change).
    flipped_record = record({"a": 1}, request_id="2" * 32)
    flipped_reject = reject(request_id="1" * 32)
    assert store.write("demo", [flipped_record], [flipped_reject]) == WriteResult(duplicates=2)
    assert rows(store, "SELECT _request_id FROM records") == [("1" * 32,)]
    assert rows(store, "SELECT _request_id FROM rejects") == [("2" * 32,)]


def test_a_batch_of_newer_and_older_ids_is_still_checked_against_the_other_table(store):
    """A batch whose ids all come after the other table's skips the probe: one older
    id among newer ones (ids from another front end, or a replay) must not slip by."""
    store.write("demo", [], [reject(request_id="5" * 32)])
    newer, older = record({"a": 1}, request_id="9" * 32), record({"a": 2}, request_id="5" * 32)
    result = store.write("demo", [newer, older], [])
    assert (result.stored, result.duplicates) == (1, 1)
    assert rows(store, "SELECT _request_id FROM records") == [("9" * 32,)]
    store.write("demo", [record({"a": 3}, request_id="7" * 32)], [])
    later = reject(request_id="8" * 32)
    assert store.write("demo", [], [later, reject(request_id="7" * 32)]).rejected == 1
    assert rows(store, "SELECT _request_id FROM rejects ORDER BY _id") == [("5" * 32,), ("8" * 32,)]


# JSON keys as columns


def test_json_keys_become_columns_as_new_keys_appear(store):
    first = store.write("demo", [json_record(b'{"name": "ada", "age": 36}')], [])
    assert first.columns_added == ["name", "age"]
    second = store.write("demo", [json_record(b'{"age": 41, "city": "Paris", "name": "bo"}')], [])
    assert second.columns_added == ["city"]
    assert user_columns(store) == ["name", "age", "city"]
    assert rows(store, "SELECT name, age, city FROM records ORDER BY _id") == [
        ("ada", 36, None),
        ("bo", 41, "Paris"),
    ]


def records_sql(store: Store, project: str) -> str:
    return (
        store.project(project)
        .conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'")
        .fetchone()[0]
    )


def test_a_new_projects_columns_come_out_as_if_added_one_post_at_a_time(tmp_path):
    """A new project's first batch makes its table again with all its columns at once; the
    schema (its SQL, columns, index) and rows are what posts loaded one by one make."""
    store = Store(tmp_path, max_columns=200, open_databases=8)
    posts = [json_record(b'{"a": 1, "b c": 2}'), json_record(b'{"a": 3, "x\\"y": 4, "_id": 5}')]
    at_once = store.write("batch", posts, [])
    assert at_once.columns_added == ["a", "b c", 'x"y', "_id_"]
    for post in posts:  # the same posts, a batch each: the second adds its columns by ALTER
        store.write("posts", [Record(post.request, post.body, post.kind, post.fields, [])], [])
    assert records_sql(store, "batch") == records_sql(store, "posts")
    assert records_sql(store, "batch").endswith(', "a", "b c", "x""y", "_id_")')
    for project in ("batch", "posts"):
        conn = store.project(project).conn
        indexes = conn.execute("PRAGMA index_list(records)").fetchall()
        assert indexes == [(0, "idx_records_request_id", 1, "c", 0)]
        assert conn.execute('SELECT a, "b c", "x""y", _id_ FROM records ORDER BY _id').fetchall() == [
            (1, 2, None, None),
            (3, None, 4, 5),
        ]
    store.close()


def test_columns_for_a_project_with_records_are_added_to_its_table(store):
    """Once a project has records, new columns are added to the table it has (ALTER): its
    rows and their ids stay."""
    store.write("demo", [json_record(b'{"a": 1}')], [])
    store.write("demo", [json_record(b'{"b": 2}'), json_record(b'{"c": 3}')], [])
    assert rows(store, "SELECT _id, a, b, c FROM records ORDER BY _id") == [
        (1, 1, None, None),
        (2, None, 2, None),
        (3, None, None, 3),
    ]


def test_keys_clashing_with_system_columns_get_a_trailing_underscore(store):
    body = b'{"_id": 99, "_BODY": "mine", "_request_id": "x", "_Kind": "k", "plain": 1}'
    item = json_record(body)
    result = store.write("demo", [item], [])
    assert result.columns_added == ["_id_", "_BODY_", "_request_id_", "_Kind_", "plain"]
    assert rows(
        store, 'SELECT _id, _request_id, _kind, _body, _id_, "_BODY_", _request_id_, "_Kind_" FROM records'
    ) == [(1, item.request.request_id, "json", body.decode(), 99, "mine", "x", "k")]


def test_a_key_equal_to_an_escaped_name_shares_its_column_first_wins(store):
    store.write("demo", [json_record(b'{"_id": 1, "_id_": 2}'), json_record(b'{"_id_": 3}')], [])
    assert user_columns(store) == ["_id_"]
    assert rows(store, "SELECT _id, _id_ FROM records") == [(1, 1), (2, 3)]


def test_keys_differing_only_by_case_share_one_column_first_in_object_wins(store):
    result = store.write("demo", [json_record(b'{"Name": "first", "name": "second", "NAME": "third"}')], [])
    assert result.columns_added == ["Name"]
    store.write("demo", [json_record(b'{"NAME": "later"}')], [])
    assert user_columns(store) == ["Name"]
    assert rows(store, "SELECT Name FROM records") == [("first",), ("later",)]


def test_columns_known_after_reopening_match_case_insensitively(tmp_path):
    s = Store(tmp_path, max_columns=200, open_databases=1)
    s.write("demo", [record({"Color": "red"})], [])
    s.close()
    s = Store(tmp_path, max_columns=200, open_databases=1)
    assert s.write("demo", [record({"color": "blue"})], []).columns_added == []
    assert s.project("demo").conn.execute("SELECT Color FROM records").fetchall() == [("red",), ("blue",)]
    s.close()


def test_keys_that_cannot_be_columns_stay_in_the_body(store):
    item = record({"": 1, "tab\there": 2, "k" * 129: 3, "k" * 128: 4, "ok": 5})
    result = store.write("demo", [item], [])
    assert result.columns_added == ["k" * 128, "ok"]
    assert result.keys_without_column == 3


def test_odd_but_printable_keys_are_columns(store):
    keys = ['a"b', "with space", "ünïcødé", "select", "1st", "a.b", "[x]"]
    store.write("demo", [record(dict.fromkeys(keys, 1))], [])
    assert user_columns(store) == keys


def test_max_columns_bounds_columns_but_not_the_body(tmp_path):
    s = Store(tmp_path, max_columns=2, open_databases=1)
    body = '{"a": 1, "b": 2, "c": 3, "d": 4}'
    first = s.write("demo", [json_record(body.encode())], [])
    assert first.columns_added == ["a", "b"]
    assert first.keys_without_column == 2
    second = s.write("demo", [json_record(b'{"b": 5, "e": 6}')], [])
    assert (second.columns_added, second.keys_without_column) == ([], 1)
    conn = s.project("demo").conn
    assert conn.execute("SELECT a, b, _body FROM records ORDER BY _id").fetchall() == [
        (1, 2, body),
        (None, 5, '{"b": 5, "e": 6}'),
    ]
    s.close()


def test_max_columns_zero_makes_no_columns(tmp_path):
    s = Store(tmp_path, max_columns=0, open_databases=1)
    result = s.write("demo", [record({"a": 1, "b": 2})], [])
    assert (result.stored, result.columns_added, result.keys_without_column) == (1, [], 2)
    assert [row[1] for row in s.project("demo").conn.execute("PRAGMA table_info(records)")] == list(
        SYSTEM_COLUMNS
    )
    s.close()


# Values and bodies


def test_values_keep_their_type(store):
    item = json_record(
        b'{"zip": "007", "n": 7, "f": 7.5, "t": true, "nul": null, "big": 123456789012345678901234567890,'
        b' "obj": {"k": [1, 2]}, "list": ["x"], "neg": -9223372036854775808}'
    )
    store.write("demo", [item], [])
    assert rows(
        store,
        "SELECT zip, typeof(zip), n, typeof(n), f, typeof(f), t, typeof(t), typeof(nul),"
        " big, typeof(big), obj, list, neg, typeof(neg) FROM records",
    ) == [
        (
            "007",
            "text",
            7,
            "integer",
            7.5,
            "real",
            1,
            "integer",
            "null",
            "123456789012345678901234567890",
            "text",
            '{"k":[1,2]}',
            '["x"]',
            -9223372036854775808,
            "integer",
        )
    ]


def test_numeric_looking_text_is_not_converted(store):
    store.write("demo", [record({"v": "1e3"}), record({"v": " 42"}), record({"v": "0x10"})], [])
    assert rows(store, "SELECT v, typeof(v) FROM records") == [
        ("1e3", "text"),
        (" 42", "text"),
        ("0x10", "text"),
    ]


def test_text_body_is_text_and_binary_body_is_a_byte_exact_blob(store):
    text = "héllo\x00wörld ✓\n"
    store.write("demo", [record(body=text), record(body=ALL_BYTES), record(body=b"")], [])
    assert rows(store, "SELECT _body, typeof(_body), _size, _kind FROM records ORDER BY _id") == [
        (text, "text", len(text.encode()), "json"),
        (ALL_BYTES, "blob", 256, "binary"),
        (b"", "blob", 0, "binary"),
    ]


def test_binary_body_through_build_is_stored_exactly(store):
    built = build(request(ALL_BYTES * 3, "image/png"))
    store.write("demo", [built], [])
    assert rows(store, "SELECT _body = ?, length(_body), typeof(_body) FROM records", (ALL_BYTES * 3,)) == [
        (1, 768, "blob")
    ]


# Files of multipart posts


def multipart_record(files: list[FilePart], **fields: object) -> Record:
    return Record(request(b"--b--"), "--b--", "multipart", dict(fields), files)


def test_multipart_files_land_in_files_linked_to_their_record(store):
    before = record({"title": "no files"})
    upload = multipart_record(
        [FilePart("pic", "a.png", "image/png", ALL_BYTES), FilePart("doc", "b.txt", None, b"")],
        title="two files",
    )
    result = store.write("demo", [before, upload], [])
    assert (result.stored, result.duplicates) == (2, 0)
    assert rows(store, "SELECT _id, record_id, field, filename, content_type, size, content FROM files") == [
        (1, 2, "pic", "a.png", "image/png", 256, ALL_BYTES),
        (2, 2, "doc", "b.txt", None, 0, b""),
    ]
    assert rows(store, "SELECT _id, title FROM records") == [(1, "no files"), (2, "two files")]


def test_files_are_not_stored_again_on_a_duplicate_load(store):
    upload = multipart_record([FilePart("pic", "a.png", "image/png", b"PNG")])
    store.write("demo", [upload], [])
    assert store.write("demo", [upload, upload], []) == WriteResult(duplicates=2)
    assert rows(store, "SELECT _id, record_id FROM files") == [(1, 1)]


# Failed batches


def test_a_value_sqlite_cannot_bind_rolls_back_the_whole_batch(store):
    store.write("demo", [record({"kept": 1})], [])
    bad_batch = [record({"kept": 2, "new": 1}), record({"other": 2**70})]
    with pytest.raises(OverflowError):
        store.write("demo", bad_batch, [reject()])
    assert rows(store, "SELECT _id, kept FROM records") == [(1, 1)]
    assert rows(store, "SELECT count(*) FROM rejects") == [(0,)]
    assert user_columns(store) == ["kept"]
    # The columns the failed batch added are forgotten: the next batch adds them again.
    result = store.write("demo", [record({"new": 3}), record({"other": 4})], [])
    assert result.columns_added == ["new", "other"]
    assert rows(store, "SELECT _id, kept, new, other FROM records") == [
        (1, 1, None, None),
        (2, None, 3, None),
        (3, None, None, 4),
    ]


def test_an_unsupported_type_fails_with_the_sqlite_error_and_rolls_back(store):
    with pytest.raises(sqlite3.ProgrammingError):
        store.write("demo", [record({"ok": 1}), record({"bad": object()})], [])
    assert rows(store, "SELECT count(*) FROM records") == [(0,)]
    assert user_columns(store) == []


def test_a_full_disk_rolls_back_and_the_store_recovers(store):
    db = store.project("demo")
    store.write("demo", [record({"a": 1})], [])
    pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
    db.conn.execute(f"PRAGMA max_page_count = {pages}")
    big = record({"a": 2, "b": 3}, body="x" * 100_000)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.write("demo", [record({"c": 1}), big], [])
    # The failed database was closed: the next write opens it again, without the limit.
    result = store.write("demo", [record({"c": 4}), big], [])
    assert result == WriteResult(stored=2, columns_added=["c", "b"])
    assert rows(store, "SELECT _id, a, b, c, length(_body) FROM records") == [
        (1, 1, None, None, 0),
        (2, None, None, 4, 0),
        (3, 2, 3, None, 100_000),
    ]


def test_an_interrupted_batch_rolls_back(store):
    db = store.project("demo")
    store.write("demo", [record()], [])
    # Abort from inside SQLite once the batch has inserted 20 rows.
    db.conn.set_progress_handler(lambda: db.conn.total_changes > 20, 1)
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        store.write("demo", [record({"n": n}) for n in range(50)], [reject()])
    assert store.write("demo", [record({"n": 1})], []) == WriteResult(stored=1, columns_added=["n"])
    assert rows(store, "SELECT _id, n FROM records") == [(1, None), (2, 1)]
    assert rows(store, "SELECT count(*) FROM rejects") == [(0,)]


def test_a_closed_connection_fails_the_batch_and_the_store_reopens(store):
    store.write("demo", [record({"a": 1})], [])
    store.project("demo").conn.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        store.write("demo", [record({"a": 2, "b": 2})], [])
    result = store.write("demo", [record({"b": 3})], [])
    assert result == WriteResult(stored=1, columns_added=["b"])
    assert rows(store, "SELECT _id, a, b FROM records") == [(1, 1, None), (2, None, 3)]


# The database file


def test_database_is_in_wal_mode_with_full_synchronous(store, tmp_path):
    db = store.project("demo")
    assert db.path == tmp_path / "data" / "demo.db"
    assert db.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.conn.execute("PRAGMA synchronous").fetchone() == (2,)
    with sqlite3.connect(db.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_new_database_is_made_whole_and_an_existing_one_is_never_made_again(tmp_path):
    """A new project's file is a copy of a template linked into place: the data directory
    holds only databases after, and a file that is already there (another writer made it
    first) is kept as it is."""
    store = Store(tmp_path, max_columns=200, open_databases=1)
    store.write("first", [record({"a": 1})], [])
    store.write("second", [record({"a": 2})], [])
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.db", "second.db"]
    _make_from_template(tmp_path / "first.db", sync=True)
    conn = open_database(tmp_path / "first.db")
    assert conn.execute("SELECT a FROM records").fetchall() == [(1,)]
    conn.close()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]


def test_a_template_copy_left_by_a_process_that_died_is_removed_when_a_store_opens(tmp_path):
    """A crash between writing a new project's template copy and linking it leaves the copy;
    the next store on the directory removes it, but never a running process's."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = tmp_path / f".shop.db.{int(gone.stdout)}.new"
    alive = tmp_path / f".shop.db.{os.getpid()}.new"
    for spare in (dead, alive):
        spare.write_bytes(_template_file())
    Store(tmp_path, max_columns=200, open_databases=1).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


def test_tables_and_indexes(store):
    names = {row[0] for row in rows(store, "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    assert {"records", "rejects", "files", "idx_records_request_id", "idx_rejects_request_id"} <= names
    assert columns(store) == list(SYSTEM_COLUMNS)
    assert columns(store, "rejects") == [name for name in SYSTEM_COLUMNS if name != "_kind"] + ["_reason"]
    assert columns(store, "files") == [
        "_id",
        "record_id",
        "field",
        "filename",
        "content_type",
        "size",
        "content",
    ]


def master(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_a_new_database_has_exactly_the_schema_sqlite_utils_makes(tmp_path):
    """A new file gets its tables in one go, with the very SQL sqlite-utils writes."""
    open_database(tmp_path / "fast.db").close()
    slow = sqlite3.connect(tmp_path / "slow.db", isolation_level=None)
    slow.execute("PRAGMA auto_vacuum = INCREMENTAL")
    slow.execute("BEGIN IMMEDIATE")
    _create_tables(slow)
    slow.execute("COMMIT")
    slow.close()
    assert master(tmp_path / "fast.db") == master(tmp_path / "slow.db")
    conn = sqlite3.connect(tmp_path / "fast.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    conn.close()


def test_a_database_from_before_some_columns_and_indexes_gets_them_on_opening(tmp_path):
    path = tmp_path / "old.db"
    open_database(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX idx_rejects_request_id")
    conn.execute("ALTER TABLE settings DROP COLUMN store_client")
    conn.execute("ALTER TABLE settings DROP COLUMN write")
    conn.commit()
    conn.close()
    reopened = open_database(path)
    reopened.close()
    fresh = tmp_path / "fresh.db"
    open_database(fresh).close()
    assert {row[1] for row in master(path)} == {row[1] for row in master(fresh)}
    conn = sqlite3.connect(path)
    assert {"store_client", "write", "read"} <= {
        row[1] for row in conn.execute("PRAGMA table_info(settings)")
    }
    conn.close()


def test_opening_a_current_database_changes_nothing(tmp_path):
    path = tmp_path / "p.db"
    open_database(path).close()
    before = master(path)
    version = sqlite3.connect(path).execute("PRAGMA schema_version").fetchone()[0]
    conn = open_database(path)
    assert conn.execute("PRAGMA schema_version").fetchone()[0] == version
    conn.close()
    assert master(path) == before


def test_reopening_a_database_keeps_rows_and_columns(tmp_path):
    s = Store(tmp_path, max_columns=200, open_databases=2)
    s.write("demo", [record({"a": 1})], [])
    s.close()
    s = Store(tmp_path, max_columns=200, open_databases=2)
    assert s.write("demo", [record({"a": 2, "b": 3})], []).columns_added == ["b"]
    assert s.project("demo").conn.execute("SELECT _id, a, b FROM records").fetchall() == [
        (1, 1, None),
        (2, 2, 3),
    ]
    s.close()


def test_store_keeps_at_most_open_databases_open_and_reopens_evicted_ones(tmp_path):
    s = Store(tmp_path, max_columns=200, open_databases=2)
    for name in ["p1", "p2", "p3"]:
        s.write(name, [record({name: 1})], [])
    assert list(s._open) == ["p2", "p3"]
    s.project("p2")  # used: p3 becomes the least recently used
    s.write("p4", [record({"x": 1})], [])
    assert list(s._open) == ["p2", "p4"]
    # p1 was evicted and closed; writing to it again reopens it where it was.
    result = s.write("p1", [record({"p1": 2, "more": 3})], [])
    assert result == WriteResult(stored=1, columns_added=["more"])
    assert len(s._open) == 2
    assert s.project("p1").conn.execute("SELECT _id, p1, more FROM records").fetchall() == [
        (1, 1, None),
        (2, 2, 3),
    ]
    s.close()
    assert s._open == {}
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["p1.db", "p2.db", "p3.db", "p4.db"]


def test_an_evicted_database_connection_is_closed(tmp_path):
    s = Store(tmp_path, max_columns=200, open_databases=1)
    first = s.project("p1")
    s.project("p2")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        first.conn.execute("SELECT 1")
    s.close()


@pytest.mark.parametrize(
    "name",
    ["../x", "A", "-a", "a-", "", "a/b", "a.b", "demo\n", "\ndemo", "a" * 64, "..", "a b", "démo", "a_b"],
)
def test_invalid_project_names_never_make_a_file(tmp_path, name):
    s = Store(tmp_path / "data", max_columns=200, open_databases=2)
    with pytest.raises(ValueError, match="not a valid project name"):
        s.write(name, [record()], [])
    s.close()
    assert list(tmp_path.rglob("*")) == [tmp_path / "data"]


@pytest.mark.parametrize("name", ["a", "0", "demo", "my-project-2", "a" * 63])
def test_valid_project_names_make_their_file(tmp_path, name):
    s = Store(tmp_path, max_columns=200, open_databases=2)
    s.write(name, [record()], [])
    s.close()
    assert (tmp_path / f"{name}.db").is_file()


# iso_time and quote


@pytest.mark.parametrize(
    ("unix", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1700000000, "2023-11-14T22:13:20.000Z"),
        (1700000000.25, "2023-11-14T22:13:20.250Z"),
        (1700000000.001, "2023-11-14T22:13:20.001Z"),
        (1700000000.0004, "2023-11-14T22:13:20.000Z"),
        (1700000000.9994, "2023-11-14T22:13:20.999Z"),
        (1700000000.9996, "2023-11-14T22:13:21.000Z"),
        (1703980799.9999, "2023-12-31T00:00:00.000Z"),
        (1704067199.9996, "2024-01-01T00:00:00.000Z"),
        (1709164800.5, "2024-02-29T00:00:00.500Z"),
    ],
)
def test_iso_time(unix, text):
    assert iso_time(unix) == text


def test_iso_time_sorts_as_text():
    times = [1700000000.9996, 1700000000.5, 1700000001.0004, 999999999.9, 1700000000]
    assert sorted(times, key=iso_time) == sorted(times)


@pytest.mark.parametrize(("name", "quoted"), [("a", '"a"'), ('a"b', '"a""b"'), ("", '""'), ("x y", '"x y"')])
def test_quote(name, quoted):
    assert quote(name) == quoted


def test_a_second_writer_adding_columns_does_not_break_the_first(tmp_path):
    """`smalltable replay` may run beside the daemon: each writer sees the other's columns."""
    first = Store(tmp_path, max_columns=10, open_databases=4)
    second = Store(tmp_path, max_columns=10, open_databases=4)
    first.write("demo", [build(request(b'{"a":1}', "application/json"))], [])
    second.write("demo", [build(request(b'{"b":2}', "application/json"))], [])  # behind first's back
    result = first.write("demo", [build(request(b'{"b":3,"c":4}', "application/json"))], [])
    assert result.stored == 1
    assert result.columns_added == ["c"]
    rows = first.project("demo").conn.execute("select a, b, c from records order by _id").fetchall()
    assert rows == [(1, None, None), (None, 2, None), (None, 3, 4)]
    first.close()
    second.close()


def test_each_database_gets_the_page_cache_the_config_gives(tmp_path):
    config = load_config(overrides={"home": str(tmp_path), "ingest.cache_mb": 7})
    s = for_config(config)
    assert s.data_dir == tmp_path / "data"
    assert s.project("demo").conn.execute("PRAGMA cache_size").fetchone() == (-7 * 1024,)
    s.close()


def test_the_daemon_syncs_every_commit_and_replay_each_database_as_it_closes_it(tmp_path, monkeypatch):
    """The daemon moves its checkpoint after a commit, so the commit must be on disk
    first. Replay moves no checkpoint: its commits reach the disk when it closes a
    database (on exit, or evicting it to open another), with one fsync of the WAL."""
    config = load_config(overrides={"home": str(tmp_path), "ingest.open_databases": 1})
    daemon_store = for_config(config)
    assert daemon_store.project("demo").conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    daemon_store.close()
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd)
    )
    replay_store = for_config(config, sync_commits=False)
    assert replay_store.project("demo").conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    replay_store.write("demo", [record({"a": 1})], [])
    replay_store.write("other", [record({"a": 2})], [])  # evicts demo: one database open at most
    assert synced == [f"{tmp_path}/data/demo.db-wal"]
    replay_store.close()
    assert synced == [f"{tmp_path}/data/demo.db-wal", f"{tmp_path}/data/other.db-wal"]
    reopened = for_config(config)
    assert reopened.project("other").conn.execute("SELECT a FROM records").fetchall() == [(2,)]
    reopened.close()


def test_one_post_adds_at_most_max_new_columns_per_post(tmp_path):
    s = Store(tmp_path, max_columns=200, open_databases=1, max_new_columns_per_post=5)
    wide = {f"k{n}": n for n in range(50)}
    s.write("squat", [record(wide)], [])
    s.write("squat", [record({"owner_field": 1})], [])
    names = [row[1] for row in s.project("squat").conn.execute("PRAGMA table_info(records)")]
    assert [n for n in names if n.startswith("k")] == ["k0", "k1", "k2", "k3", "k4"]
    assert "owner_field" in names


def test_only_the_schema_keys_become_columns(tmp_path):
    s = Store(tmp_path, max_columns=200, open_databases=1)
    s.write("schemed", [record({"a": 1, "squat": 2})], [], column_keys=frozenset({"a"}))
    names = [row[1] for row in s.project("schemed").conn.execute("PRAGMA table_info(records)")]
    assert "a" in names and "squat" not in names


def test_client_address_and_user_agent_are_not_kept_by_default(store):
    """Every record is public: the client's address and user agent are kept only where the
    project's owner turned store_client on."""
    store.write("demo", [record()], [])
    assert rows(store, "SELECT _remote_addr, _user_agent FROM records") == [(None, None)]
