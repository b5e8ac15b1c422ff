"""Render the nginx/ templates for one deployment (domain, ports, paths, body limit).

Two files come out: ``smalltable.conf`` (http-level: log format, upstreams, the
ack server and the project servers), which a production host includes from its
own nginx.conf, and ``nginx.conf``, a complete config for the unprivileged nginx
of ``smalltable up``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jinja2

from .config import Config

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "nginx"


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
        "run_as_root": os.geteuid() == 0,
    }


def render(config: Config, conf_dir: Path) -> dict[str, str]:
    """``{file name: text}`` for every rendered file that will live in ``conf_dir``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    values = context(config, conf_dir)
    return {
        "smalltable.conf": env.get_template("smalltable.conf.j2").render(values),
        "nginx.conf": env.get_template("nginx-dev.conf.j2").render(values),
    }


def write(config: Config, conf_dir: Path) -> list[Path]:
    """Render into ``conf_dir`` and make the directories nginx writes to."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for key in ("log_dir", "run_dir"):
        config.path(key).mkdir(parents=True, exist_ok=True)
    config.path("ingest_log").parent.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(config, conf_dir).items():
        path = conf_dir / name
        path.write_text(text)
        written.append(path)
    return written
