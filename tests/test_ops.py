"""Operating SmallTable: status, replay, check-config, metrics, systemd's notify protocol.
Each runs the real command or the real daemon on real files."""

from __future__ import annotations

import gzip
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from .conftest import smalltable
from .daemonlib import DaemonRunner


def request_ids(path, table: str = "records") -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute(f"select _request_id from {table} order by _id")]
    finally:
        conn.close()


@pytest.fixture
def loaded(daemon) -> tuple[DaemonRunner, dict[str, list[str]]]:
    """A daemon that loaded two projects (one with a reject) and was stopped."""
    ids = {"alpha": daemon.write("alpha", 30), "beta": daemon.write("beta", 12)}
    rid, line = daemon.line("beta", b"{oops", ctype="application/json")
    with open(daemon.log_path, "ab") as log:
        log.write(line)
    daemon.start()
    daemon.wait_loaded("alpha", ids["alpha"])
    daemon.wait_loaded("beta", [rid], table="rejects")
    daemon.stop()
    ids["beta-rejects"] = [rid]
    return daemon, ids


# -- status ----------------------------------------------------------------------


def test_status_json_counts_every_project(loaded):
    daemon, _ = loaded
    result = smalltable("status", "--config", str(daemon.config_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    projects = {p["project"]: p for p in data["projects"]}
    assert (projects["alpha"]["records"], projects["alpha"]["rejects"]) == (30, 0)
    assert (projects["beta"]["records"], projects["beta"]["rejects"]) == (12, 1)
    assert projects["alpha"]["quota_bytes"] == 100 * 1024 * 1024
    assert 0 < projects["alpha"]["quota_used"] < 0.01
    assert data["totals"]["records"] == 42
    assert (data["lag_bytes"], data["lag_seconds"], data["ingestd_up"]) == (0, 0, False)


def test_status_shows_the_lag_of_lines_not_loaded_yet(loaded):
    daemon, _ = loaded
    before = time.time()
    daemon.write("alpha", 5)
    data = json.loads(smalltable("status", "--config", str(daemon.config_path), "--json").stdout)
    line_length = len(daemon.line("alpha", b'{"n":1}')[1])
    assert data["lag_bytes"] == 5 * line_length
    # the test's lines say they arrived at 1795250368.587 (make_line's fixed time)
    assert data["lag_seconds"] == pytest.approx(before - 1795250368.587, abs=5)
    assert data["files_pending"] == 1


def test_status_table_for_people(loaded):
    daemon, _ = loaded
    result = smalltable("status", "--config", str(daemon.config_path))
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "project",
        "records",
        "rejects",
        "size",
        "quota",
        "quota",
        "used",
        "last",
        "post",
    ]
    assert any(line.split()[:3] == ["alpha", "30", "0"] for line in lines)
    assert any(line.split()[:3] == ["TOTAL", "42", "1"] for line in lines)
    assert "ingestd: NOT RUNNING; lag 0.0 s, 0 B in 0 file(s)" in result.stdout


# -- replay -----------------------------------------------------------------------


def test_replay_rebuilds_every_project_from_the_logs(loaded, tmp_path):
    daemon, ids = loaded
    rebuilt = tmp_path / "rebuilt"
    result = smalltable("replay", "--config", str(daemon.config_path), "--data-dir", str(rebuilt))
    assert result.returncode == 0, result.stderr
    assert "43 lines from 1 file(s)" in result.stdout
    assert "42 stored, 1 rejected, 0 already loaded, 0 unparsable" in result.stdout
    assert "replaying 1 file(s)" in result.stderr  # the progress bar
    for project in ("alpha", "beta"):
        assert request_ids(rebuilt / f"{project}.db") == daemon.request_ids(project)
    assert request_ids(rebuilt / "beta.db", "rejects") == ids["beta-rejects"]


def test_replay_is_idempotent(loaded):
    daemon, _ = loaded
    result = smalltable("replay", "--config", str(daemon.config_path))
    assert "0 stored, 0 rejected, 43 already loaded" in result.stdout
    assert "  alpha: 0 new, 30 already loaded" in result.stdout
    assert len(daemon.request_ids("alpha")) == 30


def test_replay_one_project_from_a_compressed_file(loaded, tmp_path):
    daemon, _ = loaded
    archive = tmp_path / "old.log.gz"
    with gzip.open(archive, "wb") as out:
        out.write(daemon.log_path.read_bytes())
    rebuilt = tmp_path / "rebuilt"
    result = smalltable(
        "replay", "--config", str(daemon.config_path), "--project", "beta",
        "--from", str(archive), "--data-dir", str(rebuilt),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "12 stored, 1 rejected" in result.stdout and "30 of other projects" in result.stdout
    assert sorted(p.name for p in rebuilt.glob("*.db")) == ["beta.db"]


def test_replay_beside_the_running_daemon_stores_nothing_twice(daemon):
    ids = daemon.write("busy", 3000, body=b'{"n":1,"k":"v"}')
    daemon.start()
    result = smalltable("replay", "--config", str(daemon.config_path))
    assert result.returncode == 0, result.stderr
    more = daemon.write("busy", 100, body=b'{"late":true}')
    daemon.wait_loaded("busy", ids + more)
    daemon.assert_exactly("busy", ids + more)


def test_replay_refuses_a_bad_project_name(loaded):
    daemon, _ = loaded
    result = smalltable("replay", "--config", str(daemon.config_path), "--project", "../x")
    assert result.returncode != 0
    assert "--project '../x': a project name is 1 to 63 lowercase letters" in result.stderr
    assert "Traceback" not in result.stderr


# -- check-config -------------------------------------------------------------------


def test_check_config_passes_a_good_config(tmp_path):
    result = smalltable("check-config", "--home", str(tmp_path))
    assert result.returncode == 0, result.stdout
    for check in ("ports", "directories", "nginx -t", "logrotate", "systemd-analyze verify"):
        assert f"ok    {check}" in result.stdout


def test_check_config_names_what_is_wrong(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("nginx:\n  port: 9108\n")
    result = smalltable("check-config", "--config", str(config), "--home", str(tmp_path))
    assert result.returncode == 1
    assert "FAIL  ports" in result.stdout
    expected = "two services share a port: nginx.port=9108, datasette.port=8001, metrics.port=9108"
    assert expected in result.stdout


def test_check_config_catches_a_typo_before_anything_else(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("ingest:\n  batch_line: 5\n")
    result = smalltable("check-config", "--config", str(config))
    assert result.returncode == 1
    assert "unknown key 'ingest.batch_line' (did you mean 'ingest.batch_lines'?)" in result.stderr


# -- metrics --------------------------------------------------------------------


def test_metrics_count_per_project_and_bound_the_label(tmp_path):
    daemon = DaemonRunner(tmp_path / "home", metrics={"max_projects": 2})
    ids = {name: daemon.write(name, 3) for name in ("p1", "p2", "p3", "p4")}
    try:
        daemon.start()
        for name, project_ids in ids.items():
            daemon.wait_loaded(name, project_ids)
        text = daemon.metrics()
        stored = {
            line.split('"')[1]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("smalltable_records_stored_total{")
        }
        assert stored == {"p1": 3.0, "p2": 3.0, "_other": 6.0}
        assert 'smalltable_project_database_bytes{project="p1"}' in text
        assert 'smalltable_project_database_bytes{project="p3"}' not in text
        assert "smalltable_ingest_lag_bytes 0.0" in text
        assert 'smalltable_filesystem_avail_bytes{dir="data"}' in text
        assert 'smalltable_ingestd_build_info{version="' in text
    finally:
        daemon.kill()


def test_idle_projects_do_not_take_the_labels_of_the_projects_that_post(tmp_path):
    """The retention pass at start visits every project; those it finds idle get no
    series, so the projects that post keep the labels (metrics.max_projects)."""
    daemon = DaemonRunner(tmp_path / "home", metrics={"max_projects": 2})
    idle = {name: daemon.write(name, 1) for name in ("a-idle", "b-idle", "c-idle")}
    try:
        daemon.start()
        for name, project_ids in idle.items():
            daemon.wait_loaded(name, project_ids)
        daemon.stop()
        posting = daemon.write("z-posts", 2)
        daemon.start()  # its retention pass runs over the three idle projects first
        daemon.wait_loaded("z-posts", posting)
        daemon.wait_metric("smalltable_records_stored_total", 2.0, 'project="z-posts"')
        text = daemon.metrics()
        assert 'smalltable_records_stored_total{project="z-posts"} 2.0' in text
        assert "idle" not in text
    finally:
        daemon.kill()


# -- systemd notify -------------------------------------------------------------------


def test_ingestd_speaks_systemds_notify_protocol(daemon, tmp_path, monkeypatch):
    """READY=1 once following, WATCHDOG=1 at half the watchdog period, STOPPING=1 on stop."""
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    daemon.start()
    try:
        messages = [listener.recv(4096).decode() for _ in range(4)]
        assert messages[0].startswith("READY=1\nSTATUS=following ")
        assert messages[1:] == ["WATCHDOG=1"] * 3
        assert daemon.stop() == 0
        rest = []
        while not rest or rest[-1] == "WATCHDOG=1":
            rest.append(listener.recv(4096).decode())
        assert rest[-1] == "STOPPING=1"
    finally:
        listener.close()


def test_the_daemon_and_all_its_threads_yield_the_cpu_to_nginx(daemon):
    """ingest.nice (19 by default): when the CPUs are busy, nginx answers writes first.
    (A higher nice it was started with is kept.)"""
    expected = max(19, os.getpriority(os.PRIO_PROCESS, 0))
    daemon.start()
    tasks = Path(f"/proc/{daemon.process.pid}/task")
    deadline = time.monotonic() + 10
    while len(threads := list(tasks.iterdir())) < 3:  # the loop, the metrics server, watchdog's
        assert time.monotonic() < deadline, f"only {len(threads)} threads"
        time.sleep(0.05)
    for thread in threads:
        try:
            stat = (thread / "stat").read_text()
        except FileNotFoundError:  # a short-lived thread that has ended since
            continue
        nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5), after "(comm)"
        assert nice == expected, (thread.name, stat)
