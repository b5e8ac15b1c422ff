"""The blob metrics, read at scrape time from the replicator's last figures (``STATE_DIR/blobs.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_GAUGES = {
    "blobs": ("smalltable_blobs", "Distinct blobs the projects hold."),
    "bytes": ("smalltable_blob_bytes", "Their bytes (each blob once, not per copy)."),
    "under_replicated": (
        "smalltable_blobs_under_replicated",
        "Blobs with fewer verified copies than blobs.min_copies at the last pass.",
    ),
    "min_copies": ("smalltable_blobs_min_copies", "Copies each blob is kept on (blobs.min_copies)."),
    "last_replicate": (
        "smalltable_blobs_last_replicate_timestamp_seconds",
        "When the last replication pass ended.",
    ),
    "last_verify": (
        "smalltable_blobs_last_verify_timestamp_seconds",
        "When the last `smalltable blobs verify` ended.",
    ),
    "last_verify_dropped": (
        "smalltable_blobs_last_verify_bad_copies",
        "Copies the last verify found missing or corrupt (and made again where it could).",
    ),
}


class BlobFigures(Collector):
    """Every figure of the last pass; none before the first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            figures = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        for key, (name, text) in _GAUGES.items():
            if isinstance(figures.get(key), int | float):
                yield GaugeMetricFamily(name, text, value=figures[key])
