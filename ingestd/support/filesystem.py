"""What is wrong with a directory, in words, when SQLite's own errors are too vague to say."""

from __future__ import annotations

import os
from pathlib import Path

NEARLY_FULL_BYTES = 1 << 20
"""Less free space than this counts as a full filesystem."""


def trouble(directory: Path) -> str:
    """`` (its filesystem is read-only)`` and the like, or ``""`` when nothing is seen to be wrong."""
    try:
        fs = os.statvfs(directory)
    except OSError as exc:
        return f" ({exc.strerror})"
    if fs.f_flag & os.ST_RDONLY:
        return " (its filesystem is read-only)"
    if fs.f_bavail * fs.f_frsize < NEARLY_FULL_BYTES:
        return f" (its filesystem is full: {fs.f_bavail * fs.f_frsize} bytes free)"
    if fs.f_files and not fs.f_favail:
        return " (its filesystem has no free inodes)"
    if not os.access(directory, os.W_OK):
        return " (not writable by this user)"
    return ""
