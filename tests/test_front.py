"""Several hosts (issue 24, docs/scale.md): three real ``smalltable up`` hosts behind the
front tier's real nginx, rendered by ``smalltable render-config`` from ``front.hosts``."""

from __future__ import annotations

import pytest

from .frontlib import Front, start_hosts, stop_hosts


@pytest.fixture
def tier(tmp_path):
    hosts = start_hosts(tmp_path, 3)
    front = Front(tmp_path / "front", hosts)
    yield front
    front.stop()
    stop_hosts(front.hosts)


def owners(front: Front, projects: list[str]) -> dict[str, str]:
    """Which host answers each project's reads through the front (X-SmallTable-Host)."""
    return {p: front.get("/_project", p).headers["X-SmallTable-Host"] for p in projects}


def test_each_project_lives_on_one_host_and_the_apex_lists_every_host(tier):
    projects = [f"routed-{i}" for i in range(30)]
    ids = {p: tier.post(p, f'{{"n": "{p}"}}').json()["id"] for p in projects}
    where = owners(tier, projects)
    by_port = {f"127.0.0.1:{h.port}": h for h in tier.hosts}
    assert set(where.values()) == set(by_port), "every host owns some of 30 projects"
    for p in projects:
        host = by_port[where[p]]
        host.wait_row(p, ids[p])
        others = [h for h in tier.hosts if h is not host]
        assert all(not (h.home / "data" / f"{p}.db").exists() for h in others), p
    listed = tier.get("/_projects.json")
    assert listed.status_code == 200 and "X-SmallTable-Unavailable" not in listed.headers
    assert [entry["project"] for entry in listed.json()] == sorted(projects)
    page = tier.get("/").text
    assert all(f">{p}</a>" in page for p in projects) and "30 projects" in page


def test_adding_a_host_moves_about_a_quarter_of_the_projects_all_to_it(tier, tmp_path):
    projects = [f"moving-{i}" for i in range(200)]
    before = owners(tier, projects)
    # A fourth host in front.hosts (not running: the front names it for its projects).
    fourth = Front(tmp_path / "front4", tier.hosts, extra=("127.0.0.1:9",))
    try:
        after = owners(fourth, projects)
    finally:
        fourth.stop()
    moved = [p for p in projects if after[p] != before[p]]
    assert {after[p] for p in moved} == {"127.0.0.1:9"}
    assert 0.15 * len(projects) < len(moved) < 0.35 * len(projects), len(moved)
