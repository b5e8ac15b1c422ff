"""The docs' examples, run: each ``$ curl …`` of a ``console`` block against a real stack,
its answer compared with the one the doc shows.

Each doc gets a stack of its own (the examples use project ``demo`` and build on each
other, in the doc's order), on its own port in place of ``8080``. What differs from
run to run is masked on both sides before comparing: request ids (and the doc's ids
in later commands are replaced by the real ones they stand for), times, curl's
version, sizes on disk, the JSON parser's wording. A read is asked again until it matches, for up to
``SETTLE_SECONDS``: ingestd loads a write within a moment, not at once. A ``…`` in a
documented answer stands for any text within its line. For ``curl -i``
the documented headers must be among the real ones ("headers shortened"). A live tail
(``curl -N``) is read for as many events as the doc shows, and ``smalltable-home/`` is
the stack's home; the posts the text says
were made meanwhile (``curl -d`` spans in the paragraph after the block) are made once
the tail has said where it starts. A claim's answer shows an owner key (masked); the
doc's later commands send it as ``$KEY``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Stack
from .test_e2e_browse import png

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parent.parent / "docs"
SETTLE_SECONDS = 15
CLOCK_SLACK = 0.05
RID = re.compile(r"\b[0-9a-f]{32}\b")
MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"), "TIME"),
    (re.compile(r"curl/[0-9.]+"), "curl/VERSION"),
    (re.compile(r"\b\d+% of "), "N% of "),
    (re.compile(r'"(t|rt)":\d+\.\d+'), r'"\1":T'),
    (re.compile(r'"(size_bytes|database_bytes)":\d+'), r'"\1":N'),
    (re.compile(r'"quota_used":[0-9.e-]+'), '"quota_used":N'),
    # the JSON parser's own words (they change with its version): SmallTable writes the prefix
    (re.compile(r'malformed JSON: [^"]*'), "malformed JSON: PARSER"),
    # a key is new at every claim: the doc shows one, later commands use it as $KEY
    (re.compile(r"stk_[0-9a-z]+"), "stk_KEY"),
    (re.compile(r'"key_id":"[^"]*"'), '"key_id":"KEYID"'),
    (RID, "ID"),
]


@dataclass
class Example:
    """One ``$ command`` of a console block, the output the doc shows, the text after the block."""

    command: str
    expected: str
    after: str


def examples(doc: str) -> list[Example]:
    text = (DOCS / doc).read_text()
    found = []
    for block in re.finditer(r"```console\n(.*?)```\n(.*?)(?=```|\Z)", text, flags=re.S):
        body, after = block[1], block[2]
        for step in re.split(r"^\$ ", body, flags=re.M)[1:]:
            command, _, expected = step.partition("\n")
            found.append(Example(command, expected.rstrip("\n"), after))
    return found


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


class Session:
    """Runs a doc's commands in order against ``stack``, with the doc's ids mapped to real ones."""

    def __init__(self, stack: Stack, workdir: Path) -> None:
        self.stack, self.workdir = stack, workdir
        self.ids: dict[str, str] = {}
        self.env = dict(os.environ)

    def local(self, command: str) -> str:
        command = RID.sub(lambda m: self.ids.get(m[0], m[0]), command)
        command = command.replace("smalltable-home/", f"{self.stack.home}/")
        return command.replace("localhost:8080", f"localhost:{self.stack.port}")

    def shown(self, output: str) -> str:
        return output.replace(f"localhost:{self.stack.port}", "localhost:8080").rstrip("\n")

    def run(self, command: str) -> str:
        result = subprocess.run(
            ["bash", "-c", self.local(command)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            timeout=30,
        )
        return self.shown(result.stdout.decode(errors="replace").replace("\r\n", "\n"))

    def learn(self, expected: str, actual: str) -> None:
        """The doc's ids are the real ones at the same places."""
        for documented, real in zip(RID.findall(expected), RID.findall(actual), strict=False):
            self.ids.setdefault(documented, real)
        if key := re.search(r'"key":"(stk_[0-9a-z]+)"', actual):
            self.env["KEY"] = key[1]

    def check(self, example: Example) -> None:
        if "X-SmallTable-Quota:" in example.expected:
            self.wait_map_served("quota.map", re.search(r"//([a-z0-9-]+)\.localhost", example.command)[1])
        if '"created":false' in example.expected and (
            host := re.search(r"//([a-z0-9-]+)\.localhost", example.command)
        ):
            # the doc says the project exists: its first write (just before) is loaded first
            database = self.stack.home / "data" / f"{host[1]}.db"
            deadline = time.monotonic() + SETTLE_SECONDS
            while not database.exists():
                assert time.monotonic() < deadline, f"{database} was never made"
                time.sleep(0.05)
        if "the project is claimed: changing its settings needs its owner key" in example.expected:
            # nginx refuses it from the policy map: the claim's "applied" comes just before
            self.wait_map_served("policy.map", re.search(r"//([a-z0-9-]+)\.localhost", example.command)[1])
        if example.command.startswith("curl -N"):
            actual = self.tail(example)
        else:
            writes = re.search(r"(^|\s)(-d|-F|--data|--data-binary)\s", example.command)
            deadline = time.monotonic() + (0 if writes else SETTLE_SECONDS)
            while not same(example.expected, actual := self.run(example.command)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert same(example.expected, actual), (
            f"$ {example.command}\n--- the doc shows:\n{example.expected}\n--- it answers:\n{actual}"
        )
        self.learn(example.expected, actual)

    def wait_map_served(self, name: str, project: str) -> None:
        """Until ingestd's map ``name`` names ``project`` and nginx's workers started after it
        was last written (and nginx reloaded): a write answered before that would not say how
        full its project is (``quota.map``), or that it is claimed (``policy.map``)."""
        quota_map = self.stack.home / "state" / name
        master = int(next(self.stack.home.rglob("nginx.pid")).read_text())
        deadline = time.monotonic() + SETTLE_SECONDS

        def served() -> bool:
            if not quota_map.exists() or not re.search(rf"^{project} ", quota_map.read_text(), re.M):
                return False
            return all_started_after(children(master), quota_map.stat().st_mtime)

        while not served():
            assert time.monotonic() < deadline, f"nginx did not reload {name}"
            time.sleep(0.05)

    def tail(self, example: Example) -> str:
        """A live tail read for the doc's events, the text's posts made once it has started."""
        events = example.expected.count("\nid: ") + example.expected.startswith("id: ")
        command = self.local(example.command)
        with subprocess.Popen(
            ["bash", "-c", command], cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as tail:
            try:
                lines = [tail.stdout.readline().decode()]
                for post in re.findall(r"`(curl -d [^`]+)`", example.after):
                    self.run(post)
                deadline = time.monotonic() + SETTLE_SECONDS
                while sum(line.startswith("id: ") for line in lines) < events or lines[-1] != "\n":
                    assert time.monotonic() < deadline, "".join(lines)
                    lines.append(tail.stdout.readline().decode())
            finally:
                tail.kill()
        return self.shown("".join(lines))


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def all_started_after(pids: list[int], when: float) -> bool:
    """Each process in ``pids`` started after the Unix time ``when`` (and there is one).

    A start time is known to a clock tick (10 ms) and boot time to the uptime's 10 ms:
    "after" allows ``CLOCK_SLACK`` seconds before ``when``.
    """
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    started = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return False
        started.append(boot + int(fields[19]) / ticks)
    return bool(started) and min(started) > when - CLOCK_SLACK


def same(expected: str, actual: str) -> bool:
    """Equal once masked; for an answer with headers, the doc's headers among the real ones."""
    expected, actual = mask(expected), mask(actual)
    if not expected.startswith("HTTP/"):
        return matches(expected, actual)
    head, _, body = expected.partition("\n\n")
    real_head, _, real_body = actual.partition("\n\n")
    status, *headers = head.splitlines()
    real_status, *real_headers = real_head.splitlines()
    lowered = {line.lower() for line in real_headers}
    return status == real_status and matches(body, real_body) and all(h.lower() in lowered for h in headers)


def matches(expected: str, actual: str) -> bool:
    """Equal, where a ``…`` in the doc stands for any text within a line (what another
    library words, such as the JSON parser's message)."""
    pattern = "[^\n]*?".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


def run_doc(stack: Stack, workdir: Path, doc: str, setup: list[str] = ()) -> int:
    session = Session(stack, workdir)
    for command in setup:
        session.run(command)
    found = examples(doc)
    for example in found:
        session.check(example)
    return len(found)


def sh_block(doc: str, heading: str) -> list[str]:
    """The commands of the first ``sh`` block after ``heading`` (the posts examples build on)."""
    text = (DOCS / doc).read_text()
    start = text.index(heading)
    block = re.search(r"```sh\n(.*?)```", text[start:], flags=re.S)
    return [line for line in block[1].splitlines() if line and not line.startswith("#")]


def test_browse_examples_answer_as_documented(fresh_stack, tmp_path):
    (tmp_path / "photo.png").write_bytes(png(32, 24))
    setup = sh_block("browse.md", "Post a few records to follow along")
    assert run_doc(fresh_stack, tmp_path, "browse.md", setup) >= 3
    # the numbers: every key the doc shows, and the values that are the same in any run
    documented = (DOCS / "browse.md").read_text().split("## The numbers", 1)[1]
    shown = re.search(r"```json\n(.*?)```", documented, flags=re.S)[1]
    keys = re.findall(r'^  "([a-z_]+)":', shown, flags=re.M)
    stats = fresh_stack.request("GET", "demo", "/_stats.json").json()
    assert list(stats) == keys
    for key, value in re.findall(r'^  "([a-z_]+)": ("[^"]*"|[0-9]+|null|false|true),?$', shown, flags=re.M):
        if key not in ("database_bytes", "last_post", "quota_used"):
            assert stats[key] == json.loads(value), key
    assert len(stats["hourly"]) == 48 and len(stats["daily"]) == 28


def test_api_examples_answer_as_documented(fresh_stack, tmp_path):
    setup = sh_block("api.md", "The examples use")
    assert run_doc(fresh_stack, tmp_path, "api.md", setup) >= 25


def test_projects_examples_answer_as_documented(fresh_stack, tmp_path):
    assert run_doc(fresh_stack, tmp_path, "projects.md") >= 4


def test_records_examples_answer_as_documented(fresh_stack, tmp_path):
    (tmp_path / "photo.png").write_bytes(png(32, 24))
    assert run_doc(fresh_stack, tmp_path, "records.md") >= 4


def test_log_format_example_is_what_nginx_writes(fresh_stack, tmp_path):
    assert run_doc(fresh_stack, tmp_path, "log-format.md") == 3


def test_streams_examples_answer_as_documented(fresh_stack, tmp_path):
    assert run_doc(fresh_stack, tmp_path, "streams.md") >= 18


def test_kv_examples_answer_as_documented(fresh_stack, tmp_path):
    assert run_doc(fresh_stack, tmp_path, "kv.md") >= 15
