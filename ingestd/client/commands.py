"""The terminal client's commands: ``smalltable post|get|tail|open|kv``.

Each is a thin click wrapper over this room's functions (actions, tail, kv), which
talk to a running SmallTable over HTTP only; ``ingestd/cli.py`` adds them to the
``smalltable`` command. A :class:`~.transport.ClientError` becomes its message on
stderr and its exit code, never a traceback.
"""

from __future__ import annotations

import sys

import click


def _client(action) -> None:
    """Run a client action; its ClientError becomes a message and exit code, Ctrl-C a quiet exit."""
    from .transport import ClientError

    try:
        action()
    except ClientError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


@click.command()
@click.argument("url")
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option(
    "--type", "content_type", help="Content-Type [default: from the file name, else JSON, text or bytes]."
)
@click.option(
    "--wait", is_flag=True, help="Wait for the status; exit 2 if rejected, 3 if held, 4 if still pending."
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits.")
def post(url, source, content_type, wait, timeout) -> None:
    """POST FILE (or stdin) to URL, e.g. http://demo.localhost:8080/, and print the answer."""
    from . import actions

    def run() -> None:
        body, name = actions.read_body(source, sys.stdin.buffer, actions.MAX_BODY_BYTES)
        answer = actions.post(url, body, name, content_type, sys.stdout)
        if wait:
            sys.exit(actions.wait_for(answer["status_url"], timeout, sys.stdout))

    _client(run)


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Ask for JSON: a record's /N as /N.json.")
def get(url, as_json) -> None:
    """GET URL (a record, an export, a stream range) and write it to stdout as it arrives.

    A record's URL (/N) gives its body byte for byte (/N/raw), or with --json the record."""
    from . import actions

    _client(lambda: actions.get(url, as_json, sys.stdout.buffer))


@click.command()
@click.argument("url")
@click.option("--after", type=int, help="Start after this record id [default: new records only].")
def tail(url, after) -> None:
    """Print a project's new records as they are loaded, one JSON line each (resumes if dropped)."""
    from .tail import tail as follow

    _client(lambda: follow(url, after, sys.stdout))


@click.command("open")
@click.argument("url")
def open_command(url) -> None:
    """Open URL (a project, a record) in the browser."""
    from . import actions

    _client(lambda: click.echo(actions.open_page(url)))


@click.group()
def kv() -> None:
    """A project's key-value buckets: put, get, delete, list, scan (docs/kv.md)."""


@kv.command("put")
@click.argument("url")
@click.argument("bucket")
@click.argument("key")
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option(
    "--type", "content_type", help="Content-Type [default: from the file name, else JSON, text or bytes]."
)
@click.option("--if-match", help="Only if the key is at this version (If-Match).")
@click.option("--if-absent", is_flag=True, help="Only if the key does not exist (If-None-Match: *).")
@click.option("--ttl", type=int, help="Seconds until the value expires (X-TTL).")
@click.option(
    "--index", "indexes", multiple=True, metavar="NAME=VALUE", help="An index entry (X-Index-NAME)."
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the decision.")
def kv_put(url, bucket, key, source, content_type, if_match, if_absent, ttl, indexes, timeout) -> None:
    """PUT FILE (or stdin) as KEY of BUCKET at URL; wait for the decision (exit 5: precondition failed)."""
    from . import actions
    from . import kv as client

    def run() -> None:
        body, name = actions.read_body(source, sys.stdin.buffer, actions.MAX_BODY_BYTES)
        headers = client.write_headers(content_type, if_match, if_absent, ttl, list(indexes))
        sys.exit(client.put(url, bucket, key, body, name, headers, timeout, sys.stdout))

    _client(run)


@kv.command("get")
@click.argument("url")
@click.argument("bucket")
@click.argument("key")
@click.option("--version", "version_only", is_flag=True, help="Print only the value's version.")
def kv_get(url, bucket, key, version_only) -> None:
    """Write KEY's value of BUCKET at URL to stdout, byte for byte (exit 6: no such key)."""
    from . import kv as client

    _client(lambda: client.get(url, bucket, key, version_only, sys.stdout.buffer))


@kv.command("delete")
@click.argument("url")
@click.argument("bucket")
@click.argument("key")
@click.option("--if-match", help="Only if the key is at this version (If-Match).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the decision.")
def kv_delete(url, bucket, key, if_match, timeout) -> None:
    """DELETE KEY of BUCKET at URL; wait for the decision (exit 5: precondition failed, 6: not found)."""
    from . import kv as client
    from .transport import target

    def run() -> None:
        headers = client.write_headers(None, if_match, False, None, [])
        where = target(client.item_url(url, bucket, key))
        sys.exit(client.write(where, "DELETE", b"", headers, timeout, sys.stdout))

    _client(run)


@kv.command("list")
@click.argument("url")
@click.argument("bucket", required=False)
@click.option("--prefix", default="", help="Only keys that start with this.")
@click.option("--limit", type=int, help="At most this many keys [default: all].")
def kv_list(url, bucket, prefix, limit) -> None:
    """The buckets at URL (name, items, bytes), or BUCKET's keys in order, one per line."""
    from . import kv as client

    _client(lambda: client.list_keys(url, bucket, prefix, limit, sys.stdout))


@kv.command("scan")
@click.argument("url")
@click.argument("bucket")
@click.argument("index")
@click.option("--min", "low", help="From this value (inclusive).")
@click.option("--max", "high", help="Up to this value (inclusive).")
@click.option("--reverse", is_flag=True, help="Highest first.")
@click.option("--limit", default=100, show_default=True, help="At most this many entries (up to 10000).")
def kv_scan(url, bucket, index, low, high, reverse, limit) -> None:
    """INDEX of BUCKET at URL in (value, key) order: VALUE<tab>KEY per line."""
    from . import kv as client

    _client(lambda: client.scan(url, bucket, index, low, high, reverse, limit, sys.stdout))


COMMANDS = (post, get, tail, open_command, kv)
