"""prometheus/: the alert rules, the scrape config and the dashboard, checked with Debian's
promtool, and a real Prometheus scraping the real daemon.

docs/metrics.md is the contract: every metric the rules and the dashboard use must be in
its tables, and the daemon must export every metric in them with the labels they list.
Without Debian's ``prometheus`` package (promtool and prometheus) these tests fail with
the command to install it; they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ingestd.config import SETTINGS

from .conftest import free_port
from .daemonlib import DaemonRunner

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = PROMETHEUS_DIR / "dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

JOB = "smalltable-ingestd"
INSTALL = "install Debian's prometheus package (promtool, prometheus): apt-get install -y prometheus"

# What each part of issue 6 asks the rules to watch, and the alerts that do it.
REQUIRED_ALERTS = {
    "ingest lag too high": {"SmallTableIngestLagHigh", "SmallTableIngestLagCritical"},
    "the daemon down or not scraped": {"SmallTableIngestdDown", "SmallTableIngestdNotScraped"},
    "rejects spiking": {"SmallTableRejectsSpiking"},
    "a project near or over its quota": {"SmallTableProjectNearQuota", "SmallTableProjectOverQuota"},
    "disk space running out": {"SmallTableLogDiskSpaceLow", "SmallTableDataDiskSpaceLow"},
    "no rotation for too long": {"SmallTableLogNotRotated"},
    "dead letters appearing": {"SmallTableDeadLetters"},
    "load errors": {"SmallTableLoadErrors"},
    "checkpoint stale while lines wait": {"SmallTableCheckpointStale"},
}

# Series Prometheus itself makes, which rules (not the dashboard) may use.
PROMETHEUS_SERIES = frozenset({"up"})
# Labels every scraped series gets, and the bucket label of histograms.
TARGET_LABELS = {"job", "instance"}


def program(name: str) -> str:
    """The path of a program from Debian's prometheus package, or fail saying how to get it."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL}", pytrace=False)
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([program("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


# -- the contract: docs/metrics.md ---------------------------------------------------------


def documented_metrics() -> dict[str, dict[str, Any]]:
    """Every metric in docs/metrics.md's tables: name -> {"type", "labels", "values"}.

    ``labels`` are the backticked names in the labels column; ``values`` the backticked
    words after them (in parentheses, or in the meaning of a ``reason``) that are the
    label's fixed values, by label.
    """
    metrics: dict[str, dict[str, Any]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        kind = cells[1]
        labels: set[str] = set()
        values: dict[str, set[str]] = {}
        if len(cells) == 4:
            for match in re.finditer(r"`(\w+)`(?:\s*\(([^)]*)\))?", cells[2]):
                labels.add(match.group(1))
                if match.group(2):
                    values[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
            fixed = re.search(r"`reason` is one of (.*?)$", cells[3])
            if fixed:
                values["reason"] = set(re.findall(r"`(\w+)`", fixed.group(1)))
        metrics[name] = {"type": kind, "labels": labels, "values": values}
    return metrics


def series_names(metrics: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each name a documented metric is exported under (histograms have three) -> the metric."""
    names = {}
    for name, info in metrics.items():
        if info["type"] == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[name + suffix] = name
        else:
            names[name] = name
    return names


def test_the_metrics_doc_parses_into_the_contract():
    metrics = documented_metrics()
    assert len(metrics) >= 20, sorted(metrics)
    assert {info["type"] for info in metrics.values()} == {"gauge", "counter", "histogram"}
    assert metrics["smalltable_records_rejected_total"]["labels"] == {"project", "reason"}
    assert "body_not_captured" in metrics["smalltable_records_rejected_total"]["values"]["reason"]
    assert metrics["smalltable_filesystem_avail_bytes"]["values"] == {"dir": {"logs", "data"}}
    assert metrics["smalltable_ingest_dead_letter_lines_total"]["values"] == {
        "reason": {"unparsable", "overlong"}
    }
    assert metrics["smalltable_ingest_lag_seconds"] == {"type": "gauge", "labels": set(), "values": {}}
    assert "smalltable_ingest_batch_duration_seconds_bucket" in series_names(metrics)


# -- PromQL: which metrics and labels an expression uses ---------------------------------

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "atan2", "inf", "nan",
}  # fmt: skip
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression refers to.

    A small lexer, enough for the expressions here: strings, label matchers, ranges and
    grouping lists are taken out; an identifier followed by ``(`` is a function or an
    aggregation; keywords are skipped; every other identifier is a metric name.
    """
    assert "__name__" not in expr, f"select metrics by name, not with __name__: {expr}"
    labels: set[str] = set()
    text = _STRING.sub('""', expr)
    for match in _GROUPING.finditer(text):
        labels |= {name.strip() for name in match.group(2).split(",") if name.strip()}
    text = _GROUPING.sub(" ", text)
    for match in re.finditer(r"\{([^}]*)\}", text):
        before = text[: match.start()].rstrip()
        assert re.search(r"[A-Za-z0-9_:]$", before), f"a selector without a metric name in: {expr}"
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match.group(1)))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    metrics = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call or name in _KEYWORDS:
            continue
        metrics.add(name)
    return metrics, labels


def test_promql_names_finds_metrics_and_labels():
    expr = (
        'sum by (project) (rate(a_total{project=~"$p", reason="x"}[5m])) / on(instance) group_left(version) '
        "b_info > bool 0.5e3 and time() - c_seconds offset 15m or 2 * 0x1F unless "
        "histogram_quantile(0.9, sum without (job) (rate(d_bucket[1m:10s])))"
    )
    assert promql_names(expr) == (
        {"a_total", "b_info", "c_seconds", "d_bucket"},
        {"project", "reason", "instance", "version", "job"},
    )
    with pytest.raises(AssertionError, match="without a metric name"):
        promql_names('{job="x"}')


def assert_documented(expr: str, where: str, allowed_extra: frozenset[str] = frozenset()) -> set[str]:
    """Every metric and label ``expr`` uses is documented; return its metrics."""
    documented = documented_metrics()
    names = series_names(documented)
    labels_known = set().union(*(info["labels"] for info in documented.values())) | TARGET_LABELS | {"le"}
    metrics, labels = promql_names(expr)
    unknown = metrics - set(names) - set(allowed_extra)
    assert not unknown, f"{where}: {sorted(unknown)} not in docs/metrics.md: {expr}"
    assert labels <= labels_known, f"{where}: labels {sorted(labels - labels_known)} not documented: {expr}"
    return metrics


# -- alert rules -----------------------------------------------------------------------------


def alert_rules() -> list[dict]:
    config = yaml.safe_load(ALERTS.read_text())
    assert [group["name"] for group in config["groups"]] == ["smalltable"]
    return config["groups"][0]["rules"]


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", str(ALERTS), cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass():
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_for_severity_summary_description_and_runbook():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        name = rule["alert"]
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: for: {rule['for']}"
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"docs/ops.md#{name.lower()}", name
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert name.startswith("SmallTable"), name
    missing = {what: alerts - set(names) for what, alerts in REQUIRED_ALERTS.items() if alerts - set(names)}
    assert not missing, f"no alert for: {missing}"
    assert {rule["labels"]["severity"] for rule in rules} == {"warning", "critical"}


def test_alert_rules_use_only_documented_metrics():
    used = set()
    for rule in alert_rules():
        used |= assert_documented(rule["expr"], rule["alert"], allowed_extra=PROMETHEUS_SERIES)
    assert 'up{job="smalltable-ingestd"}' in " ".join(rule["expr"] for rule in alert_rules())
    assert "smalltable_ingest_lag_seconds" in used


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    """Each alert: a case where it fires, with its exact labels and annotations, and one where it does not."""
    rules = {rule["alert"]: rule for rule in alert_rules()}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in rules, f"{case['name']}: no alert {name}"
            if not check.get("exp_alerts"):
                quiet.add(name)
                continue
            fires.add(name)
            for expected in check["exp_alerts"]:
                where = f"{case['name']} at {check['eval_time']}"
                assert expected["exp_labels"]["severity"] == rules[name]["labels"]["severity"], where
                assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}, where
    assert set(rules) - fires == set(), "alerts never seen firing in alerts_test.yml"
    assert set(rules) - quiet == set(), "alerts never seen quiet in alerts_test.yml"


# -- the scrape config ---------------------------------------------------------------------


def scrape_job(config: dict) -> dict:
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    assert len(jobs) == 1, f"one scrape job {JOB}"
    return jobs[0]


def test_scrape_config_is_the_production_example(tmp_path):
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job = scrape_job(config)
    assert job.get("scrape_interval", config["global"].get("scrape_interval")) == "15s"
    assert config["global"].get("evaluation_interval") == "15s"
    assert job["static_configs"] == [{"targets": [f"127.0.0.1:{SETTINGS['metrics.port'].default}"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    # As installed: the config with the rules beside it.
    shutil.copy(SCRAPE_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def render_scrape_config(directory: Path, metrics_port: int) -> Path:
    """prometheus.yml for a test: the production file, scraping and evaluating every second."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    job = scrape_job(config)
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["rule_files"] = [str(ALERTS)]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_promtool_checks_a_rendered_scrape_config(tmp_path):
    path = render_scrape_config(tmp_path, 19108)
    result = promtool("check", "config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the dashboard -----------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> Iterator[dict]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside collapsed rows


def dashboard_exprs(board: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query on the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


GRAFANA_INTERVALS = re.compile(r"\$\{?(__rate_interval|__interval|__range)\b\}?")


def as_promql(expr: str, variables: set[str]) -> str:
    """A dashboard query as Prometheus sees it: Grafana's intervals filled in, every
    (multi-value) variable at its "All" value."""
    text = GRAFANA_INTERVALS.sub("1m", expr)
    for name in re.findall(r"\$\{?(\w+)\}?", text):
        assert name in variables, f"undefined dashboard variable ${name} in {expr}"
    # Variables are only used as regexes (`label=~"$var"`), where "All" is ".*".
    bare = re.sub(r'=~"\$\{?\w+\}?"', "", text)
    assert "$" not in bare, f'a variable used outside label=~"$var": {expr}'
    return re.sub(r"\$\{?\w+\}?", ".*", text)


def dashboard_variables(board: dict) -> dict[str, dict]:
    return {var["name"]: var for var in board["templating"]["list"]}


def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["title"] and board["uid"]
    variables = dashboard_variables(board)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for name, var in variables.items():
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name


def test_dashboard_queries_use_only_documented_metrics():
    board = dashboard()
    variables = set(dashboard_variables(board))
    used = set()
    for title, expr in dashboard_exprs(board):
        used |= assert_documented(as_promql(expr, variables), title)
    for name, var in dashboard_variables(board).items():
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
            assert match, f"${name}: {var['definition']}"
            used |= assert_documented(as_promql(match.group(1), variables), f"${name}")
    for wanted in (
        "smalltable_ingest_lag_seconds",
        "smalltable_ingest_lag_bytes",
        "smalltable_records_stored_total",
        "smalltable_records_rejected_total",
        "smalltable_project_quota_ratio",
        "smalltable_project_database_bytes",
        "smalltable_filesystem_avail_bytes",
        "smalltable_ingest_batch_duration_seconds_bucket",
        "smalltable_ingest_dead_letter_lines_total",
        "smalltable_ingest_load_errors_total",
    ):
        assert wanted in used, f"no panel shows {wanted}"
    quota = [panel for panel in panels(board) if "quota_ratio" in json.dumps(panel.get("targets"))]
    assert [panel["type"] for panel in quota] == ["bargauge"]


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each dashboard query, as a recording rule, through promtool's PromQL parser."""
    board = dashboard()
    variables = set(dashboard_variables(board))
    rules = [
        {"record": f"dashboard:query_{n}", "expr": as_promql(expr, variables)}
        for n, (_, expr) in enumerate(dashboard_exprs(board))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- a real Prometheus scraping the real daemon -----------------------------------------------


class Prometheus:
    """Debian's prometheus on loopback, scraping one ingestd every second with alerts.yml loaded."""

    def __init__(self, directory: Path, metrics_port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = directory / "prometheus.out"
        config = render_scrape_config(directory, metrics_port)
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [
                    program("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(timeout=10)
        wait_for(self._ready, 30, f"prometheus did not start:\n{self.log_text()}")

    def _ready(self) -> bool:
        assert self.process.poll() is None, f"prometheus exited:\n{self.log_text()}"
        try:
            return self.client.get(f"{self.url}/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result (a vector or, for a range selector, a matrix)."""
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None while it has none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def samples(self, metric: str, seconds: int) -> list[tuple[float, float]]:
        """(timestamp, value) of every sample of a single series in the last ``seconds``."""
        result = self.query(f"{metric}[{seconds}s]")
        assert len(result) == 1, f"{metric}: {result}"
        return [(float(ts), float(value)) for ts, value in result[0]["values"]]

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_now(daemon: DaemonRunner, project: str, count: int, body: bytes = b'{"n":1}', **fields: str):
    """Append ``count`` lines received now; return their ids, the time in them and their bytes."""
    received = time.time()
    ids, data = [], b""
    for _ in range(count):
        rid, raw = daemon.line(project, body, t=f"{received:.3f}", **fields)
        ids.append(rid)
        data += raw
    with open(daemon.log_path, "ab") as log:
        log.write(data)
    return ids, received, len(data)


def test_real_prometheus_sees_lag_while_the_daemon_is_stuck(daemon, tmp_path):
    """Hold a write lock on a project's database: the daemon stays up but cannot load.

    Lag is computed at scrape time from the checkpoint and the log, so Prometheus sees it
    grow for as long as the lock is held (past the daemon's 10 s busy timeout, through its
    retries) and fall back to 0 once the lock is gone.
    """
    project = "lagged"
    daemon.start()
    prometheus = Prometheus(tmp_path / "prometheus", daemon.metrics_port)
    try:
        first, _, _ = write_now(daemon, project, 1)
        daemon.wait_loaded(project, first)
        wait_for(
            lambda: (
                prometheus.value(f'up{{job="{JOB}"}}') == 1
                and prometheus.value("smalltable_ingest_lag_seconds") == 0
                and prometheus.value("smalltable_ingest_lag_bytes") == 0
            ),
            20,
            "Prometheus scraping ingestd, caught up",
        )

        lock = sqlite3.connect(daemon.data_dir / f"{project}.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            stuck, received, stuck_bytes = write_now(daemon, project, 20)
            seen = wait_for(
                lambda: (
                    (prometheus.value("smalltable_ingest_lag_seconds") or 0) > 0
                    and (prometheus.value("smalltable_ingest_lag_bytes") or 0) > 0
                ),
                12,
                "Prometheus seeing lag > 0 while the database is locked",
            )
            assert seen
            # held until Prometheus has scraped past the daemon's 10 s busy timeout (a
            # wait for that scrape, not a sleep: a loaded machine scrapes late)
            wait_for(
                lambda: any(
                    ts > received + 11 for ts, _ in prometheus.samples("smalltable_ingest_lag_seconds", 60)
                ),
                60,
                "a scrape past the busy timeout while the database is locked",
                interval=1,
            )
            lag_seconds = prometheus.samples("smalltable_ingest_lag_seconds", 60)
            lag_bytes = prometheus.samples("smalltable_ingest_lag_bytes", 60)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        released = time.time()

        # While locked (from 1 s after the write to the release), every scrape saw the lag:
        # the age of the oldest waiting line, from its own timestamp, and exactly its bytes;
        # also after the daemon's 10 s busy timeout, while it fails and retries.
        held = [(ts, value) for ts, value in lag_seconds if received + 1 <= ts <= released]
        assert held and held[-1][0] > received + 11, f"too few scrapes while locked: {lag_seconds}"
        for ts, value in held:
            assert value == pytest.approx(ts - received, abs=2), f"lag at {ts - received:.1f}s: {held}"
        held_bytes = [value for ts, value in lag_bytes if received + 1 <= ts <= released]
        assert held_bytes and all(value == stuck_bytes for value in held_bytes), (stuck_bytes, held_bytes)

        # Released: loaded, and the lag back to 0.
        daemon.wait_loaded(project, stuck)
        wait_for(
            lambda: (
                prometheus.value("smalltable_ingest_lag_seconds") == 0
                and prometheus.value("smalltable_ingest_lag_bytes") == 0
            ),
            15,
            "lag back to 0 after the lock is released",
        )
        # The failed batches were counted, and the rule on them is evaluated (pending: it
        # fires after 5 minutes of them).
        assert (prometheus.value("smalltable_ingest_load_errors_total") or 0) >= 1
        wait_for(
            lambda: prometheus.query('ALERTS{alertname="SmallTableLoadErrors", alertstate="pending"}'),
            10,
            "SmallTableLoadErrors pending",
        )
    finally:
        prometheus.close()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> Iterator[Prometheus]:
    """The real daemon after records, a reject and a dead letter, scraped by a real Prometheus."""
    home = tmp_path_factory.mktemp("scraped")
    daemon = DaemonRunner(home / "home")
    daemon.start()
    prometheus = None
    try:
        records = write_now(daemon, "alpha", 5)[0] + write_now(daemon, "beta", 3)[0]
        reject = write_now(daemon, "beta", 1, body=b'{"broken', ctype="application/json")[0]
        with open(daemon.log_path, "ab") as log:
            log.write(b"this line is not what nginx writes\n")
        daemon.wait_loaded("alpha", records[:5])
        daemon.wait_loaded("beta", records[5:])
        daemon.wait_loaded("beta", reject, table="rejects")
        wait_for(daemon.deadletter_path.exists, 10, "the dead letter written")
        prometheus = Prometheus(home / "prometheus", daemon.metrics_port)
        # Three scrapes, so that rate() and increase() have samples to work on.
        scrapes = f'count_over_time(up{{job="{JOB}"}}[1m])'
        wait_for(lambda: (prometheus.value(scrapes) or 0) >= 3, 20, "three scrapes of ingestd")
        yield prometheus
    finally:
        if prometheus is not None:
            prometheus.close()
        daemon.kill()


def test_dashboard_and_alert_queries_run_on_real_prometheus(scraped):
    board = dashboard()
    variables = set(dashboard_variables(board))
    for _, expr in dashboard_exprs(board):
        scraped.query(as_promql(expr, variables))  # asserts status success
    for var in dashboard_variables(board).values():
        if var["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"]).groups()
            scraped.api(f"label/{label}/values", **{"match[]": as_promql(metric, variables)})
    for rule in alert_rules():
        scraped.query(rule["expr"])
    lag = scraped.query(as_promql(dashboard_exprs(board)[0][1], variables))
    assert lag, "the first panel (ingest lag) shows nothing"
    assert scraped.query(f'up{{job="{JOB}"}} == 1'), "ingestd not up"
    rules = scraped.api("rules")["groups"]
    assert [group["name"] for group in rules] == ["smalltable"]
    assert {rule["name"] for rule in rules[0]["rules"]} == {rule["alert"] for rule in alert_rules()}
    wait_for(
        lambda: all(rule["health"] == "ok" for rule in scraped.api("rules")["groups"][0]["rules"]),
        10,
        "every rule evaluated without error",
    )
    # The fixture's dead letter, on real data: the alert fires at once (for: 0m).
    firing = wait_for(
        lambda: scraped.query('ALERTS{alertname="SmallTableDeadLetters", alertstate="firing"}'),
        10,
        "SmallTableDeadLetters firing for the fixture's dead letter",
    )
    assert [alert["metric"]["reason"] for alert in firing] == ["unparsable"]
    assert all(alert["metric"]["severity"] == "warning" for alert in firing)


def test_the_daemon_exports_every_documented_metric_with_its_labels(scraped):
    """After records, a reject and a dead letter: each metric in docs/metrics.md, with the labels it lists."""
    documented = documented_metrics()
    names = series_names(documented)
    series = scraped.api("series", **{"match[]": f'{{job="{JOB}"}}'})
    by_name: dict[str, list[dict]] = {}
    for labels in series:
        by_name.setdefault(labels["__name__"], []).append(labels)
    problems = [f"{name}: not exported" for name in sorted(names) if name not in by_name]
    for name, metric in names.items():
        info = documented[metric]
        expected = info["labels"] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        for labels in by_name.get(name, []):
            found = set(labels) - {"__name__"}
            if found != expected:
                problems.append(f"{name}: labels {sorted(found)}, documented {sorted(expected)}")
                break
            for label, values in info["values"].items():
                if labels[label] not in values:
                    problems.append(f"{name}: {label}={labels[label]!r} is not one of {sorted(values)}")
    dirs = {labels.get("dir") for labels in by_name.get("smalltable_filesystem_avail_bytes", [])}
    if dirs != {"logs", "data"}:
        problems.append(f"smalltable_filesystem_avail_bytes: dir values {sorted(map(str, dirs))}")
    projects = {labels.get("project") for labels in by_name.get("smalltable_records_stored_total", [])}
    if not {"alpha", "beta"} <= projects:
        problems.append(f"smalltable_records_stored_total: projects {sorted(map(str, projects))}")
    assert not problems, "ingestd does not export what docs/metrics.md says:\n" + "\n".join(problems)
