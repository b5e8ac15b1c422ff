"""Keys as the log says they were: who may change a project, and the key a claim made.

nginx decided every key before it logged the line (``nginx/smalltable.js``); the
line carries the key it let through (``scope:key_id``) and the hash of any key it
made for the answer, never a key. So ingestd, and a replay, decide from the line
alone, in log order, with no secret: a key revoked later does not undo what it
was allowed to do when it was written.

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson

from ..model.request import Request
from ..store.keys import OWNER, SCOPES, Key, key_id, same_secret

_HASH = re.compile(r"[0-9a-f]{64}")


def refusal(project: str, request: Request, owner: Key | None) -> str | None:
    """Why ``request`` may not change ``project``'s settings; None when it may.

    Once a project has an owner key, only a write nginx let through with that key
    may change it (or one sent with it before nginx knew it: the line has its hash),
    or the claim that made the key (read again after a crash or in a replay). Two
    claims at once both reach the log; the first owns the project.
    """
    if owner is None or request.key.startswith(OWNER + ":"):
        return None
    if request.mint and same_secret(request.mint, owner.hash):
        return None
    if request.presented and same_secret(request.presented, owner.hash):
        return None  # sent before nginx knew the owner key: compared here
    return (
        f"project {project!r} is claimed: its owner key ({owner.key_id}) must be sent "
        f"(Authorization: Bearer <owner key>) to PROJECT.DOMAIN/_project to change it; "
        "if two claims were sent at once, the other one was first and owns it, and this "
        "answer's key is not in force"
    )


def claim_key(request: Request) -> Key | None:
    """The owner key a successful claim made (nginx logged its hash), or None."""
    if not _HASH.fullmatch(request.mint):
        return None
    return Key(key_id(request.mint), request.mint, OWNER, request.request_id, request.received)


KEYS_PATH = "/_project/keys"
MAX_LABEL = 100


class KeyChangeError(ValueError):
    """A key change that cannot be applied; the message says why."""


def is_keys_write(method: str, uri: str) -> bool:
    """True for a write to ``/_project/keys`` or under it: a key change, never a record."""
    if not uri.startswith(KEYS_PATH):
        return False
    path = uri.partition("?")[0]
    return path == KEYS_PATH or path.startswith(KEYS_PATH + "/")


def new_key(request: Request) -> Key:
    """The key ``POST /_project/keys`` made: its hash from the line, the rest from the body."""
    _owner_only(request)
    if not _HASH.fullmatch(request.mint):
        raise KeyChangeError("nginx made no key for this write")
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise KeyChangeError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise KeyChangeError('the body must be a JSON object such as {"scope": "write"}')
    unknown = sorted(set(body) - {"scope", "label", "expires"})
    scope = body.get("scope")
    problems = [f"unknown field {name!r}" for name in unknown]
    if scope not in SCOPES:
        problems.append(f"'scope': expected one of {', '.join(SCOPES)}, got {scope!r}")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL or not label.isprintable():
        problems.append(f"'label': expected at most {MAX_LABEL} printable characters")
    try:
        expires = _expiry(body.get("expires"), request.received)
    except KeyChangeError as exc:
        problems.append(f"'expires': {exc}")
    if problems:
        raise KeyChangeError("; ".join(problems))
    return Key(
        key_id(request.mint), request.mint, str(scope), request.request_id, request.received, label, expires
    )


def revoked_key_id(request: Request) -> str:
    """The key id ``DELETE /_project/keys/KEY_ID`` names."""
    _owner_only(request)
    return request.path[len(KEYS_PATH) + 1 :]


def _owner_only(request: Request) -> None:
    if not request.key.startswith(OWNER + ":"):
        raise KeyChangeError("managing keys needs the owner key (Authorization: Bearer <owner key>)")


def _expiry(value: object, now: float) -> float | None:
    """``expires``: an ISO 8601 time (``2027-01-31T00:00:00Z``) or Unix seconds, in the future."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise KeyChangeError(
                f"expected an ISO 8601 time such as 2027-01-31T00:00:00Z, got {value!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = moment.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KeyChangeError("expected an ISO 8601 time or Unix seconds")
    if value <= now:
        raise KeyChangeError("the time is already past")
    return float(value)


RESET_PATH = KEYS_PATH + "/reset"
OPERATOR = "operator:cli"
"""The ``key`` of a line ``smalltable keys reset`` wrote: nginx never logs this scope."""


def reset_key(request: Request) -> Key:
    """The new owner key of ``smalltable keys reset`` (the operator's line in the log)."""
    if request.key != OPERATOR:
        raise KeyChangeError("the owner key is reset by the operator on the host (smalltable keys reset)")
    if not _HASH.fullmatch(request.mint):
        raise KeyChangeError("the reset line carries no key hash")
    return Key(key_id(request.mint), request.mint, OWNER, request.request_id, request.received)


def operator_reset_line(project: str, key_hash: str, now: float, random_hex: str) -> bytes:
    """The ingest-log line (with its newline) that gives ``project`` a new owner key.

    The operator's command appends it to the live log, so that the change is in the
    log like every other (replay applies it, from the hash alone), in order.
    """
    millis = int(now * 1000)
    fields = {
        "v": 1,
        "t": millis / 1000,
        "rt": 0,
        "id": f"{millis:013d}{random_hex[:19]}",
        "project": project,
        "method": "POST",
        "uri": RESET_PATH,
        "ctype": "",
        "clen": "",
        "addr": "127.0.0.1",
        "ua": "smalltable keys reset",
        "status": "202",
        "key": OPERATOR,
        "mint": key_hash,
        "keyhash": "",
        "body": "",
    }
    return orjson.dumps(fields) + b"\n"
