"""One logged :class:`Request` into a :class:`Record` to store, or a :class:`Reject`.

The body is kept byte for byte in either case; this module only decides what
kind of body it is and which top-level fields it offers as columns. Everything
here is a pure function of the request: no I/O and no SQLite.
"""

from __future__ import annotations

import functools
import json
import re
from contextlib import suppress
from urllib.parse import unquote_to_bytes

import msgspec
import orjson
from python_multipart.multipart import MultipartParser, parse_options_header

from ..model.record import FilePart, Record, Reject
from ..model.request import Request

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_JSON_START = re.compile(r"[ \t\r\n]*[\[{]")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
_STORED_AS_IS = frozenset({str, float, type(None)})
"""Types of parsed JSON values SQLite stores as they are (most values): no call needed."""


def build(request: Request) -> Record | Reject:
    """Classify ``request`` by its declared content type, then by its body.

    A body nginx did not log whole is rejected before anything else, so a
    truncated body is never stored as if it were the request. Declared JSON
    and multipart bodies must be what they claim; any other body is stored
    as whatever it turns out to be.
    """
    body = _text_or_bytes(request.body)
    expected = request.content_length
    if expected is not None and len(request.body) != expected:
        held = len(request.body)
        reason = f"body not captured whole: the log holds {held} of {expected} bytes"
        return Reject(request, reason, body, "body_not_captured")
    declared, media_type, boundary = _declared(request.content_type)
    if declared == "json":
        return _declared_json(request, body, media_type)
    if declared == "multipart":
        return _multipart(request, body, boundary)
    return _undeclared(request, body, declared == "form")


@functools.lru_cache(maxsize=1024)
def _declared(content_type: str | None) -> tuple[str, str, bytes | None]:
    """What a Content-Type declares ("json", "multipart", "form" or "other"), its media
    type (lowercase) and its multipart boundary; most posts share a few."""
    raw_type, params = parse_options_header((content_type or "").encode())
    media_type = raw_type.decode("utf-8", "replace")
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        declared = "json"
    elif media_type == "multipart/form-data":
        declared = "multipart"
    elif media_type == "application/x-www-form-urlencoded":
        declared = "form"
    else:
        declared = "other"
    return declared, media_type, params.get(b"boundary")


def _text_or_bytes(data: bytes) -> str | bytes:
    """``data`` as text when it is valid UTF-8, else unchanged."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _declared_json(request: Request, body: str | bytes, media_type: str) -> Record | Reject:
    """A body sent as JSON: it must be JSON, or the sender should hear why not."""
    if isinstance(body, bytes):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"JSON body is not valid UTF-8 (bad byte at offset {exc.start})"
            return Reject(request, reason, body, "json_not_utf8")
    if not body:
        return Reject(request, f"empty body sent as {media_type}", body, "empty_json")
    try:
        return _json_record(request, body)
    except ValueError as exc:
        return Reject(request, f"malformed JSON: {exc}", body, "malformed_json")


def _undeclared(request: Request, body: str | bytes, form: bool) -> Record:
    """A body whose content type says nothing reliable: look at the body instead.

    curl's ``-d`` labels everything it sends as a form, plain text and JSON
    included, so a form body is only a form when it parses as one and is not
    JSON.
    """
    if not body:
        return Record(request, body, "empty", {}, [])
    if isinstance(body, bytes):
        return Record(request, body, "binary", {}, [])
    if _JSON_START.match(body):
        with suppress(ValueError):
            return _json_record(request, body)
    if form and _is_form(body):
        fields, value = _group(_form_pairs(body))
        return Record(request, body, "form", fields, [], value)
    return Record(request, body, "text", {}, [])


def _is_form(text: str) -> bool:
    """True when every ``&``-separated pair of ``text`` is ``name=value``, name not empty."""
    return all("=" in pair and pair[0] != "=" for pair in text.split("&"))


def _form_pairs(text: str) -> list[tuple[str, str | bytes]]:
    """The name/value pairs of a body :func:`_is_form` accepts, decoded as
    ``parse_qsl(text, keep_blank_values=True)`` decodes them (``+`` is a space, ``%XX``
    a byte, the bytes UTF-8 with U+FFFD for what is not), in a third less time."""
    pairs: list[tuple[str, str | bytes]] = []
    for pair in text.split("&"):
        name, _, value = pair.partition("=")
        pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(part: str) -> str:
    """One name or value of a form, decoded (see :func:`_form_pairs`)."""
    if "+" in part:
        part = part.replace("+", " ")
    return unquote_to_bytes(part).decode("utf-8", "replace") if "%" in part else part


def _json_record(request: Request, body: str | bytes) -> Record:
    """A kind "json" record, one field per key of an object; ValueError if not JSON."""
    value = _load_json(request.body)
    if not isinstance(value, dict):
        return Record(request, body, "json", {}, [], value)
    fields = value.copy()  # most values are stored as they are: change the others only
    for key, item in value.items():
        if type(item) not in _STORED_AS_IS:
            fields[key] = _sqlite_value(item)
    return Record(request, body, "json", fields, [], value)


def _load_json(data: bytes) -> object:
    """Parse JSON, raising ValueError with a readable message when it isn't.

    msgspec is strict (no NaN, no lone surrogates, no overflowing floats), fast,
    and keeps every integer exact. What it refuses goes to :func:`_load_json_checked`,
    whose messages name what is wrong (and which accepts or refuses the same JSON).
    """
    try:
        return _decode_json(data)
    except (msgspec.DecodeError, RecursionError):
        pass
    return _load_json_checked(data)


_decode_json = msgspec.json.Decoder().decode


def _load_json_checked(data: bytes) -> object:
    """:func:`_load_json` with orjson, whose errors say where the JSON goes wrong.

    orjson reads integers beyond 64 bits as floats, dropping digits. Such an
    integer has at least 19 digits, so a body with a run of 19 digits is read
    again by the standard library, which keeps every integer exact.
    """
    value = orjson.loads(data)
    if _LONG_NUMBER in data.translate(_DIGITS_TO_ZERO):
        try:
            value = json.loads(data)
        except RecursionError:
            raise ValueError("nested too deeply") from None
    return value


def _sqlite_value(value: object) -> object:
    """A parsed JSON value as something SQLite stores without loss."""
    kind = type(value)
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if kind is bool:
        return int(value)
    if kind is dict or kind is list:
        return _compact(value)
    return value


def _compact(value: object) -> str:
    """Compact JSON text for ``value``.

    orjson refuses integers beyond 64 bits and nesting deeper than 254 levels;
    the standard library copes with both, up to Python's recursion limit.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _group(pairs: list[tuple[str, str | bytes]]) -> tuple[dict[str, object], dict[str, object]]:
    """Fields from name/value pairs (a repeated name gets a JSON array of its values),
    and the fields as one JSON-like object for a schema to check.

    JSON has no bytes, so a value that is not UTF-8 shows with U+FFFD in an
    array; the exact bytes remain in the stored body.
    """
    grouped: dict[str, list[str | bytes]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    fields: dict[str, object] = {}
    value: dict[str, object] = {}
    for name, values in grouped.items():
        if len(values) == 1:
            fields[name] = values[0]
            value[name] = _as_text(values[0])
        else:
            value[name] = [_as_text(v) for v in values]
            fields[name] = _compact(value[name])
    return fields, value


def _as_text(value: str | bytes) -> str:
    """``value`` as text, undecodable bytes shown as U+FFFD."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _multipart(request: Request, body: str | bytes, boundary: bytes | None) -> Record | Reject:
    """A multipart/form-data body: fields from plain parts, a FilePart per file."""
    if not boundary:
        return Reject(
            request, "malformed multipart: no boundary in the content type", body, "malformed_multipart"
        )
    try:
        parts = _split_multipart(request.body, boundary)
    except ValueError as exc:
        return Reject(request, f"malformed multipart: {exc}", body, "malformed_multipart")
    pairs: list[tuple[str, str | bytes]] = []
    files: list[FilePart] = []
    for number, (headers, content) in enumerate(parts, start=1):
        _, params = parse_options_header(headers.get(b"content-disposition"))
        if b"name" not in params:
            reason = f"malformed multipart: part {number} has no name"
            return Reject(request, reason, body, "malformed_multipart")
        name = params[b"name"].decode("utf-8", "replace")
        if b"filename" in params:
            filename = params[b"filename"].decode("utf-8", "replace")
            raw_type = headers.get(b"content-type")
            content_type = None if raw_type is None else raw_type.decode("utf-8", "replace")
            files.append(FilePart(name, filename, content_type, content))
            pairs.append((name, filename))
        else:
            pairs.append((name, _text_or_bytes(content)))
    fields, value = _group(pairs)
    return Record(request, body, "multipart", fields, files, value)


def _split_multipart(data: bytes, boundary: bytes) -> list[tuple[dict[bytes, bytes], bytes]]:
    """The (headers, content) of each part; header names lowercased.

    Raises ValueError for a malformed body (python-multipart's errors are
    ValueErrors). Its ``finalize()`` does not check that the closing boundary
    arrived, so that is checked here.
    """
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header_name, header_value = bytearray(), bytearray()
    ended: list[bool] = []

    def header_end() -> None:
        parts[-1][0][bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": lambda: parts.append(({}, bytearray())),
            "on_header_field": lambda data, start, end: header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: header_value.extend(data[start:end]),
            "on_header_end": header_end,
            "on_part_data": lambda data, start, end: parts[-1][1].extend(data[start:end]),
            "on_end": lambda: ended.append(True),
        },
    )
    parser.write(data)
    parser.finalize()
    if not ended:
        raise ValueError("the body ends before the closing boundary")
    return [(headers, bytes(content)) for headers, content in parts]
