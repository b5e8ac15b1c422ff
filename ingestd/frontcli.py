"""``smalltable front``: the front tier's commands (docs/scale.md)."""

from __future__ import annotations

from pathlib import Path

import click

from .config import ConfigError, load_config


def _load(path: Path, what: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(f"{what}: {exc}") from None


@click.group("front")
def front_group() -> None:
    """The front tier in front of several hosts: kept writes handed over (docs/scale.md)."""


@front_group.command("handoff")
@click.option(
    "--front",
    "front_file",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="The front tier's config (the one with front.hosts).",
)
@click.option("--host", required=True, help="The host whose kept writes to hand over: ADDRESS:PORT.")
@click.option(
    "--to",
    "target_file",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="That host's config (its home's conf/smalltable.yaml).",
)
def handoff_command(front_file: Path, host: str, target_file: Path) -> None:
    """Give a host the writes the front kept while it was down; its ingestd loads them once."""
    from .ops.front import handoff

    front = _load(front_file, "--front")
    if host not in front["front.hosts"]:
        raise click.ClickException(f"--host {host!r} is not one of front.hosts {front['front.hosts']}")
    path, count = handoff(front, host, _load(target_file, "--to"))
    if path is None:
        click.echo(f"nothing kept for {host}")
        return
    click.echo(f"{count} kept write(s) for {host} handed over in {path}")
