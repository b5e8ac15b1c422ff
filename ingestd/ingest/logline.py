"""One ingest-log line (bytes, as nginx wrote it) into a :class:`Request`.

nginx writes the line with ``escape=json``: it escapes ``"``, ``\\`` and bytes
below 0x20 and passes every byte from 0x7F up raw. So a line is not UTF-8 but it
is valid JSON once each byte is read as one character (Latin-1). Parsing it that
way and encoding the body back to Latin-1 returns the body byte for byte, binary
included. The format is documented in docs/log-format.md.
"""

from __future__ import annotations

import functools

import msgspec
import orjson

from ..model.project import is_settings_write, is_valid_project_name
from ..model.request import WRITE_METHODS, Request

FORMAT_VERSION = 1
_HEX_DIGITS = "0123456789abcdef"


class LineError(ValueError):
    """A line that is not a valid ingest-log line; the message says why."""


def _text(value: str) -> str:
    """A header value as nginx logged it (bytes as Latin-1) back to readable text."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")


def _is_request_id(value: object) -> bool:
    """True for 32 lowercase hex digits (what a regular expression says, in a third of the time)."""
    return isinstance(value, str) and len(value) == 32 and not value.strip(_HEX_DIGITS)


@functools.lru_cache(maxsize=4096)
def _is_project(name: str) -> bool:
    """:func:`is_valid_project_name`, remembered: a log names a few projects many times."""
    return is_valid_project_name(name)


def _is_apex_settings(method: str, uri: object) -> bool:
    """A settings write to the apex (the project is named in the body, not the host)."""
    return isinstance(uri, str) and is_settings_write(method, uri)


class _Fields(msgspec.Struct, gc=False):
    """The fields of a line as nginx writes them: ``t`` and ``rt`` numbers, the rest strings."""

    v: int
    t: float
    rt: float
    id: str
    project: str
    method: str
    uri: str
    ctype: str
    clen: str
    addr: str
    ua: str
    status: str
    body: str
    key: str = ""
    mint: str = ""
    keyhash: str = ""
    blob: str = ""
    file: str = ""
    filename: str = ""
    kv: str = ""


_decode_fields = msgspec.json.Decoder(_Fields).decode


def parse_line(line: bytes) -> Request:
    """Parse one line (without its newline) into a :class:`Request`.

    Raises :class:`LineError` naming the problem for anything that is not a
    well-formed version-1 line of an accepted write.

    The line is decoded straight into its typed fields (msgspec: no dict, no type
    check per field in Python). Any line that does not fit, or fails a check, is
    left to :func:`_parse_checked`, the reference: it returns the same request for
    anything this accepts, and says what is wrong with the rest.
    """
    try:
        # An ASCII line reads the same as Latin-1, and is decoded faster as bytes.
        f = _decode_fields(line if line.isascii() else line.decode("latin-1"))
        if (
            f.v == FORMAT_VERSION
            and _is_request_id(f.id)
            and f.method in WRITE_METHODS
            and _is_project(f.project)
            and _is_accepted(f.status)
        ):
            return _request(
                f.id,
                f.project,
                f.t,
                f.rt,
                f.method,
                f.uri,
                f.ctype,
                f.clen,
                f.addr,
                f.ua,
                f.body,
                f.key,
                f.mint,
                f.keyhash,
                f.blob,
                f.file,
                f.filename,
                f.kv,
            )
    except (msgspec.DecodeError, ValueError):
        pass
    return _parse_checked(line)


def _is_accepted(status: object) -> bool:
    """True for the status of a write nginx accepted: 2xx, or 303 (the apex form's redirect)."""
    return isinstance(status, str) and (status.startswith("2") or status == "303")


def _request(
    request_id: str,
    project: str,
    t: float | str,
    rt: float | str,
    method: str,
    uri: str,
    ctype: str,
    clen: str,
    addr: str,
    ua: str,
    body: str,
    key: str = "",
    mint: str = "",
    presented: str = "",
    blob: str = "",
    blob_file: str = "",
    filename: str = "",
    kv: str = "",
) -> Request:
    """A :class:`Request` from a line's checked fields: headers back to text, the body to bytes."""
    return Request(
        request_id,
        project,
        float(t) - float(rt),
        method,
        _text(uri),
        _text(ctype) or None,
        int(clen) if clen else None,
        addr,
        _text(ua) or None,
        body.encode("latin-1"),
        key,
        mint,
        presented,
        blob,
        blob_file,
        _text(filename),
        _text(kv),
    )


def _parse_checked(line: bytes) -> Request:
    """:func:`parse_line` field by field, for any line: a request, or LineError saying why."""
    try:
        fields = orjson.loads(line if line.isascii() else line.decode("latin-1"))
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise LineError("not a JSON object")
    try:
        version = fields["v"]
        if version != FORMAT_VERSION:
            raise LineError(f"unknown format version {version!r}")
        request_id = fields["id"]
        if not _is_request_id(request_id):
            raise LineError(f"bad request id {request_id!r}")
        project = fields["project"]
        method = fields["method"]
        if method not in WRITE_METHODS:
            raise LineError(f"not a write method: {method!r}")
        if not isinstance(project, str) or not (
            _is_project(project) or (project == "" and _is_apex_settings(method, fields["uri"]))
        ):
            raise LineError(f"bad project name {project!r}")
        status = fields["status"]
        if not _is_accepted(status):
            raise LineError(f"not an accepted request: status {status!r}")
        return _request(
            request_id,
            project,
            fields["t"],
            fields["rt"],
            method,
            fields["uri"],
            fields["ctype"],
            fields["clen"],
            fields["addr"],
            fields["ua"],
            fields["body"],
            fields.get("key", ""),
            fields.get("mint", ""),
            fields.get("keyhash", ""),
            fields.get("blob", ""),
            fields.get("file", ""),
            fields.get("filename", ""),
            fields.get("kv", ""),
        )
    except KeyError as exc:
        raise LineError(f"missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, UnicodeEncodeError) as exc:
        if isinstance(exc, LineError):
            raise
        raise LineError(f"bad field value: {exc}") from None
