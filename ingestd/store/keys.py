"""Key hashes, and the two maps nginx decides keys with (``keys.map``, ``policy.map``).

nginx checks every key itself (``nginx/smalltable.js``), so writes are refused or
accepted while ingestd is down. It learns the keys from files ingestd writes in
the state directory, which no Datasette opens: ``keys.json`` (every project's
keys: SHA-256 hash, scope, id, label, expiry; never a key itself), and from it
``keys.map`` (hash → ``"project scope key_id expires"``) and ``policy.map``
(project → ``o`` owned, ``w`` writes need a key, ``r`` reads need one). ingestd
changes them as it applies the log, in log order, and reloads nginx as it does
for the quota map. A key's id is the first 12 hex digits of its hash: short,
not secret, the same in nginx and here.
"""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from ..support.durable import write_all_and_sync
from ..support.timefmt import iso_time
from .quota import signal_nginx

OWNER = "owner"
SCOPES = ("read", "write", "read+write")
KEY_ID_LENGTH = 12


@dataclass(frozen=True)
class Key:
    """One key of a project, as stored: its hash, never the key."""

    key_id: str
    hash: str
    scope: str
    request_id: str
    """The write that made it (a claim, ``POST /_project/keys``, or ``keys reset``)."""
    created: float
    label: str = ""
    expires: float | None = None


def key_id(key_hash: str) -> str:
    """A key's public id, from its hash."""
    return key_hash[:KEY_ID_LENGTH]


def same_secret(a: str, b: str) -> bool:
    """Compare two secrets (or their hashes) in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


class KeyStore:
    """Every project's live keys, kept in ``STATE_DIR/keys.json`` and the maps nginx reads."""

    def __init__(self, state_dir: Path | None, nginx_pid: Path | None) -> None:
        """Keys kept under ``state_dir``, or (None: a replay's) in memory only."""
        self.state_dir = state_dir
        self.nginx_pid = nginx_pid
        self.keys: dict[str, dict[str, Key]] = {}
        self.policies: dict[str, str] = {}
        self.pending: dict[str, str] = {}
        """What waits for its grace period, per project, as the answers' header says it."""
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if self.state_dir is None or not (self.state_dir / "keys.json").exists():
            return
        saved = json.loads((self.state_dir / "keys.json").read_text())
        for project, keys in saved.get("keys", {}).items():
            self.keys[project] = {k["key_id"]: Key(**k) for k in keys}
        self.policies = dict(saved.get("policies", {}))
        self.pending = dict(saved.get("pending", {}))

    def owner(self, project: str) -> Key | None:
        """The project's owner key, or None when it has none (unclaimed, or from before keys)."""
        return next((k for k in self.keys.get(project, {}).values() if k.scope == OWNER), None)

    def listed(self, project: str) -> list[Key]:
        """The project's live keys, oldest first."""
        return sorted(self.keys.get(project, {}).values(), key=lambda k: (k.created, k.key_id))

    def add(self, project: str, key: Key) -> None:
        """Add a key (a new owner key replaces the old one)."""
        keys = self.keys.setdefault(project, {})
        if key.scope == OWNER:
            for old in [k for k in keys.values() if k.scope == OWNER and k.key_id != key.key_id]:
                del keys[old.key_id]
        if keys.get(key.key_id) != key:
            keys[key.key_id] = key
            self._dirty = True

    def revoke(self, project: str, kid: str) -> bool:
        """Revoke a key by its id; False when the project has no such live key."""
        if self.keys.get(project, {}).pop(kid, None) is None:
            return False
        self._dirty = True
        return True

    def set_policy(self, project: str, write: str, read: str) -> None:
        """The project's write (``open``/``key``) and read (``public``/``private``) policies."""
        letters = ("w" if write == "key" else "") + ("r" if read == "private" else "")
        if self.policies.get(project, "") != letters:
            if letters:
                self.policies[project] = letters
            else:
                self.policies.pop(project, None)
            self._dirty = True

    def set_pending(self, project: str, announcement: str) -> None:
        """What ``project`` has waiting (ingest/grace.py), for ``X-SmallTable-Pending``; "" for nothing."""
        if self.pending.get(project, "") != announcement:
            if announcement:
                self.pending[project] = announcement
            else:
                self.pending.pop(project, None)
            self._dirty = True

    def save(self) -> bool:
        """Write keys.json (durably: keys come from the log once) and the maps; reload nginx.

        Called once a batch is applied; does nothing when nothing changed. True when written.
        """
        if self.state_dir is None or self.nginx_pid is None:
            self._dirty = False
            return False
        if not self._dirty and (self.state_dir / "keys.map").exists():
            return False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = {
            "keys": {p: [asdict(k) for k in self.listed(p)] for p in sorted(self.keys) if self.keys[p]},
            "policies": self.policies,
            "pending": self.pending,
        }
        tmp = self.state_dir / "keys.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all_and_sync(fd, json.dumps(saved, indent=1).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.state_dir / "keys.json")
        self._write_map("keys.map", self._keys_map())
        self._write_map("policy.map", self._policy_map())
        self._write_map("pending.map", [f'{p} "{text}";' for p, text in sorted(self.pending.items())])
        changed, self._dirty = self._dirty, False
        if changed:
            signal_nginx(self.nginx_pid)
        return True

    def _keys_map(self) -> list[str]:
        return [
            f'{k.hash} "{project} {k.scope} {k.key_id} {0 if k.expires is None else int(k.expires)}";'
            for project in sorted(self.keys)
            for k in self.listed(project)
        ]

    def _policy_map(self) -> list[str]:
        projects = sorted(set(self.policies) | {p for p in self.keys if self.owner(p)})
        return [f'{p} "{("o" if self.owner(p) else "") + self.policies.get(p, "")}";' for p in projects]

    def _write_map(self, name: str, lines: list[str]) -> None:
        """One map file for nginx, whole or not at all (derived from keys.json: no fsync)."""
        assert self.state_dir is not None
        path = self.state_dir / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_text(
            "# Written by ingestd (ingestd/store/keys.py) from keys.json.\n"
            + "".join(line + "\n" for line in lines)
        )
        os.replace(tmp, path)


KEY_CHANGES_TABLE = """CREATE TABLE IF NOT EXISTS key_changes (
    _id INTEGER PRIMARY KEY,
    _request_id TEXT NOT NULL UNIQUE,
    _received TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id TEXT NOT NULL,
    scope TEXT,
    label TEXT,
    expires TEXT
)"""
"""A project's key history, in its database: ids, scopes, labels, expiry (never a hash).

It is what ``GET /_project/keys`` lists and what a key change's status URL finds."""


def record_change(conn: sqlite3.Connection, request_id: str, received: str, action: str, key: Key) -> bool:
    """Keep one key change (``created``/``revoked``), idempotent by request id; True when new."""
    expires = None if key.expires is None else iso_time(key.expires)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(KEY_CHANGES_TABLE)
        before = conn.total_changes
        conn.execute(
            "INSERT INTO key_changes (_request_id, _received, action, key_id, scope, label, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (_request_id) DO NOTHING",
            (request_id, received, action, key.key_id, key.scope, key.label, expires),
        )
        return conn.total_changes > before
