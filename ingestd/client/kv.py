"""``smalltable kv``: a project's key-value buckets from a shell (docs/kv.md).

Each command takes the project's URL (``http://demo.localhost:8080/``), then the
bucket and the key as plain text: the client percent-encodes them. ``put`` and
``delete`` wait for ingestd's decision (``/_status/ID?wait=``) and exit non-zero
with the reason when the write was not applied: :data:`EXIT_PRECONDITION` for a
failed ``--if-match`` / ``--if-absent``, :data:`EXIT_NOT_FOUND` for a delete of a
missing key.
"""

from __future__ import annotations

import json
import time
from typing import BinaryIO, TextIO
from urllib.parse import quote, urlencode

from .actions import EXIT_HELD, EXIT_PENDING, EXIT_REJECTED, content_type_of
from .transport import ClientError, Target, error_of, fetch, target

EXIT_PRECONDITION = 5
"""``kv put`` / ``kv delete``: the condition did not hold (``precondition failed``)."""
EXIT_NOT_FOUND = 6
"""``kv get``: no such key; ``kv delete``: nothing to delete."""
WAIT_SECONDS = 30
"""What one status request asks the server to wait (its most)."""
JSON = {"Accept": "application/json"}


def _base(url: str) -> str:
    """The project's address, ``scheme://host[:port]``, from any URL of it."""
    where = target(url)
    return f"{where.scheme}://{where.host_header}"


def item_url(url: str, bucket: str, key: str) -> str:
    """The URL of one key of a bucket, the key percent-encoded (``/`` included)."""
    return f"{_base(url)}/_kv/{quote(bucket, safe='')}/items/{quote(key, safe='')}"


def write_headers(
    content_type: str | None, if_match: str | None, if_absent: bool, ttl: int | None, indexes: list[str]
) -> dict[str, str]:
    """The headers of a put or delete; ClientError for an ``--index`` that is not NAME=VALUE."""
    headers = dict(JSON)
    if content_type:
        headers["Content-Type"] = content_type
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if if_absent:
        headers["If-None-Match"] = "*"
    if ttl is not None:
        headers["X-TTL"] = str(ttl)
    for entry in indexes:
        name, sep, value = entry.partition("=")
        if not sep or not name:
            raise ClientError(f"--index {entry!r}: expected NAME=VALUE")
        headers[f"X-Index-{name}"] = value
    return headers


def write(
    where: Target, method: str, body: bytes, headers: dict[str, str], timeout: float, out: TextIO
) -> int:
    """Send a put or delete, wait for its decision, print it; the exit code it means."""
    code, _, answer = fetch(where, method, body, headers)
    if code != 202:
        raise ClientError(error_of(code, answer))
    request_id = json.loads(answer)["id"]
    status_url = target(f"{where.scheme}://{where.host_header}/_status/{request_id}?wait={WAIT_SECONDS}")
    deadline = time.monotonic() + timeout
    while True:
        code, _, body = fetch(status_url, headers=JSON, timeout=WAIT_SECONDS + 10)
        if code != 202 or time.monotonic() > deadline:
            break
    outcome = json.loads(body) if body.startswith(b"{") else {}
    if code == 202:
        raise ClientError(f"still {outcome.get('status', 'pending')} after {timeout:g} s", EXIT_PENDING)
    if code == 429 or "status" not in outcome:
        raise ClientError(error_of(code, body))
    out.write(body.decode("utf-8", "replace"))
    reason = outcome.get("reason")
    if reason == "precondition failed":
        current = outcome.get("current_version")
        now = "absent" if current is None else f"at version {current}"
        raise ClientError(f"precondition failed: key {outcome.get('key')!r} is {now}", EXIT_PRECONDITION)
    if reason == "not found":
        raise ClientError(f"not found: no key {outcome.get('key')!r} to delete", EXIT_NOT_FOUND)
    if outcome["status"] == "rejected":
        raise ClientError(f"rejected: {reason}", EXIT_REJECTED)
    if outcome["status"] == "held":
        raise ClientError(f"held: {reason}", EXIT_HELD)
    return 0


def put(
    url: str,
    bucket: str,
    key: str,
    body: bytes,
    filename: str | None,
    headers: dict,
    timeout: float,
    out: TextIO,
) -> int:
    """``kv put``: store ``body`` as the key's value (its type guessed as ``post`` does)."""
    headers = {"Content-Type": content_type_of(body, filename), **headers}
    return write(target(item_url(url, bucket, key)), "PUT", body, headers, timeout, out)


def get(url: str, bucket: str, key: str, version_only: bool, out: BinaryIO) -> None:
    """``kv get``: the value's exact bytes (or only its version) to ``out``."""
    code, headers, body = fetch(target(item_url(url, bucket, key)))
    if code == 404:
        raise ClientError(error_of(code, body), EXIT_NOT_FOUND)
    if code != 200:
        raise ClientError(error_of(code, body))
    out.write(f"{headers.get('x-weave-version')}\n".encode() if version_only else body)
    out.flush()


def _json(url: str) -> object:
    code, _, body = fetch(target(url), headers=JSON)
    if code != 200:
        raise ClientError(error_of(code, body))
    return json.loads(body)


def list_keys(url: str, bucket: str | None, prefix: str, limit: int | None, out: TextIO) -> None:
    """``kv list``: the buckets (no bucket), or a bucket's keys in order, one per line, every page."""
    if bucket is None:
        for entry in _json(f"{_base(url)}/_kv/")["buckets"]:
            out.write(f"{entry['bucket']}\t{entry['items']}\t{entry['bytes']}\n")
        return
    after, shown = "", 0
    while limit is None or shown < limit:
        page_size = 1000 if limit is None else min(1000, limit - shown)
        query = urlencode({"prefix": prefix, "after": after, "limit": page_size})
        page = _json(f"{_base(url)}/_kv/{quote(bucket, safe='')}/items/?{query}")
        for entry in page["items"]:
            out.write(f"{entry['key']}\n")
        shown += len(page["items"])
        if page["next"] is None:
            return
        after = page["next"]


def scan(
    url: str,
    bucket: str,
    index: str,
    low: str | None,
    high: str | None,
    reverse: bool,
    limit: int,
    out: TextIO,
) -> None:
    """``kv scan``: an index's entries in order, ``VALUE<tab>KEY`` per line."""
    params = {"limit": limit, "reverse": "true" if reverse else "false"}
    params.update({name: value for name, value in (("min", low), ("max", high)) if value is not None})
    path = f"/_kv/{quote(bucket, safe='')}/indexes/{quote(index, safe='')}?{urlencode(params)}"
    for value, key in _json(_base(url) + path):
        out.write(f"{value}\t{key}\n")
