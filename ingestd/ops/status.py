"""``smalltable status``: every project and the ingest itself, read from disk.

Nothing here needs the daemon: project figures come from the databases (opened
read-only), each against its own quota (its settings, else the config's default),
the lag from the checkpoint and the log files (:mod:`.lag`), and whether ingestd
is up from its metrics port: the one ``smalltable up`` used for the home, which it
records in ``HOME/conf/smalltable.yaml``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import Config
from ..ingest import checkpoint
from ..model.project import is_valid_project_name, quota_level
from ..store.schema import database_bytes, read_settings
from .lag import measure
from .stack import port_in_use


@dataclass
class ProjectStatus:
    project: str
    records: int
    rejects: int
    bytes: int
    quota_bytes: int
    quota_used: float
    last_post: str | None


def project_status(path: Path, default_quota_bytes: int) -> ProjectStatus:
    """One project's figures, from its database opened read-only, against its own quota
    (``default_quota_bytes`` while nobody has set one)."""
    size = database_bytes(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    quota_bytes = default_quota_bytes
    try:
        records, last = conn.execute("select count(*), max(_received) from records").fetchone()
        rejects = conn.execute("select count(*) from rejects").fetchone()[0]
        settings = read_settings(conn)
        if settings is not None:
            quota_bytes = settings.quota_bytes
    except sqlite3.OperationalError:
        records, last, rejects = 0, None, 0
    finally:
        conn.close()
    return ProjectStatus(path.stem, records, rejects, size, quota_bytes, size / quota_bytes, last)


def recorded_config(home: Path) -> Path | None:
    """The config ``smalltable up`` last ran ``home`` with (its ports), if it ever did."""
    path = home / "conf" / "smalltable.yaml"
    return path if path.is_file() else None


def home_problem(config: Config) -> str | None:
    """Why the config's home holds nothing to report on, in words; None when it is a home."""
    home = config.home
    if not home.exists():
        return f"{home} does not exist: no SmallTable home there (smalltable up --home {home} makes one)"
    if not config.path("data_dir").is_dir():
        return f"{home} is not a SmallTable home: it has no data directory ({config.path('data_dir')})"
    return None


def daemon_up(config: Config) -> bool:
    """True when something answers on ingestd's metrics port."""
    return bool(config["metrics.port"]) and port_in_use(config["metrics.port"])


def collect(config: Config) -> dict:
    """Everything ``status`` shows, as plain data (what ``--json`` prints)."""
    quota = config["projects.quota_mb"] * 1024 * 1024
    data_dir = config.path("data_dir")
    projects = [
        project_status(path, quota)
        for path in sorted(data_dir.glob("*.db"))
        if is_valid_project_name(path.stem)
    ]
    checkpoint_path = config.path("state_dir") / "checkpoint.json"
    try:
        positions = checkpoint.load(checkpoint_path) or []
        checkpoint_problem = None
    except checkpoint.CheckpointError as exc:
        positions, checkpoint_problem = [], str(exc)
    lag = measure(config.path("ingest_log"), positions)
    return {
        "ingestd_up": daemon_up(config),
        "lag_bytes": lag.bytes,
        "lag_seconds": round(lag.seconds, 3),
        "files_pending": lag.files,
        "checkpoint_problem": checkpoint_problem,
        "projects": [asdict(p) for p in projects],
        "totals": {
            "projects": len(projects),
            "records": sum(p.records for p in projects),
            "rejects": sum(p.rejects for p in projects),
            "bytes": sum(p.bytes for p in projects),
        },
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def render_table(data: dict, warning: float) -> str:
    """``collect``'s data as the table people read; ``!`` marks a project whose
    quota level (:func:`~ingestd.model.project.quota_level`) is not ``ok``."""
    header = ("project", "records", "rejects", "size", "quota", "quota used", "last post")
    rows = [
        (
            p["project"],
            f"{p['records']:,}",
            f"{p['rejects']:,}",
            human_bytes(p["bytes"]),
            human_bytes(p["quota_bytes"]),
            f"{p['quota_used']:.0%}" + (" !" if quota_level(p["quota_used"], warning) != "ok" else ""),
            p["last_post"] or "-",
        )
        for p in data["projects"]
    ]
    totals = data["totals"]
    total = ("TOTAL", f"{totals['records']:,}", f"{totals['rejects']:,}", human_bytes(totals["bytes"]))
    rows.append((*total, "", "", ""))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    ingest = "up" if data["ingestd_up"] else "NOT RUNNING"
    lines.append("")
    lines.append(
        f"ingestd: {ingest}; lag {data['lag_seconds']:.1f} s, {human_bytes(data['lag_bytes'])} "
        f"in {data['files_pending']} file(s)"
    )
    if data["checkpoint_problem"]:
        lines.append(f"checkpoint: {data['checkpoint_problem']}")
    return "\n".join(lines)
