"""Project settings: what a POST /_project body may say, and the errors people get."""

from __future__ import annotations

import pytest

from ingestd.config import default_settings
from ingestd.ingest.settings_write import SettingsError, apply_change, compile_schema, read_change
from ingestd.model.project import is_settings_write

UNCLAIMED = default_settings()
OWNED = default_settings().__class__("ann@example.com", "", "any", None, 180, 100)


def error(current, change) -> str:
    with pytest.raises(SettingsError) as raised:
        apply_change(current, change)
    return str(raised.value)


def test_creating_needs_only_an_owner_and_keeps_the_defaults():
    settings, changed = apply_change(default_settings("json", 30, 5), {"owner": " ann@example.com "})
    assert (settings.owner, settings.type, settings.retention_days, settings.quota_mb) == (
        "ann@example.com",
        "json",
        30,
        5,
    )
    assert changed == ["owner"]


def test_every_setting_at_once():
    schema = {"type": "object", "required": ["user"]}
    change = {
        "owner": "ann",
        "description": "button clicks",
        "type": "json",
        "schema": schema,
        "retention_days": 30,
        "quota_mb": 2.5,
        "write": "key",
        "read": "private",
        "store_client": True,
    }
    settings, changed = apply_change(UNCLAIMED, change)
    assert settings.as_dict() == change
    assert changed == [*change]


def test_a_change_keeps_what_it_does_not_mention():
    settings, changed = apply_change(OWNED, {"quota_mb": 200})
    assert settings.owner == "ann@example.com" and settings.quota_mb == 200
    assert changed == ["quota_mb"]
    assert apply_change(OWNED, {"quota_mb": 100}) == (OWNED, [])


def test_owner_is_required_to_create_or_claim():
    message = error(UNCLAIMED, {"type": "json"})
    assert "'owner' is required" in message
    assert "'owner'" in error(UNCLAIMED, {"owner": ""})
    assert "nobody owns" in error(UNCLAIMED, {"owner": "unclaimed"})


def test_bad_values_are_all_named_with_what_was_expected():
    message = error(
        OWNED,
        {"type": "xml", "retention_days": -1, "quota_mb": 0, "retension_days": 3, "owner": 7},
    )
    assert "'type': expected one of json, text, any, got 'xml'" in message
    assert "'retention_days': expected a whole number of days from 1 to 36500, got -1" in message
    assert "'quota_mb': expected a number of MiB above 0" in message
    assert "unknown setting 'retension_days' (did you mean 'retention_days'?)" in message
    assert "'owner': expected a non-empty string" in message


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "nosuch"}, "not a valid JSON Schema"),
        ({"$ref": "https://example.com/schema.json"}, "references to other documents are not allowed"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "only JSON Schema draft 2020-12"),
        ({"type": "string", "pattern": "(unclosed"}, "not a valid JSON Schema"),
        ([1, 2], "a JSON Schema is an object"),
        ("{not json", "not JSON"),
    ],
)
def test_a_schema_that_is_not_json_schema_is_refused(schema, expected):
    assert expected in error(OWNED, {"schema": schema})


def test_a_schema_can_be_removed_with_null():
    with_schema, _ = apply_change(OWNED, {"schema": {"type": "object"}})
    without, changed = apply_change(with_schema, {"schema": None})
    assert without.schema is None and changed == ["schema"]


def test_schema_with_local_definitions_compiles():
    validator = compile_schema(
        {"$defs": {"n": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}
    )
    assert validator.is_valid({"a": 1}) and not validator.is_valid({"a": "1"})


def test_the_apex_form_sends_text_that_becomes_typed_settings():
    change = read_change(
        b"name=demo&owner=ann&description=&type=json&retention_days=30&quota_mb=0.5&schema=",
        "application/x-www-form-urlencoded",
    )
    assert change["schema"] is None and change["description"] == ""
    settings, _ = apply_change(UNCLAIMED, change)
    assert (settings.type, settings.retention_days, settings.quota_mb, settings.schema) == (
        "json",
        30,
        0.5,
        None,
    )
    change = read_change(
        b"owner=ann&schema=%7B%22type%22%3A%22object%22%7D", "application/x-www-form-urlencoded"
    )
    assert apply_change(UNCLAIMED, change)[0].schema == {"type": "object"}


def test_curl_dash_d_json_is_read_as_json_whatever_its_content_type():
    assert read_change(b'{"owner":"ann"}', "application/x-www-form-urlencoded") == {"owner": "ann"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"", "empty body"), (b"{bad", "not JSON"), (b"[1]", "must be a JSON object of settings, not an array")],
)
def test_a_body_that_is_not_settings_says_so(body, expected):
    with pytest.raises(SettingsError, match=expected):
        read_change(body, "application/json")


def test_only_a_post_or_put_to_the_settings_path_is_a_settings_write():
    assert is_settings_write("POST", "/_project") and is_settings_write("PUT", "/_project")
    assert not is_settings_write("DELETE", "/_project")
    assert not is_settings_write("POST", "/_projects") and not is_settings_write("POST", "/")
