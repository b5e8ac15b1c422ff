"""support/heap.py: what closed databases leave in malloc's heap goes back to the system."""

from __future__ import annotations

import os
import sqlite3

from ingestd.support import heap


def resident() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_trim_returns_what_opening_and_closing_many_databases_left(tmp_path):
    """As the retention pass does: every project database opened, read and closed, with
    small allocations that outlive them in between (the pass's results), so the freed
    pages sit inside the heap where free() alone does not return them."""
    paths = [tmp_path / f"p{n}.db" for n in range(300)]
    for path in paths:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE records (a, b, c)")
            conn.executemany("INSERT INTO records VALUES (?, ?, ?)", [(n, "x" * 50, n) for n in range(200)])
        conn.close()
    survivors = []
    for _ in range(3):
        for path in paths:
            conn = sqlite3.connect(path)
            conn.execute("SELECT * FROM records").fetchall()
            survivors.append(bytearray(64))
            conn.close()
    before = resident()
    assert heap.trim()
    assert resident() < before
