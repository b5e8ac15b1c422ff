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
    if count == 0:
        click.echo(f"nothing kept for {host}")
    elif path is None:
        click.echo(f"{count} kept write(s) for {host}, every one handed over already")
    else:
        click.echo(f"{count} kept write(s) for {host} handed over in {path}")


@front_group.command("move")
@click.argument("project")
@click.option(
    "--front",
    "front_file",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="The front tier's config (the one with front.hosts).",
)
@click.option(
    "--from",
    "source_file",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="The config of the host the project is on now.",
)
@click.option(
    "--to",
    "target_file",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="The config of the host it moves to.",
)
@click.option("--to-host", "address", required=True, help="That host's ADDRESS:PORT in front.hosts.")
def move_command(project: str, front_file: Path, source_file: Path, target_file: Path, address: str) -> None:
    """Move a project to another host: its log replayed there, then its route switched."""
    from .ops.front import MoveError, move

    try:
        lines = move(
            _load(front_file, "--front"),
            project,
            _load(source_file, "--from"),
            _load(target_file, "--to"),
            address,
        )
    except MoveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{project} moved to {address}: {lines} line(s) of its log replayed there, its route switched")
