"""Find the Debian programs SmallTable drives: nginx and logrotate live in /usr/sbin."""

from __future__ import annotations

import shutil

SBIN_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/usr/local/bin"
INSTALL_HINT = "sudo apt-get install nginx logrotate"


class ProgramNotFound(Exception):
    """A program SmallTable needs is not installed; the message says how to install it."""


def find_program(name: str) -> str:
    """The path of ``name``, searched on PATH and then in the sbin directories."""
    found = shutil.which(name) or shutil.which(name, path=SBIN_SEARCH_PATH)
    if not found:
        raise ProgramNotFound(f"{name} is not installed. Install it with:\n    {INSTALL_HINT}")
    return found
