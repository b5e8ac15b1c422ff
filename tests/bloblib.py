"""What the blob tests share: a project with a write key, uploads, waiting for a blob."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import httpx

from .keyslib import bearer, claim, make_key


def blob_id(data: bytes) -> str:
    return "sha256-" + hashlib.sha256(data).hexdigest()


def writer(stack, project: str) -> str:
    """Claim ``project`` and make it a write key; the key, once nginx knows it."""
    owner = claim(stack, project)
    wait_owned_fresh(stack, project)
    key, _ = make_key(stack, project, owner, scope="write")
    deadline = time.monotonic() + 10
    while oversized(stack, project, key).startswith("HTTP/1.1 401"):  # 413 once nginx knows the key
        assert time.monotonic() < deadline, "nginx never knew the new write key"
        time.sleep(0.05)
    return key


def wait_owned_fresh(stack, project: str, timeout: float = 10) -> None:
    """keyslib.wait_owned, each probe on a connection of its own: a reload resets kept-alive ones."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.post(stack.url("/_project/keys"), content=b"{}", headers={"Host": stack.host(project)})
        if answer.json()["error"] != "the project has no owner key":
            return
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.02)


def oversized(stack, project: str, key: str, size: int = 64 * 1048576 + 1) -> str:
    """The answer (head and body) to an upload that announces ``size`` bytes and sends none."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as conn:
        conn.sendall(
            f"POST /_blobs HTTP/1.1\r\nHost: {stack.host(project)}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        return conn.recv(65536).decode()


def upload(
    stack,
    project: str,
    key: str | None,
    data: bytes,
    content_type: str = "application/octet-stream",
    **headers,
) -> httpx.Response:
    """``POST /_blobs`` on a connection of its own (a reload closes kept-alive ones)."""
    sent = {"Host": stack.host(project), "Content-Type": content_type, **headers}
    if key:
        sent["Authorization"] = bearer(key)["Authorization"]
    return httpx.post(stack.url("/_blobs"), content=data, headers=sent, timeout=60)


def wait_blob(stack, project: str | None, blob: str, timeout: float = 20, **headers) -> httpx.Response:
    """``GET /_blobs/ID`` (``/fetch/ID`` on the apex) once ingestd has stored the blob."""
    path = f"/_blobs/{blob}" if project else f"/fetch/{blob}"
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(stack.url(path), headers={"Host": stack.host(project), **headers}, timeout=30)
        if answer.status_code != 404:
            return answer
        assert json.loads(answer.text)["error"] == "no such blob", answer.text
        assert time.monotonic() < deadline, f"{blob} not served after {timeout}s"
        time.sleep(0.05)
