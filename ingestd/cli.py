"""The ``smalltable`` command."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
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
    from .ops.stack import StackError, run
    from .support.programs import ProgramNotFound

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
    from .ops.render import RenderError, write
    from .support.programs import ProgramNotFound

    try:
        written = write(_config(config_file, home=home), out)
    except (ProgramNotFound, RenderError) as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(path)


@cli.command()
@config_option
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(config_file, home, as_json) -> None:
    """Per project and overall: records, rejects, size, quota, last post, ingest lag."""
    from .ops.status import collect, render_table

    config = _config(config_file, home=home)
    data = collect(config)
    warning = config["projects.quota_warning"]
    click.echo(json.dumps(data, indent=2) if as_json else render_table(data, warning))


@cli.command()
@config_option
@home_option
@click.option("--project", help="Only this project's lines.")
@click.option(
    "--from",
    "from_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Replay this log file (plain or .gz) instead of all of them; repeatable.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Load into this directory instead of the configured one (to rebuild and swap in).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=lambda: len(os.sched_getaffinity(0)),
    show_default="the number of CPUs",
    help="Load in this many processes, each a share of the projects (1: gentlest beside a busy nginx).",
)
def replay(config_file, home, project, from_files, data_dir, jobs) -> None:
    """Load the project databases from the logs again (idempotent; safe while ingestd runs)."""
    from .ingest.fingerprint import log_files
    from .ingest.replay import Share, open_registry, plan, replay_in_parallel
    from .ingest.replay import replay as run_replay
    from .model.project import PROJECT_NAME_RULE, is_valid_project_name

    config = _config(config_file, home=home)
    if project is not None and not is_valid_project_name(project):
        raise click.ClickException(f"--project {project!r}: a project name is {PROJECT_NAME_RULE}")
    files = list(from_files) or log_files(config.path("ingest_log"))
    if not files:
        raise click.ClickException(f"no log files at {config.path('ingest_log')}*")
    data_dir = data_dir or config.path("data_dir")
    total = sum(path.stat().st_size for path in files)
    started = time.monotonic()
    shares = [Share(frozenset({project})) if project else Share()]
    if jobs > 1 and not project:
        label = f"sharing the projects among {jobs} jobs"
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            shares = plan(files, jobs, bar.update)
    label = f"replaying {len(files)} file(s)" + (f" in {len(shares)} jobs" if len(shares) > 1 else "")
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        if len(shares) > 1:
            summary = replay_in_parallel(config, data_dir, files, shares, bar.update)
        else:
            with open_registry(config, data_dir) as registry:
                summary = run_replay(registry, files, config["ingest.batch_lines"], shares[0], bar.update)
    seconds = time.monotonic() - started  # sharing the projects out included
    rate = summary.lines / seconds if seconds else 0
    parts = [
        f"{summary.stored:,} stored",
        f"{summary.rejected:,} rejected",
        f"{summary.already_loaded:,} already loaded",
        f"{summary.unparsable:,} unparsable",
    ]
    if summary.settings_changed or summary.settings_refused:
        parts.append(f"{summary.settings_changed:,} settings changes ({summary.settings_refused:,} refused)")
    if summary.held or summary.released:
        parts.append(f"{summary.held:,} held, {summary.released:,} released from the holding area")
    if project:
        parts.append(f"{summary.skipped_other_projects:,} of other projects")
    if summary.partial_lines:
        parts.append(f"{summary.partial_lines} partial last line(s) left for later")
    click.echo(
        f"{summary.lines:,} lines from {summary.files} file(s) in {seconds:.1f} s "
        f"({rate:,.0f} lines/s): " + ", ".join(parts)
    )
    for name in sorted(summary.per_project | summary.per_project_seen):
        click.echo(
            f"  {name}: {summary.per_project[name]:,} new, {summary.per_project_seen[name]:,} already loaded"
        )


@cli.command("check-config")
@config_option
@home_option
def check_config(config_file, home) -> None:
    """Validate the config and the files rendered from it (nginx -t, logrotate, systemd)."""
    from .ops.checks import run_checks

    config = _config(config_file, home=home)
    failed = False
    for name, problem in run_checks(config):
        click.echo(f"{'FAIL' if problem else 'ok  '}  {name}" + (f"\n      {problem}" if problem else ""))
        failed = failed or bool(problem)
    if failed:
        raise SystemExit(1)


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
