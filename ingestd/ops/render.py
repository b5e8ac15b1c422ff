"""Render the nginx/ and logrotate/ templates for one deployment.

The files that come out:

``smalltable.conf``
    nginx, http level: log format, upstreams, the ack server and the project
    servers. A production host includes it from its own nginx.conf.
``nginx.conf``
    a complete config for the unprivileged nginx of ``smalltable up``.
``smalltable.js``, ``SmallTableKeys.pm``
    the njs module nginx decides keys with, and the Perl one it hashes a presented key
    with (docs/keys.md).
``logrotate.conf``
    the rotation of the ingest log, run hourly by ``smalltable-logrotate.timer``.
``smalltable-*.service``, ``smalltable-logrotate.timer``, ``smalltable-quota.path``
    systemd units for ingestd, Datasette, the rotation, and the nginx reload
    when a project's quota level changes (docs/ops.md).
``nginx-smalltable.conf``
    a drop-in for Debian's nginx.service: a stale ack socket is removed before nginx starts.
``front.conf``, ``front.js``
    with ``front.hosts``: the front tier's complete nginx config, and its njs (docs/scale.md).
``smalltable.yaml``, ``datasette.json``
    the effective config every unit reads, and Datasette's metadata.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import sys
import urllib.parse
from pathlib import Path

import jinja2
import yaml

from ..config import Config
from ..model.project import RESERVED_NAMES
from ..store.blobs import S3Store, local_stores, stores_from
from ..support.programs import find_nginx_module, find_program

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = {
    "smalltable.conf": REPO / "nginx" / "smalltable.conf.j2",
    "nginx.conf": REPO / "nginx" / "nginx-dev.conf.j2",
    "logrotate.conf": REPO / "logrotate" / "smalltable.conf.j2",
    "smalltable-ingestd.service": REPO / "systemd" / "smalltable-ingestd.service.j2",
    "smalltable-datasette.service": REPO / "systemd" / "smalltable-datasette.service.j2",
    "smalltable-logrotate.service": REPO / "systemd" / "smalltable-logrotate.service.j2",
    "smalltable-logrotate.timer": REPO / "systemd" / "smalltable-logrotate.timer.j2",
    "smalltable-quota.path": REPO / "systemd" / "smalltable-quota.path.j2",
    "smalltable-quota.service": REPO / "systemd" / "smalltable-quota.service.j2",
    "nginx-smalltable.conf": REPO / "systemd" / "nginx-smalltable.conf.j2",
}


class RenderError(Exception):
    """The config cannot be rendered on this host; the message says why and what to do."""


def worker_user(config: Config) -> tuple[str, str]:
    """The user and group nginx's workers run as when nginx starts as root (never root)."""
    name = config["nginx.worker_user"]
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RenderError(
            f"nginx.worker_user {name!r} is not a user on this host: create it or choose another"
        ) from None
    return name, grp.getgrgid(entry.pw_gid).gr_name


def _listen(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def blob_context(config: Config) -> dict:
    """What the blob locations need: the limit, the spool, the local stores nginx serves from."""
    stores = stores_from(config["blobs.stores"], config.home)
    return {
        "blob_max_mb": config["blobs.max_mb"],
        "blob_max_bytes": config["blobs.max_mb"] * 1048576,
        "blob_spool_dir": config.path("run_dir") / "blob-spool",
        "blob_public_dir": config.path("state_dir") / "blobs-public",
        "blob_dirs": [store.directory for store in local_stores(stores)],
        "blob_s3": _s3_fallback(stores),
    }


def _s3_fallback(stores: list) -> dict | None:
    """The first S3 store, as nginx fetches a download from it when no local store has one."""
    for store in stores:
        if isinstance(store, S3Store):
            bucket = store.bucket
            url = urllib.parse.urlsplit(bucket.endpoint)
            port = url.port or (443 if url.scheme == "https" else 80)
            prefix = bucket.prefix.strip("/")
            return {
                "scheme": url.scheme,
                "host": url.netloc,
                "hostport": f"{url.hostname}:{port}",
                "bucket": bucket.bucket,
                "prefix": f"{prefix}/" if prefix else "",
                "region": bucket.region,
            }
    return None


def context(config: Config, conf_dir: Path) -> dict:
    """The values the templates are rendered with."""
    return {
        "domain": config["domain"],
        "domain_regex": re.escape(config["domain"]),
        "listen": [_listen(a) for a in config["nginx.listen"]],
        "port": config["nginx.port"],
        "port_suffix": "" if config["nginx.port"] in (80, 443) else f":{config['nginx.port']}",
        "datasette_port": config["datasette.port"],
        "datasette_memory_max_mb": config["datasette.memory_max_mb"],
        "sql_concurrency": config["datasette.sql_concurrency"],
        "sql_rate_per_minute": config["datasette.sql_rate_per_minute"],
        "sql_burst": config["datasette.sql_burst"],
        "client_timeout": config["nginx.client_timeout"],
        "send_timeout": config["nginx.send_timeout"],
        "connections_per_address": config["nginx.connections_per_address"],
        "tails_per_address": config["nginx.tails_per_address"],
        "tls": bool(config["tls.certificate"]),
        "tls_certificate": config.home / config["tls.certificate"],
        "tls_key": config.home / config["tls.key"],
        "tls_port": config["tls.port"],
        "tls_port_suffix": "" if config["tls.port"] == 443 else f":{config['tls.port']}",
        "new_per_minute": config["projects.new_per_minute"],
        "new_burst": config["projects.new_burst"],
        "max_projects": config["projects.max_projects"],
        "max_data_mb": config["projects.max_data_mb"],
        "max_body_bytes": config["nginx.max_body_bytes"],
        **blob_context(config),
        "reserved_names": sorted(RESERVED_NAMES),
        "home": config.home,
        "conf_dir": conf_dir,
        "log_dir": config.path("log_dir"),
        "run_dir": config.path("run_dir"),
        "ingest_log": config.path("ingest_log"),
        "nginx_pid": config.path("nginx_pid"),
        "max_size": config["logrotate.max_size"],
        "keep_days": config["logrotate.keep_days"],
        "archive": bool(config["archive"]),
        "run_as_root": os.geteuid() == 0,
        "worker_user": " ".join(worker_user(config)) if os.geteuid() == 0 else "",
        "repo": REPO,
        "data_dir": config.path("data_dir"),
        "auto_create": config["projects.auto_create"],
        "state_dir": config.path("state_dir"),
        "config_file": conf_dir / "smalltable.yaml",
        "datasette_metadata": conf_dir / "datasette.json",
        "datasette_options": " ".join(datasette_options(config, conf_dir / "datasette.json")),
        "smalltable_bin": Path(sys.executable).parent / "smalltable",
        "datasette_bin": Path(sys.executable).parent / "datasette",
        "logrotate_bin": find_program("logrotate"),
        "njs_module": find_nginx_module("ngx_http_js_module.so", "njs"),
        "perl_module": find_nginx_module("ngx_http_perl_module.so", "Perl"),
        "hosts": config["front.hosts"],
        "user": config["systemd.user"],
        "group": config["systemd.group"],
    }


def datasette_options(config: Config, metadata: Path) -> list[str]:
    """The options after ``datasette serve``, for ``smalltable up`` and the systemd unit alike."""
    return [
        "--host",
        "127.0.0.1",
        "--port",
        str(config["datasette.port"]),
        "--metadata",
        str(metadata),
        "--setting",
        "sql_time_limit_ms",
        str(config["datasette.sql_time_limit_ms"]),
        "--setting",
        "suggest_facets",
        "on" if config["datasette.suggest_facets"] else "off",
        "--setting",
        "num_sql_threads",
        str(config["datasette.sql_concurrency"] + config["datasette.page_threads"]),
    ]


def effective_config(config: Config) -> str:
    """The config as YAML with every setting spelled out and ``home`` absolute."""
    nested: dict = {}
    for key, value in config.values.items():
        head, _, leaf = key.rpartition(".")
        (nested.setdefault(head, {}) if head else nested)[leaf] = value
    nested["home"] = str(config.home)
    return yaml.safe_dump(nested, sort_keys=False)


def datasette_metadata(config: Config) -> str:
    """Datasette's metadata: the title, and where the plugin finds project databases."""
    port = config["nginx.port"]
    where = f"http://PROJECT.{config['domain']}" + ("" if port in (80, 443) else f":{port}")
    return json.dumps(
        {
            "title": "SmallTable",
            "description": f"POST anything to {where}/",
            "plugins": {
                "smalltable": {
                    "data_dir": str(config.path("data_dir")),
                    "domain": config["domain"],
                    "port": port,
                    "auto_create": config["projects.auto_create"],
                    "quota_warning": config["projects.quota_warning"],
                    "max_value_bytes": config["datasette.max_value_bytes"],
                    "memory_max_mb": config["datasette.memory_max_mb"],
                    "status_waiters": config["datasette.status_waiters"],
                    "open_databases": config["datasette.open_databases"],
                    "defaults": {
                        "type": config["projects.type"],
                        "retention_days": config["projects.retention_days"],
                        "quota_mb": config["projects.quota_mb"],
                    },
                }
            },
        },
        indent=2,
    )


def render(config: Config, conf_dir: Path) -> dict[str, str]:
    """``{file name: text}`` for every rendered file that will live in ``conf_dir``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    values = context(config, conf_dir)
    rendered = {
        name: env.get_template(template.relative_to(REPO).as_posix()).render(values)
        for name, template in TEMPLATES.items()
    }
    rendered["smalltable.js"] = (REPO / "nginx" / "smalltable.js").read_text()
    rendered["SmallTableKeys.pm"] = (REPO / "nginx" / "SmallTableKeys.pm").read_text()
    if config["front.hosts"]:
        rendered["front.conf"] = env.get_template("nginx/front.conf.j2").render(values)
        rendered["front.js"] = (REPO / "nginx" / "front.js").read_text()
    rendered["smalltable.yaml"] = effective_config(config)
    rendered["datasette.json"] = datasette_metadata(config)
    return rendered


def write(config: Config, conf_dir: Path) -> list[Path]:
    """Render into ``conf_dir`` and make the directories nginx writes to."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for key in ("log_dir", "run_dir", "ingest_log", "nginx_pid"):
        path = config.path(key)
        (path if key.endswith("_dir") else path.parent).mkdir(parents=True, exist_ok=True)
    if config["front.hosts"]:  # the front's maps of moves, and its logrotate state
        config.path("state_dir").mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(config, conf_dir).items():
        path = conf_dir / name
        path.write_text(text)
        written.append(path)
    return written
