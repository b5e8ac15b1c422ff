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

from ..model.request import Request
from ..store.keys import OWNER, Key, key_id, same_secret

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
