"""The log-line parser: any body nginx can log comes back byte for byte."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestd.ingest.logline import LineError, _parse_checked, parse_line

from .linelib import RID, make_line


def test_fields_of_a_line():
    request = parse_line(make_line(b'{"a":1}', ctype="application/json"))
    assert request.request_id == RID
    assert request.project == "demo"
    assert request.received == pytest.approx(1795250368.587)
    assert (request.method, request.path, request.query) == ("POST", "/notes", "x=1")
    assert (request.content_type, request.content_length) == ("application/json", 7)
    assert (request.remote_addr, request.user_agent) == ("127.0.0.1", "curl/8")
    assert request.body == b'{"a":1}'


def test_uri_without_query_and_empty_headers():
    request = parse_line(make_line(uri="/", ctype="", clen="", ua=""))
    assert (request.path, request.query) == ("/", None)
    assert (request.content_type, request.content_length, request.user_agent) == (None, None, None)


def test_every_byte_value_round_trips():
    body = bytes(range(256)) * 2
    assert parse_line(make_line(body)).body == body


@given(st.binary(max_size=4096))
def test_any_body_round_trips(body):
    assert parse_line(make_line(body)).body == body


def test_utf8_user_agent_is_read_as_text():
    assert parse_line(make_line(ua="Mozilla ✓")).user_agent == "Mozilla ✓"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"garbage", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (make_line()[:-20], "not JSON"),
        (make_line().replace(b'"v":1', b'"v":2'), "unknown format version 2"),
        (make_line(id="xyz"), "bad request id 'xyz'"),
        (make_line(id="A" * 32), "bad request id 'AAAA"),
        (make_line(id="0" * 31 + "-"), "bad request id '0000"),
        (make_line(id="0" * 32 + "\n"), "bad request id '0000"),
        (make_line().replace(b'"id":"', b'"id":1,"x":"'), "bad request id 1"),
        (make_line(project="../etc"), "bad project name '../etc'"),
        (make_line(project="Demo"), "bad project name 'Demo'"),
        (make_line(method="GET"), "not a write method: 'GET'"),
        (make_line(status="413"), "not an accepted request: status '413'"),
        (make_line(clen="abc"), "bad field value"),
        (make_line().replace(b'"ua"', b'"xx"'), "missing field 'ua'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_lines_say_why(line, reason):
    with pytest.raises(LineError) as raised:
        parse_line(line)
    assert str(raised.value).startswith(reason)


def test_line_is_valid_json_after_latin1_decoding():
    """The contract docs/log-format.md states: decode as Latin-1, then it is JSON."""
    body = b"\xff\xfe\x00\x7f\x80 caf\xc3\xa9"
    fields = json.loads(make_line(body).decode("latin-1"))
    assert fields["body"].encode("latin-1") == body


def test_project_with_a_trailing_newline_is_refused():
    with pytest.raises(LineError, match="bad project name"):
        parse_line(make_line(project="demo\n"))


# The fast path (typed decoding) against the reference parser, on lines of every shape.

_field_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["POST", "GET", "DELETE", "202", "303", "413", "", "demo", "Demo", RID, "12", "-1"]),
)
_json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=False), _field_values
)
_KEYS = ("v", "t", "rt", "id", "project", "method", "uri", "ctype", "clen", "addr", "ua", "status", "body")


def _outcome(parse, line: bytes) -> object:
    try:
        return parse(line)
    except LineError as exc:
        return f"LineError: {exc}"


@given(
    st.dictionaries(st.sampled_from(_KEYS), _json_values, max_size=4),
    st.sets(st.sampled_from(_KEYS), max_size=2),
)
def test_the_fast_path_and_the_reference_parser_agree_on_any_fields(changed, missing):
    fields = {"v": 1, "t": 1795250368.589, "rt": 0.002, "id": RID, "project": "demo", "method": "POST"}
    fields |= {"uri": "/", "ctype": "", "clen": "", "addr": "::1", "ua": "", "status": "202", "body": ""}
    fields |= changed
    for key in missing:
        del fields[key]
    text = json.dumps(fields, ensure_ascii=False)
    for line in (text.encode("utf-8", "replace"), text.encode("latin-1", "replace")):
        assert _outcome(parse_line, line) == _outcome(_parse_checked, line)


@given(st.binary(max_size=300), st.sampled_from([b"", b"\xe9", b"\\ud800", b'"', b"\\"]))
def test_the_fast_path_and_the_reference_parser_agree_on_any_body_or_garbage(body, odd):
    for line in (make_line(body), make_line(body)[:-2] + odd + b'"}', odd + make_line(body)):
        assert _outcome(parse_line, line) == _outcome(_parse_checked, line)
