"""A write request as nginx accepted and logged it: what every later step starts from."""

from __future__ import annotations

import msgspec

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})


class Request(msgspec.Struct, frozen=True, gc=False):
    """A write request as nginx accepted and logged it.

    A frozen msgspec struct: immutable like a frozen dataclass, and made in a
    fifth of a named tuple's time (0.06 against 0.29 µs), which counts at one per
    line. It holds no containers, so the cycle collector need not track it.
    """

    request_id: str
    project: str
    received: float
    """Unix time at which nginx started reading the request."""
    method: str
    uri: str
    content_type: str | None
    content_length: int | None
    """The length nginx read (set by nginx for chunked bodies too); None if absent."""
    remote_addr: str
    user_agent: str | None
    body: bytes
    key: str = ""
    """The key nginx let the write through with, ``scope:key_id`` (never the key); "" for none."""
    mint: str = ""
    """The SHA-256 of a key nginx made for this write's answer (a claim, a new key); "" for none."""
    presented: str = ""
    """The SHA-256 of a key sent with a settings write nginx could not decide (no owner yet)."""
    blob: str = ""
    """A blob upload (``POST /_blobs``): the SHA-256 (hex) nginx computed of its body; "" otherwise."""
    blob_file: str = ""
    """A blob upload: the spool file nginx kept its body in (the body is not in the line)."""
    filename: str = ""
    """A blob upload: its ``X-Filename`` header, if any."""
    kv: str = ""
    """A key-value write's conditional, TTL and index headers, as JSON (``nginx/smalltable.js``)."""

    @property
    def stored_body(self) -> str | bytes:
        """The body as a table keeps it: text when it is UTF-8 (Datasette shows it), else bytes."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return self.body

    @property
    def path(self) -> str:
        """The URI without its query string."""
        return self.uri.partition("?")[0]

    @property
    def query(self) -> str | None:
        """The query string, or None when the URI has none."""
        _, sep, query = self.uri.partition("?")
        return query if sep else None
