"""The deployment as the plugin sees it: its config keys, with defaults, and its public addresses.

``smalltable`` renders the plugin's config into Datasette's metadata::

    {"plugins": {"smalltable": {"data_dir": "…", "domain": "localhost", "port": 8080,
                                "auto_create": true, "quota_warning": 0.8,
                                "max_value_bytes": 4194304, "memory_max_mb": 1024,
                                "defaults": {"type": "any", "retention_days": 180, "quota_mb": 100}}}}

Pages link to projects by their public address (``http://demo.localhost:8080/``).
nginx passes the host the user typed, so that host is used when it is the apex
or one of its projects; a request that reached Datasette directly gets the
configured domain and port instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import SETTINGS, default_settings
from ..model.project import Settings, is_valid_project_name

if TYPE_CHECKING:
    from datasette.app import Datasette
    from datasette.utils.asgi import Request


@dataclass(frozen=True)
class Site:
    """The plugin's config keys with their defaults filled in."""

    data_dir: Path | None
    domain: str
    port: int
    auto_create: bool
    quota_warning: float
    defaults: Settings
    max_value_bytes: int
    memory_max_mb: int
    status_waiters: int
    open_databases: int


def site(datasette: Datasette) -> Site:
    """The plugin's config (``datasette.plugin_config("smalltable")``), defaults where absent."""
    config = datasette.plugin_config("smalltable") or {}
    defaults = config.get("defaults") or {}
    return Site(
        data_dir=Path(config["data_dir"]) if config.get("data_dir") else None,
        domain=config.get("domain") or _default("domain"),
        port=int(config.get("port") or _default("nginx.port")),
        auto_create=bool(config.get("auto_create", _default("projects.auto_create"))),
        quota_warning=float(config.get("quota_warning") or _default("projects.quota_warning")),
        defaults=default_settings(
            defaults.get("type"), defaults.get("retention_days"), defaults.get("quota_mb")
        ),
        max_value_bytes=int(config.get("max_value_bytes") or _default("datasette.max_value_bytes")),
        memory_max_mb=int(config.get("memory_max_mb") or _default("datasette.memory_max_mb")),
        status_waiters=int(config.get("status_waiters") or _default("datasette.status_waiters")),
        open_databases=int(config.get("open_databases") or _default("datasette.open_databases")),
    )


def _default(key: str) -> object:
    """A config key's documented default (:data:`ingestd.config.SETTINGS`), for a key the metadata lacks."""
    return SETTINGS[key].default


def scheme(request: Request) -> str:
    """``https`` when nginx says TLS ended there (``X-Forwarded-Proto``), else the request's own."""
    forwarded = request.headers.get("x-forwarded-proto")
    return forwarded if forwarded in ("http", "https") else request.scheme


def apex_address(config: Site, request: Request) -> str:
    """The apex's ``scheme://host[:port]`` as users reach it (``http://localhost:8080``)."""
    host = request.headers.get("host", "")
    name = host.rpartition(":")[0] if ":" in host else host
    label, _, rest = name.partition(".")
    if name == config.domain:
        return f"{scheme(request)}://{host}"
    if rest == config.domain and is_valid_project_name(label):
        return f"{scheme(request)}://{host[len(label) + 1 :]}"
    if config.port in (80, 443):
        return f"{'https' if config.port == 443 else scheme(request)}://{config.domain}"
    return f"{scheme(request)}://{config.domain}:{config.port}"


def project_address(config: Site, request: Request, project: str) -> str:
    """A project's public address, with a trailing slash (``http://demo.localhost:8080/``)."""
    protocol, _, host = apex_address(config, request).partition("://")
    return f"{protocol}://{project}.{host}/"
