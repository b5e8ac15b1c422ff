"""Column squatting: one post cannot take a project's columns, and an owner's schema
decides which keys become columns. Through the real stack."""

from __future__ import annotations

import json

import pytest

from .test_e2e_projects import status

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


def columns(stack, project: str) -> set[str]:
    answer = stack.request("GET", project, f"/{project}/records.json", params={"_size": "1"})
    return set(answer.json()["columns"])


def test_one_post_cannot_take_every_column_slot(stack, project):
    """A post with 2,000 keys once took all 200 column slots: it adds at most
    ingest.max_new_columns_per_post (20) columns, the rest stay in its body, and the
    owner's later fields still get columns."""
    squat = {f"k{n:04d}": n for n in range(2000)}
    rid = stack.post(project, json.dumps(squat), headers=JSON).json()["id"]
    row = stack.wait_row(project, rid)
    assert len([c for c in columns(stack, project) if c.startswith("k")]) == 20
    assert json.loads(row["_body"]) == squat
    later = stack.post(project, json.dumps({"score": 3, "user": "ann"}), headers=JSON).json()["id"]
    assert stack.wait_row(project, later)["score"] == 3
    assert {"score", "user"} <= columns(stack, project)


def test_with_a_schema_only_its_keys_become_columns(stack, project):
    schema = {"type": "object", "properties": {"user": {"type": "string"}, "score": {"type": "integer"}}}
    created = stack.post(
        project, json.dumps({"owner": "ann", "schema": schema}), path="/_project", headers=JSON
    )
    assert status(stack, project, created)["status"] == "applied"
    rid = stack.post(project, json.dumps({"user": "ann", "score": 3, "squat": "x"}), headers=JSON).json()[
        "id"
    ]
    row = stack.wait_row(project, rid)
    assert row["user"] == "ann" and row["score"] == 3
    assert "squat" not in columns(stack, project)
    assert json.loads(row["_body"])["squat"] == "x"
