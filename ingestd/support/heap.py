"""Giving the C heap's free memory back to the system after work that opened many databases.

Each SQLite connection allocates its page cache and compiled statements with malloc; once
closed, glibc keeps most of those pages in its heap for the next allocation rather than
returning them. The daemon's retention pass opens every project database once an hour
(10,000 idle projects: 10,000 openings), so without a trim that pass leaves several MiB
resident for good (bench/idle_projects.py). ``malloc_trim(0)`` returns what is free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


def trim() -> bool:
    """Return the heap's free memory to the system; True if anything was returned."""
    malloc_trim = _malloc_trim()
    return bool(malloc_trim(0)) if malloc_trim is not None else False
