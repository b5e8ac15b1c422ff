"""Failpoints: moments at which tests make the daemon die with SIGKILL.

Set ``SMALLTABLE_FAILPOINTS`` to a comma-separated list of ``NAME`` or
``NAME@N`` (die the N-th time NAME is reached, default the first), e.g.::

    SMALLTABLE_FAILPOINTS=checkpoint.after_temp_write@3 smalltable ingest --config c.yaml

The points are the moments where a crash is hardest to recover from: between a
commit and its checkpoint, inside a checkpoint write (:data:`LOAD_POINTS`, which
every load reaches; tests/test_faults.py kills the real daemon at each one), between
loading held posts into their project and forgetting them in the holding area, and
between two chunks of a retention pass (tests/test_crash.py). The tests check that
nothing is lost or loaded twice, and that what was deleted stays deleted.
Unset (always, in production), :func:`hit` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

LOAD_POINTS = frozenset(
    {
        "store.before_commit",
        "load.after_first_project",
        "load.before_checkpoint",
        "checkpoint.after_temp_write",
        "checkpoint.after_rename",
    }
)
"""Reached by every load of a batch."""

POINTS = LOAD_POINTS | {
    "holding.after_load",  # held posts committed into their project, still in the holding area
    "retention.after_chunk",  # one chunk of a retention pass deleted and committed, more to go
    "blobs.after_copy",  # an upload's first copy in its store, no row yet, the spool file still there
    "blobs.after_row",  # its row committed, the spool file not yet removed
}


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("@")
        if name not in POINTS:
            raise ValueError(f"SMALLTABLE_FAILPOINTS: unknown failpoint {name!r}; known: {sorted(POINTS)}")
        armed[name] = int(count or 1)
    return armed


_armed = _parse(os.environ.get("SMALLTABLE_FAILPOINTS", ""))
_reached: dict[str, int] = {}


def hit(name: str) -> None:
    """Die here with SIGKILL if the failpoint ``name`` is armed and its count is reached."""
    if name in _armed:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] >= _armed[name]:
            os.kill(os.getpid(), signal.SIGKILL)
