"""Where a project's key-value writes go: applied to its buckets, or rejected with a reason.

The registry hands over one project's ``PUT``/``DELETE /_kv/…`` lines of a batch,
in log order. A write that is not a valid one (a bad key, a malformed ``If-Match``,
a bad TTL, …) goes to the project's ``rejects`` with the reason; so does a write to
a project over its quota. The others are decided and applied by
:func:`ingestd.store.kv.apply`, in order, in one transaction.
"""

from __future__ import annotations

from ..model.kv import KvError, KvWrite, read_write
from ..model.record import Reject
from ..model.request import Request
from ..store import kv as kv_store
from ..store.database import WriteResult
from ..store.holding import Holding
from ..store.pool import Store

NO_PROJECT = (
    "project {project} does not exist and projects are not created by a write here: "
    "create it first (POST /_project), then write again"
)
OVER_QUOTA = (
    "project {project} is over its quota: the key-value write was not applied "
    "(raise quota_mb, or delete keys and records), then write again"
)


def load(
    store: Store,
    holding: Holding,
    project: str,
    requests: list[Request],
    exists: bool,
    over_quota: bool,
) -> WriteResult:
    """Apply (or reject) one project's key-value writes of a batch, in log order."""
    result = WriteResult()
    if not exists:
        reason = NO_PROJECT.format(project=project)
        holding.reject(project, [Reject(r, reason, r.stored_body, "other") for r in requests])
        result.rejected += len(requests)
        return result
    writes: list[KvWrite] = []
    rejects: list[Reject] = []
    for request in requests:
        if over_quota:
            rejects.append(Reject(request, OVER_QUOTA.format(project=project), request.stored_body, "other"))
            continue
        try:
            writes.append(read_write(request))
        except KvError as exc:
            rejects.append(
                Reject(request, f"key-value write not applied: {exc}", request.stored_body, "other")
            )
    if rejects:
        result.add(store.write(project, [], rejects))
    if writes:
        # Decisions (stored, deleted, precondition failed) are in kv_writes, not counted as records.
        result.duplicates += kv_store.apply(store.project(project).conn, writes).duplicates
    return result
