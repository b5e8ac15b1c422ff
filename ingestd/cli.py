"""The ``smalltable`` command."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

import click

from . import __version__
from .client import commands as client_commands
from .config import ConfigError, defaults_yaml, load_config
from .frontcli import front_group


def _config(config_file: Path | None, **flags: object):
    """Load the config with the flags that were given; a ConfigError becomes a clean message."""
    names = {
        "home": "home",
        "port": "nginx.port",
        "datasette_port": "datasette.port",
        "metrics_port": "metrics.port",
        "archive": "archive",
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
@click.option("--archive", help="Archive every rotated log to s3://BUCKET/PREFIX (docs/archive.md).")
def up(config_file, home, port, datasette_port, metrics_port, archive) -> None:
    """Run nginx, ingestd and Datasette together in the foreground (Ctrl-C stops them)."""
    from .ops.stack import StackError, run
    from .support.programs import ProgramNotFound

    config = _config(
        config_file,
        home=home,
        port=port,
        datasette_port=datasette_port,
        metrics_port=metrics_port,
        archive=archive,
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
    """Per project and overall: records, rejects, size, quota, last post, ingest lag.

    With ``--home`` alone, the ports are those ``smalltable up`` last used for that home."""
    from .ops.status import collect, home_problem, recorded_config, render_table

    if config_file is None and home is not None:
        config_file = recorded_config(home)
    config = _config(config_file, home=home)
    problem = home_problem(config)
    if problem:
        raise click.ClickException(problem)
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
    from .ingest.replay import open_registry, plan, replay_in_parallel, replay_in_passes
    from .ingest.shares import Share
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
    shares = [Share(frozenset({project}))]
    if not project:  # the projects' names, for the shares and each share's passes
        label = f"sharing the projects among {jobs} jobs" if jobs > 1 else "counting the projects' lines"
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            shares = plan(files, jobs, bar.update)
    most = config["ingest.open_databases"]
    passes = max(len(share.passes(most)) for share in shares)
    label = f"replaying {len(files)} file(s)" + (f" in {len(shares)} jobs" if len(shares) > 1 else "")
    if passes > 1:
        label += f", {passes} passes of at most {most} projects (ingest.open_databases)"
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        if len(shares) > 1:
            summary = replay_in_parallel(config, data_dir, files, shares, bar.update)
        else:
            with open_registry(config, data_dir) as registry:
                batching = config["ingest.batch_lines"], config["ingest.batch_bytes"]
                summary = replay_in_passes(registry, files, *batching, shares[0], most, bar.update)
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


for _command in client_commands.COMMANDS:
    cli.add_command(_command)


@cli.group()
def keys() -> None:
    """A project's keys, for the operator on the host (docs/keys.md)."""


@keys.command("reset")
@config_option
@home_option
@click.argument("project")
@click.option("--wait", "wait_seconds", default=10.0, show_default=True, help="Seconds to wait for ingestd.")
def keys_reset(config_file, home, project, wait_seconds) -> None:
    """Give PROJECT a new owner key (printed once); the old one stops working."""
    import hashlib
    import secrets

    from .ingest.keychange import operator_reset_line
    from .model.project import PROJECT_NAME_RULE, is_valid_project_name
    from .store.keys import KeyStore, key_id
    from .support.durable import write_all_and_sync

    config = _config(config_file, home=home)
    if not is_valid_project_name(project):
        raise click.ClickException(f"{project!r} is not a project name ({PROJECT_NAME_RULE})")
    if not (config.path("data_dir") / f"{project}.db").exists():
        raise click.ClickException(f"no project {project} (no {config.path('data_dir') / project}.db)")
    key = "stk_" + secrets.token_hex(16)
    digest = hashlib.sha256(key.encode()).hexdigest()
    line = operator_reset_line(project, digest, time.time(), secrets.token_hex(10))
    # Into the log like every other change, so ingestd applies it in order and replay again.
    fd = os.open(config.path("ingest_log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        write_all_and_sync(fd, line)
    finally:
        os.close(fd)
    click.echo(f"New owner key of {project} (key id {key_id(digest)}), shown only once:")
    click.echo(key)
    deadline = time.monotonic() + wait_seconds
    state_dir = config.path("state_dir")
    while time.monotonic() < deadline:
        owner = KeyStore(state_dir, None).owner(project)
        if owner is not None and owner.key_id == key_id(digest):
            click.echo("In force: ingestd applied it; the old owner key no longer works.")
            return
        time.sleep(0.1)
    click.echo("Not applied yet (is ingestd running?): the key is in force once ingestd reads the log.")


@keys.command("list")
@config_option
@home_option
@click.argument("project")
def keys_list(config_file, home, project) -> None:
    """PROJECT's live keys: id, scope, label, expiry (never a secret)."""
    from .store.keys import KeyStore
    from .support.timefmt import iso_time

    config = _config(config_file, home=home)
    listed = KeyStore(config.path("state_dir"), None).listed(project)
    if not listed:
        click.echo(f"{project} has no keys (not claimed since keys exist: smalltable keys reset {project})")
        return
    click.echo(f"{'key id':<14}{'scope':<12}{'created':<26}{'expires':<26}label")
    for k in listed:
        expires = "never" if k.expires is None else iso_time(k.expires)
        click.echo(f"{k.key_id:<14}{k.scope:<12}{iso_time(k.created):<26}{expires:<26}{k.label}")


@cli.group()
def blobs() -> None:
    """Blob copies on the stores, for the operator on the host (docs/blobs.md)."""


def _blob_pass(config_file, home, run) -> None:
    import json

    from .ops.replicate import figures_dict, for_config

    replicator = for_config(_config(config_file, home=home))
    try:
        figures = run(replicator)
    finally:
        replicator.close()
    click.echo(json.dumps(figures_dict(figures), indent=1))
    if figures.under_replicated:
        raise click.ClickException(f"{figures.under_replicated} blobs are on fewer stores than wanted")


@blobs.command("replicate")
@config_option
@home_option
@click.option("--min-copies", type=click.IntRange(1, 10), help="Copies to make [default: blobs.min_copies].")
def blobs_replicate(config_file, home, min_copies) -> None:
    """Copy every blob to stores without one until it has enough verified copies."""
    _blob_pass(config_file, home, lambda r: r.replicate(min_copies))


@blobs.command("verify")
@config_option
@home_option
def blobs_verify(config_file, home) -> None:
    """Re-read every copy on every store; report, drop and remake missing or corrupt ones."""
    _blob_pass(config_file, home, lambda r: r.verify())


@cli.group("archive")
def archive_group() -> None:
    """The log archive in S3: what waits, and archiving now (docs/archive.md)."""


def _archived_config(config_file, home):
    """The home's config: ``--config``, else the one ``up`` or ``render-config`` wrote in HOME/conf."""
    written = Path(home or ".") / "conf" / "smalltable.yaml"
    config = _config(config_file or (written if written.exists() else None), home=home)
    if not config["archive"]:
        raise click.ClickException(
            f"no archive configured: set `archive` in {config.source}, or up --archive URL"
        )
    return config


@archive_group.command("status")
@config_option
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def archive_status(config_file, home, as_json) -> None:
    """Segments archived and waiting, the oldest unarchived age, the last verified upload."""
    from dataclasses import asdict

    from .ops.archive import status as archive_figures

    figures = archive_figures(_archived_config(config_file, home))
    if as_json:
        click.echo(json.dumps(asdict(figures), indent=2))
        sys.exit(1 if figures.chain_broken or figures.last_error else 0)
    verified = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(figures.last_verified))
        if figures.last_verified
        else "never"
    )
    click.echo(f"archive: {figures.archive}")
    click.echo(f"segments archived: {figures.segments_archived}, head {figures.head or '(none)'}")
    click.echo(
        f"segments waiting: {figures.segments_waiting}, oldest {figures.oldest_unarchived_age_seconds:.0f} s"
    )
    click.echo(f"last verified upload: {verified}")
    for label, text in (("CHAIN BROKEN", figures.chain_broken), ("last pass failed", figures.last_error)):
        if text:
            click.echo(f"{label}: {text}")
    sys.exit(1 if figures.chain_broken or figures.last_error else 0)


@archive_group.command("now")
@config_option
@home_option
def archive_now(config_file, home) -> None:
    """Rotate the ingest log and archive every rotated file at once (drills, maintenance)."""
    from .ops.archive import SETTLE, Archiver
    from .ops.chain import ChainBroken
    from .ops.stack import rotate_logs
    from .support.s3 import S3Error

    config = _archived_config(config_file, home)
    rotated = rotate_logs(config, force=True)
    if rotated.returncode != 0:
        raise click.ClickException(f"logrotate failed: {rotated.stderr.strip()}")
    time.sleep(SETTLE)  # nginx reopens the live log at once; the rotated file must be settled
    try:
        names = Archiver(config).run_pass()
    except (S3Error, ChainBroken, OSError) as exc:
        raise click.ClickException(f"cannot archive to {config['archive']}: {exc}") from None
    for name in names:
        click.echo(f"archived {name}")
    click.echo(f"{len(names)} segment(s) archived and verified")


@cli.command()
@config_option
@home_option
@click.option("--from", "source", required=True, help="The archive: s3://BUCKET/PREFIX.")
def restore(config_file, home, source) -> None:
    """Rebuild every project in a new home from the archive, verifying its chain (docs/archive.md)."""
    from .ops.chain import ChainBroken, read_head
    from .restore import download, load, remember
    from .support.s3 import S3Error, bucket_from_url

    config = _config(config_file, home=home, archive=source)
    if any(config.path("data_dir").glob("*.db")) or config.path("ingest_log").exists():
        raise click.ClickException(f"{config.home} already holds data or logs: restore into a new home")
    bucket = bucket_from_url(config["archive"])
    try:
        head = read_head(bucket)
        total = head.seq if head else 0
        with click.progressbar(
            length=max(total, 1), label="verifying and downloading segments", file=sys.stderr
        ) as bar:
            done, manifests = download(config, bucket, lambda n: bar.update(1))
    except ChainBroken as exc:
        raise click.ClickException(f"the archive's chain is broken, nothing loaded: {exc}") from None
    except S3Error as exc:
        raise click.ClickException(f"cannot read {config['archive']}: {exc}") from None
    started = time.monotonic()
    try:
        with click.progressbar(length=max(done.lines, 1), label="loading", file=sys.stderr) as bar:
            loaded = load(config, done.lines, bar.update)
    except (sqlite3.Error, OSError) as exc:
        raise click.ClickException(
            f"the chain is whole and downloaded, but loading failed: {exc}; fix the cause and run "
            f"`smalltable up --home {config.home}`: ingestd loads the rest from its checkpoint"
        ) from None
    if loaded < done.lines:
        raise click.ClickException(f"loaded {loaded:,} of the archive's {done.lines:,} lines: see above")
    seconds = time.monotonic() - started
    remember(config, manifests)
    mib = done.bytes / 1048576
    click.echo(
        f"restored {done.segments} segment(s), {mib:.1f} MiB, {loaded:,} lines, chain verified: "
        f"downloaded in {done.download_seconds:.1f} s, loaded in {seconds:.1f} s "
        f"({loaded / seconds if seconds else 0:,.0f} lines/s, {mib / seconds if seconds else 0:.1f} MiB/s)"
    )


cli.add_command(front_group)
