"""Render the nginx/ and logrotate/ templates for one deployment.

Three files come out:

``smalltable.conf``
    nginx, http level: log format, upstreams, the ack server and the project
    servers. A production host includes it from its own nginx.conf.
``nginx.conf``
    a complete config for the unprivileged nginx of ``smalltable up``.
``logrotate.conf``
    the rotation of the ingest log (production: /etc/logrotate.d/smalltable).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jinja2

from .config import Config

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = {
    "smalltable.conf": REPO / "nginx" / "smalltable.conf.j2",
    "nginx.conf": REPO / "nginx" / "nginx-dev.conf.j2",
    "logrotate.conf": REPO / "logrotate" / "smalltable.conf.j2",
}


def _listen(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def context(config: Config, conf_dir: Path) -> dict:
    """The values the templates are rendered with."""
    return {
        "domain": config["domain"],
        "domain_regex": re.escape(config["domain"]),
        "listen": [_listen(a) for a in config["nginx.listen"]],
        "port": config["nginx.port"],
        "datasette_port": config["datasette.port"],
        "max_body_bytes": config["nginx.max_body_bytes"],
        "home": config.home,
        "conf_dir": conf_dir,
        "log_dir": config.path("log_dir"),
        "run_dir": config.path("run_dir"),
        "ingest_log": config.path("ingest_log"),
        "nginx_pid": config.path("nginx_pid"),
        "max_size": config["logrotate.max_size"],
        "keep_days": config["logrotate.keep_days"],
        "run_as_root": os.geteuid() == 0,
    }


def render(config: Config, conf_dir: Path) -> dict[str, str]:
    """``{file name: text}`` for every rendered file that will live in ``conf_dir``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    values = context(config, conf_dir)
    return {
        name: env.get_template(template.relative_to(REPO).as_posix()).render(values)
        for name, template in TEMPLATES.items()
    }


def write(config: Config, conf_dir: Path) -> list[Path]:
    """Render into ``conf_dir`` and make the directories nginx writes to."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for key in ("log_dir", "run_dir", "ingest_log", "nginx_pid"):
        path = config.path(key)
        (path if key.endswith("_dir") else path.parent).mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(config, conf_dir).items():
        path = conf_dir / name
        path.write_text(text)
        written.append(path)
    return written
