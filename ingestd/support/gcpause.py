"""Python's cycle collector, paused while a batch loads and run between batches.

A batch makes a few container objects per line (the parsed line, the body's JSON,
the record) and keeps them all until it is written. The collector wakes every 700
such allocations and walks the young objects still alive, so during a batch it
walks the batch again and again, promoting it on the way. None of it needs the
collector: reference counting frees a batch when its write is done. So loading
pauses the collector, and it runs once the batch is gone, with little left to walk
(``bench/RESULTS.md`` has the figures).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Run the block without the cycle collector; then collect the young generations.

    Nested or threaded use is safe: the collector is turned back on only if it was on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect(1)
