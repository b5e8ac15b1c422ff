"""The project's pages in a real browser: headless Chromium, driven over the DevTools protocol.

No browser library is needed: with ``--remote-debugging-pipe`` Chromium reads
DevTools commands from its file descriptor 3 and writes answers and events to
descriptor 4, each message one JSON object ended by a NUL byte. So a pipe
pair, ``json`` and ``select`` are the whole client (:class:`Browser`).

Screenshots go to ``test-artifacts/``. With ``SMALLTABLE_DOCS_SCREENSHOTS=1``
the ones the docs show are also written to ``docs/images/``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ARTIFACTS
from .keyslib import claim, until, wait_owned, write_with
from .test_e2e_browse import png
from .test_e2e_ingest import accepted

pytestmark = pytest.mark.e2e

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--hide-scrollbars",
]
WEBHOOK = {
    "event": "push",
    "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    "ref": "refs/heads/main",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    "created": False,
    "forced": False,
    "repository": {"id": 35129377, "full_name": "ann/checkout", "private": True, "owner": {"login": "ann"}},
    "pusher": {"name": "ann", "email": "ann@example.com"},
    "commits": [
        {"id": "0d1a26e6", "message": "Move the checkout button up", "added": [], "modified": ["app.css"]}
    ],
    "head_commit": {"id": "0d1a26e6", "timestamp": "2026-11-21T09:27:37Z"},
    "sender": {"login": "ann", "type": "User"},
}
"""A webhook-like body: many keys, nested objects and arrays, booleans."""
PROJECT = "demo"
"""The browser tests' project: a readable name for the screenshots the docs show. Only
the ``demo`` fixture writes to it, so its pages are the same in any order of the tests."""
JSON = {"Content-Type": "application/json"}


def _above_four(fd: int) -> int:
    """The same open file on a descriptor above 4 (the old one is closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return moved


class Browser:
    """One headless Chromium and its DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        program = shutil.which("chromium") or shutil.which("chromium-browser")
        if not program:
            pytest.fail("chromium is not installed: sudo apt-get install chromium", pytrace=False)
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()
        # bash puts Chromium's pipe ends on the descriptors it expects, 3 (commands) and 4
        # (answers); they must not be 3 or 4 already, or one redirection undoes the other.
        to_browser, from_browser = _above_four(to_browser), _above_four(from_browser)
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}',
                program,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0

    def command(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one DevTools command and return its result (events on the way are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message(timeout=30)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def _read_message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(self._answers, 1 << 20) if ready else b""
            if not chunk:
                raise RuntimeError("Chromium did not answer" if not ready else "Chromium closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.command("Browser.close")
            self.process.wait(timeout=10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._commands)
            os.close(self._answers)


class Page:
    """A tab of the browser, 1280 CSS pixels wide."""

    def __init__(self, browser: Browser, width: int = 1280, height: int = 900) -> None:
        self.browser = browser
        target = browser.command("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.command("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.command(method, params, self.session)

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10) -> object:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout}s: {expression}")
            time.sleep(0.05)
        return value

    def goto(self, url: str) -> None:
        """Open a URL and wait until it and its images have loaded."""
        self.send("Page.navigate", {"url": url})
        self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
            " && [...document.images].every(image => image.complete)"
        )

    def screenshot(self, name: str, docs_name: str | None = None, element: str | None = None) -> Path:
        """The whole page (or the ``element`` a CSS selector names) as a PNG in
        test-artifacts/ (and in docs/images/ when asked)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        if element:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(element)}).getBoundingClientRect();"
                " return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })()"
            )
            clip = {**box, "scale": 1}
        shot = self.send(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(shot["data"]))
        if docs_name and os.environ.get("SMALLTABLE_DOCS_SCREENSHOTS") == "1":
            shutil.copyfile(path, DOCS_IMAGES / docs_name)
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    running = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield running
    running.close()


@pytest.fixture
def page(browser) -> Page:
    return Page(browser)


@pytest.fixture(scope="module")
def demo(stack) -> dict[str, dict]:
    """The browser tests' project, with one record of each kind; its records by name."""
    posts = {
        "click": ({"user": "ann", "page": "/checkout", "ms": 130}, {}),
        "click2": ({"user": "bob", "page": "/cart", "ms": 260}, {}),
        "note": ("Remember: the checkout button moved below the fold on small screens.", {}),
        "form": ("name=carol&rating=5", {"Content-Type": "application/x-www-form-urlencoded"}),
        "flags": ({"user": "eve", "subscribed": True, "trial": False, "plan": None}, {}),
        "webhook": (WEBHOOK, {}),
        "report": (bytes(range(256)) * 12, {"Content-Type": "application/pdf"}),
        "photo": (png(160, 100), {"Content-Type": "image/png"}),
    }
    records = {}
    for name, (body, headers) in posts.items():
        content = json.dumps(body) if isinstance(body, dict) else body
        if isinstance(body, dict):
            headers = {"Content-Type": "application/json"}
        records[name] = accepted(stack.post(PROJECT, content, headers=headers))
    upload = stack.request(
        "POST", PROJECT, files={"file": ("sketch.png", png(64, 64), "image/png")}, data={"caption": "sketch"}
    )
    records["upload"] = accepted(upload)
    return {name: stack.wait_row(PROJECT, rid) for name, rid in records.items()}


def project_url(stack, path: str = "/") -> str:
    """The address a user types: Chromium resolves every *.localhost name to loopback."""
    return f"http://{PROJECT}.localhost:{stack.port}{path}"


def test_project_page_shows_records_images_and_charts(stack, demo, page):
    page.goto(project_url(stack))
    rows = page.evaluate("[...document.querySelectorAll('#st-records tbody tr')].map(tr => tr.id)")
    assert rows == [f"r{demo[name]['_id']}" for name in reversed(list(demo))]
    # the posted image is drawn, at its own size or smaller
    photo = page.evaluate(
        f"(() => {{ const i = document.querySelector('#r{demo['photo']['_id']} img');"
        " return [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]; })()"
    )
    assert photo[:2] == [160, 100] and 0 < photo[2] <= 160
    assert page.evaluate(f"document.querySelector('#r{demo['upload']['_id']} img').naturalWidth") == 64
    # four charts, drawn and visible, with today's posts as bars
    charts = page.evaluate(
        "[...document.querySelectorAll('svg.st-chart')].map(svg => [svg.getBoundingClientRect().width,"
        " Math.max(...[...svg.querySelectorAll('rect')].map(r => r.getBBox().height))])"
    )
    assert len(charts) == 4
    assert all(width > 300 and tallest > 10 for width, tallest in charts), charts
    links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.textContent.trim())")
    assert "Query with SQL" in links and "Filter, facet and export in the table view" in links
    page.screenshot("browser-project-page.png", docs_name="project-page.png")


FIELDS = (
    "[...ROW.querySelectorAll('.st-field-list div')]"
    ".map(d => [d.children[0].textContent, d.children[1].textContent])"
)
"""The fields a row shows, as [name, value] pairs (ROW: an expression for the row)."""


def test_each_record_shows_its_own_fields_and_a_readable_body(stack, demo, page):
    page.goto(project_url(stack))

    def fields(name: str) -> list[list[str]]:
        return page.evaluate(FIELDS.replace("ROW", f"document.getElementById('r{demo[name]['_id']}')"))

    assert fields("form") == [["name", "carol"], ["rating", "5"]]
    assert fields("click") == [["user", "ann"], ["page", "/checkout"], ["ms", "130"]]
    assert fields("flags") == [["user", "eve"], ["subscribed", "true"], ["trial", "false"], ["plan", "null"]]
    hook = fields("webhook")
    assert hook[0] == ["event", "push"] and ["forced", "false"] in hook
    assert ["pusher", '{"name":"ann","email":"ann@example.com"}'] in hook
    assert fields("note") == [] and fields("photo") == []
    # the body keeps a readable width, so no row grows into a tower
    body = page.evaluate(
        f"document.querySelector('#r{demo['webhook']['_id']} td.st-body').getBoundingClientRect().width"
    )
    assert body >= 300, body
    heights = page.evaluate(
        "[...document.querySelectorAll('#st-records tbody tr')].map(tr => tr.offsetHeight)"
    )
    assert max(heights) < 320, heights
    page.screenshot("browser-project-fields.png")


def test_record_page_shows_the_image(stack, demo, page):
    record = demo["photo"]
    page.goto(project_url(stack, f"/{record['_id']}"))
    assert page.evaluate("document.querySelector('.st-record-body img').naturalWidth") == 160
    assert page.evaluate("document.querySelector('h1').textContent") == f"{PROJECT}: record {record['_id']}"
    page.screenshot("browser-record-page.png", docs_name="record-page.png")


def test_live_view_adds_a_record_posted_while_the_page_is_open(stack, project, page):
    """On a project of its own: what it posts would change the demo project's pages."""
    stack.wait_row(project, accepted(stack.post(project, b'{"user":"ann","page":"/","ms":1}', headers=JSON)))
    page.goto(f"http://{project}.localhost:{stack.port}/?live=1")
    page.wait_for("document.getElementById('st-live-status').textContent === 'live'")
    page.evaluate("window.loadedOnce = 'still the same page'")
    count = page.evaluate("document.getElementById('st-record-count').textContent")
    rid = accepted(stack.post(project, json.dumps({"user": "dave", "page": "/live", "ms": 42}), headers=JSON))
    row = f"document.querySelector('tr[data-request-id=\"{rid}\"]')"
    page.wait_for(f"{row} !== null")
    assert page.evaluate("window.loadedOnce") == "still the same page"  # no reload
    assert page.evaluate(f"{row} === document.querySelector('#st-records tbody tr')")  # on top
    cells = page.evaluate(f"[...{row}.cells].map(td => td.textContent.trim())")
    assert "POST /" in cells
    assert page.evaluate(FIELDS.replace("ROW", row)) == [["user", "dave"], ["page", "/live"], ["ms", "42"]]
    assert int(page.evaluate("document.getElementById('st-record-count').textContent")) == int(count) + 1
    # an image that arrives is drawn as an image
    image = accepted(stack.post(project, png(48, 32), headers={"Content-Type": "image/png"}))
    page.wait_for(f"document.querySelector('tr[data-request-id=\"{image}\"] img')?.naturalWidth === 48")
    page.screenshot("browser-live.png")


def test_create_a_project_with_the_form_on_the_apex_page(stack, page):
    """No JavaScript on our side: the browser fills and submits a plain form."""
    name = f"form-made-{os.getpid()}"
    page.goto(f"http://localhost:{stack.port}/")
    assert page.evaluate("document.querySelector('form.st-create').getAttribute('action')") == "/_project"
    page.screenshot("browser-apex-page.png", docs_name="apex-page.png")
    page.evaluate(
        "(() => { const f = document.querySelector('form.st-create');"
        f" f.name.value = {json.dumps(name)}; f.owner.value = 'ann@example.com';"
        " f.description.value = 'made in a browser'; f.type.value = 'json';"
        " f.retention_days.value = '30'; f.quota_mb.value = '5';"
        ' f.schema.value = \'{"type": "object", "required": ["user"]}\';'
        " f.querySelector('button[type=submit]').click(); })()"
    )
    # nginx answers with the owner key, shown once, and a link to the status page,
    # which reloads itself until ingestd has applied the change
    page.wait_for("document.getElementById('owner-key') !== null")
    assert page.evaluate("document.getElementById('owner-key').textContent").startswith("stk_")
    assert "shown only once" in page.evaluate("document.body.textContent")
    page.screenshot("browser-form-key.png")
    page.evaluate("document.querySelector('main a').click()")
    page.wait_for("location.pathname.startsWith('/_status/')")
    page.wait_for("document.querySelector('h1.st-status-applied') !== null", timeout=15)
    link = page.evaluate("document.querySelector('.st-button').href")
    assert link == f"http://{name}.localhost:{stack.port}/"
    page.screenshot("browser-form-created.png", docs_name="form-created.png")
    settings = stack.request("GET", name, "/_project").json()["settings"]
    assert settings == {
        "owner": "ann@example.com",
        "description": "made in a browser",
        "type": "json",
        "schema": {"type": "object", "required": ["user"]},
        "retention_days": 30,
        "quota_mb": 5,
        "write": "open",
        "read": "public",
        "store_client": False,
    }
    # and the new project is listed on the apex page
    page.goto(f"http://localhost:{stack.port}/")
    assert name in page.evaluate("document.body.textContent")


def test_the_create_forms_labels_and_fields_line_up(stack, page):
    page.goto(f"http://localhost:{stack.port}/")
    edges = page.evaluate(
        "[...document.querySelectorAll('form.st-create .st-field')].map(f => [f.children[0],"
        " f.children[1]].map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; }))"
    )
    assert len(edges) == 8
    label_lefts = {round(label[0]) for label, _ in edges}
    field_lefts = {round(field[0]) for _, field in edges}
    assert len(label_lefts) == 1 and len(field_lefts) == 1, edges
    assert all(label[1] <= field[0] for label, field in edges), edges  # no label runs into its field


def test_datasettes_table_view_opens_newest_first_with_the_users_columns_first(stack, demo, page):
    page.send("Page.navigate", {"url": project_url(stack, f"/{PROJECT}/records")})
    page.wait_for("location.search.startsWith('?_sort_desc=_id') && document.readyState === 'complete'")
    columns = page.evaluate(
        "[...document.querySelectorAll('table.rows-and-columns thead th[data-column]')]"
        ".map(th => th.dataset.column)"
    )
    assert columns[0] == "_id"
    first_system = columns.index("_request_id")
    assert {"user", "page", "ms", "name", "rating", "caption"} <= set(columns[1:first_system])
    assert all(not column.startswith("_") for column in columns[1:first_system])
    ids = page.evaluate(
        "[...document.querySelectorAll('table.rows-and-columns tbody tr')]"
        ".map(tr => Number(tr.querySelector('td').textContent.trim()))"
    )
    assert ids == sorted(ids, reverse=True) and ids[0] == max(row["_id"] for row in stack.rows(PROJECT))
    # a choice of the user's stands: no redirect when the URL says anything
    page.goto(project_url(stack, f"/{PROJECT}/records?_sort=_id"))
    assert page.evaluate("location.search") == "?_sort=_id"


def test_the_owner_lists_creates_and_revokes_keys_on_the_project_page(stack, page):
    """Issue 20: keys on the project page for whoever presents the owner key, which the page
    sends only as "Authorization: Bearer" and keeps in no URL, cookie or storage."""
    name = f"keys-panel-{os.getpid()}"
    owner = claim(stack, name)
    wait_owned(stack, name)
    page.goto(f"http://{name}.localhost:{stack.port}/")
    page.evaluate("document.getElementById('st-keys').open = true")
    status = "document.getElementById('st-keys-status').textContent"
    rows = (
        "[...document.querySelectorAll('#st-keys-list tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.textContent))"
    )

    def paste(key: str) -> None:
        page.evaluate(f"document.getElementById('st-keys-owner').value = {json.dumps(key)}")

    # a wrong key is refused by nginx, and the page says why
    paste("stk_" + "0" * 32)
    page.evaluate("document.getElementById('st-keys-show').click()")
    page.wait_for(f"{status}.includes('unknown or revoked key')")
    assert page.evaluate("document.getElementById('st-keys-list').hidden")
    # the owner key lists the keys: the owner key itself, never a secret
    paste(owner)
    page.evaluate("document.getElementById('st-keys-show').click()")
    page.wait_for(f"{status} === '1 live key'")
    listed = page.evaluate(rows)
    assert [row[1] for row in listed] == ["owner"] and listed[0][5] == "reset by the operator"
    # a new key: shown once, listed with its scope, label and expiry
    page.evaluate(
        "(() => { document.getElementById('st-keys-scope').value = 'write';"
        " document.getElementById('st-keys-label').value = 'ci';"
        " document.getElementById('st-keys-expires').value = '2030-06-30T00:00';"
        " document.getElementById('st-keys-make').click(); })()"
    )
    page.wait_for(f"{status}.includes('created')", timeout=15)
    new_key = page.evaluate("document.getElementById('st-keys-new-key').textContent")
    new_id = page.evaluate("document.getElementById('st-keys-new-id').textContent")
    assert new_key.startswith("stk_") and "Shown only once" in page.evaluate(
        "document.getElementById('st-keys-new').textContent"
    )
    listed = page.evaluate(rows)
    assert [row[:4] for row in listed[1:]] == [[new_id, "write", "ci", "2030-06-30 00:00:00"]]
    assert all(new_key not in cell and owner not in cell for row in listed for cell in row)
    until(lambda: write_with(stack, name, new_key).status_code == 202, timeout=10)
    # a key ingestd refuses (its expiry is past) is not shown as if it were in force
    page.evaluate(
        "(() => { document.getElementById('st-keys-expires').value = '2020-01-01T00:00';"
        " document.getElementById('st-keys-make').click(); })()"
    )
    page.wait_for(f"{status}.includes('already past')", timeout=15)
    assert page.evaluate("document.getElementById('st-keys-new').hidden")
    assert len(page.evaluate(rows)) == 2
    page.screenshot("browser-keys-panel.png", docs_name="keys-panel.png", element="#st-keys")
    # revoked from the page: gone from the list, and nginx refuses it
    page.evaluate(f"document.querySelector('tr[data-key-id=\"{new_id}\"] button').click()")
    page.wait_for(f"{status} === 'key {new_id} revoked'", timeout=15)
    assert [row[1] for row in page.evaluate(rows)] == ["owner"]
    until(lambda: write_with(stack, name, new_key).status_code == 401, timeout=10)
    # the owner key travelled in no URL and stayed in no cookie or storage
    fetched = page.evaluate("performance.getEntriesByType('resource').map(e => e.name).join(' ')")
    assert "/_project/keys" in fetched and "stk_" not in fetched
    assert page.evaluate("document.cookie + localStorage.length + sessionStorage.length") == "00"
    # and leaving the page forgets it
    page.goto(f"http://localhost:{stack.port}/")
    page.send("Page.navigate", {"url": f"http://{name}.localhost:{stack.port}/"})
    page.wait_for("document.readyState === 'complete' && document.getElementById('st-keys') !== null")
    assert page.evaluate("document.getElementById('st-keys-owner').value") == ""
