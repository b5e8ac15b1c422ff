"""``smalltable replay --jobs N``: projects shared among processes, the same databases as one.

The parallel replay must load exactly what a single process loads, settings and
holding area included, because every line of a project goes to one process in log
order. These tests run the real command on a log that has a bit of everything.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import ingestd.ingest.replay as replay_module
import ingestd.ingest.shares as shares_module
from ingestd.ingest.replay import plan
from ingestd.ingest.routing import route

from .conftest import smalltable
from .linelib import make_line


def line(n: int, project: str, body: bytes, **fields: str) -> bytes:
    fields.setdefault("ctype", "application/json")
    return make_line(body, id=f"{n:032x}", project=project, t=f"{1795250368 + n / 1000:.3f}", **fields)


def settings_line(n: int, project: str, change: dict) -> bytes:
    return line(n, project, json.dumps(change).encode(), uri="/_project")


def mixed_log() -> list[bytes]:
    """Lines of 7 projects of very different sizes, with everything replay must keep in order."""
    lines = [settings_line(0, "", {"name": "strict", "owner": "ann", "type": "json"})]
    lines.append(
        settings_line(1, "", {"name": "Bad Name", "owner": "bob"})
    )  # refused, kept in the holding area
    lines.append(settings_line(2, "", {"owner": "carl"}))  # names no project
    for n in range(3, 1200):
        project = ("big", "big", "big", "mid", "mid", "small", "strict", "tiny")[n % 8]
        body = json.dumps({"n": n, f"k{n % 5}": "v" * (n % 7)}).encode()
        if project == "strict" and n % 3 == 0:
            lines.append(line(n, project, b"plain text", ctype="text/plain"))  # rejected: type json
        elif n % 97 == 0:
            lines.append(line(n, project, b"{oops"))  # malformed JSON: a reject
        else:
            lines.append(line(n, project, body))
        if n == 600:
            schema = {"type": "object", "required": ["k0"]}  # the posts after it need a k0
            lines.append(settings_line(10_000, "mid", {"owner": "dee", "schema": schema}))
            lines.append(b"this is not a log line")
        if n == 900:
            lines.append(settings_line(10_001, "", {"name": "late", "owner": "eve"}))
            lines.append(line(10_002, "late", b'{"first": true}'))
    return lines


def digest(data_dir: Path) -> dict[str, str]:
    """Every table of every database, as a digest that ignores nothing but row storage order."""
    out = {}
    for path in sorted(data_dir.glob("*.db")):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        h = hashlib.sha256()
        for (table,) in conn.execute("select name from sqlite_master where type = 'table' order by name"):
            columns = [row[1] for row in conn.execute(f"pragma table_info({table})")]
            h.update(repr((table, sorted(columns))).encode())
            for row in conn.execute(f"select * from {table} order by 1"):
                h.update(repr(sorted(zip(columns, row, strict=True))).encode())
        conn.close()
        out[path.name] = h.hexdigest()
    return out


@pytest.fixture
def logs(tmp_path) -> tuple[Path, list[Path]]:
    """A config, and the mixed log split into a rotated .gz, a rotated plain file and a live
    file whose last line is still being written."""
    lines = mixed_log()
    config = tmp_path / "smalltable.yaml"
    config.write_text(json.dumps({"home": str(tmp_path / "home")}))
    old, rotated, live = tmp_path / "a.log.gz", tmp_path / "b.log", tmp_path / "c.log"
    with gzip.open(old, "wb") as out:
        out.write(b"\n".join(lines[:400]) + b"\n")
    rotated.write_bytes(b"\n".join(lines[400:800]) + b"\n")
    live.write_bytes(b"\n".join(lines[800:]) + b"\n" + lines[0][:30])
    return config, [old, rotated, live]


def replay(config: Path, files: list[Path], data_dir: Path, *args: str) -> str:
    froms = [arg for path in files for arg in ("--from", str(path))]
    result = smalltable("replay", "--config", str(config), *froms, "--data-dir", str(data_dir), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def counts(stdout: str) -> dict[str, int]:
    """The numbers of replay's summary line, by what they count."""
    found = re.findall(r"([\d,]+) (lines from|stored|rejected|unparsable|settings changes|partial)", stdout)
    return {what: int(number.replace(",", "")) for number, what in found}


def table(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_parallel_replay_loads_exactly_what_one_process_loads(logs, tmp_path):
    config, files = logs
    one = replay(config, files, tmp_path / "one", "--jobs", "1")
    three = replay(config, files, tmp_path / "three", "--jobs", "3")
    assert one.split(": ", 1)[1] == three.split(": ", 1)[1]  # the same counts, per project too
    assert digest(tmp_path / "three") == digest(tmp_path / "one")
    # and nothing is lost: every whole line is a record, a reject, a settings change or
    # an unparsable line, or (a settings write naming no valid project) in the holding area
    n = counts(three)
    unnamed = table(tmp_path / "three" / "_smalltable.db", "select count(*) from rejects")[0][0]
    assert unnamed == 2
    accounted = n["stored"] + n["rejected"] + n["unparsable"] + n["settings changes"] + unnamed
    assert accounted == n["lines from"] == len(mixed_log())
    assert n["partial"] == 1
    # the settings were applied in log order: strict's text posts are refused, and mid's
    # posts need a k0 after its settings change (after post 600), not before
    assert table(tmp_path / "three" / "strict.db", "select count(*) from rejects") == [(50,)]
    refused = "select _request_id from rejects where _reason like '%schema%' order by _id"
    without_k0 = [n for n in range(601, 1200) if n % 8 in (3, 4) and n % 5 != 0 and n % 97 != 0]
    assert table(tmp_path / "three" / "mid.db", refused) == [(f"{n:032x}",) for n in without_k0]


def test_parallel_replay_is_idempotent_and_finishes_a_partial_load(logs, tmp_path):
    config, files = logs
    replay(config, files[:1], tmp_path / "data", "--jobs", "2")  # the first file only
    again = replay(config, files, tmp_path / "data", "--jobs", "2")
    assert ", 397 already loaded," in again  # the first file's 400 lines, but its 3 settings writes
    replay(config, files, tmp_path / "reference", "--jobs", "1")
    assert digest(tmp_path / "data") == digest(tmp_path / "reference")


def test_the_progress_bar_says_how_many_jobs(logs, tmp_path):
    config, files = logs
    froms = [arg for path in files for arg in ("--from", str(path))]
    result = smalltable("replay", "--config", str(config), *froms, "--jobs", "2")
    assert "sharing the projects among 2 jobs" in result.stderr
    assert "replaying 3 file(s) in 2 jobs" in result.stderr


def test_more_projects_than_may_be_open_load_in_passes_to_the_same_databases(logs, tmp_path):
    """With ``ingest.open_databases`` 2, the 8 projects load in passes of 2 (each job its
    own), and the databases are those of a replay that holds them all open."""
    config, files = logs
    reference = replay(config, files, tmp_path / "reference", "--jobs", "1")
    small = tmp_path / "small.yaml"
    small.write_text(json.dumps({"home": str(tmp_path / "home"), "ingest": {"open_databases": 2}}))
    froms = [arg for path in files for arg in ("--from", str(path))]
    for jobs in ("1", "2"):
        data = tmp_path / f"passes-{jobs}"
        result = smalltable("replay", "--config", str(small), *froms, "--data-dir", str(data), "--jobs", jobs)
        assert result.returncode == 0, result.stderr
        assert "passes of at most 2 projects (ingest.open_databases)" in result.stderr
        assert result.stdout.split(": ", 1)[1] == reference.split(": ", 1)[1]
        assert digest(data) == digest(tmp_path / "reference")


def test_the_passes_of_a_share_take_every_line_it_takes_exactly_once(tmp_path):
    log = tmp_path / "x.log"
    odd = [b'{"v":1,"project":"unseen"', b"not even json", b'{"v":1,"project":"","uri":"/_project"']
    lines = [*mixed_log(), *odd]
    log.write_bytes(b"\n".join(lines) + b"\n")
    for jobs in (1, 2):
        for share in plan([log], jobs):
            passes = share.passes(2)
            assert all(len(part.projects) <= 2 for part in passes)
            assert len(passes) == max(1, -(-len(share.projects) // 2))
            for each in lines:
                assert sum(part.wants(each) for part in passes) == share.wants(each), each[:60]


def test_route_finds_the_project_without_parsing_and_apex_settings_by_their_name():
    assert route(line(1, "shop", b'{"project":"other"}')) == "shop"
    assert route(settings_line(2, "", {"name": "named", "owner": "ann"})) == "named"
    assert route(settings_line(3, "", {"name": "Not A Name"})) == "Not A Name"
    assert route(settings_line(4, "", {"owner": "ann"})) == ""
    assert route(b"garbage") is None


def test_plan_balances_the_shares_and_keeps_each_project_in_one(tmp_path):
    sizes = {"a": 50, "b": 30, "c": 20, "d": 10, "e": 10}
    log = tmp_path / "x.log"
    log.write_bytes(
        b"".join(line(n, p, b"{}") + b"\n" for p, k in sizes.items() for n in range(k)) + b"junk\n"
    )
    shares = plan([log], 2)
    assert sorted(sorted(share.projects) for share in shares) == [["a", "d"], ["b", "c", "e"]]
    assert [share.rest is not None for share in shares] == [True, False]  # junk: the first share's
    assert plan([log], 9)[5:] == []  # never more shares than projects (and the junk)
    assert plan([log], 1) == [shares_module.Share(frozenset(sizes), rest=frozenset(sizes))]


def test_a_big_log_is_planned_from_samples_and_every_line_still_has_one_share(tmp_path, monkeypatch):
    """A plain log bigger than PLAN_SAMPLES blocks is counted in samples; a project
    that no sample sees is in no share's list, and the first share loads it."""
    monkeypatch.setattr(replay_module, "CHUNK", 2048)
    monkeypatch.setattr(replay_module, "PLAN_SAMPLES", 4)
    lines = [line(n, ("big", "big", "big", "mid", "mid")[n % 5], b'{"a": 1}') for n in range(400)]
    lines.insert(150, line(1000, "rare", b'{"a": 1}'))  # 3/8 of the way: between two samples
    log = tmp_path / "x.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert log.stat().st_size > 20 * 2048
    advanced: list[int] = []
    shares = plan([log], 2, advanced.append)
    assert len(advanced) == 4 and sum(advanced) <= log.stat().st_size
    assert sorted(sorted(share.projects) for share in shares) == [["big"], ["mid"]]
    for each in lines:
        assert sum(share.wants(each) for share in shares) == 1, each[:60]
    assert shares[0].wants(lines[150])


def test_every_line_goes_to_exactly_one_share_of_a_plan(tmp_path):
    """The plan's count takes shortcuts; the shares must still cover every line once,
    lines the count cannot name included."""
    log = tmp_path / "x.log"
    odd = [
        b'{"v":1,"project":"cut-short',  # the field has no end
        b'{"v":1,"project":"unseen"',  # no other line names it: it is in no share's list
        b'{"v":1,"project":"","uri":"/_project"',  # an apex line that does not parse
        b"",
        b"not even json",
    ]
    log.write_bytes(b"\n".join([*mixed_log(), *odd]) + b"\n")
    for jobs in (1, 2, 3, 8):
        shares = plan([log], jobs)
        for each in [*mixed_log(), *odd]:
            assert sum(share.wants(each) for share in shares) == 1, (jobs, each[:60])


def test_a_share_selects_the_lines_it_wants_in_order_whatever_it_remembers(tmp_path, monkeypatch):
    """select() is wants() for a block of lines, fast: what it remembers per name must
    never change a verdict (a name cut short, the apex, no field at all)."""
    monkeypatch.setattr(shares_module, "MAX_VERDICTS", 3)
    odd = [
        b'{"v":1,"project":"cut-short',
        b'{"v":1,"project":"cut-shor"',  # route() reads the same name from both
        b'{"v":1,"project":"","uri":"/_project"',
        b"",
        b"not even json",
        b'{"v":1,"project":"unseen"',
    ]
    lines = [*mixed_log(), *odd, *mixed_log()]
    log = tmp_path / "x.log"
    log.write_bytes(b"\n".join(lines) + b"\n")
    for jobs in (1, 2, 3):
        shares = plan([log], jobs)
        chosen = [share.select(lines) for share in shares]
        assert chosen == [[each for each in lines if share.wants(each)] for share in shares]
        assert sorted(each for share in chosen for each in share) == sorted(lines)
    assert shares_module.Share().select(lines) == lines


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("suffix", [".log", ".log.gz"])
def test_lines_come_out_whole_and_in_order_whatever_the_chunk_size(tmp_path, monkeypatch, chunk, suffix):
    """Lines cut by the edge of a read (or longer than a whole read) are put back together;
    a last line without its newline is left and counted."""
    monkeypatch.setattr(replay_module, "CHUNK", chunk)
    lines = [b"first", b"", b"x" * 150, b"", b"", b"\xff\xfe latin-1 bytes", b"last whole"]
    data = b"\n".join(lines) + b"\n" + b"still being writ"
    path = tmp_path / f"x{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    summary = replay_module.Summary()
    runs = list(replay_module._runs(path, lambda n: None, summary))
    assert all(runs) and [line for run in runs for line in run] == lines
    assert summary.partial_lines == 1


def peak_rss_mib(argv: list[str]) -> float:
    """Run ``argv`` to its end; its peak resident memory (``wait4``'s ``ru_maxrss``), in MiB."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, process.stderr.read().decode()
    process.stderr.close()
    return usage.ru_maxrss / 1024


def test_replay_memory_does_not_grow_with_the_log(tmp_path):
    """Replay holds a batch at a time, bounded in bytes as well as in lines: 10 times
    the log (of 2 KB bodies, far below ``ingest.batch_lines``) takes about the same
    peak memory, not the whole log parsed at once."""
    body = json.dumps({"kind": "reading", "text": "x" * 2000}).encode()
    template = line(0, "bulk", body)
    config = tmp_path / "smalltable.yaml"
    config.write_text(json.dumps({"home": str(tmp_path / "home"), "ingest": {"batch_bytes": 262144}}))
    peaks = {}
    for lines in (1500, 15000):
        log = tmp_path / f"{lines}.log"
        with open(log, "wb") as out:
            for n in range(1, lines + 1):
                out.write(template.replace(f"{0:032x}".encode(), f"{n:032x}".encode(), 1) + b"\n")
        argv = [sys.executable, "-m", "ingestd", "replay", "--config", str(config), "--from", str(log)]
        peaks[lines] = peak_rss_mib([*argv, "--data-dir", str(tmp_path / f"data-{lines}"), "--jobs", "1"])
        assert table(tmp_path / f"data-{lines}" / "bulk.db", "SELECT count(*) FROM records") == [(lines,)]
    assert peaks[15000] < 1.3 * peaks[1500], f"peak RSS by log lines: {peaks}"
