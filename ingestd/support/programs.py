"""Find the Debian programs SmallTable drives: nginx and logrotate live in /usr/sbin; nginx's modules."""

from __future__ import annotations

import shutil
from pathlib import Path

SBIN_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/usr/local/bin"
INSTALL_HINT = "sudo apt-get install nginx libnginx-mod-http-js libnginx-mod-http-perl logrotate"
MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/lib64/nginx/modules", "/usr/local/nginx/modules")
"""Where Debian (and others) put nginx's dynamic modules."""


class ProgramNotFound(Exception):
    """A program SmallTable needs is not installed; the message says how to install it."""


def find_program(name: str) -> str:
    """The path of ``name``, searched on PATH and then in the sbin directories."""
    found = shutil.which(name) or shutil.which(name, path=SBIN_SEARCH_PATH)
    if not found:
        raise ProgramNotFound(f"{name} is not installed. Install it with:\n    {INSTALL_HINT}")
    return found


def find_nginx_module(file: str, what: str) -> str:
    """The path of one of nginx's dynamic modules (``file``, e.g. ``ngx_http_js_module.so``)."""
    for directory in MODULE_DIRS:
        path = Path(directory) / file
        if path.exists():
            return str(path)
    raise ProgramNotFound(f"nginx's {what} module is not installed. Install it with:\n    {INSTALL_HINT}")
