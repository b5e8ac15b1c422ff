"""What the public stack shows, and must not: escaped hosts, reserved names, Datasette's
introspection pages."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ingestd.model.project import RESERVED_NAMES

from .conftest import Stack

pytestmark = pytest.mark.e2e


def raw_get(stack: Stack, host: str) -> tuple[int, bytes]:
    """A GET with exactly this Host header (an HTTP client would refuse or fix some)."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("host", ['localhost"x', "a\\b.localhost", "x'y"])
def test_a_bad_host_gets_valid_json(stack, host):
    status, body = raw_get(stack, host)
    assert status == 400
    answer = json.loads(body)
    assert answer["error"] == "not a SmallTable project host"
    assert answer["host"] == "(not shown: not a host name)"


def test_a_bad_host_made_of_host_characters_is_named(stack):
    status, body = raw_get(stack, "No_Such.localhost")
    assert status == 400 and json.loads(body)["host"] == "no_such.localhost"


def test_reserved_names_are_never_projects(stack):
    """Every reserved name is refused by nginx, writes and reads alike, and none is logged."""
    before = len(stack.ingest_log.read_bytes().splitlines())
    for name in sorted(RESERVED_NAMES):
        for method in ("POST", "GET"):
            # (no body: nginx refuses before reading one, and may reset a kept-alive connection)
            answer = stack.request(method, name, "/")
            assert answer.status_code == 400, (name, method)
            assert answer.json() == {
                "error": "reserved name",
                "project": name,
                "fix": "this name can never be a project: choose another",
            }
        assert stack.request("POST", name, "/_project").status_code == 400
    logged = [json.loads(line) for line in stack.ingest_log.read_bytes().splitlines()[before:]]
    assert not [line for line in logged if line["project"] in RESERVED_NAMES]


INTROSPECTION = [
    "/-/databases.json",
    "/-/settings.json",
    "/-/versions.json",
    "/-/threads.json",
    "/-/metadata.json",
    "/-/plugins.json",
    "/-/config.json",
    "/-/actor.json",
    "/-/databases",
    "/-/permissions",
]


@pytest.mark.parametrize("on_project", [False, True], ids=["apex", "project"])
def test_datasette_introspection_pages_are_not_public(stack, project, on_project):
    """They show the data directory, versions, settings and threads: 404 through nginx,
    while the static files the pages need are still served."""
    host = project if on_project else None
    for path in INTROSPECTION:
        answer = stack.request("GET", host, path)
        assert answer.status_code == 404, path
        assert "not public" in answer.json()["fix"]
        assert "/data" not in answer.text
    assert stack.request("GET", host, "/-/static/app.css").status_code == 200


def uid_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid")


def test_nginx_workers_never_run_as_root(stack):
    """Started as root (as CI does), nginx.conf names nginx.worker_user: the workers, which
    parse every request, are not root. A write and a read still work through them."""
    master = int((stack.home / "run" / "nginx.pid").read_text())
    workers = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent(entry) == master
    ]
    assert workers
    assert all(uid_of(pid) != 0 for pid in workers)
    assert "user root" not in (stack.home / "conf" / "nginx.conf").read_text()


def _parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_client_address_and_user_agent_are_kept_only_when_the_owner_says(stack, project):
    """Every record is public: the client's address and user agent are not stored unless
    the project's store_client setting is on (off by default)."""
    from .test_e2e_projects import status

    agent = {"User-Agent": "secret-agent/1"}
    before = stack.wait_row(project, stack.post(project, "a", headers=agent).json()["id"])
    assert (before["_remote_addr"], before["_user_agent"]) == (None, None)
    change = stack.post(
        project, json.dumps({"owner": "ann@example.com", "store_client": True}), path="/_project"
    )
    assert status(stack, project, change)["status"] == "applied"
    after = stack.wait_row(project, stack.post(project, "b", headers=agent).json()["id"])
    assert (after["_remote_addr"], after["_user_agent"]) == ("127.0.0.1", "secret-agent/1")
    listing = stack.request("GET", None, "/_projects.json")
    assert "ann@example.com" not in listing.text
    assert {p["project"]: p for p in listing.json()}[project]["owner"] == "claimed"


def test_held_posts_and_holding_rejects_never_show_the_client(stack, project):
    """The holding area is public (``/_smalltable``): a held post's client address and
    user agent, kept to load the post later, read as null there, as in a project that
    does not keep clients (store_client off)."""
    from .test_e2e_projects import status

    change = stack.post(project, json.dumps({"owner": "ann", "quota_mb": 0.01}), path="/_project")
    assert status(stack, project, change)["status"] == "applied"
    agent = {"User-Agent": "secret-agent/2"}
    held = stack.post(project, "waits", headers=agent)
    assert status(stack, project, held, wanted=("held",))["status"] == "held"
    refused = stack.post(f"{project}-x", '{"quota_mb": -1}', path="/_project", headers=agent)
    assert status(stack, f"{project}-x", refused)["status"] == "rejected"  # in the holding area's rejects
    query = {"_shape": "array", "_request_id__exact": held.json()["id"]}
    rows = stack.request("GET", None, "/_smalltable/held.json", params=query).json()
    assert [(row["project"], row["remote_addr"], row["user_agent"]) for row in rows] == [
        (project, None, None)
    ]
    query["_request_id__exact"] = refused.json()["id"]
    rows = stack.request("GET", None, "/_smalltable/rejects.json", params=query).json()
    assert [(row["_remote_addr"], row["_user_agent"]) for row in rows] == [(None, None)]
    for sql in (
        "select remote_addr, user_agent from held",
        "select _remote_addr, _user_agent from rejects",
        "select count(*) from held where remote_addr is not null or user_agent like 'secret%'",
    ):
        answer = stack.request("GET", None, "/_smalltable.json", params={"sql": sql, "_shape": "array"})
        assert answer.status_code == 200, answer.text
        assert "127.0.0.1" not in answer.text and "secret-agent" not in answer.text
        assert all(value in (None, 0) for row in answer.json() for value in row.values()), answer.text
