"""Project names: the one rule that decides what may become a database file name."""

import re

PROJECT_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
PROJECT_NAME_RULE = "1 to 63 lowercase letters, digits or dashes, not starting or ending with a dash"


def is_valid_project_name(name: str) -> bool:
    """True when ``name`` is a project name: a DNS label in lowercase.

    This is the same rule nginx applies to the host name, checked again here
    because a project name becomes a file name (``data/NAME.db``).
    """
    return PROJECT_NAME_RE.fullmatch(name) is not None
