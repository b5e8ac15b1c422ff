"""``smalltable check-config``: the config, and every file rendered from it, tried for real.

Each check returns a problem (a sentence saying what is wrong) or None. The
rendered files are written to a temporary directory and handed to the programs
that will read them: ``nginx -t``, ``logrotate --debug``, ``systemd-analyze verify``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..config import Config
from ..support.programs import ProgramNotFound, find_program
from .render import RenderError, write


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _ports(config: Config) -> str | None:
    ports = {"nginx.port": config["nginx.port"], "datasette.port": config["datasette.port"]}
    if config["metrics.port"]:
        ports["metrics.port"] = config["metrics.port"]
    if len(set(ports.values())) < len(ports):
        return "two services share a port: " + ", ".join(f"{k}={v}" for k, v in ports.items())
    return None


def _directories(config: Config) -> str | None:
    problems = []
    for key in ("log_dir", "data_dir", "state_dir", "run_dir"):
        path = config.path(key)
        existing = next((p for p in [path, *path.parents] if p.exists()), None)
        if existing is None or not os.access(existing, os.W_OK):
            problems.append(f"paths.{key} ({path}) cannot be created or written by this user")
    return "; ".join(problems) or None


def _nginx(config: Config, conf: Path) -> str | None:
    log_dir = config.path("log_dir")
    argv = [find_program("nginx"), "-t", "-q", "-p", str(config.home), "-c", str(conf / "nginx.conf")]
    if log_dir.is_dir():
        argv += ["-e", str(log_dir / "nginx-error.log")]
    result = _run(argv)
    return None if result.returncode == 0 else result.stderr.strip()


def _logrotate(config: Config, conf: Path) -> str | None:
    result = _run(
        [find_program("logrotate"), "--debug", "--state", str(conf / "state"), str(conf / "logrotate.conf")]
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.returncode != 0 or errors:
        return "\n      ".join(errors) or result.stderr.strip()
    return None


def _systemd(conf: Path) -> str | None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return "systemd-analyze is not installed (Debian's systemd package)"
    units = sorted(str(p) for p in conf.glob("smalltable-*.service")) + sorted(
        str(p) for p in conf.glob("*.timer")
    )
    result = _run([analyze, "verify", *units])
    return None if result.returncode == 0 else result.stderr.strip()


def run_checks(config: Config) -> Iterator[tuple[str, str | None]]:
    """``(what was checked, problem or None)`` for each check, in order."""
    yield f"config {config.source}", None
    yield "ports", _ports(config)
    yield "directories", _directories(config)
    with tempfile.TemporaryDirectory(prefix="smalltable-check-") as tmp:
        conf = Path(tmp)
        try:
            write(config, conf)
        except (ProgramNotFound, RenderError) as exc:
            yield "rendered files", str(exc)
            return
        except OSError as exc:
            yield "rendered files", f"cannot write them: {exc}"
            return
        yield "rendered files", None
        yield "nginx -t", _nginx(config, conf)
        yield "logrotate", _logrotate(config, conf)
        yield "systemd-analyze verify", _systemd(conf)
