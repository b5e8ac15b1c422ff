"""SmallTable's ingest daemon and tools: nginx log lines in, per-project SQLite out."""

__version__ = "0.1.0"
