"""Where each request goes: its project's records or rejects, its settings, or the holding area.

The daemon and ``smalltable replay`` hand a batch of parsed requests, in log
order, to :meth:`Registry.load`. Per project, in that order:

- ``POST /_project`` changes the project's settings (creating or claiming it),
  or is refused with a reason; the requests after it follow the new settings;
- a post to a project that does not exist is loaded (creating the project,
  unclaimed) when ``projects.auto_create`` is on, else it waits in the holding
  area until the project is created;
- a post to a project over its quota, or with older posts still waiting, waits
  too (first in, first out), until the quota is raised or retention frees room;
- any other post becomes a record, checked against the project's type and
  schema, or a reject that says why; a key-value write is decided (ingest/kv.py).

A project's state (exists, settings, posts waiting, size) is read afresh for each batch, so a
replay running beside the daemon never leaves it with stale settings. Every write is
idempotent by request id, so a batch that fails half way is simply loaded again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from ..config import Config, default_settings
from ..model.kv import KV_PREFIX, is_kv_path
from ..model.project import (
    SETTINGS_PATH,
    Settings,
    is_settings_write,
)
from ..model.record import Record, Reject
from ..model.request import Request
from ..store.database import WriteResult
from ..store.holding import Held, Holding
from ..store.keys import Key, KeyStore, record_change
from ..store.pending import add_pending, mark_applied, pending
from ..store.pool import Store
from ..store.schema import database_bytes, read_settings
from ..support import failpoints
from ..support.timefmt import iso_time
from . import grace, kv
from .blobs import BlobIntake, intake_for, is_upload
from .keychange import (
    KEYS_PATH,
    RESET_PATH,
    KeyChangeError,
    claim_key,
    is_keys_write,
    new_key,
    refusal,
    reset_key,
    revoked_key_id,
)
from .records import build
from .routing import given_name, named_project
from .settings_write import SettingsError, apply_change, read_change
from .stream import STREAM_PREFIX, documents, is_stream_post, truncation, truncation_location
from .validate import Rules, check, rules_for


@dataclass
class Outcome:
    """What one batch did to one project."""

    write: WriteResult = field(default_factory=WriteResult)
    held: int = 0
    released: int = 0
    settings_changed: int = 0
    settings_refused: int = 0
    last_post: float | None = None
    database_bytes: int = 0
    settings: Settings | None = None
    """The project's size and settings after the batch (None: the project does not exist)."""


@dataclass
class _State:
    """A project as this batch finds it."""

    exists: bool
    settings: Settings
    rules: Rules
    held: bool
    """Posts wait for the project in the holding area."""
    due: float | None = None
    """When the first destructive settings change waiting for its grace period is due."""
    size: int = 0
    """Its database and WAL on disk, in bytes."""

    @property
    def over_quota(self) -> bool:
        """``settings.used(size) >= 1``, asked of every post: so without the division."""
        return self.exists and self.size >= self.settings.quota_bytes


class Registry:
    """Loads batches of requests into projects, following each project's settings."""

    def __init__(
        self,
        store: Store,
        holding: Holding,
        defaults: Settings,
        auto_create: bool,
        release_batch: int = 10000,
        keys: KeyStore | None = None,
        grace_seconds: float = 86400.0,
        blobs: BlobIntake | None = None,
    ) -> None:
        self.grace_seconds, self.blobs = grace_seconds, blobs  # blobs: ingest/blobs.py
        self.store, self.keys, self.holding = store, keys, holding
        self.defaults, self.auto_create, self.release_batch = defaults, auto_create, release_batch
        self._rules_cache: dict[tuple[str, str], Rules] = {}

    # -- a batch -----------------------------------------------------------

    def load(self, requests: list[Request]) -> dict[str, Outcome]:
        """Load one batch (in log order); what it did, by project."""
        by_project: dict[str, list[Request]] = {}
        unnamed: list[tuple[str, Reject]] = []
        for request in requests:
            project = request.project
            if not project:  # a settings write to the apex names its project in the body
                try:
                    project = named_project(request)
                except SettingsError as exc:
                    reason = f"settings not changed: {exc}"
                    reject = Reject(request, reason, request.stored_body, "invalid_settings")
                    unnamed.append((given_name(request), reject))
                    continue
            by_project.setdefault(project, []).append(request)
        for name, reject in unnamed:
            self.holding.reject(name, [reject])
        outcomes: dict[str, Outcome] = {}
        for number, (project, project_requests) in enumerate(by_project.items()):
            if number == 1:
                failpoints.hit("load.after_first_project")
            outcomes[project] = self._load_project(project, project_requests)
        if self.keys is not None:
            self.keys.save()  # before the checkpoint moves past the lines that changed keys
        return outcomes

    def _load_project(self, project: str, requests: list[Request]) -> Outcome:
        state = self.state(project)
        out = Outcome()
        records: list[Record] = []
        rejects: list[Reject] = []
        holds: list[Held] = []
        kv_writes: list[Request] = []

        def flush() -> None:
            if holds:
                out.held += self.holding.hold(holds)
                state.held = True
                holds.clear()
            if records or rejects:
                out.write.add(
                    self.store.write(
                        project, records, rejects, schema_keys(state.settings), state.settings.store_client
                    )
                )
                state.exists = True
                records.clear()
                rejects.clear()
                self._measure(project, state)
            if kv_writes:
                state.exists = state.exists or self.auto_create
                out.write.add(
                    kv.load(self.store, self.holding, project, kv_writes, state.exists, state.over_quota)
                )
                kv_writes.clear()
                self._measure(project, state)

        for request in requests:
            if state.due is not None and request.received >= state.due:
                flush()
                self._apply_due(project, state, request.received, out)
            if request.uri.startswith(_SPECIAL_PREFIXES) or request.blob:  # most posts are neither
                if is_settings_write(request.method, request.uri):
                    flush()
                    self._change_settings(project, request, state, out)
                    continue
                if is_keys_write(request.method, request.uri):
                    flush()
                    self._change_keys(project, request, state, out)
                    continue
                if is_upload(request) and self.blobs and (state.exists or self.auto_create):
                    rejects += self.blobs.take(self.store.project(project).conn, request, state.settings.read)
                    continue
                if is_kv_path(request.path):  # decided in log order, never held (ingest/kv.py)
                    kv_writes.append(request)
                    continue
                if (location := truncation_location(request)) is not None:
                    flush()
                    refused = truncation(self.store, request, location, state.exists)
                    if refused is not None and state.exists:
                        rejects.append(refused)
                    elif refused is not None:  # no such topic: a refusal creates no project
                        self.holding.reject(project, [refused])
                    continue
            if not state.exists and not self.auto_create:
                holds.append(Held(request, "no_project", _NO_PROJECT.format(project=project)))
                continue
            if state.held or holds or state.over_quota:
                if state.held and not holds and not state.over_quota:
                    flush()
                    self._release(project, state, out)
                if state.held or holds or state.over_quota:
                    holds.append(Held(request, "over_quota", _OVER_QUOTA.format(project=project)))
                    continue
            item = _classify(request, state.rules)
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                out.last_post = request.received
                records.extend(item)
        flush()
        if state.held and not state.over_quota:
            self._release(project, state, out)
        self._report(project, state, out)
        return out

    def _report(self, project: str, state: _State, out: Outcome) -> None:
        if state.exists:
            out.database_bytes = state.size
            out.settings = state.settings

    # -- settings ----------------------------------------------------------

    def _change_settings(self, project: str, request: Request, state: _State, out: Outcome) -> None:
        """Apply one settings write, or keep it as a reject saying why not."""
        owner = self.keys.owner(project) if self.keys is not None else None
        try:
            refused = refusal(project, request, owner)
            if refused:
                raise SettingsError(refused)
            change = read_change(request.body, request.content_type)
            named = change.get("name", project)
            if named != project:
                raise SettingsError(f"'name' is {named!r}, but this is the settings of {project!r}")
            now = change.pop("now", False)
            if not isinstance(now, bool):
                raise SettingsError(f"'now': expected true or false, got {now!r}")
            settings, changed = apply_change(state.settings, change)
            waiting: dict[str, object] = {}
            if state.settings.claimed and not now:
                settings, waiting = grace.split(state.settings, settings)
                changed = [key for key in changed if key not in waiting]
        except SettingsError as exc:
            reject = Reject(request, f"settings not changed: {exc}", request.stored_body, "invalid_settings")
            if state.exists:
                out.write.add(self.store.write(project, [], [reject]))
            else:  # a refused first call creates nothing
                self.holding.reject(project, [reject])
            out.settings_refused += 1
            return
        if waiting:
            due = request.received + self.grace_seconds
            add_pending(
                self.store.project(project).conn, request.request_id, iso_time(request.received), due, waiting
            )
            state.due = due if state.due is None else min(state.due, due)
            self._announce(project, self.store.project(project).conn)
        if self.store.change_settings(project, request, settings.as_dict(), changed):
            out.settings_changed += 1
        if self.keys is not None:
            self.keys.set_policy(project, settings.write, settings.read)
        if self.keys is not None and owner is None and not state.settings.claimed:
            key = claim_key(request)
            if key is not None:
                self.keys.add(project, key)
                self._record_key(project, request, "created", key)
        state.exists = True
        state.settings = settings
        state.rules = self._rules(settings)
        self._measure(project, state)
        if state.held and not state.over_quota:
            self._release(project, state, out)

    def _apply_due(self, project: str, state: _State, now: float, out: Outcome) -> None:
        """Apply the waiting destructive changes due by ``now`` (a line's time), oldest first."""
        conn = self.store.project(project).conn
        state.due = None
        for request_id, due, _, change in pending(conn):
            if due > now:
                state.due = due if state.due is None else min(state.due, due)
                continue
            settings, changed = apply_change(state.settings, change)
            applied = Request(
                f"{request_id}-due", project, due, "POST", "/_project", None, None, "", None, b""
            )
            if self.store.change_settings(project, applied, settings.as_dict(), changed):
                out.settings_changed += 1
            mark_applied(conn, request_id)
            state.settings = settings
            state.rules = self._rules(settings)
        self._announce(project, conn)

    def _announce(self, project: str, conn) -> None:
        """Tell nginx what waits, for the write answers' ``X-SmallTable-Pending`` header."""
        if self.keys is not None:
            waits = [grace.announcement(change, due_at) for _, _, due_at, change in pending(conn)]
            self.keys.set_pending(project, "; ".join(waits))

    # -- keys --------------------------------------------------------------

    def _change_keys(self, project: str, request: Request, state: _State, out: Outcome) -> None:
        """Apply ``POST /_project/keys`` or ``DELETE /_project/keys/KEY_ID``, or reject it."""
        try:
            if self.keys is None or not state.exists:
                raise KeyChangeError(f"project {project!r} does not exist")
            if request.method == "POST" and request.path == RESET_PATH:
                key = reset_key(request)
                self.keys.add(project, key)  # the old owner key goes
                self._record_key(project, request, "reset", key)
                return
            if request.method == "POST" and request.path == KEYS_PATH:
                key = new_key(request)
                self.keys.add(project, key)
                self._record_key(project, request, "created", key)
                return
            if request.method != "DELETE":
                raise KeyChangeError(f"no such key operation: {request.method} {request.path}")
            kid = revoked_key_id(request)
            live = {k.key_id: k for k in self.keys.listed(project)}
            if self._record_done(project, request):
                self.keys.revoke(project, kid)  # applied before a crash: read again
                return
            if kid not in live:
                raise KeyChangeError(f"project {project!r} has no live key {kid!r}")
            if live[kid].scope == "owner":
                raise KeyChangeError("the owner key is replaced by the operator (smalltable keys reset)")
            self.keys.revoke(project, kid)
            self._record_key(project, request, "revoked", live[kid])
        except KeyChangeError as exc:
            reject = Reject(request, f"keys not changed: {exc}", request.stored_body, "invalid_settings")
            if state.exists:
                out.write.add(self.store.write(project, [], [reject]))
            else:
                self.holding.reject(project, [reject])
            out.settings_refused += 1

    def _record_key(self, project: str, request: Request, action: str, key: Key) -> None:
        conn = self.store.project(project).conn
        record_change(conn, request.request_id, iso_time(request.received), action, key)

    def _record_done(self, project: str, request: Request) -> bool:
        """True when this key change is in the project's history already."""
        conn = self.store.project(project).conn
        try:
            row = conn.execute("SELECT 1 FROM key_changes WHERE _request_id = ?", [request.request_id])
            return row.fetchone() is not None
        except sqlite3.OperationalError:
            return False  # no key change yet: no table

    # -- state -------------------------------------------------------------

    def state(self, project: str) -> _State:
        """The project as it is now: read from its database and the holding area."""
        exists = self.store.exists(project)
        settings = (read_settings(self.store.project(project).conn) if exists else None) or self.defaults
        state = _State(exists, settings, self._rules(settings), self.holding.has_waiting(project))
        if exists:
            waits = [due for _, due, _, _ in pending(self.store.project(project).conn)]
            state.due = min(waits, default=None)
        self._measure(project, state)
        return state

    def _rules(self, settings: Settings) -> Rules:
        """The rules for these settings, each distinct schema compiled once."""
        if settings.schema is None:
            return Rules(settings.type, None)
        key = (settings.type, repr(settings.schema))
        rules = self._rules_cache.get(key)
        if rules is None:
            if len(self._rules_cache) >= 1000:
                self._rules_cache.clear()
            rules = self._rules_cache[key] = rules_for(settings)
        return rules

    def _measure(self, project: str, state: _State) -> None:
        """The project's size now (its database and WAL on disk), after a write."""
        if state.exists:
            state.size = database_bytes(self.store.path(project))

    # -- the holding area --------------------------------------------------

    def release(self, project: str) -> Outcome:
        """Load what waits for ``project`` if it can take it now (after retention, say)."""
        out = Outcome()
        state = self.state(project)
        if state.held and not state.over_quota:
            self._release(project, state, out)
        return out

    def _release(self, project: str, state: _State, out: Outcome) -> None:
        """Load the project's waiting posts, oldest first, while it exists and has room."""
        while state.held and not state.over_quota and (state.exists or self.auto_create):
            waiting = self.holding.oldest(project, self.release_batch)
            if not waiting:
                state.held = False
                return
            records: list[Record] = []
            rejects: list[Reject] = []
            for _, request in waiting:
                item = _classify(request, state.rules)
                if isinstance(item, Reject):
                    rejects.append(item)
                else:
                    records.extend(item)
            out.write.add(
                self.store.write(
                    project, records, rejects, schema_keys(state.settings), state.settings.store_client
                )
            )
            state.exists = True
            failpoints.hit("holding.after_load")
            self.holding.release([row_id for row_id, _ in waiting])
            out.released += len(waiting)
            state.held = len(waiting) == self.release_batch
            self._measure(project, state)


def for_config(config: Config, store: Store, holding: Holding, keys: KeyStore | None = None) -> Registry:
    """The registry a deployment's config describes (its ``projects.*`` defaults)."""
    defaults = default_settings(
        config["projects.type"], config["projects.retention_days"], config["projects.quota_mb"]
    )
    return Registry(
        store,
        holding,
        defaults,
        config["projects.auto_create"],
        config["ingest.batch_lines"],
        keys,
        config["projects.grace_hours"] * 3600,
        intake_for(config),
    )


_SPECIAL_PREFIXES = (SETTINGS_PATH, KV_PREFIX.rstrip("/"), STREAM_PREFIX)
"""Where the path of every request that is more than a post starts: settings and keys
(``/_project…``), key-value writes (``/_kv…``), stream truncations (``/stream/…``).
A blob upload is told by its hash instead. :meth:`Registry._load_project` asks the
special cases only of the requests whose URI starts so (tests/test_registry.py)."""

_NO_PROJECT = (
    "project {project} does not exist and projects are not created by a post here: it is loaded "
    "as soon as someone creates the project (POST /_project with an owner)"
)
_OVER_QUOTA = (
    "project {project} is over its quota: this post waits and is loaded once the quota is raised "
    "(POST /_project with a larger quota_mb) or retention frees room"
)


def _classify(request: Request, rules: Rules) -> list[Record] | Reject:
    """A post as the records that follow the project's rules (a stream post may make many),
    or a reject saying why."""
    if is_stream_post(request):
        return documents(request, rules)
    item = build(request)
    if isinstance(item, Record) and not rules.trivial:
        item = check(item, rules)
    return item if isinstance(item, Reject) else [item]


def schema_keys(settings: Settings) -> frozenset[str] | None:
    """The keys the owner's JSON Schema names (``properties``): the only keys that become
    columns, so a post cannot squat the owner's fields; None without such a schema."""
    schema = settings.schema
    if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
        return frozenset(schema["properties"])
    return None
