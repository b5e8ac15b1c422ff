"""Key-value buckets in a real SQLite file (ingestd/store/kv.py): decisions come from the
log alone (replay at any wall-clock time decides the same), and the retention pass purges
expired items without changing any decision."""

from __future__ import annotations

import json
import time

from ingestd.model.kv import read_write
from ingestd.model.request import Request
from ingestd.store import kv, retention
from ingestd.store.schema import open_database

T0 = 1_800_000_000.0


def line(n: int, at: float, method: str, key: str, body: bytes = b"", **headers: list) -> Request:
    rid = f"{n:032x}"
    return Request(
        rid, "p", at, method, f"/_kv/b/items/{key}", None, len(body), "", None, body, kv=json.dumps(headers)
    )


LOG = [
    line(1, T0, "PUT", "a", b"1", ttl=["10"], index=[["tag", "x"]]),
    line(2, T0 + 5, "PUT", "a", b"2", if_none_match=["*"]),  # still live: precondition failed
    line(3, T0 + 20, "PUT", "a", b"3", if_none_match=["*"]),  # expired at the line's time: stored
    line(4, T0 + 21, "PUT", "b", b"4", ttl=["1"]),
    line(5, T0 + 30, "DELETE", "b"),  # expired: not found
    line(6, T0 + 31, "PUT", "c", b"5", ttl=["5"]),
    line(7, T0 + 400, "PUT", "d", b"6"),
]


def decisions(conn) -> list[tuple]:
    return conn.execute(
        "select _id, _request_id, status, version, current_version, reason from kv_writes"
    ).fetchall()


def test_decisions_come_from_the_log_not_the_clock(tmp_path, monkeypatch):
    first = open_database(tmp_path / "first.db")
    kv.apply(first, [read_write(r) for r in LOG])
    monkeypatch.setattr(time, "time", lambda: T0 + 10**8)  # a replay years later
    second = open_database(tmp_path / "second.db")
    for r in LOG:  # one line per batch this time
        kv.apply(second, [read_write(r)])
    assert decisions(first) == decisions(second)
    assert [row[2] for row in decisions(first)] == [
        "stored", "rejected", "stored", "stored", "rejected", "stored", "stored"
    ]  # fmt: skip
    assert decisions(first)[4][5] == "not found"
    assert kv.apply(first, [read_write(LOG[0])]).duplicates == 1  # read again after a crash: once


def test_retention_purges_what_expired_behind_the_log(tmp_path):
    path = tmp_path / "p.db"
    conn = open_database(path)
    kv.apply(conn, [read_write(r) for r in LOG[:6]])
    retention.expire(conn, path, 180, T0 + 10**6)
    # the log's last line is at T0 + 31: nothing is purged that a later line may still find live
    assert {row[0] for row in conn.execute("select key from kv_items")} == {"a", "b", "c"}
    kv.apply(conn, [read_write(LOG[6])])  # the log moves on to T0 + 400
    retention.expire(conn, path, 180, T0 + 10**6)
    assert {row[0] for row in conn.execute("select key from kv_items")} == {"a", "d"}
    assert conn.execute("select count(*) from kv_index").fetchone()[0] == 0  # a's entry went with its put
    assert len(decisions(conn)) == 7  # decisions younger than the retention period stay


def test_a_long_value_is_left_for_a_thread_and_read_whole_without_most(tmp_path):
    conn = open_database(tmp_path / "p.db")
    kv.apply(
        conn,
        [
            read_write(line(1, T0, "PUT", "small", b"s" * 10)),
            read_write(line(2, T0, "PUT", "big", b"b" * 11)),
        ],
    )
    assert kv.read_item(conn, "b", "small", T0, most=10) == (b"s" * 10, None, 1)
    assert kv.read_item(conn, "b", "big", T0, most=10) == (None, None, 2)  # too long to read here
    assert kv.read_item(conn, "b", "big", T0) == (b"b" * 11, None, 2)
    assert kv.read_item(conn, "b", "absent", T0, most=10) is None
