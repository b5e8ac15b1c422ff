"""Every setting of SmallTable: its dotted key, default, check and meaning (SETTINGS).

This table is the one place a default lives. ``ingestd.config`` loads a YAML file
against it; ``smalltable show-config --defaults`` and docs/config.md print it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..model.project import MAX_QUOTA_MB, MAX_RETENTION_DAYS, TYPES
from ..support import values as checks

# The checks SETTINGS pairs with its keys (ingestd/support/values.py).
_int_range, _one_of, _positive_number, _fraction = (
    checks.int_range,
    checks.one_of,
    checks.positive_number,
    checks.fraction,
)
_bool, _path, _domain, _size = checks.boolean, checks.path, checks.domain, checks.size
_addresses, _worker_user, _optional_path = checks.addresses, checks.worker_user, checks.optional_path


@dataclass(frozen=True)
class Setting:
    """One config key: its default, how to check a value, and what it means."""

    default: Any
    check: Callable[[Any], Any]
    expected: str
    doc: str


# Every setting, by its dotted key. Paths are relative to `home` unless absolute.
SETTINGS: dict[str, Setting] = {
    "domain": Setting(
        "localhost",
        _domain,
        "a lowercase DNS name",
        "Projects live at PROJECT.DOMAIN; the apex DOMAIN lists them all.",
    ),
    "home": Setting(
        "./smalltable-home",
        _path,
        "a directory path",
        "The directory that holds logs, data, state and runtime files.",
    ),
    "nginx.listen": Setting(
        ["127.0.0.1", "::1"],
        _addresses,
        "a list of IP addresses",
        "Addresses nginx listens on.",
    ),
    "nginx.port": Setting(8080, _int_range(1, 65535), "an integer from 1 to 65535", "nginx's HTTP port."),
    "nginx.max_body_bytes": Setting(
        1048576,
        _int_range(1, 64 * 1048576),
        "an integer from 1 to 67108864",
        "The largest body accepted; larger writes get 413.",
    ),
    "nginx.client_timeout": Setting(
        10,
        _int_range(1, 3600),
        "a whole number of seconds from 1 to 3600",
        "How long nginx waits for a client's request headers, and between two reads of its body "
        "(client_header_timeout, client_body_timeout): a sender slower than this gets 408 or "
        "is closed, so slow senders cannot hold connections.",
    ),
    "nginx.send_timeout": Setting(
        30,
        _int_range(1, 3600),
        "a whole number of seconds from 1 to 3600",
        "How long nginx waits between two writes a client does not read (send_timeout); an "
        "idle live tail is kept busy by its keepalive comment every 15 s.",
    ),
    "nginx.connections_per_address": Setting(
        128,
        _int_range(1, 100000),
        "a positive integer",
        "Most requests one client address may have in progress at once (limit_conn); more get 429.",
    ),
    "nginx.tails_per_address": Setting(
        10,
        _int_range(1, 10000),
        "a positive integer",
        "Most live tails (`/_tail`) one client address may have open at once; more get 429.",
    ),
    "nginx.worker_user": Setting(
        "nobody",
        _worker_user,
        "a user name other than root",
        "The user nginx's workers run as when `smalltable up` runs as root (they never run as "
        "root); their group is its primary group. `up` gives the home's parent directories "
        "search permission (o+x) so they can reach its run and log directories. A production "
        "host's own nginx.conf names its user.",
    ),
    "datasette.port": Setting(
        8001,
        _int_range(1, 65535),
        "an integer from 1 to 65535",
        "Datasette's port (loopback only; nginx proxies to it).",
    ),
    "datasette.suggest_facets": Setting(
        False,
        _bool,
        "true or false",
        "Datasette's suggested facets on table pages: off by default, since they cost ~150 ms per "
        "request on a 10,000-record table (bench/read_side.py); any column can still be faceted.",
    ),
    "datasette.sql_time_limit_ms": Setting(
        3000,
        _int_range(1, 600000),
        "a positive number of milliseconds",
        "The longest a query in Datasette may run.",
    ),
    "datasette.max_value_bytes": Setting(
        4194304,
        _int_range(1024, 1 << 30),
        "an integer from 1024 to 1073741824",
        "No string, BLOB or row a query makes may be longer (SQLite's SQLITE_LIMIT_LENGTH on "
        "every Datasette connection): `select zeroblob(1000000000)` gets a 400, not 1 GB of "
        "memory. At least 3 times nginx.max_body_bytes, so a row (the body and the columns "
        "made from it) can still be read and sorted.",
    ),
    "datasette.memory_max_mb": Setting(
        1024,
        _int_range(64, 1 << 20),
        "a whole number of MiB, at least 64",
        "The most memory Datasette may use: MemoryMax= in its systemd unit, its data limit "
        "(RLIMIT_DATA) under `smalltable up`. Past it Datasette fails that request (a 400: the "
        "answer is too big) or dies and is restarted; nginx and writes are not affected.",
    ),
    "datasette.sql_concurrency": Setting(
        2,
        _int_range(1, 64),
        "a positive integer",
        "Most arbitrary SQL requests (`?sql=`, `_where=`) running at once over all clients "
        "(nginx limit_conn); more get 429. Datasette gets `page_threads` more SQL threads "
        "than this, so long queries never take the threads project pages need.",
    ),
    "datasette.page_threads": Setting(
        3,
        _int_range(1, 64),
        "a positive integer",
        "Datasette's SQL threads kept for pages, tables and exports beyond `sql_concurrency`.",
    ),
    "datasette.sql_rate_per_minute": Setting(
        60,
        _int_range(1, 60000),
        "a positive integer",
        "Arbitrary SQL requests (`?sql=`, `_where=`) each client address may make per minute "
        "(nginx limit_req, with a burst of `sql_burst`); more get 429.",
    ),
    "datasette.sql_burst": Setting(
        20,
        _int_range(0, 10000),
        "an integer from 0 to 10000",
        "SQL requests a client may make at once above its rate before it gets 429.",
    ),
    "datasette.status_waiters": Setting(
        200,
        _int_range(1, 10000),
        "a positive integer",
        "Requests that may wait at once for a write's decision (`/_status/ID?wait=`, a bucket "
        "read's `?after=ID`); more get 429 at once. Each waits at most 30 s and holds no thread.",
    ),
    "datasette.open_databases": Setting(
        64,
        _int_range(1, 10000),
        "a positive integer",
        "Idle connections to project databases Datasette keeps for their next reads, over "
        "all projects; past it the least recently read project's are closed, so memory and "
        "open files stay bounded however many projects are read.",
    ),
    "metrics.port": Setting(
        9108,
        _int_range(0, 65535),
        "an integer from 0 to 65535 (0: no metrics)",
        "The port of ingestd's Prometheus /metrics (loopback only).",
    ),
    "metrics.max_projects": Setting(
        1000,
        _int_range(1, 100000),
        "a positive integer",
        'Most distinct values of the metrics\' project label; further projects count as project="_other".',
    ),
    "projects.auto_create": Setting(
        True,
        _bool,
        "true or false",
        "A post to a project that does not exist creates it (owner `unclaimed`, the defaults below); "
        "when false, such posts wait in the holding area until the project is created.",
    ),
    "projects.type": Setting(
        "any",
        _one_of(*TYPES),
        f"one of {', '.join(TYPES)}",
        "A new project's type: json (bodies must be JSON), text (valid UTF-8) or any.",
    ),
    "projects.retention_days": Setting(
        180,
        _int_range(1, MAX_RETENTION_DAYS),
        f"an integer from 1 to {MAX_RETENTION_DAYS}",
        "A new project keeps its records this many days; older ones are deleted.",
    ),
    "projects.quota_mb": Setting(
        100,
        _int_range(1, MAX_QUOTA_MB),
        "a positive number of MiB",
        "A new project's quota: its database size that counts as 100 % used.",
    ),
    "projects.quota_warning": Setting(
        0.8,
        _fraction,
        "a number above 0 and at most 1",
        "From this share of its quota on, a project's page warns and its write answers say how full it is.",
    ),
    "projects.grace_hours": Setting(
        24.0,
        _positive_number,
        "a positive number of hours",
        "A claimed project's destructive settings change (lower retention or quota, a new schema or "
        'a stricter type) takes effect this long after it was sent, unless it says "now": true.',
    ),
    "projects.max_projects": Setting(
        10000,
        _int_range(1, 10_000_000),
        "a positive integer",
        "Most projects in all: past it a write to a new project gets 507 (existing ones go on).",
    ),
    "projects.max_data_mb": Setting(
        100000,
        _int_range(1, 1 << 30),
        "a positive number of MiB",
        "Most the project databases may take in all: past it a write to a project that does "
        "not exist gets 507.",
    ),
    "projects.new_per_minute": Setting(
        10,
        _int_range(1, 60000),
        "a positive integer",
        "Writes to projects that do not exist yet one client address may make per minute "
        "(nginx limit_req, with a burst of `new_burst`); more get 429.",
    ),
    "projects.new_burst": Setting(
        20,
        _int_range(0, 10000),
        "an integer from 0 to 10000",
        "Writes to new projects a client may make at once above its rate (a new project's "
        "first posts count until ingestd has created it).",
    ),
    "projects.retention_interval": Setting(
        3600.0,
        _positive_number,
        "a positive number of seconds",
        "How often ingestd deletes expired records (and once at start).",
    ),
    "paths.log_dir": Setting("logs", _path, "a directory path", "nginx's logs, the ingest log among them."),
    "paths.ingest_log": Setting(
        "logs/ingest.log", _path, "a file path", "The ingest log nginx writes and ingestd reads."
    ),
    "paths.data_dir": Setting("data", _path, "a directory path", "Project databases: DATA_DIR/PROJECT.db."),
    "paths.state_dir": Setting(
        "state",
        _path,
        "a directory path",
        "ingestd's checkpoint, dead-letter file and the quota map nginx reads.",
    ),
    "paths.run_dir": Setting("run", _path, "a directory path", "Sockets, pid files and nginx's temp files."),
    "paths.nginx_pid": Setting(
        "run/nginx.pid",
        _path,
        "a file path",
        "nginx's pid file: logrotate signals nginx (USR1) to reopen its logs, ingestd (HUP) to reload "
        "quota levels (where it may; else smalltable-quota.path does).",
    ),
    "ingest.batch_lines": Setting(
        20000,
        _int_range(1, 10_000_000),
        "a positive integer",
        "Most lines loaded in one transaction per project.",
    ),
    "ingest.batch_bytes": Setting(
        4194304,
        _int_range(1, 1 << 30),
        "a positive number of bytes",
        "Most bytes of log lines the daemon and `smalltable replay` load in one batch (with "
        "ingest.batch_lines, whichever is reached first), so that their memory is bounded whatever "
        "the size of the bodies; each holds about 5 times this while it loads a batch.",
    ),
    "ingest.many_projects_batch_bytes": Setting(
        33554432,
        _int_range(1, 1 << 30),
        "a positive number of bytes",
        "Most bytes of lines in a batch of the daemon's that names more projects than "
        "ingest.open_databases. Each project a batch names costs it an opening of its database, "
        "a commit and a sync, however few its lines: so while lines wait, such a batch reads on "
        "past ingest.batch_bytes to this many. With 200 projects posting bodies of 50 B to 20 KB "
        "at once, ingestd loaded 100,000 lines in 15.9 s at a peak of 152 MiB resident (16 MiB: "
        "22.1 s, 111 MiB; before batches widened: 58.9 s, 75 MiB; bench/daemon_load.py).",
    ),
    "ingest.catch_up_bytes": Setting(
        268435456,
        _int_range(1, 1 << 40),
        "a positive number of bytes",
        "Most bytes of a backlog the daemon loads as replay loads a log: when a batch as wide "
        "as ingest.many_projects_batch_bytes still names more projects than "
        "ingest.open_databases and more lines wait, it reads on to this many bytes (keeping "
        "only their project names), then loads them in passes of ingest.open_databases "
        "projects, each pass reading them again from the checkpoint, and checkpoints once at "
        "their end. Each project's database is opened once per backlog, not once per batch. "
        "At ingest.many_projects_batch_bytes or less, backlogs are loaded batch by batch.",
    ),
    "ingest.nice": Setting(
        19,
        _int_range(0, 19),
        "an integer from 0 to 19",
        "ingestd's CPU priority (nice; nginx runs at 0). When the CPUs are busy nginx gets them "
        "first, so writes are still answered at full speed; ingest lag grows instead, and is "
        "made up when the load drops. A higher nice already set (by systemd, say) is kept. "
        "Where posts come steadily rather than in floods, 0 keeps the lag under 250 ms up to "
        "about 1.4 times the rate 19 does, and a flood slows nginx more (bench/RESULTS.md).",
    ),
    "ingest.rescan_interval": Setting(
        1.0,
        _positive_number,
        "a positive number of seconds",
        "How often the log directory is rescanned even without file events.",
    ),
    "ingest.poll_interval": Setting(
        0.05,
        _positive_number,
        "a positive number of seconds",
        "While lines keep coming, ingestd stops watching the log for file events (one per "
        "request, each costing CPU) and looks again this often; once a look finds nothing it "
        "watches again. The most this adds to the ingest lag.",
    ),
    "ingest.max_columns": Setting(
        200,
        _int_range(0, 1900),
        "an integer from 0 to 1900",
        "Most columns made from JSON keys and form fields per project; later keys stay in the body only.",
    ),
    "ingest.max_new_columns_per_post": Setting(
        20,
        _int_range(0, 1900),
        "an integer from 0 to 1900",
        "Most new columns one post may add: a post with 2,000 keys cannot take a project's "
        "column slots (its other keys stay in the body). When the owner set a JSON Schema "
        "with `properties`, only those keys become columns.",
    ),
    "ingest.open_databases": Setting(
        64,
        _int_range(1, 10000),
        "a positive integer",
        "Most project databases kept open at once (each keeps up to 3 MiB of compiled inserts "
        "besides its page cache). A replay job with more projects than this loads them in "
        "passes over the log of this many each.",
    ),
    "ingest.cache_mb": Setting(
        2,
        _int_range(1, 4096),
        "a whole number of MiB from 1 to 4096",
        "Most memory each open project database keeps pages in (SQLite's cache_size; at most "
        "open_databases times this in all). Request ids in time order (as nginx makes them) "
        "need no more; a project of a million records with random ids loads about 20 % "
        "faster with 32.",
    ),
    "ingest.close_rotated_after": Setting(
        300.0,
        _positive_number,
        "a positive number of seconds",
        "A rotated log read to its end and unchanged this long is closed (it is reopened if it grows).",
    ),
    "logrotate.max_size": Setting(
        "100M",
        _size,
        "a size like 100M, 500k or 1G",
        "Rotate the ingest log once it is bigger than this, even before the day is over.",
    ),
    "logrotate.keep_days": Setting(
        200,
        _int_range(1, 100000),
        "a positive number of days",
        "Rotated logs are kept this long: at least as long as any project keeps its data.",
    ),
    "logrotate.interval": Setting(
        60.0,
        _positive_number,
        "a positive number of seconds",
        "How often `smalltable up` runs logrotate (production uses smalltable-logrotate.timer).",
    ),
    "up.restart_delay": Setting(
        0.5,
        _positive_number,
        "a positive number of seconds",
        "`smalltable up` restarts a service that died (ingestd, Datasette, nginx) after this "
        "delay; it doubles with each death that comes sooner than `restart_delay_max` after the "
        "start. nginx keeps answering writes meanwhile.",
    ),
    "up.restart_delay_max": Setting(
        30.0,
        _positive_number,
        "a positive number of seconds",
        "The longest `smalltable up` waits before restarting a service that keeps dying.",
    ),
    "tls.certificate": Setting(
        "",
        _optional_path,
        "a file path, or empty for no TLS",
        "The TLS certificate (PEM, the chain included) for DOMAIN and *.DOMAIN; with `tls.key`, "
        "nginx serves HTTPS on `tls.port` (TLS 1.2 and 1.3) and moves plain-HTTP reads there.",
    ),
    "tls.key": Setting("", _optional_path, "a file path, or empty", "The certificate's private key (PEM)."),
    "tls.port": Setting(8443, _int_range(1, 65535), "an integer from 1 to 65535", "nginx's HTTPS port."),
    # The log archive (docs/archive.md); S3's endpoint and credentials come from boto3's chain.
    "archive": Setting(
        "", checks.s3_url, "s3://BUCKET/PREFIX, or empty", "Copy every rotated ingest log to this S3 prefix."
    ),
    "archive_delay": Setting(
        60.0, _positive_number, "a positive number of seconds", "Each rotated log is archived this soon."
    ),
    "systemd.user": Setting("smalltable", _path, "a user name", "The user ingestd and Datasette run as."),
    "systemd.group": Setting("smalltable", _path, "a group name", "Their group."),
    "blobs.max_mb": Setting(64, _int_range(1, 4096), "an integer from 1 to 4096", "The largest blob (MiB)."),
    "blobs.stores": Setting(
        [{"dir": "blobs/a"}, {"dir": "blobs/b"}],
        checks.blob_stores,
        checks.BLOB_STORES_EXPECTED,
        "Where blobs are kept (docs/blobs.md): directories ({dir: PATH}, relative to home; nginx serves "
        "downloads from the first with a copy) and S3-compatible buckets ({s3: ENDPOINT, bucket: NAME, "
        "prefix: TEXT}). S3 credentials come from the environment or the AWS files, never from here.",
    ),
    "blobs.min_copies": Setting(2, _int_range(1, 10), "an integer from 1 to 10", "Verified copies per blob."),
    "blobs.replicate_interval": Setting(30, _int_range(1, 86400), "seconds", "How often copies are made."),
    # Several hosts (docs/scale.md): render-config renders front.conf for the front tier too.
    "front.hosts": Setting(
        [], checks.host_ports, "a list of ADDRESS:PORT", "The hosts a front tier routes projects to."
    ),
}
