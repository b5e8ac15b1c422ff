"""The archive's chain in S3: segment keys, their manifests, the head, and walking it.

Under the archive's prefix, each rotated log file is one *segment*,
``log/TIME-SEQ.log`` (``.log.gz`` when it was archived compressed), where TIME
(UTC, to the microsecond) is when the file was last written and SEQ counts
segments from 1: keys sort by time, so "from here on" is one list call. Beside
it, ``log/TIME-SEQ.manifest.json`` names the segment (key, size, SHA-256) and
the one before it (key and SHA-256), so a reader that lists the bucket proves
the chain unbroken, or names the first segment missing or corrupt.
``head.json`` names the newest segment, so a lost last segment is seen too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..support import s3

SEGMENTS = "log/"
HEAD = "head.json"
MANIFEST = ".manifest.json"


class ChainBroken(Exception):
    """The archive's chain has a hole or a corrupt segment; the message names the first."""


@dataclass(frozen=True)
class Manifest:
    """One segment's manifest: the segment and the one before it."""

    seq: int
    segment: str
    size: int
    sha256: str
    time: float
    """When the segment's file was last written (Unix seconds): its place in time."""
    previous: str | None
    previous_sha256: str | None
    lines: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode() + b"\n"


def segment_name(seq: int, when: float, compressed: bool) -> str:
    """The segment's object name: its time then its number, so names sort by both."""
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{SEGMENTS}{stamp}-{seq:010d}.log" + (".gz" if compressed else "")


def manifest_name(segment: str) -> str:
    """The manifest's object name beside ``segment``."""
    return segment.removesuffix(".gz").removesuffix(".log") + MANIFEST


def read_manifest(bucket: s3.Bucket, name: str) -> Manifest:
    """The manifest stored as ``name``; ChainBroken when it is not a manifest."""
    data = s3.get_bytes(bucket, name)
    if data is None:
        raise ChainBroken(f"manifest {name} is missing")
    try:
        return Manifest(**json.loads(data))
    except (ValueError, TypeError) as exc:
        raise ChainBroken(f"manifest {name} is corrupt ({exc})") from None


def read_head(bucket: s3.Bucket) -> Manifest | None:
    """The newest segment's manifest as ``head.json`` names it (None: nothing archived yet)."""
    if s3.get_bytes(bucket, HEAD) is None:
        return None
    return read_manifest(bucket, HEAD)


def walk(bucket: s3.Bucket, into: Path | None = None) -> Iterator[tuple[Manifest, Path | None]]:
    """Every segment of the chain, oldest first, each verified (size and SHA-256 read
    back) and, with ``into``, downloaded there; raises ChainBroken at the first segment
    missing, corrupt or not linked to the one before (a hole, or a lost newest one)."""
    head = read_head(bucket)
    names = s3.list_names(bucket, SEGMENTS)
    manifests = [n for n in names if n.endswith(MANIFEST)]
    segments = {n for n in names if not n.endswith(MANIFEST)}
    previous: Manifest | None = None
    for name in manifests:
        manifest = read_manifest(bucket, name)
        expected = (previous.segment, previous.sha256) if previous else (None, None)
        if (manifest.previous, manifest.previous_sha256) != expected:
            raise ChainBroken(
                f"segment {manifest.previous or 'before ' + manifest.segment} is missing: the manifest of "
                f"{manifest.segment} names it as the one before, the chain has {expected[0] or 'none'} there"
            )
        if manifest.segment not in segments:
            raise ChainBroken(f"segment {manifest.segment} is missing (its manifest {name} is there)")
        target = into / Path(manifest.segment).name if into is not None else None
        size, sha256 = s3.sha256_of(bucket, manifest.segment, target)
        if (size, sha256) != (manifest.size, manifest.sha256):
            raise ChainBroken(
                f"segment {manifest.segment} is corrupt: {size} bytes with SHA-256 {sha256}, "
                f"its manifest says {manifest.size} bytes with {manifest.sha256}"
            )
        yield manifest, target
        previous = manifest
    if head is not None and (previous is None or previous.seq < head.seq):
        raise ChainBroken(
            f"segment {head.segment} is missing: head.json names it as the newest, "
            f"the chain ends at {previous.segment if previous else 'nothing'}"
        )
