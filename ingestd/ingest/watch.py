"""Wake the ingest loop when the log directory changes, but only while it is idle.

watchdog turns each write nginx makes into an inotify event, and each event
crosses three threads before it wakes the loop: over 100 µs of CPU per logged
request at 1,000 requests/s, about 6 µs at 30,000 (``bench/watch_cost.py``),
much of what ingestd spends at all. While lines keep coming the loop has work
anyway, so it stops watching (:meth:`Watch.pause`) and looks again every
``ingest.poll_interval``. Once a look finds nothing it watches again
(:meth:`Watch.resume`) and looks once more before it sleeps: a line written
while nobody watched is read then, and one written after makes an event.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from watchdog import events as fs_events
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

log = logging.getLogger("ingestd")

WAKE_EVENTS: list[type[FileSystemEvent]] = [
    cls
    for cls in (
        fs_events.FileCreatedEvent,
        fs_events.FileModifiedEvent,
        getattr(fs_events, "FileAttribEvent", None),
        fs_events.FileMovedEvent,
        fs_events.FileDeletedEvent,
        fs_events.FileClosedEvent,
        fs_events.DirCreatedEvent,
        fs_events.DirModifiedEvent,
        fs_events.DirMovedEvent,
        fs_events.DirDeletedEvent,
    )
    if cls is not None
]
"""The events that mean the logs changed. Not opens and closes without a write: the
daemon's own look at a file would wake it again, and it would spin at 100% CPU."""


class _Wake(FileSystemEventHandler):
    """A change in the log directory sets the loop's wake-up event."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, tuple(WAKE_EVENTS)):
            self.event.set()


class Watch:
    """Sets ``wake`` on changes in ``directory`` while watching; can stop and start again.

    Without inotify (no watches left, say) it says so and does not watch: the
    loop still looks every ``ingest.rescan_interval``.
    """

    def __init__(self, directory: Path, wake: threading.Event, rescan_interval: float) -> None:
        self.directory = str(directory)
        self.rescan_interval = rescan_interval
        self._handler = _Wake(wake)
        self._watch: ObservedWatch | None = None
        self._failed = False
        self._observer: Observer | None = None
        try:
            observer = Observer()  # opens the inotify instance
            observer.start()
        except OSError as exc:
            self._warn(exc)
        else:
            self._observer = observer

    @property
    def active(self) -> bool:
        """True while changes in the directory wake the loop."""
        return self._watch is not None

    def resume(self) -> bool:
        """Watch again (if not already); False if it cannot, which is said once per failure."""
        if self._watch is None and self._observer is not None:
            try:
                self._watch = self._observer.schedule(
                    self._handler, self.directory, recursive=False, event_filter=WAKE_EVENTS
                )
            except OSError as exc:
                if not self._failed:
                    self._warn(exc)
                self._failed = True
                return False
            if self._failed:
                log.info("watching %s for changes again", self.directory)
            self._failed = False
        return self.active

    def pause(self) -> None:
        """Stop watching: the kernel sends no more events until :meth:`resume`."""
        if self._watch is not None and self._observer is not None:
            self._observer.unschedule(self._watch)
        self._watch = None

    def stop(self) -> None:
        """Stop watching for good, and the observer's threads with it."""
        self._watch = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def _warn(self, exc: Exception) -> None:
        log.warning(
            "cannot watch %s for changes (%s); rescanning every %.1fs instead",
            self.directory,
            exc,
            self.rescan_interval,
        )
