"""A logged upload (``POST /_blobs``) applied: its spooled body into the blob stores, a row
into the project's ``blobs`` table.

nginx wrote the body to a spool file (``client_body_in_file_only``), hashed it (njs)
and logged the file's name and the SHA-256 instead of the body, so a 64 MiB upload
is never escaped into the ingest log. Applied in log order, idempotently:

1. a local store that already holds the blob (same bytes uploaded before, or this
   line applied before a crash) is enough; else the spool file is copied into the
   first store that takes it, read back and checked against the logged id and size;
2. the row goes into ``blobs`` (the first upload of the same bytes wins);
3. only then is the spool file removed.

A crash between any two steps repeats the line after restart and lands in the same
place. Every store failing (disks full, S3 down) fails the batch: the loop holds at
its checkpoint and retries, and the spool file waits. The other copies
(``blobs.min_copies``) are made by the replicator (:mod:`ingestd.ops.replicate`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..config import Config
from ..model.record import Reject
from ..model.request import Request
from ..store.blobs import Store, StoreError, hash_file, is_blob_id, local_stores, stores_from
from ..store.blobtable import add_blob
from ..support import failpoints
from ..support.timefmt import iso_time

UPLOAD_PATH = "/_blobs"


def intake_for(config: Config) -> BlobIntake:
    """The intake a deployment's config describes (``blobs.stores``; public marks in the state dir)."""
    return BlobIntake(
        stores_from(config["blobs.stores"], config.home), config.path("state_dir") / "blobs-public"
    )


def is_upload(request: Request) -> bool:
    """True for a logged blob upload (nginx logs its hash in place of the body)."""
    return bool(request.blob)


class BlobIntake:
    """Moves spooled uploads into the stores, in log order."""

    def __init__(self, stores: list[Store], public_dir: Path | None = None) -> None:
        self.stores = stores
        self.local = local_stores(stores)
        self.public_dir = public_dir
        """Where a public project's blobs are marked (an empty file per id) for the apex's ``/fetch/ID``."""

    def take(self, conn: sqlite3.Connection, request: Request, read_policy: str) -> list[Reject]:
        """Apply one upload to the project whose database is ``conn``: ``[]``, or a Reject saying why not."""
        reject = self._take(conn, request, read_policy == "public")
        return [] if reject is None else [reject]

    def _take(self, conn: sqlite3.Connection, request: Request, public: bool) -> Reject | None:
        blob_id = f"sha256-{request.blob}"
        size = request.content_length or 0
        if not is_blob_id(blob_id):
            return Reject(request, f"blob upload with a malformed hash {request.blob!r}", b"", "other")
        spool = Path(request.blob_file) if request.blob_file else None
        # Only the local stores are looked at here: a slow or dead S3 must not slow intake.
        held = [s for s in (self.local or self.stores) if _holds(s, blob_id, size)]
        copied = False
        if not held:
            if spool is None or not spool.exists():
                reason = (
                    f"blob {blob_id} was accepted but its spooled body {request.blob_file!r} is gone "
                    "and no store holds it (an nginx crash or power loss before it was applied)"
                )
                return Reject(request, reason, b"", "body_not_captured")
            if hash_file(spool) != (blob_id, size):
                reason = f"the spooled body {spool} is not the logged {blob_id} of {size} bytes"
                return Reject(request, reason, b"", "body_not_captured")
            held = [self._put(blob_id, spool, size, request.content_type)]
            copied = True
            failpoints.hit("blobs.after_copy")
        if public and self.public_dir is not None:
            self.public_dir.mkdir(parents=True, exist_ok=True)
            (self.public_dir / blob_id).touch()
        row = {
            "id": blob_id,
            "size": size,
            "content_type": request.content_type,
            "filename": request.filename or None,
            "uploaded": iso_time(request.received),
            "copies": len(held),
            "request_id": request.request_id,
        }
        add_blob(conn, row)
        failpoints.hit("blobs.after_row")
        if spool is not None and _is_spool_of(spool, blob_id, size, copied):
            spool.unlink(missing_ok=True)
        return None

    def _put(self, blob_id: str, spool: Path, size: int, content_type: str | None) -> Store:
        """Copy into the first store that takes it (local ones first: nginx serves from them)."""
        failures = []
        for store in sorted(self.stores, key=lambda s: s not in self.local):
            try:
                store.put(blob_id, spool, size, content_type)
                return store
            except StoreError as exc:
                failures.append(str(exc))
        raise StoreError(f"no blob store took {blob_id}: " + "; ".join(failures))


def _holds(store: Store, blob_id: str, size: int) -> bool:
    """A cheap look (size only) at whether ``store`` has the blob; a store that fails, has not."""
    try:
        return store.check(blob_id, size, full=False) == "ok"
    except StoreError:
        return False


def _is_spool_of(spool: Path, blob_id: str, size: int, copied: bool) -> bool:
    """True when ``spool`` holds this upload's body and may go.

    nginx reuses spool file names once they are free: a line applied again (after a
    crash, before its checkpoint moved) may name a file that is now a newer upload's,
    which must stay until its own line. So a file not just copied is removed only if
    it is these very bytes."""
    if copied:
        return True
    try:
        return spool.stat().st_size == size and hash_file(spool) == (blob_id, size)
    except OSError:
        return False
