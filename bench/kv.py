"""Key-value buckets against etcd (issue 21): puts until decided, put → readable, GETs, an index scan.

The same client code drives both, in the same run, on loopback: SmallTable through
the real nginx of ``smalltable up`` (a put is answered 202 at once and decided by
ingestd; "decided" is the status URL's ``?wait=`` answer), and Debian's
``etcd-server`` (3.4, its v3 JSON gateway: a put returns once it is committed and
fsynced). Rates are wrk's (a C client); latencies are one thin client's (``http.client``).

- puts/s until decided, wrk with 1 connection and with 32: the puts wrk had answered,
  over the time from its first put until ingestd had decided the last (etcd: its
  answer is the decision). Goals: ≥ 1x etcd with one client, ≥ 2x with 32.
- put → readable while wrk puts about 1,000/s beside it (10 connections, 10 ms
  apart): one client's put followed by a read of its own write (``GET …?after=ID``;
  etcd: a GET), p50/p99. Goal: p99 < 100 ms.
- GET p50/p99 of random keys with 100,000 keys stored (one client). Goal: p99 < 5 ms.
- an index scan of 1,000 entries (``/indexes/NAME?limit=1000``; etcd: a range of
  1,000 keys under a prefix, its nearest equivalent), p50/p99.

    .venv/bin/python bench/kv.py           # 15 s rate runs, 100,000 keys
    .venv/bin/python bench/kv.py --short   # 4 s rate runs, 10,000 keys
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from end_to_end import WRK_LUA, ensure_wrk, run_wrk

from benchlib import free_port, interrupt, wait_port

PROJECT = "kvbench"
GOALS = {"get_p99_ms": 5.0, "readable_p99_ms": 100.0, "one_client": 1.0, "32_clients": 2.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    """One kept-alive connection (http.client: a thin client, so it measures the server)."""

    def __init__(self, port: int, host: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.host = host

    def ask(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple:
        """One request; sent again on a new connection when nginx had closed the kept-alive one
        (it does after ``keepalive_requests``, before reading the next request)."""
        try:
            return self._once(method, path, body, headers)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.connection.close()
            return self._once(method, path, body, headers)

    def _once(self, method: str, path: str, body: bytes | None, headers: dict | None) -> tuple:
        self.connection.request(method, path, body, {"Host": self.host, **(headers or {})})
        answer = self.connection.getresponse()
        return answer.status, answer.read()


class SmallTable:
    """Buckets through nginx: a put answered 202, its decision from ``/_status/ID?wait=``."""

    name = "smalltable"

    def __init__(self, port: int, home: Path) -> None:
        self.port, self.host, self.db = port, f"{PROJECT}.localhost", home / "data" / f"{PROJECT}.db"

    def client(self) -> Client:
        return Client(self.port, self.host)

    def put(self, c: Client, bucket: str, key: str, value: bytes, index: str | None = None) -> str:
        headers = {"X-Index-Tag": index} if index is not None else {}
        status, body = c.ask("PUT", f"/_kv/{bucket}/items/{key}", value, headers)
        assert status == 202, body
        return json.loads(body)["id"]

    def decided(self, c: Client, request_id: str) -> None:
        status, body = c.ask("GET", f"/_status/{request_id}?wait=30")
        assert status == 201, body

    def put_readable(self, c: Client, bucket: str, key: str, value: bytes) -> None:
        request_id = self.put(c, bucket, key, value)
        status, body = c.ask("GET", f"/_kv/{bucket}/items/{key}?after={request_id}")
        assert status == 200, body

    def get(self, c: Client, bucket: str, key: str) -> None:
        assert c.ask("GET", f"/_kv/{bucket}/items/{key}")[0] == 200

    def scan(self, c: Client, bucket: str, count: int) -> None:
        status, body = c.ask("GET", f"/_kv/{bucket}/indexes/tag?limit={count}")
        assert status == 200 and len(json.loads(body)) == count

    def lua(self, work: Path, delay_ms: int | None = None) -> tuple[Path, str]:
        """wrk's script and URL: unconditional puts of one key."""
        script = WRK_LUA.replace('wrk.method = "POST"', 'wrk.method = "PUT"')
        pace = f"delay = function() return {delay_ms} end" if delay_ms else ""
        path = work / f"st-{delay_ms}.lua"
        path.write_text(script % {"body": json.dumps('{"n":1}'), "extra": "", "pace": pace})
        return path, f"http://127.0.0.1:{self.port}/_kv/rate/items/k"

    def applied(self) -> int:
        """Key-value writes of bucket ``rate`` decided so far."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute("select count(*) from kv_writes where bucket = 'rate'").fetchone()[0]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class Etcd:
    """etcd's v3 JSON gateway: a put is committed (and fsynced) when it returns."""

    name = "etcd"

    def __init__(self, port: int) -> None:
        self.port, self.host = port, f"127.0.0.1:{port}"

    def client(self) -> Client:
        return Client(self.port, self.host)

    def _post(self, c: Client, path: str, request: dict) -> dict:
        status, body = c.ask("POST", path, json.dumps(request).encode(), {"Content-Type": "application/json"})
        assert status == 200, body
        return json.loads(body)

    def put(self, c: Client, bucket: str, key: str, value: bytes) -> None:
        self._post(c, "/v3/kv/put", {"key": b64(f"{bucket}/{key}"), "value": b64(value)})

    def put_readable(self, c: Client, bucket: str, key: str, value: bytes) -> None:
        self.put(c, bucket, key, value)
        self.get(c, bucket, key)

    def get(self, c: Client, bucket: str, key: str) -> None:
        assert self._post(c, "/v3/kv/range", {"key": b64(f"{bucket}/{key}")}).get("kvs")

    def put_many(self, c: Client, bucket: str, items: list[tuple[str, bytes]]) -> None:
        ops = [{"requestPut": {"key": b64(f"{bucket}/{k}"), "value": b64(v)}} for k, v in items]
        self._post(c, "/v3/kv/txn", {"success": ops})

    def scan(self, c: Client, bucket: str, count: int) -> None:
        start = f"{bucket}/".encode()
        end = start[:-1] + bytes([start[-1] + 1])
        found = self._post(c, "/v3/kv/range", {"key": b64(start), "range_end": b64(end), "limit": count})
        assert len(found["kvs"]) == count

    def lua(self, work: Path, delay_ms: int | None = None) -> tuple[Path, str]:
        body = json.dumps({"key": b64("rate/k"), "value": b64('{"n":1}')})
        pace = f"delay = function() return {delay_ms} end" if delay_ms else ""
        path = work / f"etcd-{delay_ms}.lua"
        path.write_text(WRK_LUA % {"body": json.dumps(body), "extra": "", "pace": pace})
        return path, f"http://127.0.0.1:{self.port}/v3/kv/put"

    def applied(self) -> int:
        return 1 << 62  # a put returns once committed: every answered one is decided


def in_threads(count: int, work: Callable[[int, Client], None], make_client) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n, make_client())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def rate(store, wrk: str, work: Path, clients: int, seconds: float) -> tuple[float, float]:
    """Puts/s from the first put until the last is decided (wrk, ``clients`` connections), and
    the seconds the decisions lagged after wrk's last answer."""
    lua, url = store.lua(work)
    options = argparse.Namespace(threads=min(2, clients), connections=clients)
    before = store.applied() if store.name == "smalltable" else 0
    result = run_wrk(wrk, options, url, store.host, lua, seconds)
    ended = time.monotonic()
    while store.applied() - before < result.ok:
        if time.monotonic() - ended > 300:
            raise SystemExit("ingestd did not decide every put in 300 s")
        time.sleep(0.01)
    lag = time.monotonic() - ended if store.name == "smalltable" else 0.0
    return result.ok / (result.seconds + lag), lag


def readable(store, wrk: str, work: Path, seconds: float) -> tuple[list[float], float]:
    """Put → readable latencies (s) of one client's puts while wrk puts ~1,000/s beside it;
    and the rate wrk kept."""
    lua, url = store.lua(work, delay_ms=10)
    options = argparse.Namespace(threads=1, connections=10)
    background: list = []
    thread = threading.Thread(
        target=lambda: background.append(run_wrk(wrk, options, url, store.host, lua, seconds))
    )
    thread.start()
    time.sleep(0.5)  # wrk's connections are open and putting
    latencies: list[float] = []
    c = store.client()
    deadline, i = time.monotonic() + seconds - 1, 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        store.put_readable(c, "readable", f"k{i}", b"v")
        latencies.append(time.perf_counter() - started)
        i += 1
        time.sleep(0.01)
    thread.join()
    return latencies, background[0].rate


def fill(store, keys: int) -> None:
    """``keys`` keys of ~100 bytes in bucket ``big``, the last decided before it returns."""
    value = b"x" * 100
    if isinstance(store, Etcd):
        c = store.client()
        for first in range(0, keys, 100):
            store.put_many(c, "big", [(f"k{i}", value) for i in range(first, min(keys, first + 100))])
        return
    ids: list[str] = []

    def work(n: int, c: Client) -> None:
        for i in range(n, keys, 16):
            ids.append(store.put(c, "big", f"k{i}", value))

    in_threads(16, work, store.client)
    c = store.client()
    for request_id in ids[-32:]:
        store.decided(c, request_id)


def timed(action: Callable[[], None], count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def measure(store, wrk: str, work: Path, args: argparse.Namespace) -> dict:
    seconds = 4.0 if args.short else 15.0
    keys = 10_000 if args.short else 100_000
    figures: dict[str, float] = {"keys": keys}
    figures["one_client"], figures["one_client_lag_s"] = rate(store, wrk, work, 1, seconds)
    figures["32_clients"], figures["32_clients_lag_s"] = rate(store, wrk, work, 32, seconds)
    lat, figures["background_puts_s"] = readable(store, wrk, work, seconds)
    figures["readable_p50_ms"], figures["readable_p99_ms"] = ms(lat, 0.5), ms(lat, 0.99)
    started = time.monotonic()
    fill(store, keys)
    figures["fill_s"] = time.monotonic() - started
    c = store.client()
    picks = iter([f"k{random.randrange(keys)}" for _ in range(2001)])
    store.get(c, "big", next(picks))
    gets = timed(lambda: store.get(c, "big", next(picks)), 2000)
    figures["get_p50_ms"], figures["get_p99_ms"] = ms(gets, 0.5), ms(gets, 0.99)
    if isinstance(store, SmallTable):
        ids = [store.put(c, "scan", f"k{i:05d}", b"v", index=f"t{i:05d}") for i in range(1000)]
        store.decided(c, ids[-1])
    else:
        for first in range(0, 1000, 100):
            store.put_many(c, "scan", [(f"t{i:05d}/k{i:05d}", b"v") for i in range(first, first + 100)])
    scans = timed(lambda: store.scan(c, "scan", 1000), 30)
    figures["scan_p50_ms"], figures["scan_p99_ms"] = ms(scans, 0.5), ms(scans, 0.99)
    return figures


def start_smalltable(work: Path) -> tuple[subprocess.Popen, SmallTable]:
    port, ds_port, metrics_port = free_port(), free_port(), free_port()
    config = work / "smalltable.yaml"  # room for every put's decision (kv_writes) of the runs
    config.write_text("projects:\n  quota_mb: 20000\n")
    up = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--home", str(work / "home"), "--port", str(port),
         "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port), "--config", str(config)],
        stdout=open(work / "up.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    wait_port(ds_port)
    store = SmallTable(port, work / "home")
    c = store.client()  # the project exists before the clock starts
    store.decided(c, store.put(c, "warm", "up", b"1"))
    return up, store


def start_etcd(work: Path) -> tuple[subprocess.Popen, Etcd]:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise SystemExit("etcd is not installed: sudo apt-get install etcd-server (make bench does)")
    client, peer = free_port(), free_port()
    process = subprocess.Popen(
        [etcd, "--name", "bench", "--data-dir", str(work / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
        stdout=open(work / "etcd.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(client)
    store = Etcd(client)
    deadline = time.monotonic() + 30
    while True:
        try:
            store.put(store.client(), "warm", "up", b"1")
            break
        except (OSError, http.client.HTTPException, AssertionError):
            if time.monotonic() > deadline:
                raise SystemExit("etcd did not answer") from None
            time.sleep(0.2)
    return process, store


def report(ours: dict, theirs: dict) -> None:
    rows = [
        ("puts/s until decided, 1 client", "one_client", "{:,.0f}"),
        ("puts/s until decided, 32 clients", "32_clients", "{:,.0f}"),
        ("decisions still to come when wrk stopped, 1 client (s)", "one_client_lag_s", "{:.2f}"),
        ("decisions still to come when wrk stopped, 32 clients (s)", "32_clients_lag_s", "{:.2f}"),
        ("puts/s beside the put → readable client", "background_puts_s", "{:,.0f}"),
        ("put → readable p50 (ms) at 1,000/s", "readable_p50_ms", "{:.1f}"),
        ("put → readable p99 (ms) at 1,000/s", "readable_p99_ms", "{:.1f}"),
        (f"GET p50 (ms), {ours['keys']:,} keys", "get_p50_ms", "{:.2f}"),
        (f"GET p99 (ms), {ours['keys']:,} keys", "get_p99_ms", "{:.2f}"),
        ("scan of 1,000 entries p50 (ms)", "scan_p50_ms", "{:.1f}"),
        ("scan of 1,000 entries p99 (ms)", "scan_p99_ms", "{:.1f}"),
        (f"loading {ours['keys']:,} keys (s)", "fill_s", "{:.1f}"),
    ]
    print("| | SmallTable | etcd | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for label, key, fmt in rows:
        ratio = f"{ours[key] / theirs[key]:.2f}x" if theirs[key] else "—"
        print(f"| {label} | {fmt.format(ours[key])} | {fmt.format(theirs[key])} | {ratio} |")
    for key in ("one_client", "32_clients"):
        goal = GOALS[key]
        ratio = ours[key] / theirs[key]
        print(f"goal {key}: ≥ {goal:g}x etcd: {ratio:.2f}x {'met' if ratio >= goal else 'NOT met'}")
    for key in ("get_p99_ms", "readable_p99_ms"):
        print(
            f"goal {key} < {GOALS[key]:g}: {ours[key]:.1f} {'met' if ours[key] < GOALS[key] else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="4 s rate runs and 10,000 keys")
    args = parser.parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="st-kv-"))
    results = {}
    try:
        for name, start in (("smalltable", start_smalltable), ("etcd", start_etcd)):
            process, store = start(work)
            try:
                results[name] = measure(store, wrk, work, args)
                print(name, json.dumps({k: round(v, 3) for k, v in results[name].items()}), flush=True)
            finally:
                interrupt(process, 30)
        report(results["smalltable"], results["etcd"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
