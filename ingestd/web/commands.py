"""The curl lines the pages show: each one runs as printed and does what its text says.

Users of SmallTable live in a terminal and a browser, so every "how do I…" on a
page is answered with the exact command, for this project's address.
"""

from __future__ import annotations

import json
import math
import shlex

from ..model.project import SETTINGS_PATH, Settings

EXAMPLE_OWNER = "you@example.com"


def _json_arg(value: dict) -> str:
    return shlex.quote(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def post_command(project_url: str) -> str:
    """A post of one JSON record (the first post to a new name creates it, with auto-create on)."""
    return f"curl -d '{{\"hello\": \"world\"}}' -H 'Content-Type: application/json' {project_url}"


OWNER_KEY_HEADER = '-H "Authorization: Bearer $OWNER_KEY" '
"""A claimed project's settings change needs its owner key (docs/keys.md), from the shell."""


def settings_command(project_url: str, change: dict, owner_key: bool = False) -> str:
    """A settings change: ``curl -d '{"quota_mb":200}' http://demo.localhost:8080/_project``;
    with ``owner_key``, sent with the owner key (``$OWNER_KEY``)."""
    header = OWNER_KEY_HEADER if owner_key else ""
    return f"curl {header}-d {_json_arg(change)} {project_url.rstrip('/')}{SETTINGS_PATH}"


def create_command(project_url: str, defaults: Settings | None = None) -> str:
    """Create (or claim) a project with an owner; with ``defaults``, every setting spelled out."""
    change: dict[str, object] = {"owner": EXAMPLE_OWNER, "description": "what it is for"}
    if defaults is not None:
        change |= {
            "type": defaults.type,
            "retention_days": defaults.retention_days,
            "quota_mb": defaults.quota_mb,
        }
    return settings_command(project_url, change)


def raise_quota_command(project_url: str, settings: Settings, database_bytes: int) -> str:
    """A quota (whole MiB) twice the current one, and at least twice what the project uses now;
    sent with the owner key once the project is claimed."""
    room = max(settings.quota_mb, database_bytes / 1048576) * 2
    return settings_command(project_url, {"quota_mb": math.ceil(room)}, owner_key=settings.claimed)
