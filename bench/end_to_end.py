"""End-to-end write throughput and ingest lag under load (issue 7, benchmark 2).

``wrk`` (Debian's package) POSTs a ~200-byte JSON body to ``bench.localhost``
through the real nginx of ``smalltable up``, as fast as it can, keeping its
connections open. Three runs of the same length, in one go on the same machine:

A. **nginx logging alone**: the stack is up but ingestd is SIGSTOPped, so nginx
   only answers and appends to the ingest log. The baseline. ingestd is then
   resumed and drains what A wrote (its drain rate with nothing else to do is
   printed too).
B. **with the daemon**: the same load while ingestd follows the log. Every 100 ms
   the metrics endpoint is scraped for ``smalltable_ingest_lag_seconds``
   (p50/p99/max over the run); after wrk stops, the time until
   ``smalltable_ingest_lag_bytes`` is 0 (catch-up). Then every request wrk saw
   answered 2xx must be a row: the rows added to the project's database are
   compared with wrk's count (up to one request per connection more: requests
   nginx answered as wrk stopped, which wrk does not count).
D. **lag at a steady load**: B is a flood, where lag only says how far behind the
   daemon is. Real posts come at some rate, so wrk then paces each connection
   (its ``delay()`` hook, on ``--paced-connections`` connections, so that the
   delay and not the answer's latency sets the rate) at fractions of A's rate
   (``--paced``: 25 %, 50 % and 80 % by default), each for ``--paced-seconds`` (60),
   and the lag p50/p99/max is sampled the same way: the answer to "how soon can I
   see my post" at that rate. Then ``--search`` more runs bisect between the
   highest rate that kept lag p99 under 250 ms and the lowest that did not:
   the **sustained rate** (issue 25, goal 3: at least 0.8 of A), printed beside
   the most this machine's cores could sustain by the CPU each part spent per post.
C. **Datasette's own JSON write API** (1.0 alpha, installed in its own venv under
   bench/.data/), one row per request (``POST /db/records/-/insert`` with a
   Bearer token), the same body and load: what a user would build instead.

Goals: B accepts at least 0.85x of A's requests/s, and lag p99 under 250 ms; B's
backlog drains within twice B's length after wrk stops (issue 25, goal 3); D's
sustained rate is at least 0.8 of A.

ingestd runs at its configured CPU priority (``ingest.nice``, 19 by default:
nginx gets the CPUs first); ``--nice N`` runs it at another.

wrk, nginx's workers, ingestd (and in C Datasette) share the machine's cores:
the figures are for this machine. So the cores each used during each run are
printed, other work on the machine included (a run it disturbed can be told
from a quiet one), and the CPU each spends per request: those hardly depend on
what else runs. B starts with the rows of the warm-up and of A in the project,
as a project that has been in use would. The project's quota is lifted (it
would pass 100 MiB within seconds, and its posts would then wait in the holding area).

wrk is installed with apt-get if missing (as root; otherwise the command is
printed), Datasette's alpha with pip into bench/.data/ds1.

    .venv/bin/python bench/end_to_end.py           # 30 s per run
    .venv/bin/python bench/end_to_end.py --short   # 10 s per run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchlib import cpu_seconds, free_port, interrupt, wait_port

REPO = Path(__file__).resolve().parent.parent
DS_VENV = REPO / "bench" / ".data" / "ds1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROJECT = "bench"
GOAL_RATIO = 0.85
GOAL_LAG_P99 = 0.250
GOAL_SUSTAINED = 0.8
"""Issue 25, goal 3: the highest steady rate with lag p99 under GOAL_LAG_P99, as a fraction of A."""
GOAL_DRAIN = 2.0
"""Issue 25, goal 3: B's backlog drains within this many times B's length after it ends."""

FIELDS = {
    "user": "ann",
    "score": 3,
    "event": "page_view",
    "path": "/docs/getting-started/install",
    "session": "5f0c2a9e1b7d4c38a1e2",
    "duration_ms": 1234,
    "ok": True,
    "ua": "Mozilla/5.0 (X11; Linux x86_64) bench",
    "ts": "2026-11-21T10:00:00.000Z",
}
BODY = json.dumps(FIELDS, separators=(",", ":"))

WRK_LUA = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
%(extra)s
%(pace)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# -- tools ---------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk's path; installed with apt-get when missing and run as root, else say how."""
    found = shutil.which("wrk")
    if found:
        return found
    command = "apt-get install -y wrk"
    if os.geteuid() != 0:
        raise SystemExit(f"wrk is missing; install it with:  sudo {command}")
    print(f"installing wrk: {command}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command.split(), env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(command.split(), env=env, stdout=subprocess.DEVNULL, check=True)
    return shutil.which("wrk") or "wrk"


def ensure_datasette_alpha() -> tuple[Path, str]:
    """Datasette 1.0's newest alpha in its own venv (it cannot share SmallTable's 0.65)."""
    datasette = DS_VENV / "bin" / "datasette"
    if not datasette.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DS_VENV)], check=True)
        pip = str(DS_VENV / "bin" / "pip")
        index = subprocess.run(
            [pip, "index", "versions", "datasette", "--pre"], capture_output=True, text=True, check=True
        ).stdout
        alphas = re.findall(r"\b1\.0a(\d+)\b", index)
        if not alphas:
            raise SystemExit(f"`pip index versions datasette --pre` lists no 1.0 alpha:\n{index}")
        version = f"1.0a{max(int(a) for a in alphas)}"
        print(f"installing datasette=={version} into {DS_VENV}", flush=True)
        subprocess.run([pip, "install", "-q", f"datasette=={version}"], check=True)
    version = subprocess.run([str(datasette), "--version"], capture_output=True, text=True, check=True)
    return datasette, version.stdout.strip().rpartition(" ")[2]


# -- processes and their CPU -----------------------------------------------------


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return out


def system_cpu() -> tuple[float, float]:
    """(busy, of which interrupts and softirqs) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS, (values[5] + values[6]) / CLOCK_TICKS


def every_process() -> dict[int, tuple[str, float]]:
    """{pid: (name, CPU seconds)} of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = rest.split()
            out[int(entry)] = (head.partition("(")[2], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


class CpuMeter:
    """Cores used by named groups of processes between start() and stop(), and by the rest.

    Whatever else ran meanwhile (other work on the machine) is shown, so a run
    disturbed by it can be told from a quiet one.
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {**groups, "this script": [os.getpid()]}

    def start(self) -> None:
        self.before, self.machine = every_process(), system_cpu()
        self.started = time.monotonic()

    def stop(self, wrk: WrkResult) -> dict[str, float]:
        """Cores used by each group, wrk, interrupts, other processes, and the whole machine."""
        after, (busy, irq) = every_process(), system_cpu()
        wall = time.monotonic() - self.started
        delta = {
            pid: (name, (cpu - self.before[pid][1]) / wall)
            for pid, (name, cpu) in after.items()
            if pid in self.before
        }
        used = {name: sum(delta.get(pid, ("", 0.0))[1] for pid in pids) for name, pids in self.groups.items()}
        used["wrk"] = wrk.cpu / wall
        used["irq+softirq"] = (irq - self.machine[1]) / wall
        mine = {pid for pids in self.groups.values() for pid in pids}
        others = sorted(
            ((cores, name) for pid, (name, cores) in delta.items() if pid not in mine and cores >= 0.05),
            reverse=True,
        )
        machine = (busy - self.machine[0]) / wall
        used["other processes"] = max(0.0, machine - sum(used.values()))
        self.others = ", ".join(f"{name} {cores:.2f}" for cores, name in others[:4])
        used["whole machine"] = machine
        return used


def cores(used: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in used.items())


# -- wrk -----------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    cpu: float
    """wrk's own CPU seconds."""

    @property
    def ok(self) -> int:
        """Requests answered 2xx (wrk counts non-2xx/3xx as status errors; nothing answers 3xx)."""
        return self.requests - self.errors["status"]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def write_lua(path: Path, body: str, extra_headers: dict[str, str], delay_ms: float | None = None) -> Path:
    """wrk's script; with ``delay_ms``, each connection waits that long before each request.

    wrk's delay is whole milliseconds: each thread carries the fraction over, so the
    delays average ``delay_ms``."""
    extra = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in extra_headers.items())
    pace = ""
    if delay_ms:
        pace = (
            "local owed = 0\n"
            f"delay = function() owed = owed + {delay_ms!r}; local ms = math.floor(owed); "
            "owed = owed - ms; return ms end"
        )
    path.write_text(WRK_LUA % {"body": json.dumps(body), "extra": extra, "pace": pace})
    return path


def run_wrk(
    wrk: str, args: argparse.Namespace, url: str, host: str, lua: Path, seconds: float, connections: int = 0
) -> WrkResult:
    argv = [
        wrk, "-t", str(args.threads), "-c", str(connections or args.connections), "-d", f"{seconds:g}s",
        "--timeout", "10s", "-H", f"Host: {host}", "-s", str(lua), url,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    RUNNING.append(process)
    try:
        output, _ = process.communicate(timeout=seconds + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    found = re.search(r"^WRK (\{.*\})$", output, re.M)
    if not found:
        raise SystemExit(f"wrk said:\n{output}")
    data = json.loads(found.group(1))
    return WrkResult(
        data["requests"],
        data["duration_us"] / 1e6,
        {k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
        cpu,
    )


RUNNING: list[subprocess.Popen] = []
"""Every process this script started (killed in the end, whatever happens)."""


# -- metrics ---------------------------------------------------------------------


def scrape(client: httpx.Client, url: str) -> dict[str, float]:
    """Unlabelled samples of the metrics page: {name: value}."""
    out = {}
    for line in client.get(url).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


@dataclass
class LagSampler:
    """Scrapes the metrics every ``interval`` s in a thread; keeps (time, lag s, lag bytes)."""

    url: str
    interval: float = 0.1
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    scrape_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            tick = time.monotonic()
            while not self._stop.is_set():
                started = time.monotonic()
                values = scrape(client, self.url)
                self.scrape_seconds.append(time.monotonic() - started)
                self.samples.append(
                    (started, values["smalltable_ingest_lag_seconds"], values["smalltable_ingest_lag_bytes"])
                )
                tick += self.interval
                if tick < time.monotonic():  # a slow scrape: the next one now, then on the grid
                    tick = time.monotonic()
                self._stop.wait(max(0.0, tick - time.monotonic()))

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_caught_up(client: httpx.Client, url: str, timeout: float) -> float | None:
    """Seconds until lag_bytes is 0 (scraped every 100 ms), or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if scrape(client, url)["smalltable_ingest_lag_bytes"] == 0:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sum(conn.execute(f"select count(*) from {t}").fetchone()[0] for t in ("records", "rejects"))


# -- the runs --------------------------------------------------------------------


@dataclass
class Figures:
    alone: WrkResult | None = None
    daemon: WrkResult | None = None
    datasette: WrkResult | None = None
    datasette_version: str = ""
    datasette_rows: int = 0
    lag: list[float] = field(default_factory=list)
    scrape_p99: float = 0.0
    catch_up: float | None = None
    drain_a: tuple[int, float | None] = (0, None)
    ingestd_cpu: dict[str, float] = field(default_factory=dict)
    """ingestd's CPU seconds: draining A's backlog, and from B's start to its catch-up."""
    loaded: int = 0
    rows_before_b: int = 0
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    rotations: dict[str, int] = field(default_factory=dict)
    paced: list[tuple[float, WrkResult, list[float], float]] = field(default_factory=list)
    """Run D: (offered requests/s, wrk's result, lag samples, ingestd's cores)."""


def find_ingestd(home: Path) -> int:
    """The ingestd that ``up`` started for this home (by its --config argv, via pgrep)."""
    pattern = re.escape(f"--config {home}/conf/smalltable.yaml")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
        if len(found) == 1:
            return int(found[0])
        time.sleep(0.2)
    raise SystemExit(f"cannot tell ingestd's pid (pgrep -f {pattern!r} found {found})")


def smalltable_runs(wrk: str, args: argparse.Namespace, seconds: float, home: Path, figures: Figures) -> None:
    port, ds_port, metrics_port = free_port(), free_port(), free_port()
    # The quota is lifted: at these rates the project passes the default 100 MiB within
    # seconds, and from then on its posts would wait in the holding area.
    config = home.parent / "bench.yaml"
    settings: dict = {"projects": {"quota_mb": 1_000_000}}
    # D's paced connections all come from 127.0.0.1.
    settings["nginx"] = {"connections_per_address": max(128, args.paced_connections + args.connections)}
    if args.nice is not None:
        settings["ingest"] = {"nice": args.nice}
    config.write_text(json.dumps(settings))  # JSON is YAML
    up = subprocess.Popen(
        [sys.executable, "-m", "ingestd", "up", "--config", str(config), "--home", str(home),
         "--port", str(port), "--datasette-port", str(ds_port), "--metrics-port", str(metrics_port)],
        stdout=open(home.parent / "up.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    RUNNING.append(up)
    ingestd = None
    try:
        wait_port(port)
        wait_port(metrics_port)
        ingestd = find_ingestd(home)
        nginx_master = int((home / "run" / "nginx.pid").read_text())
        nginx = [nginx_master, *children(nginx_master)]
        datasette = [pid for pid in children(up.pid) if pid not in (ingestd, nginx_master)]
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        url = f"http://127.0.0.1:{port}/"
        lua = write_lua(home.parent / "post.lua", BODY, {})
        db = home / "data" / f"{PROJECT}.db"
        client = httpx.Client(timeout=60)
        print(
            f"stack up: nginx {port} ({len(nginx) - 1} workers), ingestd pid {ingestd}, "
            f"metrics {metrics_port}; wrk -t {args.threads} -c {args.connections}, "
            f"{len(BODY)}-byte JSON bodies to {PROJECT}.localhost",
            flush=True,
        )

        # warm-up: creates the project and its database, warms nginx's connections
        run_wrk(wrk, args, url, f"{PROJECT}.localhost", lua, 2)
        if wait_caught_up(client, metrics, 120) is None:
            raise SystemExit("ingestd did not load the warm-up")

        def meter() -> CpuMeter:
            return CpuMeter({"nginx": nginx, "ingestd": [ingestd], "datasette": datasette})

        def rotations() -> int:
            return int(scrape(client, metrics).get("smalltable_ingest_rotations_total", 0))

        # A: nginx logging alone
        rows_before_a, rotations_before = count_rows(db), rotations()
        os.kill(ingestd, signal.SIGSTOP)
        try:
            cpu = meter()
            cpu.start()
            figures.alone = run_wrk(wrk, args, url, f"{PROJECT}.localhost", lua, seconds)
            figures.cpu["A: nginx alone"] = cpu.stop(figures.alone)
            figures.others["A: nginx alone"] = cpu.others
            print(f"A  nginx logging alone: {figures.alone.rate:,.0f} req/s", flush=True)
        finally:
            ingestd_cpu = cpu_seconds(ingestd)
            os.kill(ingestd, signal.SIGCONT)
        drained = wait_caught_up(client, metrics, 900)
        figures.ingestd_cpu["drain"] = cpu_seconds(ingestd) - ingestd_cpu
        if drained is None:
            raise SystemExit("ingestd did not catch up with run A within 900 s")
        figures.drain_a = (count_rows(db) - rows_before_a, drained)
        figures.rotations["A"] = rotations() - rotations_before
        print(f"   ingestd loaded A's backlog in {drained:.1f} s", flush=True)

        # B: the same with the daemon running
        time.sleep(2)
        rows_before_b, rotations_before = count_rows(db), rotations()
        figures.rows_before_b = rows_before_b
        ingestd_cpu = cpu_seconds(ingestd)
        sampler = LagSampler(metrics).start()
        cpu = meter()
        cpu.start()
        figures.daemon = run_wrk(wrk, args, url, f"{PROJECT}.localhost", lua, seconds)
        figures.cpu["B: with ingestd"] = cpu.stop(figures.daemon)
        figures.others["B: with ingestd"] = cpu.others
        wrk_ended = time.monotonic()
        during = [lag for at, lag, _ in sampler.samples if at <= wrk_ended]

        def caught_up() -> list[float]:
            return [at for at, _, pending in list(sampler.samples) if at > wrk_ended and pending == 0]

        deadline = wrk_ended + 900
        while time.monotonic() < deadline and not caught_up():
            time.sleep(0.05)
        sampler.stop()
        done = caught_up()
        figures.catch_up = done[0] - wrk_ended if done else None
        figures.lag = during
        figures.scrape_p99 = percentile(sampler.scrape_seconds, 0.99)
        figures.ingestd_cpu["B"] = cpu_seconds(ingestd) - ingestd_cpu
        figures.loaded = count_rows(db) - rows_before_b
        figures.rotations["B"] = rotations() - rotations_before
        print(f"B  with the daemon:     {figures.daemon.rate:,.0f} req/s", flush=True)

        # D: steady loads below saturation, then a bisection for the sustained rate
        def paced(fraction: float) -> bool:
            offered = fraction * figures.alone.rate
            delay_ms = args.paced_connections / offered * 1000
            paced_lua = write_lua(home.parent / "paced.lua", BODY, {}, delay_ms)
            time.sleep(2)
            ingestd_cpu = cpu_seconds(ingestd)
            sampler = LagSampler(metrics).start()
            result = run_wrk(
                wrk, args, url, f"{PROJECT}.localhost", paced_lua, args.paced_seconds, args.paced_connections
            )
            sampler.stop()
            used = (cpu_seconds(ingestd) - ingestd_cpu) / result.seconds
            lags = [lag for _, lag, _ in sampler.samples]
            figures.paced.append((offered, result, lags, used))
            p99 = percentile(lags or [float("nan")], 0.99)  # no samples: nan, never kept
            print(
                f"D  paced at {offered:,.0f} req/s offered: {result.rate:,.0f} accepted, "
                f"lag p99 {p99 * 1000:.0f} ms",
                flush=True,
            )
            if wait_caught_up(client, metrics, 900) is None:
                raise SystemExit("ingestd did not catch up after a paced run within 900 s")
            return p99 < GOAL_LAG_P99

        verdicts = {fraction: paced(fraction) for fraction in args.paced}
        for _ in range(args.search if verdicts else 0):
            low = max([f for f, ok in verdicts.items() if ok], default=0.0)
            high = min([f for f, ok in verdicts.items() if not ok and f > low], default=low * 2 or 1.0)
            middle = (low + high) / 2
            verdicts[middle] = paced(middle)
        client.close()
    finally:
        if ingestd is not None:
            with suppress(ProcessLookupError):
                os.kill(ingestd, signal.SIGCONT)
        interrupt(up, 60)


def datasette_run(wrk: str, args: argparse.Namespace, seconds: float, work: Path, figures: Figures) -> None:
    datasette, version = ensure_datasette_alpha()
    figures.datasette_version = version
    db = work / "diy.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "create table records (id integer primary key, user text, score integer, event text, "
            "path text, session text, duration_ms integer, ok integer, ua text, ts text)"
        )
    secret = secrets.token_hex(16)
    token = subprocess.run(
        [str(datasette), "create-token", "root", "--secret", secret],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [str(datasette), "serve", str(db), "--host", "127.0.0.1", "--port", str(port),
         "--secret", secret, "--root"],
        stdout=open(work / "datasette.out", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    RUNNING.append(server)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/diy/records/-/insert"
        check = httpx.post(
            url, json={"row": FIELDS}, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        if check.status_code // 100 != 2:
            raise SystemExit(f"Datasette's insert API refused a row: {check.status_code} {check.text}")
        lua = write_lua(
            work / "insert.lua", json.dumps({"row": FIELDS}, separators=(",", ":")),
            {"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        cpu = CpuMeter({"datasette": [server.pid]})
        cpu.start()
        figures.datasette = run_wrk(wrk, args, url, f"127.0.0.1:{port}", lua, seconds)
        figures.cpu["C: Datasette write API"] = cpu.stop(figures.datasette)
        figures.others["C: Datasette write API"] = cpu.others
        figures.datasette_rows = count_rows_diy(db) - 1
        print(f"C  Datasette {version} write API: {figures.datasette.rate:,.0f} req/s", flush=True)
    finally:
        interrupt(server, 30)


def count_rows_diy(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("select count(*) from records").fetchone()[0]


# -- report ----------------------------------------------------------------------


def report(figures: Figures, args: argparse.Namespace, seconds: float) -> None:
    a, b, c = figures.alone, figures.daemon, figures.datasette
    assert a is not None and b is not None
    ratio = b.rate / a.rate
    lag = figures.lag or [float("nan")]
    p50, p99, worst = percentile(lag, 0.5), percentile(lag, 0.99), max(lag)
    extra = figures.loaded - b.ok
    loaded_ok = 0 <= extra <= args.connections
    print()
    print(
        f"{seconds:g} s per run; wrk -t {args.threads} -c {args.connections}; {len(BODY)}-byte JSON; "
        f"{os.cpu_count()} cores shared by wrk, nginx's workers and ingestd (and Datasette in C)"
    )
    rows = [
        ("A  nginx logging alone (ingestd stopped)", f"{a.rate:,.0f} req/s", ""),
        ("B  with the daemon", f"{b.rate:,.0f} req/s", ""),
        ("   B / A", f"{ratio:.2f}x", f"goal >= {GOAL_RATIO}: {'PASS' if ratio >= GOAL_RATIO else 'FAIL'}"),
        (
            "   ingest lag p50 / p99 / max",
            f"{p50 * 1000:.0f} / {p99 * 1000:.0f} / {worst * 1000:.0f} ms",
            f"goal p99 < {GOAL_LAG_P99 * 1000:.0f} ms: {'PASS' if p99 < GOAL_LAG_P99 else 'FAIL'}"
            f" ({len(figures.lag)} samples)",
        ),
        (
            "   catch-up after wrk stopped",
            f"{figures.catch_up:.1f} s" if figures.catch_up is not None else "not within 900 s",
            "",
        ),
        (
            "   loaded == accepted",
            "yes" if loaded_ok else "NO",
            f"{figures.loaded:,} rows; wrk: {b.ok:,} 2xx"
            + (f" (+{extra} answered as wrk stopped)" if extra > 0 else ""),
        ),
    ]
    if figures.catch_up is not None:
        drain = figures.catch_up / b.seconds
        rows.append((
            "   drain after the flood / its length", f"{drain:.2f}x",
            f"goal <= {GOAL_DRAIN:g}x: {'PASS' if drain <= GOAL_DRAIN else 'FAIL'}",
        ))  # fmt: skip
    sustained = 0.0
    for offered, result, samples, used in sorted(figures.paced, key=lambda run: run[0]):
        lags = samples or [float("nan")]
        d99 = percentile(lags, 0.99)
        if d99 < GOAL_LAG_P99:
            sustained = max(sustained, result.rate)
        rows.append((
            f"D  {offered / a.rate:.0%} of A offered, {result.rate:,.0f} req/s "
            f"({result.rate / a.rate:.0%}): lag p50 / p99 / max",
            f"{percentile(lags, 0.5) * 1000:.0f} / {d99 * 1000:.0f} / {max(lags) * 1000:.0f} ms",
            f"p99 < {GOAL_LAG_P99 * 1000:.0f} ms: {'yes' if d99 < GOAL_LAG_P99 else 'no'}; "
            f"ingestd {used:.2f} cores",
        ))  # fmt: skip
    if figures.paced:
        held = sustained / a.rate
        rows.append((
            f"   sustained: lag p99 < {GOAL_LAG_P99 * 1000:.0f} ms for {args.paced_seconds:g} s",
            f"{sustained:,.0f} req/s = {held:.2f}x A",
            f"goal >= {GOAL_SUSTAINED}: {'PASS' if held >= GOAL_SUSTAINED else 'FAIL'}",
        ))  # fmt: skip
        bound = cpu_bound(figures)
        if bound is not None:
            rows.append(("   most these cores could sustain (CPU per post)", f"{bound:.2f}x A", ""))
    if c is not None:
        rows += [
            (f"C  Datasette {figures.datasette_version} write API", f"{c.rate:,.0f} req/s",
             f"{figures.datasette_rows:,} rows; wrk: {c.ok:,} 2xx"),
            ("   B / C", f"{b.rate / c.rate:.0f}x", ""),
        ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:{width}}  {value:>22}  {note}")
    print()
    latency = [f"{n} {r.p50_ms:.1f} / {r.p99_ms:.1f} ms" for n, r in (("A", a), ("B", b), ("C", c)) if r]
    print("client latency p50 / p99: " + ", ".join(latency))
    for name, result in (("A", a), ("B", b), ("C", c)):
        if result is not None and any(result.errors.values()):
            print(f"wrk errors in {name}: {result.errors}")
    rows_a, drained = figures.drain_a
    if drained:
        print(
            f"ingestd drained A's backlog ({rows_a:,} rows) in {drained:.1f} s: "
            f"{rows_a / drained:,.0f} rows/s with nginx idle"
        )
    if figures.cpu:
        used_a, used_b = figures.cpu["A: nginx alone"], figures.cpu["B: with ingestd"]
        print(
            f"CPU per request: nginx {used_a['nginx'] / a.rate * 1e6:.0f} us (A), "
            f"{used_b['nginx'] / b.rate * 1e6:.0f} us (B); wrk {used_a['wrk'] / a.rate * 1e6:.0f} us; "
            f"ingestd per row {figures.ingestd_cpu['drain'] / max(1, rows_a) * 1e6:.0f} us draining A, "
            f"{figures.ingestd_cpu['B'] / max(1, figures.loaded) * 1e6:.0f} us in B (to its catch-up)"
        )
    print(f"B started with {figures.rows_before_b:,} rows in the project (the warm-up's and A's)")
    print(
        f"log rotations during the runs: {figures.rotations}; "
        f"metrics scrape p99 during B: {figures.scrape_p99 * 1000:.0f} ms"
    )
    print("cores used during each run (1.00 = one core busy):")
    for name, used in figures.cpu.items():
        print(f"  {name}: {cores(used)}")
        if figures.others.get(name):
            print(f"    of which long-lived: {figures.others[name]}")


def cpu_bound(figures: Figures) -> float | None:
    """The steady rate, as a fraction of A, at which wrk, nginx and ingestd would need every core.

    In A, wrk and nginx (and the kernel for them) used the whole machine for A's rate;
    a steady rate R with the daemon needs R times (that CPU per request, plus ingestd's
    CPU per row at B's catch-up). So R / A can be at most A's CPU per request over the
    two added together, however the scheduler shares the cores."""
    a, used_a = figures.alone, figures.cpu.get("A: nginx alone")
    if a is None or not used_a or not figures.loaded:
        return None
    per_request = used_a["whole machine"] / a.rate
    per_row = figures.ingestd_cpu["B"] / figures.loaded
    return per_request / (per_request + per_row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="10 s per run instead of 30 s")
    parser.add_argument("--seconds", type=float, help="length of each run (default 30, --short 10)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections [64]")
    parser.add_argument("--skip-datasette", action="store_true", help="no run C")
    parser.add_argument(
        "--paced",
        type=lambda text: [float(x) for x in text.split(",") if x],
        default=[0.25, 0.5, 0.8],
        help="run D's steady loads, as fractions of A's rate [0.25,0.5,0.8; '' for none]",
    )
    parser.add_argument("--paced-seconds", type=float, help="length of each D run (default 60, --short 10)")
    parser.add_argument("--paced-connections", type=int, default=512, help="wrk connections in D [512]")
    parser.add_argument(
        "--search", type=int, help="D runs bisecting for the sustained rate (default 3, --short 1)"
    )
    parser.add_argument("--nice", type=int, help="ingestd's ingest.nice (default: the config's default)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (logs, databases)")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.short else 30.0)
    args.paced_seconds = args.paced_seconds or (10.0 if args.short else 60.0)
    if args.search is None:
        args.search = 1 if args.short else 3
    wrk = ensure_wrk()
    if not args.skip_datasette:
        ensure_datasette_alpha()

    work = Path(tempfile.mkdtemp(prefix="st-e2e-"))
    home = work / "home"
    figures = Figures()
    try:
        smalltable_runs(wrk, args, seconds, home, figures)
        if not args.skip_datasette:
            datasette_run(wrk, args, seconds, work, figures)
        report(figures, args, seconds)
    finally:
        for process in RUNNING:
            if process.poll() is None:
                process.kill()
                process.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    main()
