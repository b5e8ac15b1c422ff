"""The log archive and disaster recovery (issue 24, docs/archive.md), with the real nginx,
logrotate and daemon (``smalltable up``) and a real SeaweedFS on loopback (tests/s3lib.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .conftest import Stack, smalltable, start_stack, stop_stack
from .s3lib import BUCKET, credentials_env
from .test_e2e_projects import JSON
from .test_e2e_projects import status as write_status


@pytest.fixture
def s3env(seaweed, monkeypatch, request) -> dict[str, str]:
    """boto3's environment for the session's SeaweedFS, and an archive URL of the test's own."""
    env = {**credentials_env(), "AWS_ENDPOINT_URL": seaweed.endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    digest = hashlib.sha1(f"{request.node.nodeid}{os.getpid()}{time.time()}".encode()).hexdigest()[:10]
    return {**env, "url": f"s3://{BUCKET}/archive-{digest}", "prefix": f"archive-{digest}"}


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return value


def archived_stack(home: Path, url: str, **settings) -> Stack:
    config = home.parent / f"{home.name}-archive.yaml"
    home.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(settings))
    return start_stack(home, ["--config", str(config), "--archive", url])


def archive_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return smalltable("archive", *args, "--home", str(home), env=dict(os.environ))


def objects(seaweed, prefix: str) -> dict[str, bytes]:
    client = seaweed.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {
        o["Key"][len(prefix) + 1 :]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
    }


def post_and_wait(stack: Stack, project: str, count: int, start: int = 0) -> list[str]:
    ids = [
        stack.post(project, json.dumps({"n": start + i, "pad": "x" * 100})).json()["id"] for i in range(count)
    ]
    stack.wait_row(project, ids[-1])
    return ids


def test_rotated_logs_are_archived_verified_and_chained(seaweed, s3env, tmp_path, project):
    home = tmp_path / "home"
    stack = archived_stack(home, s3env["url"])
    try:
        post_and_wait(stack, project, 5)
        now = archive_cli("now", home=home)
        assert now.returncode == 0, now.stderr
        post_and_wait(stack, project, 5, 5)
        assert archive_cli("now", home=home).returncode == 0
        stored = objects(seaweed, s3env["prefix"])
        manifests = [json.loads(v) for k, v in sorted(stored.items()) if k.endswith(".manifest.json")]
        assert [m["seq"] for m in manifests] == [1, 2]
        assert manifests[0]["previous"] is None
        assert (manifests[1]["previous"], manifests[1]["previous_sha256"]) == (
            manifests[0]["segment"],
            manifests[0]["sha256"],
        )
        for m in manifests:
            assert hashlib.sha256(stored[m["segment"]]).hexdigest() == m["sha256"]
            assert len(stored[m["segment"]]) == m["size"]
        assert json.loads(stored["head.json"]) == manifests[1]
        assert sorted(m["segment"] for m in manifests) == [m["segment"] for m in manifests]
        # The segments hold every line the host logged, in order.
        lines = b"".join(stored[m["segment"]] for m in manifests).splitlines()
        assert [json.loads(line)["project"] for line in lines].count(project) == 10
        status = json.loads(archive_cli("status", "--json", home=home).stdout)
        assert status["segments_archived"] == 2 and status["segments_waiting"] == 0
        assert status["head"] == manifests[1]["segment"] and not status["chain_broken"]
        metrics = stack.client.get(f"http://127.0.0.1:{stack.metrics_port}/metrics").text
        for name, value in (("segments_waiting", 0.0), ("chain_broken", 0.0), ("failing", 0.0)):
            assert f"smalltable_archive_{name} {value}" in metrics
        verified = re.search(r"^smalltable_archive_last_verified_timestamp_seconds (\S+)$", metrics, re.M)
        assert verified and abs(float(verified[1]) - status["last_verified"]) < 1
        assert "smalltable_archive_oldest_unarchived_age_seconds 0.0" in metrics
    finally:
        stop_stack(stack)


def test_rotation_by_size_is_archived_within_the_delay(seaweed, s3env, tmp_path, project):
    home = tmp_path / "home"
    stack = archived_stack(home, s3env["url"], logrotate={"max_size": "2k", "interval": 0.5}, archive_delay=5)
    try:
        post_and_wait(stack, project, 30)  # ~6 KiB of log: at least one rotation by size
        rotated = wait_until(
            lambda: [p for p in stack.ingest_log.parent.glob("ingest.log.*")], 20, "a rotation"
        )
        rotated_at = min(p.stat().st_mtime for p in rotated)

        def archived() -> dict | None:
            figures = json.loads(archive_cli("status", "--json", home=home).stdout)
            return figures if figures["segments_archived"] >= 1 else None

        figures = wait_until(archived, 20, "the rotated file archived")
        assert figures["last_verified"] - rotated_at <= 5  # archive_delay
    finally:
        stop_stack(stack)


def dumps(home: Path) -> dict[str, str]:
    out = {}
    for db in sorted((home / "data").glob("*.db")):
        out[db.name] = subprocess.run(
            ["sqlite3", str(db), ".dump"], capture_output=True, text=True, check=True
        ).stdout
    return out


def test_drill_a_destroyed_host_is_restored_from_the_archive(seaweed, s3env, tmp_path):
    home = tmp_path / "lost"
    stack = archived_stack(home, s3env["url"])
    projects = [f"drill-{n}" for n in range(3)]
    try:
        claim = stack.post(projects[0], json.dumps({"owner": "ann"}), path="/_project", headers=JSON)
        assert write_status(stack, projects[0], claim)["status"] == "applied"
        change = stack.post(projects[0], json.dumps({"quota_mb": 700}), path="/_project", headers=JSON)
        assert write_status(stack, projects[0], change)["status"] == "applied"
        for round_ in range(3):
            for project in projects:
                post_and_wait(stack, project, 20, 20 * round_)
            assert archive_cli("now", home=home).returncode == 0
        bad = stack.post(projects[0], b"not json at all", headers={"Content-Type": "application/json"})
        deep = stack.post(projects[1], json.dumps({"n": "x" * 10}), path="/deep/path?q=1")
        stack.wait_row(projects[0], bad.json()["id"], table="rejects")
        stack.wait_row(projects[1], deep.json()["id"])
        assert archive_cli("now", home=home).returncode == 0
        before = dumps(home)
        keys_before = json.loads((home / "state" / "keys.json").read_text())["keys"]
        # In the not-yet-archived window: lost with the host.
        post_and_wait(stack, projects[0], 3, 2000)
    finally:
        stop_stack(stack)
    assert len(before) >= 3
    shutil.rmtree(home)

    new = tmp_path / "new"
    restored = smalltable("restore", "--from", s3env["url"], "--home", str(new), env=dict(os.environ))
    assert restored.returncode == 0, restored.stderr
    assert "chain verified" in restored.stdout
    assert dumps(new) == before
    assert json.loads((new / "state" / "keys.json").read_text())["keys"] == keys_before

    # The normal daemon continues: the next post takes the next id, the owner key still
    # works (nginx decides it from the restored maps), the chain grows.
    stack = archived_stack(new, s3env["url"])
    try:
        owner = {"Authorization": f"Bearer {claim.json()['key']}", **JSON}
        again = stack.post(projects[0], b'{"quota_mb": 800}', path="/_project", headers=owner, as_owner=False)
        assert write_status(stack, projects[0], again)["status"] == "applied"
        stranger = stack.post(
            projects[0], b'{"quota_mb": 900}', path="/_project", headers=JSON, as_owner=False
        )
        assert stranger.status_code in (401, 403), stranger.text
        db = new / "data" / f"{projects[1]}.db"
        last = int(
            subprocess.run(
                ["sqlite3", str(db), "select max(_id) from records"], capture_output=True, text=True
            ).stdout
        )
        request_id = stack.post(projects[1], b'{"after": 1}').json()["id"]
        stack.wait_row(projects[1], request_id)
        query = f"select _id from records where _request_id = '{request_id}'"
        assert subprocess.run(
            ["sqlite3", str(db), query], capture_output=True, text=True
        ).stdout.strip() == str(last + 1)
        assert archive_cli("now", home=new).returncode == 0
        status = json.loads(archive_cli("status", "--json", home=new).stdout)
        assert status["head"].endswith("-0000000005.log") and not status["chain_broken"]
    finally:
        stop_stack(stack)


def hand_made_home(tmp_path: Path, url: str, files: int, age_days: float = 0) -> tuple:
    """A home with ``files`` rotated logs (oldest first, one line each) and its config."""
    from ingestd.config import load_config

    config = load_config(None, {"home": str(tmp_path / "home"), "archive": url})
    logs = config.path("log_dir")
    logs.mkdir(parents=True)
    paths = []
    for n in range(files):
        path = logs / f"ingest.log.{files - n}"
        path.write_bytes(json.dumps({"v": 1, "n": n, "pad": os.urandom(8).hex()}).encode() + b"\n")
        when = time.time() - age_days * 86400 - (files - n) * 10 - 5
        os.utime(path, (when, when))
        paths.append(path)
    return config, paths


def test_no_rotated_file_is_deleted_before_its_copy_is_verified(fresh_seaweed, monkeypatch, tmp_path):
    from ingestd.config import load_config
    from ingestd.ops.archive import Archiver
    from ingestd.ops.render import render
    from ingestd.support.s3 import S3Error

    for name, value in {**credentials_env(), "AWS_ENDPOINT_URL": fresh_seaweed.endpoint}.items():
        monkeypatch.setenv(name, value)
    config, paths = hand_made_home(tmp_path, f"s3://{BUCKET}/prune", 3, age_days=300)
    maxage = re.compile(r"^\s*maxage\s", re.M)  # logrotate deletes nothing when there is an archive
    assert not maxage.search(render(config, tmp_path / "conf")["logrotate.conf"])
    unarchived = load_config(None, {"home": str(config.home)})
    assert maxage.search(render(unarchived, tmp_path / "conf")["logrotate.conf"])
    unit = render(config, tmp_path / "conf")["smalltable-ingestd.service"]
    assert f"ReadWritePaths={config.path('log_dir')}\n" in unit  # it deletes what it archived
    assert "EnvironmentFile=-/etc/smalltable/archive.env" in unit
    empty = config.path("log_dir") / "ingest.log.9"  # nothing to archive, so never "verified"
    empty.write_bytes(b"")
    os.utime(empty, (time.time() - 400 * 86400,) * 2)
    torn = config.path("log_dir") / "ingest.log.8"  # a torn line alone (nginx died writing it)
    torn.write_bytes(b'{"v":1,"t":1.5,"torn')
    os.utime(torn, (time.time() - 400 * 86400,) * 2)
    fresh_seaweed.stop()
    archiver = Archiver(config)
    with pytest.raises(S3Error):
        archiver.run_pass()
    assert all(p.exists() for p in paths), "a file past keep_days was deleted while S3 was down"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"home": str(config.home), "archive": config["archive"]}))
    down = smalltable("archive", "status", "--json", "--config", str(config_file), env=dict(os.environ))
    assert down.returncode == 1 and json.loads(down.stdout)["segments_waiting"] == 4
    assert "Could not connect" in json.loads(down.stdout)["last_error"]
    fresh_seaweed.start()
    paths[2].write_bytes(paths[2].read_bytes())  # the newest is written again: not settled yet
    assert len(archiver.run_pass()) == 3
    assert [p.exists() for p in [torn, *paths]] == [False, False, False, True]
    stale = time.time() - 300 * 86400
    os.utime(paths[2], (stale, stale))
    assert len(archiver.run_pass()) == 1
    assert not paths[2].exists()
    assert empty.exists(), "a file that was never archived was deleted"
    assert len(objects(fresh_seaweed, "prune")) == 4 + 4 + 1  # segments, manifests, head


def test_restore_names_the_first_missing_or_corrupt_segment(seaweed, s3env, tmp_path):
    from ingestd.ops.archive import Archiver

    config, _ = hand_made_home(tmp_path, s3env["url"], 3)
    assert len(Archiver(config).run_pass()) == 3
    client, prefix = seaweed.client(), s3env["prefix"]
    segments = sorted(n for n in objects(seaweed, prefix) if n.startswith("log/") and n.endswith(".log"))

    def restore(into: str) -> subprocess.CompletedProcess:
        home = tmp_path / into
        return smalltable("restore", "--from", s3env["url"], "--home", str(home), env=dict(os.environ))

    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{segments[1]}", Body=b'{"v":1,"forged":true}\n')
    corrupt = restore("a")
    assert corrupt.returncode != 0 and f"segment {segments[1]} is corrupt" in corrupt.stderr
    assert not list((tmp_path / "a" / "data").glob("*.db"))
    assert not list((tmp_path / "a" / "logs").iterdir()), "a broken restore left segments behind"
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/{segments[1]}")
    missing = restore("b")
    assert missing.returncode != 0 and f"segment {segments[1]} is missing" in missing.stderr
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/{segments[1].removesuffix('.log')}.manifest.json")
    unlinked = restore("c")
    assert unlinked.returncode != 0 and f"segment {segments[1]} is missing" in unlinked.stderr
    for name in (segments[2], segments[2].removesuffix(".log") + ".manifest.json"):
        client.delete_object(Bucket=BUCKET, Key=f"{prefix}/{name}")
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{segments[1]}", Body=b"")
    lost_newest = restore("d")
    assert lost_newest.returncode != 0 and f"segment {segments[2]} is missing" in lost_newest.stderr


def test_an_s3_outage_delays_the_archive_and_loses_nothing(fresh_seaweed, monkeypatch, tmp_path):
    env = {**credentials_env(), "AWS_ENDPOINT_URL": fresh_seaweed.endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{BUCKET}/outage"
    home = tmp_path / "lost"
    stack = archived_stack(home, url)
    try:
        post_and_wait(stack, "outage-a", 10)
        fresh_seaweed.stop()
        for round_ in range(2):  # two rotations while S3 is down: the older one gets compressed
            post_and_wait(stack, "outage-a", 10, 10 * (round_ + 1))
            down = archive_cli("now", home=home)
            assert down.returncode == 1 and f"cannot archive to {url}" in down.stderr
        assert list(home.glob("logs/ingest.log.*.gz")), "logrotate compressed nothing"
        figures = json.loads(archive_cli("status", "--json", home=home).stdout)
        assert figures["segments_waiting"] == 2 and figures["last_error"]
        metrics = stack.client.get(f"http://127.0.0.1:{stack.metrics_port}/metrics").text
        assert "smalltable_archive_segments_waiting 2.0" in metrics
        fresh_seaweed.start()
        post_and_wait(stack, "outage-a", 10, 30)
        assert archive_cli("now", home=home).returncode == 0
        stored = objects(fresh_seaweed, "outage")
        assert any(name.endswith(".log.gz") for name in stored)
        assert len([n for n in stored if n.endswith(".manifest.json")]) == 3
        before = dumps(home)
    finally:
        stop_stack(stack)
    shutil.rmtree(home)
    restored = smalltable("restore", "--from", url, "--home", str(tmp_path / "new"), env=dict(os.environ))
    assert restored.returncode == 0, restored.stderr
    assert dumps(tmp_path / "new") == before


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://B/upper", "s3:/bucket"])
def test_an_archive_that_is_not_an_s3_url_is_refused_by_name(url, tmp_path):
    answer = smalltable("restore", "--from", url, "--home", str(tmp_path / "new"))
    assert answer.returncode != 0 and "key 'archive': expected s3://BUCKET/PREFIX" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_a_foreign_head_stops_the_archive_and_a_lost_one_is_put_back(seaweed, s3env, tmp_path):
    from ingestd.ops.archive import Archiver, load_state
    from ingestd.ops.chain import ChainBroken

    config, paths = hand_made_home(tmp_path, s3env["url"], 2)
    newest = paths[1].read_bytes()
    paths[1].unlink()
    archiver = Archiver(config)
    assert len(archiver.run_pass()) == 1
    head = f"{s3env['prefix']}/head.json"
    client = seaweed.client()
    client.put_object(Bucket=BUCKET, Key=head, Body=b'{"seq": 7}')  # another writer's head
    paths[1].write_bytes(newest)
    os.utime(paths[1], (time.time() - 5,) * 2)
    with pytest.raises(ChainBroken, match="another host archives to this prefix"):
        archiver.run_pass()
    assert load_state(config).chain_broken and len(objects(seaweed, s3env["prefix"])) == 3
    client.delete_object(Bucket=BUCKET, Key=head)  # a lost head: put back, and on it goes
    assert len(archiver.run_pass()) == 1
    assert not load_state(config).chain_broken
    assert json.loads(objects(seaweed, s3env["prefix"])["head.json"])["seq"] == 2
