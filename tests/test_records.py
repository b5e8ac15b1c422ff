"""Tests for ingestd.records: a logged Request into a Record or a Reject.

Multipart bodies are written out byte by byte here, so these tests do not
depend on the parser they check.
"""

import json
import re
from types import EllipsisType
from urllib.parse import parse_qsl

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import ingestd.ingest.records as records_module
from ingestd.ingest.records import build
from ingestd.model.record import REJECT_CODES, FilePart, Record, Reject
from ingestd.model.request import Request

ALL_BYTES = bytes(range(256))


def make_request(
    body: bytes = b"",
    content_type: str | None = None,
    content_length: int | EllipsisType | None = ...,
) -> Request:
    """A POST to project "demo"; content_length is the body's length unless given."""
    return Request(
        request_id="0123456789abcdef0123456789abcdef",
        project="demo",
        received=1700000000.25,
        method="POST",
        uri="/hooks/github?attempt=1",
        content_type=content_type,
        content_length=len(body) if content_length is ... else content_length,
        remote_addr="203.0.113.7",
        user_agent="curl/8.5.0",
        body=body,
    )


def build_record(body: bytes, content_type: str | None = None) -> Record:
    result = build(make_request(body, content_type))
    assert isinstance(result, Record), result
    return result


def build_reject(body: bytes, content_type: str | None = None) -> Reject:
    result = build(make_request(body, content_type))
    assert isinstance(result, Reject), result
    return result


# Whole-body check


def test_body_shorter_than_content_length_is_rejected():
    request = make_request(b"", "application/json", content_length=1048576)
    assert build(request) == Reject(
        request, "body not captured whole: the log holds 0 of 1048576 bytes", "", "body_not_captured"
    )


def test_truncated_json_is_rejected_for_its_length_not_its_syntax():
    request = make_request(b'{"a": [1, 2', "application/json", content_length=4096)
    result = build(request)
    assert isinstance(result, Reject)
    assert result.reason == "body not captured whole: the log holds 11 of 4096 bytes"
    assert result.body == '{"a": [1, 2'


def test_truncated_binary_reject_keeps_the_bytes():
    request = make_request(b"\xff\x00\x01", None, content_length=10)
    assert build(request) == Reject(
        request, "body not captured whole: the log holds 3 of 10 bytes", b"\xff\x00\x01", "body_not_captured"
    )


def test_no_content_length_means_no_length_check():
    request = make_request(b"hello", "text/plain", content_length=None)
    assert build(request) == Record(request, "hello", "text", {}, [])


# Declared JSON: objects and value conversions


def test_json_object_fields_are_sqlite_ready():
    body = (
        '{"text": "héllo ☃", "ключ": "значение", "int": 42, "neg": -7, "float": 1.5,'
        ' "exp": 1e-3, "whole_float": 2.0, "yes": true, "no": false, "nothing": null,'
        ' "object": {"b": [1, 2], "c": "é"}, "array": [true, null, "x"],'
        ' "max": 9223372036854775807, "min": -9223372036854775808,'
        ' "over": 9223372036854775808, "under": -9223372036854775809,'
        ' "huge": 123456789012345678901234567890,'
        ' "nested_huge": {"n": -123456789012345678901234567890},'
        ' "": "empty key", "a b.c": "kept as given"}'
    ).encode()
    record = build_record(body, "application/json")
    assert record.kind == "json"
    assert record.body == body.decode()
    assert record.files == []
    assert record.fields == {
        "text": "héllo ☃",
        "ключ": "значение",
        "int": 42,
        "neg": -7,
        "float": 1.5,
        "exp": 0.001,
        "whole_float": 2.0,
        "yes": 1,
        "no": 0,
        "nothing": None,
        "object": '{"b":[1,2],"c":"é"}',
        "array": '[true,null,"x"]',
        "max": 9223372036854775807,
        "min": -9223372036854775808,
        "over": "9223372036854775808",
        "under": "-9223372036854775809",
        "huge": "123456789012345678901234567890",
        "nested_huge": '{"n":-123456789012345678901234567890}',
        "": "empty key",
        "a b.c": "kept as given",
    }
    assert type(record.fields["yes"]) is int
    assert type(record.fields["no"]) is int
    assert type(record.fields["whole_float"]) is float


def test_json_integers_beyond_64_bits_keep_every_digit():
    record = build_record(b'{"id": 18446744073709551616, "ns": 1700000000123456789}', "application/json")
    assert record.fields == {"id": "18446744073709551616", "ns": 1700000000123456789}


def test_json_nested_deeper_than_orjson_writes_is_still_stored():
    body = b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}"
    record = build_record(body, "application/json")
    assert record.fields == {"deep": "[" * 300 + "]" * 300}


def test_json_array_has_no_fields():
    record = build_record(b'[{"a": 1}, 2, 123456789012345678901234567890]', "application/json")
    assert record.kind == "json"
    assert record.body == '[{"a": 1}, 2, 123456789012345678901234567890]'
    assert record.fields == {}


def test_json_scalars_have_no_fields():
    assert build_record(b'"just a string"', "application/json").fields == {}
    assert build_record(b"42", "application/json").kind == "json"


def test_json_content_type_is_case_insensitive_with_parameters():
    record = build_record(b'{"a": 1}', "Application/JSON; charset=UTF-8")
    assert (record.kind, record.fields) == ("json", {"a": 1})


def test_vendor_json_types_are_json():
    record = build_record(b'{"data": {"type": "user"}}', "application/vnd.api+json")
    assert (record.kind, record.fields) == ("json", {"data": '{"type":"user"}'})
    assert build_record(b'{"title": "x"}', "application/problem+json").fields == {"title": "x"}


# Declared JSON: rejects


def assert_malformed_json(reject, char: int) -> None:
    """SmallTable's part of the reason (``malformed JSON: ``, then the parser's own
    words, which change with its version) and the position the parser names."""
    prefix = "malformed JSON: "
    assert reject.reason.startswith(prefix) and len(reject.reason) > len(prefix), reject.reason
    assert re.search(rf"\b{char}\b", reject.reason[len(prefix) :]), reject.reason
    assert reject.code == "malformed_json"


def test_malformed_json_is_rejected_with_position():
    reject = build_reject(b'{"a": 1,}', "application/json")
    assert_malformed_json(reject, char=7)
    assert reject.body == '{"a": 1,}'


def test_unterminated_json_is_rejected():
    assert_malformed_json(build_reject(b'{"a": 1', "application/json"), char=7)


def test_empty_json_body_is_rejected():
    assert build_reject(b"", "application/json").reason == "empty body sent as application/json"
    reject = build_reject(b"", "application/vnd.api+json")
    assert (reject.reason, reject.body) == ("empty body sent as application/vnd.api+json", "")


def test_json_that_is_not_utf8_is_rejected_with_offset():
    reject = build_reject(b'{"a": "\xff"}', "application/json")
    assert reject.reason == "JSON body is not valid UTF-8 (bad byte at offset 7)"
    assert reject.body == b'{"a": "\xff"}'


def test_nan_and_infinity_are_not_json():
    assert_malformed_json(build_reject(b'{"a": NaN}', "application/json"), char=6)
    assert_malformed_json(build_reject(b"[Infinity]", "application/json"), char=1)


def test_numbers_too_large_for_a_float_are_rejected():
    assert_malformed_json(build_reject(b'{"a": 1e400}', "application/json"), char=6)


def test_lone_surrogate_escape_is_rejected():
    assert_malformed_json(build_reject(b'{"a": "\\ud800"}', "application/json"), char=7)


def test_deeply_nested_json_is_rejected():
    reject = build_reject(b"[" * 100000, "application/json")
    assert_malformed_json(reject, char=1025)
    assert reject.body == "[" * 100000


def test_json_too_deep_to_store_as_a_field_is_rejected():
    body = b'{"a": ' + b"[" * 1020 + b"]" * 1020 + b"}"
    assert build_reject(body, "application/json").reason == "malformed JSON: nested too deeply"


def test_deep_json_with_a_long_number_is_rejected():
    body = b"[" * 1020 + b"12345678901234567890123" + b"]" * 1020
    assert build_reject(body, "application/json").reason == "malformed JSON: nested too deeply"


# Text, binary and empty bodies


def test_plain_text():
    record = build_record("héllo wörld\n".encode(), "text/plain; charset=utf-8")
    assert record == Record(record.request, "héllo wörld\n", "text", {}, [])


def test_no_content_type_text():
    assert build_record(b"ping").kind == "text"


def test_undeclared_json_is_detected():
    record = build_record(b'\n  {"event": "push", "ok": true}', "text/plain")
    assert (record.kind, record.fields) == ("json", {"event": "push", "ok": 1})
    assert build_record(b"[1, 2]").kind == "json"


def test_undeclared_malformed_json_is_text_not_a_reject():
    record = build_record(b'{"a": 1', "text/plain")
    assert (record.kind, record.body, record.fields) == ("text", '{"a": 1', {})
    assert build_record(b'{"a": NaN}').kind == "text"
    assert build_record(b"[" * 100000).kind == "text"


def test_all_byte_values_are_binary_and_exact():
    record = build_record(ALL_BYTES, "application/octet-stream")
    assert record == Record(record.request, ALL_BYTES, "binary", {}, [])
    assert build_record(ALL_BYTES).body == ALL_BYTES


def test_latin1_text_is_binary():
    record = build_record("café".encode("latin-1"), "text/plain; charset=iso-8859-1")
    assert (record.kind, record.body) == ("binary", b"caf\xe9")


def test_empty_body():
    assert build_record(b"") == Record(build_record(b"").request, "", "empty", {}, [])
    assert build_record(b"", "text/plain").kind == "empty"
    assert build_record(b"", "application/x-www-form-urlencoded").kind == "empty"


# URL-encoded forms (and what curl -d sends under that label)

FORM = "application/x-www-form-urlencoded"


def test_form_fields_with_repeated_key_as_json_array():
    record = build_record(b"a=1&b=two&a=3", FORM)
    assert record.kind == "form"
    assert record.body == "a=1&b=two&a=3"
    assert record.fields == {"a": '["1","3"]', "b": "two"}


def test_form_values_are_decoded():
    record = build_record(b"name=J%C3%BCrgen+M&empty=&bad=%FF", FORM)
    assert record.fields == {"name": "Jürgen M", "empty": "", "bad": "\ufffd"}


_FORM_PIECES = ["a", "Z", "0", "=", "+", "%", "%2B", "%26", "%3D", "%C3%A9", "%FF", "%e2%82"]
_FORM_PIECES += ["%G1", "é", "€", ";", " "]
_NAME_PIECES = [piece for piece in _FORM_PIECES if piece != "="]
FORM_NAME = st.lists(st.sampled_from(_NAME_PIECES), min_size=1, max_size=6).map("".join)
FORM_VALUE = st.lists(st.sampled_from(_FORM_PIECES), max_size=6).map("".join)
FORM_TEXT = st.lists(st.tuples(FORM_NAME, FORM_VALUE), min_size=1, max_size=5).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
)


@given(FORM_TEXT)
def test_form_fields_decode_as_the_standard_library_decodes_them(text):
    """Forms are split and decoded by SmallTable's own loop (faster): exactly parse_qsl's pairs."""
    pairs = parse_qsl(text, keep_blank_values=True)
    assert records_module._form_pairs(text) == pairs
    record = build_record(text.encode(), FORM)
    assert record.kind == "form"
    assert record.fields == records_module._group(pairs)[0]


def test_curl_plain_text_under_form_type_is_text():
    record = build_record(b"just some text", FORM)
    assert (record.kind, record.body, record.fields) == ("text", "just some text", {})


def test_form_type_with_an_incomplete_pair_is_text():
    assert build_record(b"a=1&&b=2", FORM).kind == "text"
    assert build_record(b"=nameless", FORM).kind == "text"
    assert build_record(b"a=1&flag", FORM).kind == "text"


def test_curl_json_under_form_type_is_json():
    record = build_record(b'{"a":1}', FORM)
    assert (record.kind, record.fields) == ("json", {"a": 1})


def test_json_with_equals_signs_under_form_type_is_json():
    record = build_record(b'{"url": "https://example.test/?a=b&c=d"}', FORM)
    assert (record.kind, record.fields) == ("json", {"url": "https://example.test/?a=b&c=d"})


def test_binary_under_form_type_is_binary():
    assert build_record(b"a=\xff", FORM).kind == "binary"


# multipart/form-data


def test_multipart_text_field_and_binary_file():
    file_content = ALL_BYTES + b"\r\n--XyY\r\n\r\n--Xy\r\nend\r\n"
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="comment"\r\n'
        b"\r\n"
        b"two\r\nlines\r\n"
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="upload"; filename="all.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n"
        b"\r\n" + file_content + b"\r\n"
        b"--XyZ--\r\n"
    )
    record = build_record(body, "multipart/form-data; boundary=XyZ")
    assert record.kind == "multipart"
    assert record.body == body
    assert record.fields == {"comment": "two\r\nlines", "upload": "all.bin"}
    assert record.files == [FilePart("upload", "all.bin", "application/octet-stream", file_content)]


def test_multipart_utf8_body_is_text():
    body = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--b--\r\n'
    record = build_record(body, "multipart/form-data; boundary=b")
    assert (record.body, record.fields, record.files) == (body.decode(), {"a": "1"}, [])


def test_multipart_non_ascii_filename_and_field_name():
    body = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="pi\xc3\xa8ce";'
        b' filename="r\xc3\xa9sum\xc3\xa9 \xe2\x98\x83.pdf"\r\n'
        b"Content-Type: application/pdf\r\n"
        b"\r\n"
        b"%PDF-1.7\r\n"
        b"--b--\r\n"
    )
    record = build_record(body, "multipart/form-data; boundary=b")
    assert record.fields == {"pièce": "résumé ☃.pdf"}
    assert record.files == [FilePart("pièce", "résumé ☃.pdf", "application/pdf", b"%PDF-1.7")]


def test_multipart_repeated_fields_and_files_are_json_arrays():
    body = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="tag"\r\n\r\n'
        b"red\r\n"
        b"--b\r\n"
        b'Content-Disposition: form-data; name="tag"\r\n\r\n'
        b"gr\xc3\xbcn\r\n"
        b"--b\r\n"
        b'Content-Disposition: form-data; name="docs"; filename="a.txt"\r\n\r\n'
        b"A\r\n"
        b"--b\r\n"
        b'Content-Disposition: form-data; name="docs"; filename="b.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"B\r\n"
        b"--b--\r\n"
    )
    record = build_record(body, "multipart/form-data; boundary=b")
    assert record.fields == {"tag": '["red","grün"]', "docs": '["a.txt","b.txt"]'}
    assert record.files == [
        FilePart("docs", "a.txt", None, b"A"),
        FilePart("docs", "b.txt", "text/plain", b"B"),
    ]


def test_multipart_empty_filename_is_still_a_file():
    body = (
        b"--b\r\n"
        b'Content-Disposition: form-data; name="attachment"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"\r\n"
        b"--b--\r\n"
    )
    record = build_record(body, "multipart/form-data; boundary=b")
    assert record.fields == {"attachment": ""}
    assert record.files == [FilePart("attachment", "", "application/octet-stream", b"")]


def test_multipart_field_that_is_not_utf8_is_bytes():
    body = b'--b\r\nContent-Disposition: form-data; name="raw"\r\n\r\n\xff\xfe\r\n--b--\r\n'
    record = build_record(body, "multipart/form-data; boundary=b")
    assert record.body == body
    assert record.fields == {"raw": b"\xff\xfe"}


def test_multipart_quoted_boundary():
    body = b'--=_part 1; x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--=_part 1; x--\r\n'
    record = build_record(body, 'Multipart/Form-Data; charset=utf-8; Boundary="=_part 1; x"')
    assert (record.kind, record.fields) == ("multipart", {"a": "1"})


def test_multipart_without_boundary_is_rejected():
    reject = build_reject(b"--b\r\n", "multipart/form-data")
    assert reject.reason == "malformed multipart: no boundary in the content type"
    assert reject.body == "--b\r\n"


def test_multipart_without_closing_boundary_is_rejected():
    body = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
    reject = build_reject(body, "multipart/form-data; boundary=b")
    assert reject.reason == "malformed multipart: the body ends before the closing boundary"


def test_multipart_empty_body_is_rejected():
    reject = build_reject(b"", "multipart/form-data; boundary=b")
    assert reject.reason == "malformed multipart: the body ends before the closing boundary"


def test_multipart_body_that_is_not_multipart_is_rejected():
    reject = build_reject(b"hello", "multipart/form-data; boundary=b")
    assert reject.reason == "malformed multipart: Expected boundary character 45, got 104 at index 2"
    assert reject.body == "hello"


def test_multipart_part_without_name_is_rejected():
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    reject = build_reject(body, "multipart/form-data; boundary=b")
    assert reject.reason == "malformed multipart: part 1 has no name"


# Properties over arbitrary input

CONTENT_TYPES = [
    None,
    "application/json",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "multipart/form-data",
    "text/plain",
    "application/octet-stream",
]


@given(body=st.binary(), content_type=st.sampled_from(CONTENT_TYPES))
def test_any_body_gives_a_result_holding_the_exact_bytes(body, content_type):
    result = build(make_request(body, content_type))
    stored = result.body if isinstance(result.body, bytes) else result.body.encode()
    assert stored == body


@given(content=st.binary())
def test_multipart_file_content_is_byte_exact(content):
    boundary = b"hypothesis-7f3a"
    assume(b"\r\n--" + boundary not in b"\r\n" + content + b"\r\n")
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n'
        + content
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    record = build_record(body, "multipart/form-data; boundary=" + boundary.decode())
    assert record.files == [FilePart("f", "f.bin", None, content)]


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"{bad", "application/json", "malformed_json"),
        (b"\xff{}", "application/json", "json_not_utf8"),
        (b"", "application/json", "empty_json"),
        (b"x", "multipart/form-data", "malformed_multipart"),
    ],
)
def test_every_reject_names_its_kind_of_reason(body, content_type, code):
    reject = build(make_request(body, content_type))
    assert isinstance(reject, Reject)
    assert reject.code == code
    assert reject.code in REJECT_CODES


# msgspec (the fast path) against orjson (the reference, whose errors are shown).

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _parsed(data: bytes) -> str:
    """What parsing gives, exactly: the value's repr (-0.0, 1 and 1.0 apart) or the error."""
    try:
        return repr(records_module._load_json(data))
    except ValueError as exc:
        return f"ValueError: {exc}"


def _parsed_checked(data: bytes) -> str:
    try:
        return repr(records_module._load_json_checked(data))
    except ValueError as exc:
        return f"ValueError: {exc}"


@given(_json, st.sampled_from(["", " ", "1e999", "NaN", "\\ud800", "]", ",", "-0.0", "00"]))
def test_json_parses_to_the_same_value_or_error_on_either_path(value, odd):
    text = json.dumps(value, ensure_ascii=False)
    for data in (text, text + odd, odd + text, text[: len(text) // 2] + odd):
        data = data.encode()
        assert _parsed(data) == _parsed_checked(data)


def test_deep_nesting_is_refused_with_a_reason_on_either_path():
    for depth in (300, 1100, 5000):
        data = b"[" * depth + b"]" * depth
        assert _parsed(data) == _parsed_checked(data)
