"""With many projects, Datasette keeps a bounded number of databases open (issue 25, goal 4):
past ``datasette.open_databases`` idle connections it closes the least recently read
project's, and its views no longer re-read every project's schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Stack, start_stack, stop_stack

PROJECTS = 30
LIMIT = 2


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("open-databases")
    (home / "smalltable.yaml").write_text(f"datasette:\n  open_databases: {LIMIT}\n")
    running = start_stack(home / "home", ["--config", str(home / "smalltable.yaml")])
    yield running
    stop_stack(running)


def open_projects(pid: int) -> set[str]:
    """The project databases (``NAME.db``) the process has open."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.endswith(".db") and not Path(target).name.startswith("_"):
            names.add(Path(target).stem)
    return names


def test_datasette_keeps_at_most_its_limit_of_project_databases_open(many):
    names = [f"open-{n:02d}" for n in range(PROJECTS)]
    written = [many.post(name, '{"n": 1}') for name in names]
    for name, answer in zip(names, written, strict=True):
        assert answer.status_code == 202
        many.wait_row(name, answer.json()["id"])
    for _ in range(2):  # twice over: connections were closed and opened again
        for name in names:
            table = many.request("GET", name, f"/{name}/records.json", params={"_shape": "array"})
            assert table.status_code == 200 and len(table.json()) == 1, table.text
            item = many.request("GET", name, "/_kv/b/items/absent")
            assert item.status_code == 404
    still_open = open_projects(many.datasette_pid())
    assert 0 < len(still_open) <= LIMIT  # every read is over: only idle connections are open


def test_a_new_column_shows_in_datasettes_table_view_at_once(many):
    first = many.post("open-columns", '{"a": 1}')
    many.wait_row("open-columns", first.json()["id"])
    before = many.request("GET", "open-columns", "/open-columns/records.json", params={"_shape": "objects"})
    assert "a" in before.json()["columns"] and "b" not in before.json()["columns"]
    second = many.post("open-columns", '{"b": 2}')
    many.wait_row("open-columns", second.json()["id"])
    after = many.request("GET", "open-columns", "/open-columns/records.json", params={"_shape": "objects"})
    assert {"a", "b"} <= set(after.json()["columns"])  # no schema refresh needed to see it
