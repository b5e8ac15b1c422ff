"""A project: its name rule, its settings, and how full it is.

The settings are changed by writes (``POST /_project``) that travel through the
ingest log (:mod:`ingestd.ingest.settings_write` checks and applies them) and are
kept as rows of the project's ``settings`` table (:mod:`ingestd.store.database`).
The bounds here are the one source for the config's checks and the settings'.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields

PROJECT_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
PROJECT_NAME_RULE = "1 to 63 lowercase letters, digits or dashes, not starting or ending with a dash"
RESERVED_NAMES = frozenset(
    {
        # the service's own hosts, and names users take for official ones
        "www", "api", "admin", "apex", "static", "internal", "assets", "cdn", "status",
        "metrics", "login", "auth", "account", "smalltable", "datasette", "localhost",
        # names mail, DNS and auto-configuration clients look up by themselves
        "mail", "webmail", "smtp", "imap", "pop", "mx", "ns", "ns1", "ns2", "dns", "ftp",
        "autoconfig", "autodiscover", "wpad", "isatap",
    }
)  # fmt: skip
"""Names that follow the rule but can never be projects: nginx refuses their hosts (its
rendered config lists them) and ingestd refuses to create them from the apex."""
SETTINGS_PATH = "/_project"
"""Where settings are written (and read back with GET), on the project's host or the apex."""
UNCLAIMED = "unclaimed"
"""The owner of a project created by its first post, until someone claims it."""
TYPES = ("json", "text", "any")
WRITE_POLICIES = ("open", "key")
"""``open``: anyone may post; ``key``: posts, puts and deletes need a write key (docs/keys.md)."""
READ_POLICIES = ("public", "private")
"""``public``: anyone may read; ``private``: every read needs a read key."""
MAX_OWNER = 200
MAX_DESCRIPTION = 2000
MAX_RETENTION_DAYS = 36500
MAX_QUOTA_MB = 1_000_000


def is_valid_project_name(name: str) -> bool:
    """True when ``name`` is a project name: a DNS label in lowercase.

    This is the same rule nginx applies to the host name, checked again here
    because a project name becomes a file name (``data/NAME.db``).
    """
    return PROJECT_NAME_RE.fullmatch(name) is not None


def is_reserved_project_name(name: str) -> bool:
    """True for a name that follows the rule but is kept from users (:data:`RESERVED_NAMES`)."""
    return name in RESERVED_NAMES


def is_settings_write(method: str, uri: str) -> bool:
    """True for the write that changes a project's settings; ``uri`` may hold a query.

    Asked of every post, so any other URI is told apart by its start alone.
    """
    if not uri.startswith(SETTINGS_PATH):
        return False
    return method in ("POST", "PUT") and uri.partition("?")[0] == SETTINGS_PATH


@dataclass(frozen=True)
class Settings:
    """A project's settings. ``schema`` is a JSON Schema (draft 2020-12) or None."""

    owner: str
    description: str
    type: str
    schema: object
    retention_days: int
    quota_mb: float
    write: str = "open"
    read: str = "public"
    store_client: bool = False
    """Store each post's client address and user agent (public to anyone who reads the
    project): off unless the owner turns it on."""

    @property
    def claimed(self) -> bool:
        return self.owner != UNCLAIMED

    @functools.cached_property
    def quota_bytes(self) -> int:
        """The quota in bytes; at least one, however small ``quota_mb`` is (asked of every post)."""
        return max(1, int(self.quota_mb * 1048576))

    def used(self, database_bytes: int) -> float:
        """A database of this size as a share of the quota: 1.0 is full, and over it posts wait."""
        return database_bytes / self.quota_bytes

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


KEYS = tuple(f.name for f in fields(Settings))


def quota_level(used: float, warning: float) -> str:
    """How full a project is: ``over`` at 100 % of its quota and beyond (posts wait),
    ``warning`` from the ``warning`` share on, else ``ok``."""
    if used >= 1:
        return "over"
    return "warning" if used >= warning else "ok"
