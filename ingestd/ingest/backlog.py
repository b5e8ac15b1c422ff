"""A backlog read again for one pass: the lines of a :class:`Share`, up to where the backlog ends.

The daemon loads a backlog over more projects than it keeps open in passes, as replay
loads a log (``ingestd.daemon.Daemon.catch_up``): each pass has a tailer of its own,
started at the checkpoint, and takes from it the lines its share keeps, in log order,
until every file reaches the position the backlog ends at. Lines written after that
(the live log goes on growing) are left to the daemon's own tailer.
"""

from __future__ import annotations

from collections.abc import Iterator

from .checkpoint import FilePosition
from .shares import Share
from .tail import Line, Tailer


def batches(
    reader: Tailer, share: Share, end: list[FilePosition], most_lines: int, most_bytes: int
) -> Iterator[list[Line]]:
    """The lines ``share`` keeps from ``reader`` up to ``end``, in batches of at most
    ``most_lines`` lines and about ``most_bytes`` bytes (the line that crosses it
    included): a pass holds one batch, however long the backlog."""
    ends = {position.fingerprint: position.offset for position in end}
    batch: list[Line] = []
    held = 0
    while not _reached(reader, ends):
        lines = reader.read(most_lines, most_bytes)
        if not lines:
            break
        for line in lines:
            if line.start < ends.get(line.fingerprint, 0) and share.keeps(line.data):
                batch.append(line)
                held += len(line.data)
                if len(batch) >= most_lines or held >= most_bytes:
                    yield batch
                    batch, held = [], 0
    if batch:
        yield batch


def _reached(reader: Tailer, ends: dict[str, int]) -> bool:
    """True once every file of the backlog has been read to where the backlog ends."""
    return all(
        f.offset >= ends[fingerprint] for fingerprint, f in reader.files.items() if fingerprint in ends
    )
