"""The ``smalltable`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__
from .config import ConfigError, defaults_yaml, load_config


def _config(config_file: Path | None, **flags: object):
    """Load the config with the flags that were given; a ConfigError becomes a clean message."""
    names = {
        "home": "home",
        "port": "nginx.port",
        "datasette_port": "datasette.port",
        "metrics_port": "metrics.port",
    }
    overrides = {names[k]: v for k, v in flags.items() if v is not None}
    if "home" in overrides:
        overrides["home"] = str(overrides["home"])
    try:
        return load_config(config_file, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="YAML config file."
)
home_option = click.option(
    "--home", type=click.Path(path_type=Path), help="Directory for logs, data and state."
)


@click.group()
@click.version_option(__version__, prog_name="smalltable")
def cli() -> None:
    """SmallTable: POST anything to PROJECT.DOMAIN; browse, query and export it in Datasette."""


@cli.command()
@config_option
@home_option
@click.option("--port", type=int, help="nginx port [default: 8080].")
@click.option("--datasette-port", type=int, help="Datasette port [default: 8001].")
@click.option("--metrics-port", type=int, help="ingestd metrics port [default: 9108].")
def up(config_file, home, port, datasette_port, metrics_port) -> None:
    """Run nginx, ingestd and Datasette together in the foreground (Ctrl-C stops them)."""
    from .programs import ProgramNotFound
    from .stack import StackError, run

    config = _config(
        config_file, home=home, port=port, datasette_port=datasette_port, metrics_port=metrics_port
    )
    try:
        sys.exit(run(config))
    except (StackError, ProgramNotFound) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@config_option
@home_option
@click.option("--metrics-port", type=int, help="Metrics port [default: 9108; 0: none].")
def ingest(config_file, home, metrics_port) -> None:
    """Run the ingest daemon alone (what systemd runs)."""
    from .daemon import run_daemon

    config = _config(config_file, home=home, metrics_port=metrics_port)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    # python-multipart logs a warning per malformed body; the reject already says why.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    run_daemon(config)


@cli.command("render-config")
@config_option
@home_option
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Directory to write the files to."
)
def render_config(config_file, home, out) -> None:
    """Write this deployment's nginx, logrotate and systemd files (docs/ops.md)."""
    from .programs import ProgramNotFound
    from .render import write

    try:
        written = write(_config(config_file, home=home), out)
    except ProgramNotFound as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(path)


@cli.command("config")
@config_option
@click.option("--defaults", is_flag=True, help="Print every setting with its default and meaning.")
def show_config(config_file, defaults) -> None:
    """Print the effective config (or, with --defaults, the documented defaults)."""
    if defaults:
        click.echo(defaults_yaml(), nl=False)
        return
    config = _config(config_file)
    for key, value in config.values.items():
        click.echo(f"{key}: {value!r}")
