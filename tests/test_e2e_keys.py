"""Keys through the real nginx (njs), ingestd and Datasette: owning a project, secrets kept.

nginx decides every key alone (nginx/smalltable.js) from the maps ingestd writes;
these tests go through nginx as a client would, and read what was stored on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import signal
import threading
import time

import httpx
import pytest

from .keyslib import (
    KEY,
    bearer,
    claim,
    lines_of,
    logged,
    logged_line,
    make_key,
    smalltable,
    until,
    wait_owned,
    write_settings,
    write_with,
)
from .test_e2e_projects import JSON, settings_of, status

READ_LOG_FLUSH = 1
"""nginx/smalltable.conf.j2's read_log_buffer: access.log is written at least this often (s)."""

pytestmark = pytest.mark.e2e


def test_a_claim_answers_its_owner_key_once_and_only_its_hash_is_kept(stack, project):
    answer = stack.post(project, json.dumps({"owner": "ann@example.com"}), path="/_project", headers=JSON)
    assert answer.status_code == 202, answer.text
    key = answer.json()["key"]
    assert KEY.fullmatch(key) and "only once" in answer.json()["key_note"]
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert answer.json()["key_id"] == digest[:12]
    applied = status(stack, project, answer)
    assert applied["status"] == "applied" and key not in json.dumps(applied)
    line = logged_line(stack, answer.json()["id"])
    assert line["mint"] == digest and line["key"] == ""
    assert key.encode() not in stack.ingest_log.read_bytes()
    keys = json.loads((stack.home / "state" / "keys.json").read_text())["keys"][project]
    assert [(k["key_id"], k["hash"], k["scope"]) for k in keys] == [(digest[:12], digest, "owner")]
    # a write that is not a claim gets no key
    post = stack.post(project, b'{"n": 1}', headers=JSON)
    assert post.status_code == 202 and "key" not in post.json()


def test_a_claimed_project_keeps_its_settings_without_the_owner_key(stack, project):
    key = claim(stack, project)
    wait_owned(stack, project)
    before = settings_of(stack, project)
    for headers in (JSON, bearer("stk_" + "0" * 32), {"Authorization": "Basic YW5uOnB3", **JSON}):
        refused = stack.post(
            project,
            json.dumps({"owner": "eve", "quota_mb": 1}),
            path="/_project",
            headers=headers,
            as_owner=False,
        )
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"] and "Authorization: Bearer" in refused.json()["fix"]
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    ids = {line["id"] for line in logged(stack)}
    assert not any(line["project"] == project and "eve" in line["body"] for line in logged(stack))
    assert settings_of(stack, project) == before and len(ids) == len(logged(stack))
    # with the owner key: a change as before
    changed = stack.post(
        project, json.dumps({"quota_mb": 700}), path="/_project", headers=bearer(key), as_owner=False
    )
    assert changed.status_code == 202 and "key" not in changed.json()
    assert status(stack, project, changed)["status"] == "applied"
    assert settings_of(stack, project)["settings"]["quota_mb"] == 700
    line = logged_line(stack, changed.json()["id"])
    assert line["key"] == f"owner:{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def test_a_change_sent_with_the_key_right_after_the_claim_is_applied(stack, project):
    """Before nginx has reloaded for the new key, ingestd checks the key's hash in log order."""
    answer = stack.post(project, json.dumps({"owner": "ann"}), path="/_project", headers=JSON)
    key = answer.json()["key"]
    at_once = stack.post(project, b'{"description": "mine"}', path="/_project", headers=bearer(key))
    wrong = stack.post(
        project, b'{"description": "not yours"}', path="/_project", headers=bearer("stk_" + "1" * 32)
    )
    assert status(stack, project, at_once)["status"] == "applied", at_once.text
    if wrong.status_code == 202:  # nginx had not reloaded yet: ingestd refuses it
        assert "is claimed" in status(stack, project, wrong)["reason"]
    else:
        assert wrong.status_code == 401
    assert settings_of(stack, project)["settings"]["description"] == "mine"


def test_two_claims_at_once_have_one_owner_and_the_other_is_told(stack, project):
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def send(owner: str) -> None:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            answers.append(
                client.post(
                    stack.url("/_project"),
                    content=json.dumps({"owner": owner}),
                    headers={"Host": stack.host(project), **JSON},
                )
            )

    threads = [threading.Thread(target=send, args=(owner,)) for owner in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [a for a in answers if a.status_code == 202]
    if len(accepted) == 1:  # nginx had already reloaded for the first: it refused the second
        assert sorted(a.status_code for a in answers) == [202, 401]
    else:
        outcomes = sorted((status(stack, project, a)["status"], a) for a in accepted)
        assert [s for s, _ in outcomes] == ["applied", "rejected"]
        loser = status(stack, project, outcomes[1][1])
        assert "the other one was first and owns it" in loser["reason"]
    winner = next(a for a in accepted if status(stack, project, a)["status"] == "applied")
    assert settings_of(stack, project)["settings"]["owner"] == json.loads(winner.request.content)["owner"]
    wait_owned(stack, project)
    for answer in accepted:
        attempt = stack.post(
            project,
            b'{"description": "x"}',
            path="/_project",
            headers=bearer(answer.json()["key"]),
            as_owner=False,
        )
        assert attempt.status_code == (202 if answer is winner else 401), attempt.text


def every_file_holding(home, secrets: list[bytes]) -> list[str]:
    """The files under ``home`` (compressed ones read uncompressed) holding any of ``secrets``."""
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        found += [f"{path}: {secret!r}" for secret in secrets if secret in data]
    return found


def test_secrets_sent_in_headers_reach_no_file_page_export_or_metric(stack, project):
    key = claim(stack, project)
    wait_owned(stack, project)
    # the owner keeps clients' user agents, so a key pasted into one would show
    kept = stack.post(
        project,
        b'{"store_client": true}',
        path="/_project",
        headers={"Authorization": f"Bearer {key}", **JSON},
    )
    assert status(stack, project, kept)["status"] == "applied"
    cookie, proxy, api = (
        "ck-" + secrets.token_hex(8),
        "px-" + secrets.token_hex(8),
        "stk_" + secrets.token_hex(16),
    )
    headers = {
        "Authorization": f"Bearer {key}",
        "Cookie": f"session={cookie}",
        "Proxy-Authorization": f"Basic {proxy}",
        "X-Api-Key": api,
        "User-Agent": f"tool/1 {api}",
        **JSON,
    }
    posted = stack.post(project, b'{"n": 1}', headers=headers)
    assert posted.status_code == 202, posted.text
    row = stack.wait_row(project, posted.json()["id"])
    assert row["_user_agent"] == "(withheld: it holds something like a key)"
    changed = stack.post(project, b'{"description": "kept"}', path="/_project", headers=headers)
    assert status(stack, project, changed)["status"] == "applied"
    # a key in the URL is refused, and so never logged
    in_url = stack.request("GET", project, f"/_export.json?key={api}")
    assert in_url.status_code == 400 and "Authorization: Bearer" in in_url.json()["fix"]
    assert stack.post(project, b"x", path=f"/?api_key={key}").status_code == 400
    # reads with the secrets: every page, export and SQL goes through Datasette
    reads = [
        "/",
        "/1",
        "/1.json",
        "/_project",
        "/_export.json",
        "/_export.csv",
        f"/_status/{posted.json()['id']}",
        f"/{project}.json?sql=select+*+from+records",
        f"/{project}/settings.json",
    ]
    shown = []
    for path in reads:
        answer = stack.request("GET", project, path, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
        shown.append(answer.text)
    shown.append(httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics").text)
    everything = "\n".join(shown)
    for secret in (key, cookie, proxy, api):
        assert secret not in everything
    # nginx writes access.log at least every READ_LOG_FLUSH seconds: every line is there after
    time.sleep(READ_LOG_FLUSH + 0.5)
    assert every_file_holding(stack.home, [s.encode() for s in (key, cookie, proxy, api)]) == []
    # and nginx logged what it refused, without its query string
    access = (stack.home / "logs" / "access.log").read_text()
    assert '"GET /_smalltable_refused" 400' in access


def test_the_owner_makes_lists_and_revokes_keys_and_a_change_is_in_force_within_2s(stack, project):
    owner = claim(stack, project)
    wait_owned(stack, project)
    made = []
    for label in ("ci", "ci-next"):
        answer = stack.post(
            project,
            json.dumps({"scope": "write", "label": label}),
            path="/_project/keys",
            headers=bearer(owner),
        )
        assert answer.status_code == 202, answer.text
        key, kid = answer.json()["key"], answer.json()["key_id"]
        assert KEY.fullmatch(key) and kid == hashlib.sha256(key.encode()).hexdigest()[:12]
        in_force = until(lambda key=key: write_with(stack, project, key).status_code == 202)
        print(f"new key in force after {in_force:.3f}s")
        assert in_force < 2
        assert status(stack, project, answer) == {
            **status(stack, project, answer),
            "status": "applied",
            "action": "key created",
        }
        made.append((key, kid))
    # two write keys live at once, each logged by its id
    for key, kid in made:
        written = write_with(stack, project, key)
        assert written.status_code == 202, written.text
        line = logged_line(stack, written.json()["id"])
        assert line["key"] == f"write:{kid}"
    listed = stack.request("GET", project, "/_project/keys", headers=bearer(owner))
    assert listed.status_code == 200, listed.text
    keys = listed.json()["keys"]
    assert [(k["scope"], k["label"]) for k in keys] == [("owner", ""), ("write", "ci"), ("write", "ci-next")]
    assert "stk_" not in listed.text and hashlib.sha256(owner.encode()).hexdigest() not in listed.text
    # listing and managing need the owner key
    assert stack.request("GET", project, "/_project/keys").status_code == 401
    assert stack.request("GET", project, "/_project/keys", headers=bearer(made[0][0])).status_code == 403
    stolen = stack.post(project, b'{"scope": "write"}', path="/_project/keys", headers=bearer(made[0][0]))
    assert stolen.status_code == 403 and "owner key" in stolen.json()["error"]
    # revoke the first: refused within 2 s, the second still works
    gone = stack.request("DELETE", project, f"/_project/keys/{made[0][1]}", headers=bearer(owner))
    assert gone.status_code == 202, gone.text
    revoked_in = until(lambda: write_with(stack, project, made[0][0]).status_code == 401)
    print(f"revoked key refused after {revoked_in:.3f}s")
    assert revoked_in < 2
    assert status(stack, project, gone)["action"] == "key revoked"
    assert write_with(stack, project, made[1][0]).status_code == 202
    after = stack.request("GET", project, "/_project/keys", headers=bearer(owner)).json()["keys"]
    assert [k["key_id"] for k in after] == [keys[0]["key_id"], made[1][1]]
    # a bad key change is rejected with the reason, and makes no key
    bad = stack.post(project, b'{"scope": "admin"}', path="/_project/keys", headers=bearer(owner))
    assert "'scope': expected one of read, write, read+write" in status(stack, project, bad)["reason"]
    assert write_with(stack, project, bad.json()["key"]).status_code == 401


def test_with_write_key_nginx_refuses_every_write_without_a_good_key_and_logs_none(stack, project):
    owner = claim(stack, project, "ann")
    other = project[:50] + "-other"
    other_owner = claim(stack, other, "bob")
    assert (
        stack.post(project, b'{"write": "key"}', path="/_project", headers=bearer(owner)).status_code == 202
    )
    wait_owned(stack, other)
    until(lambda: write_with(stack, project, None).status_code == 401)
    write, _ = make_key(stack, project, owner, scope="write", label="ci")
    both, _ = make_key(stack, project, owner, scope="read+write")
    read, _ = make_key(stack, project, owner, scope="read")
    soon, _ = make_key(stack, project, owner, scope="write", expires=time.time() + 8)
    revoked, revoked_id = make_key(stack, project, owner, scope="write")
    foreign, _ = make_key(stack, other, other_owner, scope="write")
    # a key is in force once nginx reloaded the map ingestd wrote (within 2 s of "applied"):
    # the newest key working means every older one is in nginx's map too
    until(lambda: write_with(stack, project, revoked).status_code == 202)
    gone = stack.request("DELETE", project, f"/_project/keys/{revoked_id}", headers=bearer(owner))
    assert status(stack, project, gone)["status"] == "applied"
    until(lambda: write_with(stack, project, revoked).status_code == 401)
    for key in (owner, write, both, soon):
        answer = write_with(stack, project, key)
        assert answer.status_code == 202, answer.text
    until(lambda: write_with(stack, project, soon).status_code == 401, timeout=15)
    before = lines_of(stack, project)
    refusals = {
        "no key": ({}, 401, "needs a write key"),
        "malformed": ({"Authorization": "Bearer"}, 401, "malformed Authorization header"),
        "not ours": ({"Authorization": "Bearer stk_nothex"}, 401, "malformed Authorization header"),
        "basic": ({"Authorization": "Basic YW5uOnB3"}, 401, "malformed Authorization header"),
        "two": ({"Authorization": f"Bearer {write} {write}"}, 401, "malformed Authorization header"),
        "wrong": (bearer("stk_" + secrets.token_hex(16)), 401, "unknown or revoked key"),
        "revoked": (bearer(revoked), 401, "unknown or revoked key"),
        "expired": (bearer(soon), 401, "the key has expired"),
        "read only": (bearer(read), 403, "this read key may not"),
        "another project's": (bearer(foreign), 403, "belongs to another project"),
    }
    for name, (headers, code, error) in refusals.items():
        for method in ("POST", "PUT", "DELETE"):
            answer = stack.request(method, project, "/anything", content=b'{"n": 2}', headers=headers)
            assert answer.status_code == code, (name, method, answer.text)
            assert error in answer.json()["error"] and answer.json()["fix"], (name, answer.text)
    assert lines_of(stack, project) == before  # none of them was logged as accepted
    # the other project is open: anyone posts there; a key of another project is refused
    assert stack.post(other, b'{"n": 3}').status_code == 202
    assert stack.post(other, b'{"n": 3}', headers=bearer(write)).status_code == 403


def test_ten_thousand_wrong_keys_do_not_slow_other_projects_writes(stack, project):
    owner = claim(stack, project)
    assert (
        stack.post(project, b'{"write": "key"}', path="/_project", headers=bearer(owner)).status_code == 202
    )
    until(lambda: write_with(stack, project, None).status_code == 401)
    victim = project[:50] + "-open"

    def latencies(count: int) -> list[float]:
        times = []
        with httpx.Client(timeout=30) as client:
            for _ in range(count):
                start = time.perf_counter()
                answer = client.post(
                    stack.url("/"), content=b'{"n": 1}', headers={"Host": stack.host(victim)}
                )
                times.append(time.perf_counter() - start)
                assert answer.status_code == 202
        return sorted(times)

    quiet = latencies(200)
    refused: list[int] = []

    def attack() -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(2500):
                answer = client.post(
                    stack.url("/"),
                    content=b"x",
                    headers={"Host": stack.host(project), **bearer("stk_" + secrets.token_hex(16))},
                )
                refused.append(answer.status_code)

    attackers = [threading.Thread(target=attack) for _ in range(4)]
    for thread in attackers:
        thread.start()
    busy = latencies(200)
    for thread in attackers:
        thread.join()
    assert len(refused) == 10_000 and set(refused) == {401}
    median_quiet, median_busy = quiet[100], busy[100]
    quiet_ms, busy_ms = median_quiet * 1000, median_busy * 1000
    print(f"other project's write: median {quiet_ms:.2f} ms quiet, {busy_ms:.2f} ms under attack")
    assert median_busy < 0.05  # still answered at once: nothing waits on a wrong key


def test_the_operator_resets_an_owner_key_and_gives_one_to_a_project_claimed_before_keys(stack, project):
    old = claim(stack, project)
    wait_owned(stack, project)
    reset = smalltable(stack, "keys", "reset", project)
    assert reset.returncode == 0, reset.stderr
    new = KEY.search(reset.stdout).group(0)
    assert "shown only once" in reset.stdout and "In force" in reset.stdout
    until(lambda: write_settings(stack, project, old).status_code == 401)
    assert status(stack, project, write_settings(stack, project, new))["status"] == "applied"
    listed = smalltable(stack, "keys", "list", project)
    new_id = hashlib.sha256(new.encode()).hexdigest()[:12]
    assert listed.returncode == 0 and new_id in listed.stdout and "owner" in listed.stdout
    assert hashlib.sha256(old.encode()).hexdigest()[:12] not in listed.stdout and "stk_" not in listed.stdout
    keys = stack.request("GET", project, "/_project/keys", headers=bearer(new)).json()["keys"]
    assert [(k["key_id"], k["scope"]) for k in keys] == [(new_id, "owner")]
    # a project claimed with no owner key (as before keys existed) gets one the same way
    legacy = project[:50] + "-legacy"
    sent_with_a_key = stack.post(
        legacy, b'{"owner": "ann"}', path="/_project", headers=bearer("stk_" + "2" * 32), as_owner=False
    )
    assert "key" not in sent_with_a_key.json()
    assert status(stack, legacy, sent_with_a_key)["status"] == "applied"
    assert "no keys" in smalltable(stack, "keys", "list", legacy).stdout
    given = KEY.search(smalltable(stack, "keys", "reset", legacy).stdout).group(0)
    wait_owned(stack, legacy)
    assert write_settings(stack, legacy, None).status_code == 401
    assert status(stack, legacy, write_settings(stack, legacy, given))["status"] == "applied"
    # the operator's command only; nobody resets over HTTP, not even the owner
    by_owner = stack.post(legacy, b"", path="/_project/keys/reset", headers=bearer(given))
    assert "reset by the operator" in status(stack, legacy, by_owner)["reason"]
    assert smalltable(stack, "keys", "reset", "no-such-project-here").returncode != 0


def test_njs_runs_only_for_requests_a_key_rule_may_refuse(fresh_stack):
    """The key check's cost: a keyless write to an open project, and a write with a live
    write (or owner) key of its own project that never expires, never evaluate njs.

    The stack's smalltable.js is swapped for one that refuses everything (418), so what
    still passes did not run it; every other request still meets njs (and so its rules)."""
    stack = fresh_stack
    owner = claim(stack, "locked")
    wait_owned(stack, "locked")
    assert (
        stack.post("locked", b'{"write": "key"}', path="/_project", headers=bearer(owner)).status_code == 202
    )
    until(lambda: write_with(stack, "locked", None).status_code == 401)
    writer, writer_id = make_key(stack, "locked", owner, scope="write")
    both, both_id = make_key(stack, "locked", owner, scope="read+write")
    reader, _ = make_key(stack, "locked", owner, scope="read")
    expiring, _ = make_key(stack, "locked", owner, scope="write", expires=time.time() + 3600)
    until(lambda: write_with(stack, "locked", expiring).status_code == 202)
    script = stack.home / "conf" / "smalltable.js"
    refusing = (
        "function pathProject(r) { return ''; }\n"
        "function decide(r) { r.variables.smalltable_decided = '418'; return '418'; }\n"
        'function answer(r) { r.return(418, \'{"error":"njs ran"}\\n\'); }\n'
        "export default { pathProject, decide, answer };\n"
    )
    script.write_text(refusing)
    master = int(next(stack.home.rglob("nginx.pid")).read_text())
    os.kill(master, signal.SIGHUP)
    until(lambda: stack.request("GET", "open", "/_project").status_code == 418, timeout=10)
    for path in ("/", "/a/b?x=1", "/_projectx"):
        for method in ("POST", "PUT", "DELETE"):
            answer = httpx.request(
                method, stack.url(path), content=b'{"n": 1}', headers={"Host": stack.host("open"), **JSON}
            )
            assert answer.status_code == 202, (method, path, answer.text)
    owner_id = hashlib.sha256(owner.encode()).hexdigest()[:12]
    for key, logged_as in (
        (writer, f"write:{writer_id}"),
        (both, f"read+write:{both_id}"),
        (owner, f"owner:{owner_id}"),
    ):
        for method, path in (("POST", "/"), ("PUT", "/_kv/b/items/k"), ("DELETE", "/a")):
            answer = httpx.request(
                method, stack.url(path), content=b"{}", headers={"Host": stack.host("locked"), **bearer(key)}
            )
            assert answer.status_code == 202, (method, path, answer.text)
            assert logged_line(stack, answer.json()["id"])["key"] == logged_as
    still = [
        ("POST", "open", "/", bearer("stk_" + "0" * 32)),  # an unknown key: njs refuses it
        ("POST", "open", "/", bearer(writer)),  # another project's key
        ("POST", "locked", "/", bearer(reader)),  # a key that may not write
        ("POST", "locked", "/", bearer(expiring)),  # a key with an expiry: njs reads the clock
        ("DELETE", "locked", "/stream/locked/0", bearer(writer)),  # a truncation needs the owner key
        ("POST", "locked", "/_blobs", bearer(writer)),  # an upload: njs hashes it
        ("POST", "locked", "/_project", bearer(owner)),  # settings
        ("POST", "open", "/?k=stk_0123456789abcdef", JSON),  # a key in the URL
        ("POST", "open", "/_project", JSON),  # a claim: njs makes its key
        ("POST", "open", "/_project/keys", JSON),
        ("POST", "locked", "/", JSON),  # writes need a key there
        ("GET", "open", "/", {}),  # reads: a path may name a private project's database
    ]
    for method, project, path, headers in still:
        answer = httpx.request(
            method, stack.url(path), content=b"{}", headers={"Host": stack.host(project), **headers}
        )
        assert answer.status_code == 418, (method, project, path, answer.text)
