"""The systemd units: rendered for a deployment, accepted by systemd-analyze verify,
hardened and ordered the way docs/ops.md says."""

from __future__ import annotations

import configparser
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from ingestd.config import load_config
from ingestd.ops.render import write

UNITS = [
    "smalltable-ingestd.service",
    "smalltable-datasette.service",
    "smalltable-logrotate.service",
    "smalltable-logrotate.timer",
    "smalltable-quota.path",
    "smalltable-quota.service",
]


@pytest.fixture
def rendered(tmp_path) -> Path:
    conf = tmp_path / "conf"
    write(load_config(None, {"home": str(tmp_path / "home")}), conf)
    return conf


def verify(paths: list[Path]) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package", pytrace=False)
    return subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True, text=True)


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def test_systemd_analyze_verify_accepts_every_unit(rendered):
    result = verify([rendered / name for name in UNITS])
    assert result.returncode == 0, result.stderr


def test_verify_really_checks(rendered):
    """A unit whose program does not exist fails: the check above is not a no-op."""
    broken = rendered / "broken.service"
    broken.write_text(
        (rendered / "smalltable-ingestd.service").read_text().replace("ExecStart=", "ExecStart=/nonexistent")
    )
    assert verify([broken]).returncode != 0


HARDENING = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
    "UMask": "0027",
}
"""The sandbox of both long-running services, every setting (docs/ops.md)."""

ROOT_ONESHOT_HARDENING = {"ProtectSystem": "full", "PrivateTmp": "yes", "NoNewPrivileges": "yes"}
"""The root one-shot services (logrotate, the quota reload) can do only this little."""

EXPOSURE_AT_MOST = 1.9
"""`systemd-analyze security` exposure of the two services (0 is best, 10 worst) today."""

LONG_RUNNING = ["smalltable-ingestd.service", "smalltable-datasette.service"]


def hardening(service: configparser.SectionProxy, wanted: dict[str, str]) -> dict[str, str | None]:
    return {key: service.get(key) for key in wanted}


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_services_are_hardened_and_ordered_after_nginx(rendered, name):
    service = unit(rendered / name)
    assert "nginx.service" in service["Unit"]["After"]
    s = service["Service"]
    assert (s["User"], s["Group"]) == ("smalltable", "smalltable")
    assert hardening(s, HARDENING) == HARDENING
    assert s["Restart"] == "always"
    assert str(rendered.parent / "home" / "data") in s["ReadWritePaths"].split()


@pytest.mark.parametrize("name", ["smalltable-logrotate.service", "smalltable-quota.service"])
def test_root_oneshot_services_are_hardened(rendered, name):
    s = unit(rendered / name)["Service"]
    assert hardening(s, ROOT_ONESHOT_HARDENING) == ROOT_ONESHOT_HARDENING


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_systemd_analyze_security_rates_the_services_exposure_low(rendered, name):
    """systemd's own reckoning of the sandbox: a setting dropped raises the exposure."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd package", pytrace=False)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(rendered / name)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE_AT_MOST, result.stdout


def test_ingestd_tells_systemd_it_is_ready_and_feeds_a_watchdog(rendered):
    s = unit(rendered / "smalltable-ingestd.service")["Service"]
    assert s["Type"] == "notify"
    assert int(s["WatchdogSec"]) > 0
    assert s["ExecStart"].endswith(f"ingest --config {rendered / 'smalltable.yaml'}")
    assert str(rendered.parent / "home" / "logs") in s["ReadOnlyPaths"].split()


def test_logrotate_runs_hourly(rendered):
    assert unit(rendered / "smalltable-logrotate.timer")["Timer"]["OnCalendar"] == "hourly"
    service = unit(rendered / "smalltable-logrotate.service")["Service"]
    assert service["ExecStart"].endswith(str(rendered / "logrotate.conf"))
    # compression is background work: it yields to nginx and ingestd
    assert (service["Nice"], service["IOSchedulingClass"], service["IOSchedulingPriority"]) == (
        "19",
        "best-effort",
        "7",
    )


def test_the_quota_path_unit_reloads_nginx_when_ingestd_rewrites_the_map(rendered, tmp_path):
    path_unit = unit(rendered / "smalltable-quota.path")
    watched = [
        line.partition("=")[2]
        for line in (rendered / "smalltable-quota.path").read_text().splitlines()
        if line.startswith("PathChanged=")
    ]
    state = tmp_path / "home" / "state"
    assert watched == [str(state / name) for name in ("quota.map", "keys.map", "policy.map", "pending.map")]
    assert path_unit["Path"]["Unit"] == "smalltable-quota.service"
    service = unit(rendered / "smalltable-quota.service")
    assert service["Service"]["ExecStart"] == "/bin/systemctl reload nginx.service"


def test_datasette_memory_is_bounded(rendered):
    """A query that allocates without bound stops at MemoryMax (datasette.memory_max_mb),
    not at the kernel's OOM killer choosing among nginx and ingestd too."""
    assert unit(rendered / "smalltable-datasette.service")["Service"]["MemoryMax"] == "1024M"


def test_the_nginx_drop_in_removes_a_stale_ack_socket_before_nginx_starts(rendered, tmp_path):
    """nginx killed -9 leaves its ack socket, on which the next start fails: the drop-in's
    ExecStartPre, run as systemd runs it, removes it (and does not fail without one)."""
    drop_in = unit(rendered / "nginx-smalltable.conf")
    command = drop_in["Service"]["ExecStartPre"].split()
    run_dir = tmp_path / "home" / "run"
    assert command[-1] == str(run_dir / "ack.sock")
    run_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(command[-1])  # the file stays after close, as after a crash
    assert subprocess.run(command).returncode == 0
    assert not Path(command[-1]).exists()
    assert subprocess.run(command).returncode == 0  # nothing to remove: nginx still starts
