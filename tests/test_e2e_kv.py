"""Key-value buckets through the real stack (issue 21, docs/kv.md): put, get, delete,
versions, compare-and-swap decided in log order, and replay reproducing every decision."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import httpx
import yaml

from ingestd.web.kv import INLINE_BYTES

from .conftest import smalltable, start_stack, stop_stack
from .keyslib import bearer, make_key, until, wait_owned


def item(name: str, bucket: str = "b") -> str:
    return f"/_kv/{bucket}/items/{name}"


def decided(stack, project: str, answer: httpx.Response) -> dict:
    """The status of a write once ingestd has decided it (``?wait=``: one request)."""
    assert answer.status_code == 202, answer.text
    status = stack.request("GET", project, f"/_status/{answer.json()['id']}", params={"wait": 20})
    assert status.json()["status"] != "pending", status.text
    assert status.status_code == WAIT_STATUS[status.json().get("reason") or status.json()["status"]]
    return status.json()


WAIT_STATUS = {"stored": 201, "deleted": 200, "precondition failed": 412, "not found": 404}


def put(stack, project: str, path: str, body: bytes | str, **headers: str) -> dict:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return decided(stack, project, stack.request("PUT", project, path, content=body, headers=headers))


def delete(stack, project: str, path: str, **headers: str) -> dict:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return decided(stack, project, stack.request("DELETE", project, path, headers=headers))


def test_put_get_delete_keeps_exact_bytes_type_and_versions(stack, project):
    value = bytes(range(256)) + "café".encode()
    answer = stack.request(
        "PUT", project, item("cart"), content=value, headers={"Content-Type": "application/x-cart"}
    )
    assert answer.status_code == 202
    assert set(answer.json()) >= {"id", "status_url"}
    first = decided(stack, project, answer)
    assert first["status"] == "stored" and first["bucket"] == "b" and first["key"] == "cart"
    got = stack.request("GET", project, item("cart"))
    assert got.status_code == 200
    assert got.content == value
    assert got.headers["content-type"] == "application/x-cart"
    assert got.headers["etag"] == f'"{first["version"]}"'
    assert got.headers["x-weave-version"] == first["version"]
    same = stack.request("GET", project, item("cart"), headers={"If-None-Match": got.headers["etag"]})
    assert same.status_code == 304 and same.content == b""

    second = put(stack, project, item("cart"), b"two", content_type="text/plain")
    assert int(second["version"]) > int(first["version"])
    got = stack.request("GET", project, item("cart"), headers={"If-None-Match": f'"{first["version"]}"'})
    assert (
        got.status_code == 200
        and got.content == b"two"
        and got.headers["x-weave-version"] == second["version"]
    )

    gone = delete(stack, project, item("cart"))
    assert gone["status"] == "deleted"
    missing = stack.request("GET", project, item("cart"))
    assert missing.status_code == 404
    assert missing.json()["error"] == "not found" and missing.json()["key"] == "cart"
    again = put(stack, project, item("cart"), b"three")
    assert int(again["version"]) > int(gone["version"])  # versions only grow, past a delete too
    never = stack.request("GET", project, item("never"))
    assert never.status_code == 404 and never.json()["bucket"] == "b"


def test_values_on_both_sides_of_the_inline_read_come_back_whole(stack, project):
    for size in (INLINE_BYTES, INLINE_BYTES + 1, 700_000):  # read on the loop, then on a thread
        value = os.urandom(size)
        put(stack, project, item(f"v{size}"), value)
        got = stack.request("GET", project, item(f"v{size}"))
        assert got.status_code == 200 and got.content == value


def test_conditions_are_decided_in_log_order_and_say_why(stack, project):
    created = put(stack, project, item("k"), b"1", if_none_match="*")
    assert created["status"] == "stored"
    version = created["version"]
    taken = put(stack, project, item("k"), b"x", if_none_match="*")
    assert taken == {
        **taken,
        "status": "rejected",
        "reason": "precondition failed",
        "current_version": version,
        "key": "k",
    }
    stale = put(stack, project, item("k"), b"x", if_match='"1"' if version != "1" else '"999"')
    assert stale["status"] == "rejected" and stale["reason"] == "precondition failed"
    assert stale["current_version"] == version
    swapped = put(stack, project, item("k"), b"2", if_match=f'"{version}"')
    assert swapped["status"] == "stored"
    weave = put(stack, project, item("k"), b"3", x_weave_if_match=swapped["version"])
    assert weave["status"] == "stored"
    late = put(stack, project, item("k"), b"x", x_weave_if_match=swapped["version"])
    assert late["reason"] == "precondition failed" and late["current_version"] == weave["version"]
    assert stack.request("GET", project, item("k")).content == b"3"
    absent = put(stack, project, item("absent"), b"x", if_match=f'"{version}"')
    assert absent["status"] == "rejected" and absent["current_version"] is None
    missing = delete(stack, project, item("absent"))
    assert missing["status"] == "rejected" and missing["reason"] == "not found"
    wrong = delete(stack, project, item("k"), if_match=f'"{version}"')
    assert wrong["reason"] == "precondition failed"
    assert stack.request("GET", project, item("k")).content == b"3"  # nothing else changed


def _increment(stack, project: str, path: str, rounds: int, outcomes: list, errors: list) -> None:
    client = httpx.Client(timeout=30)
    try:
        for _ in range(rounds):
            got = client.get(stack.url(path), headers={"Host": stack.host(project)})
            assert got.status_code == 200, got.text
            answer = client.put(
                stack.url(path),
                content=str(int(got.content) + 1),
                headers={"Host": stack.host(project), "If-Match": got.headers["etag"]},
            )
            outcomes.append(decided(stack, project, answer))
    except BaseException as exc:  # the test thread reports it
        errors.append(exc)
    finally:
        client.close()


def test_eight_clients_racing_compare_and_swap_and_replay_decides_the_same(stack, project, tmp_path):
    path = item("counter", "race")
    put(stack, project, path, b"0")
    outcomes: list[dict] = []
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_increment, args=(stack, project, path, 6, outcomes, errors))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    stored = [o for o in outcomes if o["status"] == "stored"]
    failed = [o for o in outcomes if o["status"] != "stored"]
    assert len(outcomes) == 48
    assert all(o["reason"] == "precondition failed" and o["key"] == "counter" for o in failed)
    assert stored, "no put won"
    assert int(stack.request("GET", project, path).content) == len(stored)
    versions = [int(o["version"]) for o in stored]
    assert len(set(versions)) == len(versions)

    rebuilt = tmp_path / "rebuilt"
    config = str(stack.home / "conf" / "smalltable.yaml")
    result = smalltable("replay", "--config", config, "--project", project, "--data-dir", str(rebuilt))
    assert result.returncode == 0, result.stderr

    def dump(db):
        with sqlite3.connect(db) as conn:
            return [
                conn.execute("select * from kv_writes order by _id").fetchall(),
                conn.execute("select * from kv_items order by bucket, key").fetchall(),
            ]

    live, replayed = dump(stack.home / "data" / f"{project}.db"), dump(rebuilt / f"{project}.db")
    assert len(live[0]) == 49
    assert replayed == live


def test_status_wait_answers_a_status_to_branch_on(stack, project):
    posted = stack.post(project, b'{"a": 1}', headers={"Content-Type": "application/json"})
    record = stack.request("GET", project, f"/_status/{posted.json()['id']}", params={"wait": "10"})
    assert record.status_code == 201 and record.json()["status"] == "stored"
    created = put(stack, project, item("k"), b"1")  # 201: see decided()
    taken = put(stack, project, item("k"), b"2", if_none_match="*")  # 412
    assert taken["current_version"] == created["version"]
    delete(stack, project, item("nothing"))  # 404
    bad = stack.request("PUT", project, item("a%2Fb"), content=b"x")
    refused = stack.request("GET", project, f"/_status/{bad.json()['id']}", params={"wait": "10"})
    assert refused.status_code == 422 and "'/'" in refused.json()["reason"]
    started = time.monotonic()
    unknown = stack.request("GET", project, f"/_status/{'0' * 32}", params={"wait": "0.3"})
    assert unknown.status_code == 202 and unknown.json()["status"] == "pending"
    assert time.monotonic() - started >= 0.3
    for wrong in ("31", "-1", "soon", "nan"):
        answer = stack.request("GET", project, f"/_status/{'0' * 32}", params={"wait": wrong})
        assert answer.status_code == 400 and "at most 30" in answer.json()["expected"], wrong
    without = stack.request("GET", project, f"/_status/{taken['request_id']}")
    assert without.status_code == 200 and without.json()["reason"] == "precondition failed"


def test_a_read_after_a_write_sees_it(stack, project):
    for n in range(15):
        answer = stack.request("PUT", project, item("seen"), content=str(n))
        got = stack.request("GET", project, item("seen"), params={"after": answer.json()["id"]})
        assert (got.status_code, got.text) == (200, str(n))
    bad = stack.request("GET", project, item("seen"), params={"after": "nope"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad after 'nope'"


def test_waiting_is_bounded(tmp_path):
    config = tmp_path / "bounded.yaml"
    config.write_text(yaml.safe_dump({"datasette": {"status_waiters": 2}}))
    bounded = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        never = "0" * 32

        def wait_long() -> None:  # again if a probe below held a place just then
            with httpx.Client(timeout=30) as client:
                url, host = bounded.url(f"/_status/{never}"), {"Host": bounded.host("w")}
                while client.get(url, params={"wait": 4}, headers=host).status_code == 429:
                    pass

        waiters = [threading.Thread(target=wait_long) for _ in range(2)]
        for waiter in waiters:
            waiter.start()
        deadline = time.monotonic() + 3  # until both waiters are inside (they wait 4 s)
        third = bounded.request("GET", "w", f"/_status/{never}", params={"wait": 0.05})
        while third.status_code != 429 and time.monotonic() < deadline:
            third = bounded.request("GET", "w", f"/_status/{never}", params={"wait": 0.05})
        assert third.status_code == 429, third.text
        assert (
            third.json()["error"] == "too many requests waiting for decisions" and third.json()["limit"] == 2
        )
        for waiter in waiters:
            waiter.join()
        started = time.monotonic()
        late = bounded.request("GET", "w", item("k"), params={"after": never, "wait": 1})
        assert late.status_code == 504 and late.json()["after"] == never
        assert 1 <= time.monotonic() - started < 4
    finally:
        stop_stack(bounded)


def test_indexes_are_set_with_the_value_and_scanned_in_order(stack, project):
    for key, color, size in [
        ("k1", "red", "3"),
        ("k2", "blue", "1"),
        ("k3", "red", "2"),
        ("k4", "green", "5"),
    ]:
        put(stack, project, item(key, "shop"), key, x_index_color=color, x_weave_index_size=size)

    def scan(name: str, **params: str) -> list:
        answer = stack.request("GET", project, f"/_kv/shop/indexes/{name}", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert scan("color") == [["blue", "k2"], ["green", "k4"], ["red", "k1"], ["red", "k3"]]
    assert scan("color", min="green", max="red") == [["green", "k4"], ["red", "k1"], ["red", "k3"]]
    assert scan("color", reverse="true", limit="2") == [["red", "k3"], ["red", "k1"]]
    assert scan("size", min="2") == [["2", "k3"], ["3", "k1"], ["5", "k4"]]
    put(stack, project, item("k1", "shop"), "k1 again")  # a put without index headers clears them
    delete(stack, project, item("k3", "shop"))
    assert scan("color") == [["blue", "k2"], ["green", "k4"]]
    assert scan("size") == [["1", "k2"], ["5", "k4"]]
    refused = stack.request("GET", project, "/_kv/shop/indexes/color", params={"limit": "0"})
    assert refused.status_code == 400 and "limit" in refused.json()["error"]


def test_a_bucket_lists_its_keys_in_order_a_page_at_a_time(stack, project):
    for key in ["b1", "a2", "a1", "a3", "c"]:
        put(stack, project, item(key, "list"), f"value of {key}")
    put(stack, project, item("x", "other"), "12345")
    first = stack.request("GET", project, "/_kv/list/items/", params={"prefix": "a", "limit": "2"}).json()
    assert [i["key"] for i in first["items"]] == ["a1", "a2"] and first["next"] == "a2"
    assert first["items"][0]["size"] == len("value of a1") and first["items"][0]["version"]
    next_url = urlsplit(first["next_url"])
    assert next_url.netloc == stack.host(project)
    rest = stack.request("GET", project, f"{next_url.path}?{next_url.query}").json()
    assert [i["key"] for i in rest["items"]] == ["a3"] and rest["next"] is None
    whole = stack.request("GET", project, "/_kv/list/items/").json()
    assert [i["key"] for i in whole["items"]] == ["a1", "a2", "a3", "b1", "c"]
    buckets = stack.request("GET", project, "/_kv/").json()["buckets"]
    assert [(b["bucket"], b["items"]) for b in buckets] == [("list", 5), ("other", 1)]
    assert buckets[1]["bytes"] == 5


def test_a_value_expires_at_its_logged_receive_time_plus_its_ttl(stack, project):
    written = put(stack, project, item("short", "ttl"), b"soon gone", x_ttl="1")
    put(stack, project, item("long", "ttl"), b"stays", x_ttl="3600", x_index_kind="a")
    put(stack, project, item("short2", "ttl"), b"gone", x_ttl="1", x_index_kind="b")
    with sqlite3.connect(stack.home / "data" / f"{project}.db") as conn:
        stored_at, expires_at = conn.execute(
            "select stored_at, expires_at from kv_items where key = 'short'"
        ).fetchone()
    assert expires_at > stored_at  # receive time + 1 s, from the line
    deadline = time.monotonic() + 10
    while stack.request("GET", project, item("short2", "ttl")).status_code == 200:  # the later one
        assert time.monotonic() < deadline, "the value did not expire"
        time.sleep(0.1)
    assert stack.request("GET", project, item("short", "ttl")).json()["error"] == "not found"
    assert [i["key"] for i in stack.request("GET", project, "/_kv/ttl/items/").json()["items"]] == ["long"]
    assert stack.request("GET", project, "/_kv/ttl/indexes/kind").json() == [["a", "long"]]
    again = put(stack, project, item("short", "ttl"), b"new", if_none_match="*")  # expired: absent
    assert int(again["version"]) > int(written["version"])


def test_buckets_follow_the_projects_write_and_read_policies(stack, project):
    settings = {"owner": "ann", "write": "key", "read": "private"}
    answer = stack.post(
        project, json.dumps(settings), path="/_project", headers={"Content-Type": "application/json"}
    )
    owner = answer.json()["key"]
    wait_owned(stack, project)
    write, _ = make_key(stack, project, owner, scope="write")
    read, _ = make_key(stack, project, owner, scope="read")
    path = item("secret", "private")
    for key in (read, write):  # in force once nginx has reloaded
        until(lambda key=key: stack.request("GET", project, "/", headers=bearer(key)).status_code != 401)
    until(lambda: stack.request("PUT", project, path, content=b"x").status_code == 401)
    refused = stack.request("PUT", project, path, content=b"x")
    assert refused.json()["error"] == "writing to this project needs a write key"
    with_read = stack.request("PUT", project, path, content=b"x", headers=bearer(read))
    assert with_read.status_code == 403
    until(
        lambda: stack.request("PUT", project, path, content=b"kept", headers=bearer(write)).status_code == 202
    )
    answer = stack.request("PUT", project, path, content=b"kept", headers=bearer(write))
    done = stack.request("GET", project, f"/_status/{answer.json()['id']}?wait=20", headers=bearer(read))
    assert done.status_code == 201
    for url in (path, "/_kv/", "/_kv/private/items/", "/_kv/private/indexes/x", f"/{project}/kv_items.json"):
        unkeyed = stack.request("GET", project, url)
        assert unkeyed.status_code == 401, url
        assert b"kept" not in unkeyed.content
    got = stack.request("GET", project, path, headers=bearer(read))
    assert (got.status_code, got.content) == (200, b"kept")
    rows = stack.request(
        "GET", project, f"/{project}/kv_items.json?_shape=array", headers=bearer(read)
    ).json()
    assert [(r["bucket"], r["key"], r["value"]) for r in rows] == [("private", "secret", "kept")]
    page = stack.request("GET", project, "/", headers={**bearer(read), "Accept": "text/html"})
    assert "Key-value buckets" in page.text and "/_kv/private/items/" in page.text


BAD_WRITES = [
    # (method, path, headers, what the reason says)
    ("PUT", "/_kv/bad/items/", {}, "empty key"),
    ("PUT", "/_kv/bad/items/" + "k" * 1025, {}, "key too long: 1025 bytes, the limit is 1024 bytes"),
    ("PUT", "/_kv/bad/items/a/b", {}, "a key cannot hold '/'"),
    ("PUT", "/_kv/bad/items/a%2Fb", {}, "a key cannot hold '/'"),
    ("PUT", "/_kv/bad/items/a%0Ab", {}, "control characters"),
    ("PUT", "/_kv/bad/items/%FF", {}, "UTF-8"),
    ("PUT", "/_kv/Bad/items/k", {}, "bad bucket name 'Bad'"),
    ("PUT", "/_kv/bad/k", {}, "the path is /_kv/BUCKET/items/KEY"),
    ("POST", "/_kv/bad/items/k", {}, "POST is not a key-value write"),
    ("PUT", "/_kv/bad/items/k", {"If-Match": "3"}, "malformed If-Match '3'"),
    ("PUT", "/_kv/bad/items/k", {"If-Match": '"abc"'}, "malformed If-Match"),
    ("PUT", "/_kv/bad/items/k", {"X-Weave-If-Match": '"3"'}, "malformed X-Weave-If-Match"),
    ("PUT", "/_kv/bad/items/k", {"If-None-Match": '"3"'}, "only If-None-Match: *"),
    ("PUT", "/_kv/bad/items/k", {"If-Match": "*", "If-None-Match": "*"}, "can never both hold"),
    ("PUT", "/_kv/bad/items/k", {"X-Index-": "v"}, "an index header with an empty name"),
    ("PUT", "/_kv/bad/items/k", {"X-TTL": "0"}, "X-TTL 0: it must be from 1 to 31622400 seconds"),
    ("PUT", "/_kv/bad/items/k", {"X-TTL": "-5"}, "X-TTL '-5' is not a whole number of seconds"),
    ("PUT", "/_kv/bad/items/k", {"X-TTL": "soon"}, "X-TTL 'soon' is not a whole number"),
    ("PUT", "/_kv/bad/items/k", {"X-TTL": "31622401"}, "(a year)"),
    ("DELETE", "/_kv/bad/items/k", {"X-TTL": "5"}, "belong to a put, not a DELETE"),
]


def test_every_bad_write_is_rejected_with_its_reason_and_changes_nothing(stack, project):
    kept = put(stack, project, item("k", "bad"), b"kept", x_index_color="red")
    answers = [
        (stack.request(method, project, path, content=b"x", headers=headers), reason)
        for method, path, headers, reason in BAD_WRITES
    ]
    for answer, reason in answers:
        assert answer.status_code == 202, answer.text
        status = stack.request("GET", project, f"/_status/{answer.json()['id']}", params={"wait": 20})
        assert status.status_code == 422, (reason, status.text)
        assert reason in status.json()["reason"] and status.json()["reason"].startswith(
            "key-value write not applied"
        )
    got = stack.request("GET", project, item("k", "bad"))
    assert (got.content, got.headers["x-weave-version"]) == (b"kept", kept["version"])
    assert stack.request("GET", project, "/_kv/bad/indexes/color").json() == [["red", "k"]]
    assert [i["key"] for i in stack.request("GET", project, "/_kv/bad/items/").json()["items"]] == ["k"]
    rejects = stack.rows(project, "rejects")
    assert len(rejects) == len(BAD_WRITES)  # each kept, with its body: nothing lost
    too_big = stack.request("PUT", project, item("big", "bad"), content=b"x" * (1048576 + 1))
    assert too_big.status_code == 413 and too_big.json()["error"] == "body too large"
    # what nginx cannot read (NUL, a raw space) it refuses itself, with JSON, and logs nothing
    nul = stack.request("PUT", project, "/_kv/bad/items/a%00b", content=b"x")
    assert nul.status_code == 400 and nul.json()["error"] == "bad request: nginx could not read it"
    with socket.create_connection(("127.0.0.1", stack.port)) as raw:
        raw.sendall(f"PUT /_kv/bad/items/a b HTTP/1.1\r\nHost: {stack.host(project)}\r\n\r\n".encode())
        head, _, body = raw.makefile("rb").read().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"percent-encode the path" in body
    assert len(stack.rows(project, "rejects")) == len(BAD_WRITES)


def test_keys_may_hold_spaces_and_unicode_percent_encoded(stack, project):
    for raw, key in [
        ("a%20b", "a b"),
        ("caf%C3%A9", "café"),
        ("%E2%9C%93:1", "✓:1"),
        ("k" * 1024, "k" * 1024),
    ]:
        written = put(stack, project, f"/_kv/odd/items/{raw}", key.encode())
        assert written["key"] == key
        assert stack.request("GET", project, f"/_kv/odd/items/{raw}").content == key.encode()
    with socket.create_connection(("127.0.0.1", stack.port)) as raw:  # as curl sends it: raw UTF-8
        host = f"Host: {stack.host(project)}\r\nConnection: close"
        raw.sendall(f"GET /_kv/odd/items/caf\u00e9 HTTP/1.1\r\n{host}\r\n\r\n".encode())
        answer = raw.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 200") and b"\r\n" + "café".encode() + b"\r\n" in answer
    bad = stack.request("GET", project, "/_kv/odd/items/a%2Fb")
    assert bad.status_code == 400 and "'/'" in bad.json()["error"]


def kv_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingestd", "kv", *args], input=stdin, capture_output=True, timeout=120
    )


def test_the_kv_command_puts_gets_deletes_lists_and_scans(stack, project):
    url = f"http://{stack.host(project)}/"
    value = bytes(range(256))
    stored = kv_cli(
        "put", url, "cli", "a key: café", "-", "--index", "color=red", "--ttl", "3600", stdin=value
    )
    assert stored.returncode == 0, stored.stderr
    version = json.loads(stored.stdout)["version"]
    assert kv_cli("get", url, "cli", "a key: café").stdout == value  # the client encodes the key
    assert kv_cli("get", url, "cli", "a key: café", "--version").stdout == f"{version}\n".encode()
    kv_cli("put", url, "cli", "b", "-", "--index", "color=blue", stdin=b"two")
    stale = kv_cli("put", url, "cli", "b", "-", "--if-match", version, stdin=b"x")
    assert stale.returncode == 5
    assert b"precondition failed: key 'b' is at version" in stale.stderr
    assert kv_cli("put", url, "cli", "b", "-", "--if-absent", stdin=b"x").returncode == 5
    assert kv_cli("list", url, "cli").stdout == "a key: café\nb\n".encode()
    assert kv_cli("list", url, "cli", "--prefix", "b").stdout == b"b\n"
    assert kv_cli("list", url).stdout.startswith(b"cli\t2\t")
    assert kv_cli("scan", url, "cli", "color").stdout == "blue\tb\nred\ta key: café\n".encode()
    assert (
        kv_cli("scan", url, "cli", "color", "--reverse", "--limit", "1").stdout
        == "red\ta key: café\n".encode()
    )
    gone = kv_cli("delete", url, "cli", "b")
    assert gone.returncode == 0 and json.loads(gone.stdout)["status"] == "deleted"
    missing = kv_cli("delete", url, "cli", "b")
    assert missing.returncode == 6 and b"not found" in missing.stderr
    absent = kv_cli("get", url, "cli", "b")
    assert absent.returncode == 6 and b"HTTP 404: not found" in absent.stderr
    bad = kv_cli("put", url, "cli", "k", "-", "--ttl", "0", stdin=b"x")
    assert bad.returncode == 2 and b"X-TTL 0" in bad.stderr
    slash = kv_cli("put", url, "cli", "a/b", "-", stdin=b"x")
    assert slash.returncode == 2 and b"a key cannot hold '/'" in slash.stderr
