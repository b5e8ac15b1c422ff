"""``smalltable post``, ``get`` and ``open``: a write and its outcome, a read, a page in the browser.

``post`` sends a body as curl would, but with a content type that says what
the body is (curl's ``-d`` labels everything a form); with ``wait`` it follows
the answer's status URL until the write is loaded, and exits non-zero when the
write was rejected or held, printing the reason.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
import webbrowser
from pathlib import Path
from typing import BinaryIO, TextIO

from .transport import ClientError, error_of, fetch, send, target

EXIT_REJECTED = 2
"""``post --wait``: the write was rejected (kept in the project's rejects)."""
EXIT_HELD = 3
"""``post --wait``: the write waits in the holding area (over quota, or no such project)."""
EXIT_PENDING = 4
"""``post --wait``: not loaded within the timeout."""
POLL_SECONDS = 0.1
RECORD_PATH = re.compile(r"^/[0-9]+$")
CHUNK_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
"""The most ``post`` reads into memory: far past any server's limit (its 413 says which)."""


def content_type_of(body: bytes, filename: str | None) -> str:
    """What the body is: by the file's name, else JSON, else UTF-8 text, else bytes."""
    if filename:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed:
            return guessed
    try:
        json.loads(body)
        return "application/json"
    except ValueError:
        pass
    try:
        body.decode("utf-8")
        return "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        return "application/octet-stream"


def post(url: str, body: bytes, filename: str | None, content_type: str | None, out: TextIO) -> dict:
    """POST ``body`` to ``url`` and print nginx's answer; the answer as a dict."""
    where = target(url)
    headers = {"Content-Type": content_type or content_type_of(body, filename), "Accept": "application/json"}
    status, _, answer = fetch(where, "POST", body, headers)
    if not 200 <= status < 300:
        raise ClientError(error_of(status, answer))
    out.write(answer.decode("utf-8", "replace"))
    return json.loads(answer)


def wait_for(status_url: str, timeout: float, out: TextIO) -> int:
    """Follow a status URL until the write is loaded; print the outcome; the exit code it means."""
    where = target(status_url)
    deadline = time.monotonic() + timeout
    while True:
        code, _, body = fetch(where, headers={"Accept": "application/json"})
        if code != 200:
            raise ClientError(error_of(code, body))
        outcome = json.loads(body)
        if outcome["status"] != "pending":
            break
        if time.monotonic() > deadline:
            raise ClientError(f"still pending after {timeout:g} s: {outcome.get('detail')}", EXIT_PENDING)
        time.sleep(POLL_SECONDS)
    out.write(body.decode("utf-8", "replace"))
    if outcome.get("did_you_mean"):
        out.write(
            f"# a new project: did you mean {outcome['did_you_mean']} ({outcome.get('did_you_mean_url')})?\n"
        )
    if outcome["status"] == "rejected":
        raise ClientError(f"rejected: {outcome.get('reason')}", EXIT_REJECTED)
    if outcome["status"] == "held":
        raise ClientError(f"held: {outcome.get('reason')}", EXIT_HELD)
    return 0


def get(url: str, as_json: bool, out: BinaryIO) -> None:
    """Copy what ``url`` answers to ``out`` as it arrives (an export can be large).

    A record's URL (``/7``) gives the body exactly as it was posted (``/7/raw``: an
    image can go straight to a file), or with ``as_json`` the record as JSON (``/7.json``)."""
    where = target(url)
    headers = {"Accept": "application/json" if as_json else "*/*"}
    path, mark, query = where.path.partition("?")
    if RECORD_PATH.match(path):
        suffix = ".json" if as_json else "/raw"
        where = target(f"{where.scheme}://{where.host_header}{path}{suffix}{mark}{query}")
    connection, response = send(where, "GET", headers=headers)
    try:
        if response.status >= 400:
            raise ClientError(error_of(response.status, response.read(CHUNK_BYTES)))
        last = b"\n"
        while chunk := response.read1(CHUNK_BYTES):
            out.write(chunk)
            last = chunk[-1:]
        if as_json and last != b"\n":
            out.write(b"\n")  # a record's JSON has no newline at its end: the prompt would follow it
        out.flush()
    finally:
        connection.close()


def read_body(source: str, stdin: BinaryIO, limit: int) -> tuple[bytes, str | None]:
    """The body to post from a file, or from stdin for ``-``; its file name; ClientError if too big."""
    if source == "-":
        body, name = stdin.read(limit + 1), None
    else:
        path = Path(source)
        try:
            with path.open("rb") as file:
                body = file.read(limit + 1)
        except OSError as exc:
            raise ClientError(f"cannot read {source}: {exc.strerror}") from None
        name = path.name
    if len(body) > limit:
        raise ClientError(f"the body is larger than {limit} bytes, more than SmallTable takes in one post")
    return body, name


def open_page(url: str) -> str:
    """Open ``url`` in the browser; the URL, for the terminal, when no browser can be started."""
    where = target(url)
    if not webbrowser.open(where.url):
        raise ClientError(f"no browser could be started here: open {where.url} yourself")
    return where.url
