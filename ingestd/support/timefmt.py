"""Times as SmallTable writes them: ISO 8601 in UTC, to the millisecond, sortable as text."""

from __future__ import annotations

import functools
import time


def iso_time(unix: float) -> str:
    """Unix time → ``2026-11-21T08:39:28.589Z`` (UTC, milliseconds), sortable as text."""
    seconds, millis = divmod(round(unix * 1000), 1000)
    return _iso_second(seconds) + _MILLIS[millis]


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    """The date and time of a second (a batch's records share a few: formatted once each)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
