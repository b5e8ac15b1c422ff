"""Key-value writes as values: what a logged ``PUT``/``DELETE /_kv/BUCKET/items/KEY`` asks for.

Both sides share these rules: ingestd reads a logged write into a :class:`KvWrite`
(or a reason it is not one), and the web side reads a ``GET``'s bucket and key
with the same :func:`parse_item_path`, so a key means the same on both.

A key is a path segment after ``items/``, percent-decoded: UTF-8 text of 1 to
``MAX_KEY_BYTES`` bytes, without ``/`` (sent raw or as ``%2F``) or control
characters (NUL included). A bucket name follows the project-name rule's
characters (lowercase letters, digits, ``-`` and ``_``, up to 63).

nginx logs the write's conditional headers as a JSON object (``kv`` in the log
line, ``nginx/smalltable.js``): each header's values as a list, index headers as
``[name, value]`` pairs. Conditions are checked here for their form only; whether
they hold is decided when the write is applied, in log order (:mod:`ingestd.store.kv`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import msgspec
import orjson

from .request import Request

KV_PREFIX = "/_kv/"
MAX_KEY_BYTES = 1024
MAX_TTL_SECONDS = 366 * 86400
"""The longest ``X-TTL``: a year (and a day for leap years)."""
MAX_INDEX_BYTES = 1024
"""The longest index name or value."""
MAX_INDEXES = 32
"""Index entries one put may set."""
BUCKET_RULE = "1 to 63 lowercase letters, digits, '-' or '_'"
_BUCKET = re.compile(r"^[a-z0-9_-]{1,63}$")
_ETAG = re.compile(r'^"([1-9][0-9]{0,18})"$')
_VERSION = re.compile(r"^[1-9][0-9]{0,18}$")
_INDEX_NAME = re.compile(r"^[a-z0-9_-]{1,63}$")


class KvError(ValueError):
    """A key-value request that cannot be applied as sent; the message says why and what to do."""


class KvWrite(msgspec.Struct, frozen=True):
    """A put or delete of one key, with its conditions, as the log line asked."""

    request: Request
    bucket: str
    key: str
    op: str
    """``put`` or ``delete``."""
    if_match: int | None = None
    """The version the key must have now (``If-Match: "V"``, ``X-Weave-If-Match: V``)."""
    must_exist: bool = False
    """``If-Match: *``: the key must exist."""
    if_none_match: bool = False
    """``If-None-Match: *``: the key must not exist."""
    ttl: int | None = None
    """Seconds after the logged receive time at which the value expires."""
    indexes: tuple[tuple[str, str], ...] = ()
    """``(name, value)`` pairs, sorted: the key's index entries after this put."""


def is_kv_path(path: str) -> bool:
    """True for a path under ``/_kv/`` (the buckets' API)."""
    return path.startswith(KV_PREFIX) or path == KV_PREFIX[:-1]


def check_bucket(raw: str) -> str:
    """A bucket name from its path segment; KvError if it is not one."""
    if not _BUCKET.match(raw):
        raise KvError(f"bad bucket name {raw[:80]!r}: a bucket is {BUCKET_RULE}")
    return raw


def decode_key(raw: str) -> str:
    """A key from its raw (percent-encoded) path segment; KvError naming the rule it breaks."""
    if not raw:
        raise KvError("empty key: put the key after items/, e.g. /_kv/BUCKET/items/KEY")
    data = unquote_to_bytes(raw)
    if len(data) > MAX_KEY_BYTES:
        raise KvError(f"key too long: {len(data)} bytes, the limit is {MAX_KEY_BYTES} bytes")
    if b"/" in data:
        raise KvError("a key cannot hold '/' (nor %2F): use another separator, such as ':' or '.'")
    try:
        key = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KvError("a key must be UTF-8 text (percent-encoded in the URL)") from None
    if any(ch < " " or ch == "\x7f" for ch in key):
        raise KvError("a key cannot hold control characters (NUL, tab, newline, …)")
    return key


def parse_item_path(path: str) -> tuple[str, str]:
    """``(bucket, key)`` from a raw ``/_kv/BUCKET/items/KEY`` path; KvError if it is not one."""
    rest = path[len(KV_PREFIX) :] if path.startswith(KV_PREFIX) else ""
    bucket, sep, tail = rest.partition("/items/")
    if not sep:
        raise KvError("not an item: the path is /_kv/BUCKET/items/KEY")
    return check_bucket(bucket), decode_key(tail)


def _one(headers: dict, name: str, shown: str) -> str | None:
    """The one value a header was sent with, None if absent; KvError if sent twice."""
    values = headers.get(name) or []
    if len(values) > 1:
        raise KvError(f"{shown} sent {len(values)} times: send it once")
    return values[0].strip() if values else None


def _if_match(headers: dict) -> tuple[int | None, bool]:
    """The version ``If-Match`` / ``X-Weave-If-Match`` ask for, and whether it was ``*``."""
    etag = _one(headers, "if_match", "If-Match")
    weave = _one(headers, "weave_if_match", "X-Weave-If-Match")
    version = None
    if etag == "*":
        if weave is not None:
            raise KvError("If-Match: * and X-Weave-If-Match together: send one")
        return None, True
    if etag is not None:
        match = _ETAG.match(etag)
        if not match:
            raise KvError(
                f"malformed If-Match {etag[:80]!r}: send the version an answer gave in quotes, "
                'If-Match: "V" (the ETag), or If-Match: *'
            )
        version = int(match.group(1))
    if weave is not None:
        if not _VERSION.match(weave):
            raise KvError(
                f"malformed X-Weave-If-Match {weave[:80]!r}: send the version bare, "
                "X-Weave-If-Match: V (X-Weave-Version of the answer)"
            )
        if version is not None and int(weave) != version:
            raise KvError("If-Match and X-Weave-If-Match name different versions: send one")
        version = int(weave)
    return version, False


def _if_none_match(headers: dict) -> bool:
    value = _one(headers, "if_none_match", "If-None-Match")
    if value is None:
        return False
    if value != "*":
        raise KvError(
            f"If-None-Match {value[:80]!r} on a write: only If-None-Match: * (the key must not exist)"
        )
    return True


def _ttl(headers: dict) -> int | None:
    value = _one(headers, "ttl", "X-TTL")
    if value is None:
        return None
    if not value.isdigit() or not value.isascii():
        raise KvError(f"X-TTL {value[:40]!r} is not a whole number of seconds (1 to {MAX_TTL_SECONDS})")
    ttl = int(value)
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise KvError(f"X-TTL {ttl}: it must be from 1 to {MAX_TTL_SECONDS} seconds (a year)")
    return ttl


def _indexes(headers: dict) -> tuple[tuple[str, str], ...]:
    pairs = headers.get("index") or []
    if len(pairs) > MAX_INDEXES:
        raise KvError(f"{len(pairs)} index headers: at most {MAX_INDEXES} per put")
    seen: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        if not name:
            raise KvError("an index header with an empty name: send X-Index-NAME: VALUE")
        if not _INDEX_NAME.match(name):
            raise KvError(f"bad index name {name[:80]!r}: an index name is {BUCKET_RULE}")
        if name in seen:
            raise KvError(f"index {name!r} sent twice: a key has one value per index")
        if len(value.encode("utf-8", "replace")) > MAX_INDEX_BYTES:
            raise KvError(f"index {name!r}: the value is over {MAX_INDEX_BYTES} bytes")
        seen[name] = value
    return tuple(sorted(seen.items()))


def read_write(request: Request) -> KvWrite:
    """The key-value write a logged request asks for; KvError saying why it is not a valid one."""
    if request.method not in ("PUT", "DELETE"):
        raise KvError(f"{request.method} is not a key-value write: PUT a value or DELETE it")
    bucket, key = parse_item_path(request.path)
    try:
        headers = orjson.loads(request.kv) if request.kv else {}
    except orjson.JSONDecodeError:
        raise KvError("the write's headers were not logged readably: send them as ASCII text") from None
    if "error" in headers:
        raise KvError(str(headers["error"]))
    version, must_exist = _if_match(headers)
    none_match = _if_none_match(headers)
    if none_match and (version is not None or must_exist):
        raise KvError("If-Match and If-None-Match together can never both hold: send one")
    if request.method == "DELETE":
        if headers.get("ttl") or headers.get("index"):
            raise KvError("X-TTL and index headers belong to a put, not a DELETE")
        return KvWrite(request, bucket, key, "delete", version, must_exist, none_match)
    return KvWrite(
        request, bucket, key, "put", version, must_exist, none_match, _ttl(headers), _indexes(headers)
    )
