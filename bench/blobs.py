"""Blob upload and download speed (issue 23), against direct S3 and nginx's static files.

In the same run, for files of 1 KiB, 1 MiB and 32 MiB, one client on one kept-alive
connection, one request at a time:

- upload: ``POST /_blobs`` through the real ``smalltable up`` (nginx spools the body,
  njs hashes it, answers with the id; ingestd copies it into the two default local
  stores meanwhile) against a ``put_object`` of the same bytes straight to SeaweedFS's
  S3 with boto3 (goal: at least 0.5x);
- download: ``GET /_blobs/ID`` (nginx from the local store: try_files, the Content-Type
  read by njs, the headers) against a plain nginx serving the same file from the same
  directory as a static file (goal: at least 0.8x), and boto3's ``get_object`` for scale.

The sides alternate round by round, so a drift of the machine touches both alike.

    .venv/bin/python bench/blobs.py           # 3 rounds
    .venv/bin/python bench/blobs.py --short   # 1 round, fewer files
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchlib import free_port, interrupt, wait_port

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.s3lib import BUCKET, credentials_env, start_seaweed  # noqa: E402

SIZES = {"1 KiB": 1024, "1 MiB": 1048576, "32 MiB": 32 * 1048576}
COUNTS = {"1 KiB": 400, "1 MiB": 60, "32 MiB": 4}
UPLOAD_GOAL, DOWNLOAD_GOAL = 0.5, 0.8

STATIC_CONF = """worker_processes auto;
pid {work}/static.pid;
error_log {work}/static-error.log warn;
daemon off;
{user}
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    access_log {work}/static-access.log;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def claim(client: httpx.Client, port: int, project: str) -> str:
    """Claim ``project``; its owner key (a write key too), once nginx knows it."""
    answer = client.post(
        f"http://127.0.0.1:{port}/_project",
        content=json.dumps({"name": project, "owner": "bench"}),
        headers={"Host": f"localhost:{port}", "Content-Type": "application/json"},
    )
    answer.raise_for_status()
    key = answer.json()["key"]
    deadline = time.monotonic() + 30
    while True:  # an empty upload needs the key: 401 until nginx has reloaded for it
        probe = client.post(
            f"http://127.0.0.1:{port}/_blobs", content=b"", headers=upload_headers(project, port, key)
        )
        if probe.status_code == 200:
            return key
        if time.monotonic() > deadline:
            raise SystemExit(f"the claim was not applied: {probe.text}")
        time.sleep(0.1)


def upload_headers(project: str, port: int, key: str) -> dict[str, str]:
    return {
        "Host": f"{project}.localhost:{port}",
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/octet-stream",
    }


def mib_per_s(total_bytes: int, seconds: float) -> float:
    return total_bytes / 1048576 / seconds


def timed(run, *args):
    """``run(*args)``'s seconds and result."""
    started = time.perf_counter()
    result = run(*args)
    return time.perf_counter() - started, result


def s3_put(s3, keys: list[str], files: list[bytes]) -> None:
    for key, data in zip(keys, files, strict=True):
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def s3_get(s3, keys: list[str]) -> None:
    for key in keys:
        s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def smalltable_upload(client: httpx.Client, port: int, key: str, files: list[bytes]) -> list[str]:
    """Each file through ``POST /_blobs``; the ids answered."""
    ids = []
    for data in files:
        answer = client.post(
            f"http://127.0.0.1:{port}/_blobs", content=data, headers=upload_headers("bench", port, key)
        )
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    return ids


def wait_stored(paths: list[Path], timeout: float = 300) -> None:
    """Until every path exists (ingestd's copies in the local stores)."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise SystemExit(f"ingestd did not store the uploads in {timeout:g} s")
        time.sleep(0.05)


def download(client: httpx.Client, urls: list[tuple[str, dict]], size: int) -> None:
    for url, headers in urls:
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200 and len(answer.content) == size, (url, answer.status_code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="1 round, a quarter of the files")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every side [3]")
    args = parser.parse_args()
    rounds = 1 if args.short else args.rounds
    counts = {name: max(2, n // 4) if args.short else n for name, n in COUNTS.items()}
    for name, value in credentials_env().items():
        os.environ[name] = value
    work = Path(tempfile.mkdtemp(prefix="st-blobs-"))
    home = work / "home"
    port, ds_port, metrics_port, static_port = free_port(), free_port(), free_port(), free_port()
    seaweed = start_seaweed(work / "seaweed", [free_port() for _ in range(10)])
    up = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--home", str(home), "--port", str(port),
         "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port)],
        stdout=open(work / "up.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    static = None
    try:
        wait_port(port)
        s3 = seaweed.client()
        client = httpx.Client(timeout=120)
        key = claim(client, port, "bench")
        store = home / "blobs" / "a"
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        conf = work / "static.conf"
        conf.write_text(STATIC_CONF.format(work=work, port=static_port, root=store, user=user))
        static = subprocess.Popen(
            ["/usr/sbin/nginx", "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL
        )
        wait_port(static_port)
        print(f"one client, one connection, one request at a time; {rounds} round(s); MiB/s")
        print(f"{'size':<8}{'files':>6}  {'upload':>9} {'S3 put':>9} {'ratio':>6}   "
              f"{'download':>9} {'static':>9} {'ratio':>6}   {'S3 get':>9}")  # fmt: skip
        verdicts = []
        for name, size in SIZES.items():
            n = counts[name]
            sums = {"upload": 0.0, "put": 0.0, "download": 0.0, "static": 0.0, "get": 0.0}
            for r in range(rounds):
                files = [os.urandom(size) for _ in range(n)]
                keys = [f"bench/{name}/{r}/{i}" for i in range(n)]
                seconds, ids = timed(smalltable_upload, client, port, key, files)
                sums["upload"] += seconds
                sums["put"] += timed(s3_put, s3, keys, files)[0]
                # ingestd has stored them and its replicator copied them: nothing else runs meanwhile
                wait_stored([home / "blobs" / d / blob[7:9] / blob for blob in ids for d in ("a", "b")])
                host = {"Host": f"bench.localhost:{port}"}
                ours = [(f"http://127.0.0.1:{port}/_blobs/{blob}", host) for blob in ids]
                theirs = [(f"http://127.0.0.1:{static_port}/{blob[7:9]}/{blob}", {}) for blob in ids]
                sides = [("download", ours), ("static", theirs)]
                for side, urls in sides if r % 2 == 0 else sides[::-1]:  # each goes first in turn
                    sums[side] += timed(download, client, urls, size)[0]
                sums["get"] += timed(s3_get, s3, keys)[0]
            total = size * n * rounds
            rate = {side: mib_per_s(total, seconds) for side, seconds in sums.items()}
            up_ratio, down_ratio = rate["upload"] / rate["put"], rate["download"] / rate["static"]
            verdicts.append((name, up_ratio, down_ratio))
            ups = f"{rate['upload']:>9.1f} {rate['put']:>9.1f} {up_ratio:>5.2f}x"
            downs = f"{rate['download']:>9.1f} {rate['static']:>9.1f} {down_ratio:>5.2f}x"
            print(f"{name:<8}{n:>6}  {ups}   {downs}   {rate['get']:>9.1f}")
        for name, up_ratio, down_ratio in verdicts:
            up_verdict = "meets" if up_ratio >= UPLOAD_GOAL else "MISSES"
            down_verdict = "meets" if down_ratio >= DOWNLOAD_GOAL else "MISSES"
            print(f"{name}: upload {up_ratio:.2f}x S3 put ({up_verdict} {UPLOAD_GOAL}x), "
                  f"download {down_ratio:.2f}x static ({down_verdict} {DOWNLOAD_GOAL}x)")  # fmt: skip
        client.close()
    finally:
        if static is not None:
            interrupt(static, 10)
        interrupt(up, 30)
        seaweed.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
