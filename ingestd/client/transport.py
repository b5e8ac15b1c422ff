"""HTTP for the terminal client: ``*.localhost`` on loopback, answers as plain data, errors in words.

curl and browsers resolve every ``*.localhost`` name to this machine without
asking DNS (RFC 6761); the client does the same, and sends the name the user
typed as the ``Host`` header, so nginx sees exactly what curl would send.
Only the standard library is used (:mod:`http.client`).
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "smalltable-client"


class ClientError(Exception):
    """What went wrong, in words for the terminal; ``exit_code`` is what the command exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    """Where a URL points: the connection to open and the request line's path."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def address(self) -> str:
        """The host to connect to: loopback for ``localhost`` and ``*.localhost``, as curl does."""
        name = self.host.lower().rstrip(".")
        return "127.0.0.1" if name == "localhost" or name.endswith(".localhost") else self.host

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def target(url: str) -> Target:
    """A URL as typed (``http://`` may be left out) → a :class:`Target`; ClientError if it is none."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http(s) URL: {url!r} (for example http://demo.localhost:8080/)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ClientError(f"not a port number in {url!r}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, parts.hostname, port, path)


def open_connection(where: Target, timeout: float) -> http.client.HTTPConnection:
    """A connection to ``where`` (not yet connected)."""
    if where.scheme == "https":
        return http.client.HTTPSConnection(where.address, where.port, timeout=timeout)
    return http.client.HTTPConnection(where.address, where.port, timeout=timeout)


def send(
    where: Target,
    method: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send one request; the open connection and its response, whose body is still to be read."""
    connection = open_connection(where, timeout)
    all_headers = {"Host": where.host_header, "User-Agent": USER_AGENT, **(headers or {})}
    try:
        connection.request(method, where.path, body=body, headers=all_headers)
        return connection, connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise ClientError(failure(where, exc)) from None


def failure(where: Target, exc: BaseException) -> str:
    """Why a request to ``where`` got no answer, in words."""
    at = f"{where.host}:{where.port}" + (f" ({where.address})" if where.address != where.host else "")
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {at}: nothing listens there (is SmallTable running? smalltable up)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer from {at} in time"
    if isinstance(exc, socket.gaierror):
        return f"cannot find the host {where.host}: {exc.strerror}"
    return f"the request to {at} failed: {exc}"


def fetch(
    where: Target,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    limit: int = 16 * 1024 * 1024,
) -> tuple[int, dict[str, str], bytes]:
    """One whole answer (at most ``limit`` bytes of body): status, headers, body."""
    connection, response = send(where, method, body, headers, timeout)
    try:
        data = response.read(limit + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise ClientError(failure(where, exc)) from None
    finally:
        connection.close()
    if len(data) > limit:
        raise ClientError(f"the answer from {where.url} is larger than {limit} bytes")
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def error_of(status: int, body: bytes) -> str:
    """An error answer in one line: its JSON ``error`` (and what to do) or its first text."""
    try:
        answer = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip().splitlines()
        return f"HTTP {status}: {text[0][:200] if text else 'no body'}"
    if not isinstance(answer, dict):
        return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    hints = [
        f"{key}: {value}" for key, value in answer.items() if key not in ("error", "status", "ok", "title")
    ]
    return f"HTTP {status}: {answer.get('error')}" + "".join(f"\n  {hint}" for hint in hints)
