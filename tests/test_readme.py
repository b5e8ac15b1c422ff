"""The README's walk-through, run: every command of its ``sh`` blocks, in order, against a real stack.

A reader copies these first. Each command runs as written (in bash, in a directory with
``photo.png``, ``cat.png`` and ``big.bin``), on the stack's port in place of ``8080``; the
owner key the claim answers replaces the README's, the blob id the upload answers its
``sha256-9f2c…``. What a ``# …`` comment under a command says it answers is checked: the
status when it names one (else 2xx for curl, exit 0 for ``smalltable``), and the fields a
user acts on (``status``, ``project``, ``created``, ``error``, ``limit_bytes``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import Stack
from .test_e2e_browse import png

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parent.parent / "README.md"
README_KEY = re.search(r"stk_[0-9a-f]{32}", README.read_text())[0]
CHECKED_FIELDS = ("status", "project", "created", "error", "limit_bytes")
FOREVER = ("smalltable tail",)
"""Commands that follow until stopped: run for a moment, then stopped."""


@dataclass
class Command:
    text: str
    said: list[str] = field(default_factory=list)
    """The ``# `` comment lines under it: what the README says it answers."""


def walk_through() -> list[Command]:
    """The commands of every ``sh`` block of the README's "A walk through", in order; a
    comment right under a command (no blank line between) is what it answers."""
    section = README.read_text().split("## A walk through", 1)[1].split("\n## ", 1)[0]
    commands: list[Command] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        pending, last = "", None
        for line in block.splitlines():
            if not pending and (not line.strip() or line.startswith("#")):
                if last is not None and line.startswith("# "):
                    last.said.append(line[2:])
                else:
                    last = None
                continue
            pending = f"{pending}\n{line}" if pending else line
            if pending.endswith("\\") or not _complete(pending):
                continue
            last = Command(pending)
            commands.append(last)
            pending = ""
    return commands


def _complete(text: str) -> bool:
    """True when ``text`` is a whole shell command (its quotes closed)."""
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def expected_status(said: list[str]) -> int | None:
    """The HTTP status a comment names first (``# 413 {…}``, ``# 202: accepted``), if any."""
    found = re.match(r"(\d{3})\b", said[0]) if said else None
    return int(found[1]) if found else None


def shown_fields(said: list[str]) -> list[dict]:
    """The fields of each JSON object a comment shows (``…`` and ``...`` stand for the rest)."""
    shown = []
    for line in said:
        start = line.find("{")
        if start < 0:
            continue
        text = re.sub(r",\s*(\.\.\.|…)\s*}", "}", line[start:])
        pairs = re.findall(r'"([a-z_]+)":("[^"]*"|true|false|null|-?\d+)', text)
        shown.append({key: json.loads(value) for key, value in pairs if key in CHECKED_FIELDS})
    return shown


class Reader:
    """Runs the README's commands as a reader would, on ``stack``."""

    def __init__(self, stack: Stack, workdir: Path) -> None:
        self.stack, self.workdir = stack, workdir
        self.key = README_KEY
        self.blob_id = "sha256-9f2c…"
        venv_bin = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "BROWSER": "true"}

    def local(self, text: str) -> str:
        text = text.replace(README_KEY, self.key).replace("sha256-9f2c…", self.blob_id)
        return text.replace("localhost:8080", f"localhost:{self.stack.port}")

    def run(self, command: Command) -> tuple[int, str]:
        """Its status (curl: the HTTP status; else the exit code) and its output."""
        text = self.local(command.text)
        is_curl = text.startswith("curl ")
        if is_curl:  # the answer's status after the body, where the README's comment says it
            text = "curl -sS -w '\\n%{http_code}' " + text[len("curl ") :]
        forever = text.startswith(FOREVER)
        try:
            done = subprocess.run(
                ["bash", "-c", text],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                timeout=3 if forever else 60,
            )
        except subprocess.TimeoutExpired as stopped:
            assert forever, f"{command.text} did not finish"
            return 0, (stopped.stdout or b"").decode()
        output = done.stdout.decode(errors="replace")
        if not is_curl:
            return done.returncode, output + done.stderr.decode(errors="replace")
        body, _, status = output.rpartition("\n")
        return int(status), body

    def check(self, command: Command) -> None:
        """Run it until it answers as the README says, for up to 15 s: a read may come
        before ingestd loaded the write it follows, and a key works once ingestd loaded
        the claim that made it (until then nginx answers 401 and logs nothing). A write
        nginx accepted is not sent again."""
        writes = re.search(r"(^|\s)(-d|-F|--data-binary)\s|smalltable post ", command.text)
        deadline = time.monotonic() + 15
        while True:
            status, output = self.run(command)
            wanted = expected_status(command.said)
            ok = status == wanted if wanted is not None else (200 <= status < 300 or status == 0)
            answers = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
            shown = shown_fields(command.said)
            for fields, answer in zip(shown, answers, strict=False):
                ok = ok and all(answer.get(key) == value for key, value in fields.items())
            ok = ok and len(answers) >= len(shown)
            if ok or time.monotonic() > deadline or (writes and status != 401):
                break
            time.sleep(0.2)
        said = "\n".join(command.said)
        assert ok, f"$ {command.text}\n--- the README says:\n{said}\n--- it answers ({status}):\n{output}"
        self.learn(answers)

    def learn(self, answers: list[dict]) -> None:
        for answer in answers:
            if str(answer.get("key", "")).startswith("stk_"):
                self.key = answer["key"]
            if str(answer.get("id", "")).startswith("sha256-"):
                self.blob_id = answer["id"]


def test_the_readme_walk_through_runs_as_it_says(fresh_stack, tmp_path):
    (tmp_path / "photo.png").write_bytes(png(32, 24))
    (tmp_path / "cat.png").write_bytes(cat := png(64, 48))
    (tmp_path / "big.bin").write_bytes(os.urandom(2 << 20))
    commands = walk_through()
    assert len(commands) >= 15, [c.text for c in commands]
    reader = Reader(fresh_stack, tmp_path)
    for command in commands:
        reader.check(command)
    assert reader.key != README_KEY, "the claim answered no key"
    assert (tmp_path / "cat.png").read_bytes() == cat  # downloaded again, byte for byte
    assert reader.blob_id == "sha256-" + hashlib.sha256(cat).hexdigest()
    deadline = time.monotonic() + 15  # the malformed post: accepted, then kept in rejects
    while not any(row["_reason"].startswith("malformed JSON: ") for row in rejects_of(fresh_stack)):
        assert time.monotonic() < deadline, rejects_of(fresh_stack)
        time.sleep(0.2)


def rejects_of(stack: Stack) -> list[dict]:
    return stack.rows("demo", "rejects")
