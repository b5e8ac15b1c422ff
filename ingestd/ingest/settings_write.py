"""A settings write (``POST /_project``): its body read, every key checked, the change applied.

A project's settings are changed by a write like any other, ``POST /_project`` on
the project's host (or on the apex, naming the project in the body), so they
travel through the ingest log and a replay applies them in order. Each accepted
change becomes one row of the project's ``settings`` table (who, when, every
setting as it stood after the change, and which ones changed); the last row is
the project's current settings. A project with no row was created by its first
post and is ``unclaimed``, with the defaults.

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from contextlib import suppress
from dataclasses import replace
from urllib.parse import parse_qsl

import jsonschema_rs
import orjson

from ..model.project import (
    KEYS,
    MAX_DESCRIPTION,
    MAX_OWNER,
    MAX_QUOTA_MB,
    MAX_RETENTION_DAYS,
    READ_POLICIES,
    TYPES,
    UNCLAIMED,
    WRITE_POLICIES,
    Settings,
)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


class SettingsError(ValueError):
    """A settings change that cannot be applied; the message says which key and why."""


def read_change(body: bytes, content_type: str | None) -> dict[str, object]:
    """A settings write's body → ``{key: value}``: a JSON object, or a form (the apex page's).

    Form values are text: numbers and the schema are converted by :func:`apply_change`.
    """
    text = body.decode("utf-8", "replace")
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded" and not text.lstrip().startswith("{"):
        change: dict[str, object] = {}
        for name, value in parse_qsl(text, keep_blank_values=True):
            if value.strip() or name == "description":
                change[name] = value
            elif name == "schema":
                change[name] = None  # an empty box: no schema
        return change  # other empty boxes: keep the current value (or the default)
    if not text.strip():
        raise SettingsError('empty body: send a JSON object such as {"owner": "ann@example.com"}')
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"the body must be a JSON object of settings, not {_json_type(value)}")
    return value


def apply_change(current: Settings, change: dict[str, object]) -> tuple[Settings, list[str]]:
    """The settings after ``change``, and the keys whose value it changed.

    Keys not in ``change`` keep their value. The owner is required while the
    project is unclaimed. Raises :class:`SettingsError` naming every bad key.
    """
    problems: list[str] = []
    values: dict[str, object] = {}
    for key, raw in change.items():
        if key == "name":
            continue  # checked by the caller: it names the project, it is not a setting
        if key not in KEYS:
            hint = difflib.get_close_matches(key, KEYS, n=1)
            problems.append(f"unknown setting {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            continue
        try:
            values[key] = _CHECKS[key](raw)
        except SettingsError as exc:
            problems.append(f"{key!r}: {exc}")
    if not current.claimed and "owner" not in values and "owner" not in change:
        problems.append(
            "'owner' is required to create or claim a project: who can be asked about it "
            '(for example {"owner": "ann@example.com"})'
        )
    if problems:
        raise SettingsError("; ".join(problems))
    updated = replace(current, **values)
    changed = [key for key in KEYS if getattr(updated, key) != getattr(current, key)]
    return updated, changed


def _owner(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError("expected a non-empty string (an email address or a name)")
    value = value.strip()
    if len(value) > MAX_OWNER or not value.isprintable():
        raise SettingsError(f"expected at most {MAX_OWNER} printable characters")
    if value == UNCLAIMED:
        raise SettingsError(f"{UNCLAIMED!r} means nobody owns the project: give a real owner")
    return value


def _description(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise SettingsError(f"expected a string of at most {MAX_DESCRIPTION} characters")
    return value.strip()


def _type(value: object) -> str:
    if value not in TYPES:
        raise SettingsError(f"expected one of {', '.join(TYPES)}, got {_shown(value)}")
    return value


def _integer(value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, str):
        with_digits = value.strip()
        value = int(with_digits) if re.fullmatch(r"-?[0-9]{1,12}", with_digits) else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"expected {what} from {low} to {high}, got {_shown(value)}")
    return value


def _retention(value: object) -> int:
    return _integer(value, 1, MAX_RETENTION_DAYS, "a whole number of days")


def _quota(value: object) -> float:
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value.strip())
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_QUOTA_MB
    ):
        raise SettingsError(
            f"expected a number of MiB above 0 and at most {MAX_QUOTA_MB}, got {_shown(value)}"
        )
    return int(value) if float(value).is_integer() else float(value)


def _schema(value: object) -> object:
    if isinstance(value, str):  # from the form: the schema as JSON text
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise SettingsError(f"not JSON: {exc}") from None
    if value is None:
        return None
    compile_schema(value)
    return value


def _write(value: object) -> str:
    if value not in WRITE_POLICIES:
        raise SettingsError(f"expected one of {', '.join(WRITE_POLICIES)}, got {_shown(value)}")
    return value


def _read(value: object) -> str:
    if value not in READ_POLICIES:
        raise SettingsError(f"expected one of {', '.join(READ_POLICIES)}, got {_shown(value)}")
    return value


def _store_client(value: object) -> bool:
    if value in ("on", "true"):  # from the form
        return True
    if value in ("", "off", "false"):
        return False
    if not isinstance(value, bool):
        raise SettingsError(f"expected true or false, got {_shown(value)}")
    return value


_CHECKS = {
    "owner": _owner,
    "description": _description,
    "type": _type,
    "schema": _schema,
    "retention_days": _retention,
    "quota_mb": _quota,
    "write": _write,
    "read": _read,
    "store_client": _store_client,
}


def _refuse_remote(uri: str) -> object:
    raise SettingsError(f"references to other documents are not allowed ({uri}): put definitions in $defs")


def compile_schema(schema: object) -> jsonschema_rs.Validator:
    """A validator for ``schema``, a JSON Schema draft 2020-12; SettingsError when it is not one.

    jsonschema-rs (Rust) checks a record in microseconds and words its errors
    well; references are resolved inside the schema only, never fetched.
    """
    if not isinstance(schema, (dict, bool)):
        raise SettingsError(f"a JSON Schema is an object (or true/false), not {_json_type(schema)}")
    if isinstance(schema, dict) and schema.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        raise SettingsError(
            f"only JSON Schema draft 2020-12 is supported: leave out $schema, or give {DRAFT_2020_12!r}"
        )
    try:
        jsonschema_rs.meta.validate(schema)
        return jsonschema_rs.Draft202012Validator(schema, retriever=_refuse_remote)
    except jsonschema_rs.ValidationError as exc:
        if "retrieving it failed" in exc.message:  # our refusal to fetch, wrapped
            raise SettingsError(exc.message.partition("SettingsError: ")[2] or exc.message) from None
        where = _path(exc.instance_path)
        raise SettingsError(
            f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where != "the value" else "")
        ) from None
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        raise SettingsError(f"not a valid JSON Schema: {str(exc).splitlines()[0]}") from None


def _path(parts: list) -> str:
    """An error's location as people write it: ``items[2].name``; ``the value`` for the root."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the value"


def error_location(parts: list) -> str:
    """Where in a record a schema error is, for a reject's reason."""
    return "the record" if not parts else _path(parts)


def _json_type(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


def _shown(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
