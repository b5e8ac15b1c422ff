"""ingestd's Prometheus metrics: their names, help texts and labels in one place.

The ``project`` label is bounded by the number of projects on a host (each one a
database file someone created); nothing user-controlled beyond the project name
becomes a label.
"""

from prometheus_client import Counter, Gauge, Histogram, Info

from . import __version__

BUILD_INFO = Info("smalltable_ingestd_build", "ingestd's version.")
BUILD_INFO.info({"version": __version__})

LINES_READ = Counter("smalltable_ingest_lines_read_total", "Whole log lines handed to the loader.")
RECORDS_STORED = Counter("smalltable_records_stored_total", "Requests stored as records.", ["project"])
RECORDS_REJECTED = Counter(
    "smalltable_records_rejected_total", "Requests stored in a project's rejects table.", ["project"]
)
DUPLICATES = Counter(
    "smalltable_ingest_duplicate_lines_total",
    "Lines read again after a restart whose request was already loaded (skipped).",
)
DEAD_LETTERS = Counter(
    "smalltable_ingest_dead_letter_lines_total", "Log lines that could not be parsed.", ["reason"]
)
LOAD_ERRORS = Counter(
    "smalltable_ingest_load_errors_total", "Batches that failed to load (disk full, read-only...)."
)
LAG_BYTES = Gauge("smalltable_ingest_lag_bytes", "Log bytes written and not yet loaded.")
LAG_SECONDS = Gauge(
    "smalltable_ingest_lag_seconds",
    "Age of the oldest accepted request not yet loaded; 0 when caught up.",
)
BATCH_LINES = Histogram(
    "smalltable_ingest_batch_lines",
    "Lines per loaded batch.",
    buckets=(1, 10, 100, 1000, 10000, 100000),
)
BATCH_SECONDS = Histogram(
    "smalltable_ingest_batch_duration_seconds", "Time to parse, load and checkpoint one batch."
)
LAST_CHECKPOINT = Gauge(
    "smalltable_ingest_checkpoint_timestamp_seconds", "When the checkpoint was last saved."
)
FILES_FOLLOWED = Gauge("smalltable_ingest_files_followed", "Log files being followed.")
