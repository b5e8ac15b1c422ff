"""Writing bytes so that they survive a crash or a power loss."""

from __future__ import annotations

import os


def write_all_and_sync(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and fsync it.

    ``os.write`` may write less than asked (the disk filling up, a signal): the
    rest is written until nothing is left, or the error raised.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)
