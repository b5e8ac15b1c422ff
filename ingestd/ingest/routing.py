"""Which project a log line or a request is for: what the daemon, replay and the front tier route by.

A line names its project in its ``project`` field (the host it was posted to), found
without parsing the line. A settings write to the apex (``POST /_project`` on the
bare domain, the form) names it in its body instead: that rare line is parsed.
"""

from __future__ import annotations

from ..config import default_settings
from ..model.project import PROJECT_NAME_RULE, is_reserved_project_name, is_valid_project_name
from ..model.request import Request
from .logline import LineError, parse_line
from .settings_write import SettingsError, apply_change, read_change

PROJECT_FIELD = b'"project":"'
"""How a line's project field starts: nginx escapes every quote inside a value, so the
first of a line is the field."""


def route(line: bytes) -> str | None:
    """The project a log line is for, found without parsing the line; None if it names none.

    A settings write to the apex logs the project as ``""`` and names it in its
    body: that (rare) line is parsed.
    """
    start = line.find(PROJECT_FIELD)
    if start < 0:
        return None
    start += len(PROJECT_FIELD)
    name = line[start : line.find(b'"', start)].decode("latin-1")
    if name:
        return name
    try:
        return given_name(parse_line(line))
    except LineError:
        return None


def named_project(request: Request) -> str:
    """The project a settings write to the apex names in its ``name``; SettingsError if none.

    A missing or bad name is reported with every other problem of the write at once
    (as a new project's settings), so a form is corrected in one go."""
    change = read_change(request.body, request.content_type)
    name = change.get("name")
    if isinstance(name, str) and is_valid_project_name(name) and not is_reserved_project_name(name):
        return name
    if not isinstance(name, str) or not name:
        problem = "'name' is required: the project to create or change"
    elif not is_valid_project_name(name):
        problem = f"'name': {name!r} is not a project name ({PROJECT_NAME_RULE})"
    else:
        problem = f"'name': {name!r} is reserved and cannot be a project; choose another name"
    try:
        apply_change(default_settings(), change)
    except SettingsError as others:
        problem = f"{problem}; {others}"
    raise SettingsError(problem)


def given_name(request: Request) -> str:
    """The name an apex settings write gave, whatever it is, to file its reject under."""
    try:
        name = read_change(request.body, request.content_type).get("name")
    except SettingsError:
        return ""
    return name if isinstance(name, str) else ""
