"""A public stack holds up against abuse: SQL that allocates, leaks or hogs, and its limits.

Each test talks from a loopback address of its own (127.0.0.N), so the per-client
limits one test uses up are never another's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from .conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

CONFIG = """\
nginx:
  client_timeout: 1
  send_timeout: 1
  tails_per_address: 3
datasette:
  memory_max_mb: 512
  sql_time_limit_ms: 8000
  sql_rate_per_minute: 2
  sql_burst: 4
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[Stack]:
    """A stack of this module's own, with small SQL limits and long queries allowed."""
    home = tmp_path_factory.mktemp("limits")
    (home / "smalltable.yaml").write_text(CONFIG)
    running = start_stack(home / "home", ["--config", str(home / "smalltable.yaml")])
    yield running
    stop_stack(running)


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose requests come from ``address`` (a loopback address of its own)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def sql(stack: Stack, client: httpx.Client, project: str, query: str) -> httpx.Response:
    return client.get(
        stack.url(f"/{project}.json"), params={"sql": query}, headers={"Host": stack.host(project)}
    )


def peak_memory_kib(pid: int) -> int:
    """The most resident memory the process has used (VmHWM)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def with_a_record(stack: Stack, project: str) -> None:
    answer = stack.post(project, "x")
    assert answer.status_code == 202, (answer.status_code, answer.text)
    stack.wait_row(project, answer.json()["id"])


def test_a_query_cannot_make_a_huge_value(limited, project):
    """`select zeroblob(1000000000)` once grew Datasette to 24 GB: now a value past
    datasette.max_value_bytes is a 400 naming the problem, and memory does not move."""
    with_a_record(limited, project)
    pid = limited.datasette_pid()
    before = peak_memory_kib(pid)
    with client_from("127.0.0.2") as client:
        for size in (20_000_000, 1_000_000_000):
            answer = sql(limited, client, project, f"select zeroblob({size})")
            assert answer.status_code == 400, answer.text[:200]
            assert "too big" in answer.json()["error"]
        assert sql(limited, client, project, "select length(zeroblob(1000000))").status_code == 200
    assert peak_memory_kib(pid) - before < 50 * 1024
    limits = open(f"/proc/{pid}/limits").read()
    assert f"Max data size             {512 * 1048576}" in limits


def test_an_answer_too_big_for_datasettes_memory_is_a_clear_400(limited, project):
    """A thousand rows of 3 MB values (each under max_value_bytes) need more than
    datasette.memory_max_mb: the query gets a JSON 400 that says so (not an empty 500),
    Datasette lives on, and the next page is served."""
    with_a_record(limited, project)
    pid = limited.datasette_pid()
    rows = "with recursive c(x) as (select 1 union all select x + 1 from c limit 1000)"
    with client_from("127.0.0.15") as client:
        answer = sql(limited, client, project, f"{rows} select printf('%.*c', 3000000, 'x') from c")
    assert answer.status_code == 400, answer.text[:200]
    assert answer.json()["error"] == "the answer is too big for Datasette's memory"
    assert answer.json()["limits"] == {"memory_max_mb": 512}
    assert limited.datasette_pid() == pid
    assert limited.request("GET", project, f"/{project}/records.json").status_code == 200


def test_fts3_tokenizer_is_denied(limited, project):
    """fts3_tokenizer() answers a memory address: no query may call it."""
    with_a_record(limited, project)
    with client_from("127.0.0.3") as client:
        answer = sql(limited, client, project, "select hex(fts3_tokenizer('simple'))")
        assert answer.status_code == 400
        assert "not authorized" in answer.json()["error"]
        assert sql(limited, client, project, "select hex(randomblob(4))").status_code == 200


def test_sql_is_rate_limited_per_client(limited, project):
    with_a_record(limited, project)
    with client_from("127.0.0.4") as greedy, client_from("127.0.0.5") as other:
        statuses = [sql(limited, greedy, project, "select 1").status_code for _ in range(7)]
        assert statuses[:5] == [200] * 5  # the rate's one plus the burst of 4
        assert 429 in statuses[5:]
        refused = sql(limited, greedy, project, "select 1")
        assert refused.status_code == 429
        assert refused.json()["error"] == "too many SQL queries"
        assert refused.json()["limits"]["per_client_per_minute"] == 2
        # _where= is arbitrary SQL too: the same limit.
        records, host = limited.url(f"/{project}/records.json"), {"Host": limited.host(project)}
        assert greedy.get(records, params={"_where": "1 = 1"}, headers=host).status_code == 429
        # Another client, and the greedy one's table pages, are not limited.
        assert sql(limited, other, project, "select 1").status_code == 200
        assert greedy.get(records, headers=host).status_code == 200


def test_long_queries_leave_project_pages_their_capacity(limited, project):
    """Three long recursive queries at once once stalled every project page for seconds:
    only datasette.sql_concurrency of them run (the others get 429), and pages keep
    Datasette threads of their own."""
    with_a_record(limited, project)
    forever = "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c"
    answers: list[int] = []
    done = threading.Condition()

    def long_query(address: str) -> None:
        with client_from(address) as client:
            status = sql(limited, client, project, forever).status_code
        with done:
            answers.append(status)
            done.notify_all()

    threads = [threading.Thread(target=long_query, args=(f"127.0.0.{n}",)) for n in (6, 7, 8)]
    for thread in threads:
        thread.start()
    try:
        with done:
            assert done.wait_for(lambda: answers, timeout=5), "no long query was refused"
        assert answers == [429]
        started = time.monotonic()
        page = limited.request("GET", project, "/")
        table = limited.request("GET", project, f"/{project}/records.json")
        elapsed = time.monotonic() - started
        assert page.status_code == 200 and table.status_code == 200
        assert elapsed < 3, f"pages waited {elapsed:.1f}s behind long queries"
    finally:
        for thread in threads:
            thread.join()


def raw_connection(stack: Stack, address: str, port: int | None = None) -> socket.socket:
    conn = socket.create_connection(
        ("127.0.0.1", port or stack.port), timeout=10, source_address=(address, 0)
    )
    return conn


def seconds_until_closed(conn: socket.socket, limit: float = 8) -> float:
    """How long the server takes to answer and close (a 408) or just close the connection."""
    started = time.monotonic()
    conn.settimeout(limit)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit}s")
    return time.monotonic() - started


def test_slow_senders_are_cut_off(limited, project):
    """A client that sends its headers or its body slower than nginx.client_timeout (1 s
    here) is cut off: 100 slow uploads once held 100 connections indefinitely."""
    upload = raw_connection(limited, "127.0.0.11")
    upload.sendall(
        f"POST / HTTP/1.1\r\nHost: {limited.host(project)}\r\nContent-Length: 100\r\n\r\n0123456789".encode()
    )
    header = raw_connection(limited, "127.0.0.11")
    header.sendall(f"GET / HTTP/1.1\r\nHost: {limited.host(project)}\r\n".encode())
    with upload, header:
        assert seconds_until_closed(upload) < 4
        assert seconds_until_closed(header) < 4
    assert project.encode() not in limited.ingest_log.read_bytes()


def test_a_client_that_stops_reading_is_cut_off(limited, project):
    """A client that reads nothing of a big answer for longer than nginx.send_timeout (1 s
    here) is cut off: it would otherwise hold its connection, and nginx's buffers, for as
    long as it likes."""
    with_a_record(limited, project)
    rows = "with recursive c(x) as (select 1 union all select x + 1 from c limit 5)"
    query = urlencode({"sql": f"{rows} select printf('%.*c', 3000000, 'x') from c", "_shape": "array"})
    with socket.socket() as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so nginx's writes block soon
        conn.bind(("127.0.0.16", 0))
        conn.connect(("127.0.0.1", limited.port))
        conn.sendall(
            f"GET /{project}.json?{query} HTTP/1.1\r\nHost: {limited.host(project)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        time.sleep(4)  # reading nothing, for longer than send_timeout
        conn.settimeout(10)
        received = 0
        try:
            while chunk := conn.recv(65536):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < 5 * 3_000_000, f"the whole answer ({received} bytes) came after 4 s unread"


def open_tail(stack: Stack, project: str, address: str) -> tuple[socket.socket, bytes]:
    """A tail through nginx from ``address``, and what it answered first: the headers and
    the greeting of a tail, or the whole answer of a refusal."""
    conn = raw_connection(stack, address)
    conn.sendall(f"GET /_tail HTTP/1.1\r\nHost: {stack.host(project)}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200"):
        while b"records after" not in answer:
            answer += conn.recv(65536)
        return conn, answer
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    while len(body) < length:
        body += conn.recv(65536)
    return conn, head + b"\r\n\r\n" + body


def test_tails_are_limited_per_client(limited, project):
    with_a_record(limited, project)
    tails = [open_tail(limited, project, "127.0.0.13") for _ in range(3)]
    try:
        assert all(answer.startswith(b"HTTP/1.1 200") for _, answer in tails)
        refused, answer = open_tail(limited, project, "127.0.0.13")
        refused.close()
        assert answer.startswith(b"HTTP/1.1 429")
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["error"] == "too many requests at once"
        assert body["limits"]["tails_per_address"] == 3
        other, answer = open_tail(limited, project, "127.0.0.14")
        other.close()
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for conn, _ in tails:
            conn.close()


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_tails_share_one_watch(limited, project):
    """100 idle tails of a project cost Datasette next to nothing: one watch stats the
    files for all of them, instead of each tail polling every 50 ms."""
    with_a_record(limited, project)
    pid = limited.datasette_pid()
    tails = []
    try:
        for _ in range(100):
            conn = raw_connection(limited, "127.0.0.1", limited.datasette_port)
            conn.sendall(f"GET /-/smalltable/p/{project}/_tail HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            tails.append(conn)
        for conn in tails:
            answer = b""
            while b"records after" not in answer:
                answer += conn.recv(65536)
        time.sleep(1)  # let the tails' first, settling queries pass
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(3)  # a measurement window, not a synchronisation
        used = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        assert used < 0.05, f"100 idle tails cost {used:.0%} of a core"
    finally:
        for conn in tails:
            conn.close()
