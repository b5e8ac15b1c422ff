"""What a request becomes: a :class:`Record` to store, or a :class:`Reject` that says why not."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from .request import Request


@dataclass(slots=True)
class FilePart:
    """One uploaded file of a multipart body."""

    field: str
    filename: str | None
    content_type: str | None
    content: bytes


class Record(msgspec.Struct, frozen=True, gc=False):
    """A request ready to store: its body, what kind of body it is and its fields.

    A frozen msgspec struct, like :class:`Request`: one is made per line. It is not
    tracked by the cycle collector, so that the collector run after each batch has
    less to walk: its dicts and lists come from parsing a body, and none of them can
    refer back to the record, so no cycle can pass through it.
    """

    request: Request
    body: str | bytes
    kind: str
    fields: dict[str, object]
    files: list[FilePart]
    value: object = None
    """What a project's JSON Schema checks: the parsed JSON, or a form's fields as an
    object (a repeated name's values as an array); None for other kinds."""


@dataclass(slots=True)
class Reject:
    """A request that cannot be stored as it claims to be; ``reason`` says why.

    ``code`` names the kind of reason from a fixed set (:data:`REJECT_CODES`), for
    metrics and alerts: ``reason`` is for people and holds details.
    """

    request: Request
    reason: str
    body: str | bytes
    code: str = "other"


REJECT_CODES = (
    "body_not_captured",
    "json_not_utf8",
    "empty_json",
    "malformed_json",
    "malformed_multipart",
    "not_json",
    "not_text",
    "schema",
    "invalid_settings",
    "other",
)
