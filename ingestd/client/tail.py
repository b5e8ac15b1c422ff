"""``smalltable tail``: a project's live tail (server-sent events), one record per line.

Each event's ``data`` (the record as JSON) is printed as it arrives. When the
connection drops (nginx reloads, Datasette restarts, the network blinks) the
tail connects again with ``Last-Event-ID`` set to the last record printed: the
records' ids are gapless, so nothing is missed and nothing is printed twice.
"""

from __future__ import annotations

import http.client
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from .transport import ClientError, Target, error_of, send, target

READ_TIMEOUT = 45.0
"""No byte for this long (the server sends a comment every 15 s) means the connection is gone."""
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Waits before connecting again, one per failure in a row; the last one repeats."""


OPENING = re.compile(r"^: .*: records after ([0-9]+)")


def tail_target(url: str) -> Target:
    """A project's URL (``http://demo.localhost:8080/``) or its ``/_tail`` URL → the tail's."""
    where = target(url)
    path, _, query = where.path.partition("?")
    if not path.rstrip("/").endswith("/_tail"):
        path = "/_tail"
    return target(f"{where.scheme}://{where.host_header}{path}" + (f"?{query}" if query else ""))


def events(lines: Iterator[bytes]) -> Iterator[tuple[str | None, str | None]]:
    """Server-sent events from a stream's lines: ``(id, data)`` for each; the tail's opening
    comment (``: demo: records after 42, …``) as ``("42", None)``; other comments skipped."""
    event_id, data = None, []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event_id, "\n".join(data)
            event_id, data = None, []
        elif line.startswith(":"):
            if match := OPENING.search(line):
                yield match[1], None
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


def _lines(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while line := response.readline(1 << 20):
        yield line


def tail(url: str, after: int | None, out: TextIO, err: TextIO = sys.stderr) -> None:
    """Print every record loaded after ``after`` (or from now), until interrupted.

    Once connected, a dropped connection or a 5xx (Datasette restarting) is retried;
    a first connection that fails, or a 4xx, is an error."""
    where = tail_target(url)
    last, failures, connected = after, 0, False
    while True:
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        try:
            connection, response = send(where, "GET", headers=headers, timeout=READ_TIMEOUT)
        except ClientError as exc:
            if not connected:
                raise
            err.write(f"{exc}; trying again\n")
        else:
            try:
                if response.status != 200 and not (connected and response.status >= 500):
                    raise ClientError(error_of(response.status, response.read(4096)))
                if response.status == 200:
                    connected, failures = True, 0
                    for event_id, data in events(_lines(response)):
                        if data is not None:
                            out.write(data + "\n")
                            out.flush()
                        if event_id and event_id.isdigit():
                            last = int(event_id)
            except (OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
            resume = f"after record {last}" if last is not None else "from the end"
            err.write(f"the tail's connection dropped (HTTP {response.status}); resuming {resume}\n")
        time.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
        failures += 1
