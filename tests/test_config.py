"""Tests for ingestd.config: defaults, overrides and errors worded for the person who wrote the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingestd.config import SETTINGS, Config, ConfigError, defaults_yaml, load_config

DEFAULTS = {
    "domain": "localhost",
    "home": "./smalltable-home",
    "nginx.listen": ["127.0.0.1", "::1"],
    "nginx.port": 8080,
    "nginx.max_body_bytes": 1048576,
    "nginx.client_timeout": 10,
    "nginx.send_timeout": 30,
    "nginx.connections_per_address": 128,
    "nginx.tails_per_address": 10,
    "nginx.worker_user": "nobody",
    "datasette.port": 8001,
    "datasette.suggest_facets": False,
    "datasette.sql_time_limit_ms": 3000,
    "datasette.max_value_bytes": 4194304,
    "datasette.memory_max_mb": 1024,
    "datasette.sql_concurrency": 2,
    "datasette.page_threads": 3,
    "datasette.sql_rate_per_minute": 60,
    "datasette.sql_burst": 20,
    "datasette.status_waiters": 200,
    "datasette.open_databases": 64,
    "metrics.port": 9108,
    "metrics.max_projects": 1000,
    "projects.auto_create": True,
    "projects.type": "any",
    "projects.retention_days": 180,
    "projects.quota_mb": 100,
    "projects.quota_warning": 0.8,
    "projects.grace_hours": 24.0,
    "projects.max_projects": 10000,
    "projects.max_data_mb": 100000,
    "projects.new_per_minute": 10,
    "projects.new_burst": 20,
    "projects.retention_interval": 3600.0,
    "paths.log_dir": "logs",
    "paths.ingest_log": "logs/ingest.log",
    "paths.data_dir": "data",
    "paths.state_dir": "state",
    "paths.run_dir": "run",
    "paths.nginx_pid": "run/nginx.pid",
    "ingest.batch_lines": 20000,
    "ingest.batch_bytes": 4194304,
    "ingest.many_projects_batch_bytes": 33554432,
    "ingest.catch_up_bytes": 268435456,
    "ingest.nice": 19,
    "ingest.rescan_interval": 1.0,
    "ingest.poll_interval": 0.05,
    "ingest.max_columns": 200,
    "ingest.max_new_columns_per_post": 20,
    "ingest.open_databases": 64,
    "ingest.cache_mb": 2,
    "ingest.close_rotated_after": 300.0,
    "logrotate.max_size": "100M",
    "logrotate.keep_days": 200,
    "logrotate.interval": 60.0,
    "up.restart_delay": 0.5,
    "up.restart_delay_max": 30.0,
    "tls.certificate": "",
    "tls.key": "",
    "tls.port": 8443,
    "archive": "",
    "archive_delay": 60.0,
    "systemd.user": "smalltable",
    "systemd.group": "smalltable",
    "blobs.max_mb": 64,
    "blobs.stores": [{"dir": "blobs/a"}, {"dir": "blobs/b"}],
    "blobs.min_copies": 2,
    "blobs.replicate_interval": 30,
    "front.hosts": [],
}


@pytest.fixture
def config_file(tmp_path: Path):
    """Write a config file and return its path."""
    path = tmp_path / "smalltable.yaml"

    def write(text: str | bytes) -> Path:
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return write


def error_of(path: Path | None, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path, overrides)
    return str(raised.value)


# Defaults


def test_defaults_without_a_file():
    config = load_config()
    assert config.values == DEFAULTS
    assert config.source == "(defaults)"
    assert config["nginx.port"] == 8080


def test_every_setting_has_a_default_that_passes_its_own_check():
    assert list(SETTINGS) == list(DEFAULTS)
    for key, setting in SETTINGS.items():
        assert setting.check(setting.default) == setting.default, key
        assert setting.expected and setting.doc, key


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "nginx:\n", "nginx:\n  # port: 80\n"])
def test_an_empty_file_or_an_empty_section_gives_the_defaults(config_file, text):
    path = config_file(text)
    config = load_config(path)
    assert config.values == DEFAULTS
    assert config.source == str(path)


# Files and overrides


def test_a_file_sets_what_differs_from_the_defaults(config_file):
    path = config_file(
        "domain: smalltable.example\n"
        "home: /var/lib/smalltable\n"
        "nginx:\n"
        "  port: 80\n"
        "  listen: [0.0.0.0, '::']\n"
        "ingest:\n"
        "  rescan_interval: 2\n"
        "  max_columns: 0\n"
    )
    config = load_config(path)
    assert config.values == {
        **DEFAULTS,
        "domain": "smalltable.example",
        "home": "/var/lib/smalltable",
        "nginx.port": 80,
        "nginx.listen": ["0.0.0.0", "::"],
        "ingest.rescan_interval": 2.0,
        "ingest.max_columns": 0,
    }
    assert isinstance(config["ingest.rescan_interval"], float)


def test_dotted_keys_work_in_a_file_too(config_file):
    assert load_config(config_file("nginx.port: 81\n"))["nginx.port"] == 81


def test_overrides_win_over_the_file(config_file):
    path = config_file("nginx:\n  port: 80\nmetrics:\n  port: 9200\n")
    config = load_config(path, {"nginx.port": 8443, "home": "/srv/st"})
    assert (config["nginx.port"], config["metrics.port"], config["home"]) == (8443, 9200, "/srv/st")


def test_overrides_alone_apply_to_the_defaults():
    assert load_config(None, {"datasette.port": 9001}).values == {**DEFAULTS, "datasette.port": 9001}


def test_overrides_are_validated_too():
    assert (
        error_of(None, {"nginx.port": 0})
        == "(defaults): key 'nginx.port': expected an integer from 1 to 65535, got 0"
    )


# Unknown keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nginx:\n  prot: 80\n", "unknown key 'nginx.prot' (did you mean 'nginx.port'?)"),
        ("ngnix:\n  port: 80\n", "unknown key 'ngnix.port' (did you mean 'nginx.port'?)"),
        ("domian: example.org\n", "unknown key 'domian' (did you mean 'domain'?)"),
        ("paths:\n  datadir: /d\n", "unknown key 'paths.datadir' (did you mean 'paths.data_dir'?)"),
        ("colour: blue\n", "unknown key 'colour'"),
        ("nginx: 80\n", "unknown key 'nginx' (did you mean 'nginx.port'?)"),
        (
            "nginx:\n  port:\n    value: 80\n",
            "key 'nginx.port': expected an integer from 1 to 65535, got {'value': 80}",
        ),
    ],
)
def test_an_unknown_key_is_named_with_a_suggestion(config_file, text, message):
    path = config_file(text)
    assert error_of(path) == f"{path}: {message}"


def test_an_unknown_override_is_named_too():
    assert (
        error_of(None, {"nginx.prot": 1})
        == "(defaults): unknown key 'nginx.prot' (did you mean 'nginx.port'?)"
    )


# Bad values


BAD_VALUES = [
    ("domain", "Example.ORG", "a lowercase DNS name", "'Example.ORG'"),
    ("domain", "-bad.example", "a lowercase DNS name", "'-bad.example'"),
    ("domain", "a..b", "a lowercase DNS name", "'a..b'"),
    ("domain", 42, "a lowercase DNS name", "42"),
    ("home", "", "a directory path", "''"),
    ("home", ["/x"], "a directory path", "['/x']"),
    ("home", None, "a directory path", "None"),
    ("nginx.listen", "127.0.0.1", "a list of IP addresses", "'127.0.0.1'"),
    ("nginx.listen", [], "a list of IP addresses", "[]"),
    ("nginx.listen", ["localhost"], "a list of IP addresses", "['localhost']"),
    ("nginx.listen", ["127.0.0.1", "300.1.1.1"], "a list of IP addresses", "['127.0.0.1', '300.1.1.1']"),
    ("nginx.port", 0, "an integer from 1 to 65535", "0"),
    ("nginx.port", 65536, "an integer from 1 to 65535", "65536"),
    ("nginx.port", "8080", "an integer from 1 to 65535", "'8080'"),
    ("nginx.port", 8080.0, "an integer from 1 to 65535", "8080.0"),
    ("nginx.port", True, "an integer from 1 to 65535", "True"),
    ("nginx.max_body_bytes", 64 * 1048576 + 1, "an integer from 1 to 67108864", "67108865"),
    ("datasette.port", -1, "an integer from 1 to 65535", "-1"),
    ("metrics.port", 70000, "an integer from 0 to 65535 (0: no metrics)", "70000"),
    ("paths.data_dir", 7, "a directory path", "7"),
    ("paths.ingest_log", "logs/\0x", "a file path", "'logs/\\x00x'"),
    ("ingest.batch_lines", 0, "a positive integer", "0"),
    ("ingest.rescan_interval", 0, "a positive number of seconds", "0"),
    ("ingest.rescan_interval", -0.5, "a positive number of seconds", "-0.5"),
    ("ingest.rescan_interval", "1s", "a positive number of seconds", "'1s'"),
    ("ingest.rescan_interval", False, "a positive number of seconds", "False"),
    ("ingest.rescan_interval", float("inf"), "a positive number of seconds", "inf"),
    ("ingest.rescan_interval", float("nan"), "a positive number of seconds", "nan"),
    ("ingest.poll_interval", 0, "a positive number of seconds", "0"),
    ("ingest.max_columns", 1901, "an integer from 0 to 1900", "1901"),
    ("ingest.cache_mb", 0, "a whole number of MiB from 1 to 4096", "0"),
    ("ingest.nice", -1, "an integer from 0 to 19", "-1"),
    ("ingest.nice", 20, "an integer from 0 to 19", "20"),
    ("ingest.open_databases", 0, "a positive integer", "0"),
]


@pytest.mark.parametrize(("key", "value", "expected", "shown"), BAD_VALUES)
def test_a_bad_value_in_a_file_names_file_key_expectation_and_value(config_file, key, value, expected, shown):
    section, _, leaf = key.rpartition(".")
    document = {section: {leaf: value}} if section else {leaf: value}
    path = config_file(yaml.safe_dump(document))
    assert error_of(path) == f"{path}: key {key!r}: expected {expected}, got {shown}"


@pytest.mark.parametrize(("key", "value", "expected", "shown"), BAD_VALUES[:6])
def test_a_bad_override_is_reported_the_same_way(key, value, expected, shown):
    assert error_of(None, {key: value}) == f"(defaults): key {key!r}: expected {expected}, got {shown}"


def test_yaml_spellings_of_special_numbers_are_rejected(config_file):
    path = config_file("ingest:\n  rescan_interval: .inf\n")
    assert (
        error_of(path)
        == f"{path}: key 'ingest.rescan_interval': expected a positive number of seconds, got inf"
    )


# Broken files


def test_bad_yaml_is_reported_with_its_place(config_file):
    path = config_file("nginx:\n  port: 80\n   listen: [\n")
    message = error_of(path)
    assert message.startswith(f"{path}: not valid YAML: ")
    assert "line 3" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_top_level_that_is_not_a_mapping_is_an_error(config_file, text):
    path = config_file(text)
    assert error_of(path) == f"{path}: expected a mapping of settings at the top level"


def test_a_missing_file_is_an_error(tmp_path):
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: cannot read the config file: No such file or directory"


def test_a_directory_is_an_error(tmp_path):
    assert error_of(tmp_path) == f"{tmp_path}: cannot read the config file: Is a directory"


def test_a_binary_file_is_an_error_not_a_traceback(config_file):
    path = config_file(b"domain: \xff\xfe\n")
    assert error_of(path) == f"{path}: not a text file: a byte that is not UTF-8 at offset 8"


def test_a_file_path_can_be_a_string(config_file):
    path = config_file("nginx:\n  port: 81\n")
    config = load_config(str(path))
    assert (config.source, config["nginx.port"]) == (str(path), 81)


# Paths


def test_relative_paths_are_under_home(tmp_path):
    config = load_config(None, {"home": str(tmp_path / "home")})
    assert config.home == tmp_path / "home"
    assert config.path("data_dir") == tmp_path / "home" / "data"
    assert config.path("ingest_log") == tmp_path / "home" / "logs" / "ingest.log"


def test_absolute_paths_stay_as_they_are(tmp_path):
    config = load_config(None, {"home": str(tmp_path), "paths.data_dir": "/srv/data"})
    assert config.path("data_dir") == Path("/srv/data")
    assert config.path("state_dir") == tmp_path / "state"


def test_a_relative_home_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.home == tmp_path / "smalltable-home"
    assert config.path("run_dir") == tmp_path / "smalltable-home" / "run"
    assert config.home.is_absolute()


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(AttributeError):
        config.source = "x"  # type: ignore[misc]
    assert isinstance(config, Config)


# defaults_yaml


def test_defaults_yaml_parses_back_to_the_defaults(config_file):
    text = defaults_yaml()
    parsed = yaml.safe_load(text)
    nested: dict = {}
    for key, value in DEFAULTS.items():
        head, _, leaf = key.rpartition(".")
        (nested.setdefault(head, {}) if head else nested)[leaf] = value
    assert parsed == nested
    assert load_config(config_file(text)).values == DEFAULTS


def test_defaults_yaml_documents_every_setting():
    text = defaults_yaml()
    for setting in SETTINGS.values():
        assert f"# {setting.doc}\n" in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    "stores",
    [
        [],
        [{"dir": ""}],
        [{"s3": "http://127.0.0.1:8333"}],
        [{"s3": "http://127.0.0.1:8333", "bucket": "b", "secret_access_key": "x"}],
        "blobs/a",
    ],
)
def test_blob_stores_are_directories_or_buckets_and_never_hold_credentials(tmp_path, stores):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"blobs": {"stores": stores}}))
    with pytest.raises(ConfigError, match=r"blobs\.stores.*no credentials here"):
        load_config(path)


def test_front_hosts_are_address_and_port_each_once(tmp_path):
    assert load_config(None, {"front.hosts": ["10.0.0.1:80", "[::1]:8080"]})["front.hosts"] == [
        "10.0.0.1:80",
        "[::1]:8080",
    ]
    for bad in (["10.0.0.1"], ["10.0.0.1:80", "10.0.0.1:80"], "10.0.0.1:80", ["a b:80"], ["h:0"]):
        assert "key 'front.hosts': expected a list of ADDRESS:PORT" in error_of(None, {"front.hosts": bad})
