"""A row of a project table as JSON: every column, BLOBs as Datasette writes them."""

from __future__ import annotations

import base64


def json_value(value: object) -> object:
    """A column value for JSON: BLOBs the way Datasette writes them, base64-encoded."""
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode()}
    return value


def record_json(row: dict) -> dict:
    """A ``records`` row as JSON: every column, NULL user columns left out."""
    return {key: json_value(value) for key, value in row.items() if value is not None or key.startswith("_")}
