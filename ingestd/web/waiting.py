"""Waiting for a write's decision, bounded: ``?wait=SECONDS`` on a status URL, ``?after=ID`` on a read.

nginx answers a write before ingestd applies it, so a client that wants the
decision in one more request asks a view to wait. The view looks again at short,
growing intervals (10 ms up to 200 ms: a decision is usually there within a few
tens of milliseconds) until it is decided or the time is up; a view that knows
which database files hold the answer checks them every 5 ms (a ``stat``) and looks
as soon as a commit changed them. Waiting holds no
thread (each look is a short read in Datasette's pool) and is bounded twice: at
most :data:`MAX_WAIT_SECONDS` per request, and at most ``datasette.status_waiters``
requests waiting at once; one more is answered ``429`` at once with JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from .views import Problem

MAX_WAIT_SECONDS = 30.0
"""The longest a request may wait (the API's promise: ``wait`` is at most 30)."""
AFTER_SECONDS = 10.0
"""How long a read with ``?after=ID`` waits for that write when it gives no ``wait``."""
FIRST_LOOK_SECONDS = 0.01
LONGEST_LOOK_SECONDS = 0.2
STAT_SECONDS = 0.005
"""How often a waiter that knows the files it reads checks whether they changed."""
T = TypeVar("T")
_waiting = 0


def parse_wait(raw: str | None) -> float | None:
    """The seconds ``?wait=`` asks for, None without it; a Problem (400) for a bad value."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_SECONDS:  # NaN fails too
        raise Problem(
            400,
            f"bad wait {raw[:40]!r}: a number of seconds from 0 to {MAX_WAIT_SECONDS:g}",
            expected="?wait=SECONDS, at most 30",
        )
    return seconds


async def wait_until(
    look: Callable[[], T],
    done: Callable[[T], bool],
    seconds: float,
    limit: int,
    signature: Callable[[], object] | None = None,
) -> T:
    """``look()`` (blocking, run in a thread) again until ``done`` says yes or ``seconds`` pass;
    the last thing it saw. A Problem (429) when ``limit`` requests wait already.

    With ``signature`` (the files ``look`` reads, :func:`.dbfiles.file_signature`: a
    ``stat`` or two), the files are checked every :data:`STAT_SECONDS` and looked in
    again as soon as they change (a commit), and at least every LONGEST_LOOK_SECONDS."""
    global _waiting
    seen = await asyncio.to_thread(look)
    if done(seen) or seconds <= 0:
        return seen
    if _waiting >= limit:
        raise Problem(
            429,
            "too many requests waiting for decisions",
            limit=limit,
            fix="retry without ?wait= (the status URL answers at once), or in a moment",
        )
    _waiting += 1
    try:
        deadline = time.monotonic() + seconds
        pause = FIRST_LOOK_SECONDS
        files = signature() if signature else None
        looked = time.monotonic()
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(STAT_SECONDS if signature else pause, left))
            pause = min(pause * 2, LONGEST_LOOK_SECONDS)
            if signature:
                now = signature()
                if now == files and time.monotonic() - looked < LONGEST_LOOK_SECONDS:
                    continue
                files = now
            seen = await asyncio.to_thread(look)
            looked = time.monotonic()
        return seen
    finally:
        _waiting -= 1
