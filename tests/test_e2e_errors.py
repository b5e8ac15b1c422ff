"""Every API error is JSON, through the real nginx and Datasette: a reason and what to do instead.

A new user's mistakes: a post to the apex (which stores nothing), a method
SmallTable does not take, a mistyped status id, a record or database that is
not there. API clients (``Accept: application/json``) get JSON every time; a
browser still gets a page.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = pytest.mark.e2e

API = {"Accept": "application/json"}


@pytest.mark.parametrize("path", ["/", "/records", "/_projects.json"])
def test_a_post_to_the_apex_is_refused_in_json_and_names_the_project_host(stack, path):
    answer = stack.post(None, '{"a": 1}', path=path, headers={"Content-Type": "application/json"})
    assert answer.status_code == 405
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Allow"] == "GET, HEAD, OPTIONS"
    body = answer.json()
    assert body["error"] == "the apex stores nothing: this POST was not kept"
    assert body["post_to"] == f"http://PROJECT.localhost:{stack.port}/"
    assert body["create"] == f'POST {{"project":"NAME"}} to http://localhost:{stack.port}/_project'


def test_a_method_a_project_does_not_take_is_refused_in_json(stack, project):
    answer = stack.request("PATCH", project, "/", content=b'{"a": 1}')
    assert answer.status_code == 405
    assert answer.json()["error"] == "PATCH is not a method SmallTable takes"
    assert "POST" in answer.headers["Allow"]


@pytest.mark.parametrize("on_project", [False, True])
def test_a_mistyped_status_id_is_a_json_404(stack, project, on_project):
    answer = stack.request("GET", project if on_project else None, "/_status/abc123", headers=API)
    assert answer.status_code == 404
    body = answer.json()
    assert body["error"] == "not a request id: 'abc123'"
    assert "32 lowercase hex digits" in body["expected"]


def test_an_unknown_record_in_datasettes_table_view_is_a_json_404(stack, project):
    answer = stack.request("GET", project, f"/{project}/records/999999", headers=API)
    assert answer.status_code == 404
    body = answer.json()
    assert body["error"].startswith(f"There is no record 999999 in {project}")
    assert body["records"] == f"http://{project}.localhost:{stack.port}/{project}/records.json"


def test_a_sort_by_a_column_the_table_lacks_is_json_with_datasettes_reason(stack, project):
    """Datasette says this mistake in words but with status 500; a program still gets JSON."""
    stack.wait_row(
        project, stack.post(project, '{"n": 1}', headers={"Content-Type": "application/json"}).json()["id"]
    )
    answer = stack.request("GET", project, f"/{project}/records", params={"_sort": "nosuch"}, headers=API)
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert (body["error"], body["status"]) == ("Cannot sort table by nosuch", answer.status_code)
    assert body["records"] == f"http://{project}.localhost:{stack.port}/{project}/records.json"


def test_another_projects_database_on_a_project_host_is_a_json_404(stack, project):
    answer = stack.request("GET", project, "/no-such-db/records", headers=API)
    assert answer.status_code == 404
    body = answer.json()
    assert body["error"] == "Database not found"
    assert body["detail"] == f"this host serves the project {project}: its tables are under /{project}/"


def test_an_unknown_database_on_the_apex_is_a_json_404_naming_the_project_list(stack):
    answer = stack.request("GET", None, "/no-such-db", headers=API)
    assert answer.status_code == 404
    assert answer.json()["projects"] == f"http://localhost:{stack.port}/_projects.json"


def test_a_browser_still_gets_datasettes_page(stack):
    answer = stack.request("GET", None, "/no-such-db", headers={"Accept": "text/html"})
    assert answer.status_code == 404
    assert answer.headers["Content-Type"].startswith("text/html")


def test_reads_while_datasette_is_down_are_json_saying_writes_are_still_kept(fresh_stack, project):
    """nginx's own 502 for a Datasette that is not there is JSON, on the apex and on a project.

    ``up`` is stopped meanwhile, so it does not start Datasette again before the reads."""
    datasette = fresh_stack.datasette_pid()
    os.kill(fresh_stack.process.pid, signal.SIGSTOP)
    try:
        os.kill(datasette, signal.SIGKILL)
        answers = [fresh_stack.request("GET", host, "/", headers=API) for host in (None, project)]
        written = fresh_stack.post(project, '{"n": 1}', headers={"Content-Type": "application/json"})
    finally:
        os.kill(fresh_stack.process.pid, signal.SIGCONT)
    for answer in answers:
        assert answer.status_code == 503
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"].endswith("(Datasette is down or restarting)")
        assert answer.json()["detail"].startswith("writes are still accepted")
    assert written.status_code == 202
    deadline = time.monotonic() + 30  # up starts Datasette again, after its restart delay
    while fresh_stack.request("GET", project, "/", headers=API).status_code == 503:
        assert time.monotonic() < deadline, "Datasette did not come back"
        time.sleep(0.1)
    assert fresh_stack.wait_row(project, written.json()["id"])["n"] == 1
