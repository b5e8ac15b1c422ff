"""A project's rules for its records: its type, and its JSON Schema.

Checked after nginx has answered 202, so a record that breaks a rule is not
lost: it becomes a :class:`~ingestd.records.Reject` whose reason says which
field and what was expected, kept with its body in the project's ``rejects``
table, and the request's status URL tells the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

import jsonschema_rs

from ..model.project import Settings
from ..model.record import Record, Reject
from .settings_write import compile_schema, error_location

MAX_ERRORS = 5
"""A reject's reason names at most this many schema errors (then how many more)."""


@dataclass(frozen=True)
class Rules:
    """What a record must be to be stored: the project's type and compiled schema."""

    type: str
    schema: jsonschema_rs.Validator | None

    @property
    def trivial(self) -> bool:
        """True when every record passes (type ``any``, no schema)."""
        return self.type == "any" and self.schema is None


def rules_for(settings: Settings) -> Rules:
    """The rules of a project with these (already checked) settings."""
    return Rules(settings.type, None if settings.schema is None else compile_schema(settings.schema))


def check(record: Record, rules: Rules) -> Record | Reject:
    """``record`` when it follows ``rules``, else a Reject saying which rule and where."""
    if rules.type == "json" and record.kind != "json":
        what = {"empty": "an empty body", "binary": "binary data"}.get(record.kind, f"a {record.kind} body")
        return _reject(record, f"the project takes JSON only (type json), and this is {what}", "not_json")
    if rules.type == "text" and isinstance(record.body, bytes):
        try:
            record.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = (
                "the project takes text only (type text), and this body is not UTF-8 "
                f"(bad byte at offset {exc.start})"
            )
            return _reject(record, reason, "not_text")
    if rules.schema is None:
        return record
    if record.kind not in ("json", "form", "multipart"):
        reason = (
            f"the project has a JSON Schema, and a {record.kind} body cannot be checked against it: send JSON"
        )
        return _reject(record, reason, "schema")
    errors = []
    try:
        for number, error in enumerate(rules.schema.iter_errors(record.value)):
            if number == MAX_ERRORS:
                errors.append("and more")
                break
            errors.append(f"{error_location(error.instance_path)}: {error.message}")
    except ValueError as exc:  # jsonschema-rs: "Recursion limit reached"
        return _reject(record, f"cannot be checked against the project's schema: {exc}", "schema")
    if not errors:
        return record
    return _reject(record, "does not match the project's schema: " + "; ".join(errors), "schema")


def _reject(record: Record, reason: str, code: str) -> Reject:
    return Reject(record.request, reason, record.body, code)
