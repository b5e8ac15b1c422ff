"""End to end: the project's own pages through the real nginx and Datasette.

What a user reads back (the project page, a record's page, its JSON, its exact
bytes, its files, the stats) after posting through nginx, as the user's
browser or curl would ask for it.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import pytest

from ingestd.store.schema import open_database
from ingestd.support.timefmt import iso_time

from .conftest import ARTIFACTS
from .test_e2e_ingest import accepted

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


def png(width: int, height: int) -> bytes:
    """A real RGB PNG of a colour gradient, made without an imaging library."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def stored(stack, project: str, body: bytes | str, headers: dict | None = None, path: str = "/") -> dict:
    """Post through nginx and return the record once ingestd has loaded it."""
    return stack.wait_row(project, accepted(stack.post(project, body, path=path, headers=headers or {})))


def row_ids(html: str) -> list[int]:
    """The record ids of the project page's table rows, in page order."""
    return [int(n) for n in re.findall(r'<tr id="r([0-9]+)"', html)]


# -- the project page -------------------------------------------------------------


def test_project_page_newest_first_with_user_columns_and_links(stack, project):
    first = stored(stack, project, '{"user":"ann","score":3}', JSON)
    stored(stack, project, '{"user":"bob","city":"Oslo"}', JSON)
    third = stored(stack, project, "plain words", path="/notes?day=2")
    page = stack.request("GET", project, "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert row_ids(html) == [third["_id"], third["_id"] - 1, first["_id"]]
    assert "<th>Fields</th><th>Body</th>" in html
    assert "<dt>city</dt><dd>Oslo</dd>" in html and "POST /notes?day=2" in html
    assert f'href="/{project}/records?_sort_desc=_id"' in html
    assert f'href="/{project}/rejects?_sort_desc=_id"' in html
    assert f'href="/{project}?sql=select+*+from+records+order+by+_id+desc+limit+100">Query with SQL' in html
    assert '<dd id="st-record-count">3</dd>' in html
    assert f"http://{project}.localhost:{stack.port}/" in html  # how to post more
    # a project made by its first post: nobody owns it yet, and the page says how to claim it
    assert "unclaimed" in html and "/_project" in html


def test_long_text_is_cut_on_the_page_and_whole_on_its_record_page(stack, project):
    text = "word " * 100 + "THE-END"
    record = stored(stack, project, text)
    html = stack.request("GET", project, "/").text
    assert "word " * 20 in html and "THE-END" not in html
    assert f'<a href="/{record["_id"]}" title="the whole body">…</a>' in html
    record_page = stack.request("GET", project, f"/{record['_id']}").text
    assert text in record_page


def test_image_record_is_shown_as_an_image_and_raw_gives_its_bytes(stack, project):
    image = png(40, 30)
    record = stored(stack, project, image, {"Content-Type": "image/png"})
    assert record["_kind"] == "binary"
    html = stack.request("GET", project, "/").text
    assert f'src="/{record["_id"]}/raw"' in html
    assert f'src="/{record["_id"]}/raw"' in stack.request("GET", project, f"/{record['_id']}").text
    raw = stack.request("GET", project, f"/{record['_id']}/raw")
    assert raw.status_code == 200
    assert raw.content == image
    assert raw.headers["content-type"] == "image/png"
    assert raw.headers["content-length"] == str(len(image))
    assert raw.headers["content-disposition"].startswith("inline")
    assert f"{project}-{record['_id']}.png" in raw.headers["content-disposition"]


@pytest.mark.parametrize("content_type", ["application/octet-stream", None], ids=["typed", "untyped"])
def test_binary_record_is_a_download_and_raw_is_byte_exact(stack, project, content_type):
    body = bytes(range(256)) * 4
    headers = {"Content-Type": content_type} if content_type else {}
    record = stored(stack, project, body, headers)
    html = stack.request("GET", project, "/").text
    assert f'<a href="/{record["_id"]}/raw" download>download</a>' in html
    assert "1.0 KB" in html
    if content_type:
        assert f"1.0 KB, {content_type}" in html
    raw = stack.request("GET", project, f"/{record['_id']}/raw")
    assert raw.content == body
    assert raw.headers["content-type"] == (content_type or "application/octet-stream")
    assert raw.headers["content-length"] == "1024"
    # a browser opening it never runs it as a page of the project's host
    assert raw.headers["content-security-policy"] == "sandbox"
    assert raw.headers["x-content-type-options"] == "nosniff"


def test_text_raw_is_the_exact_utf8_bytes(stack, project):
    text = "naïve café — 東京 🎉\r\n\ttabs"
    record = stored(stack, project, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
    raw = stack.request("GET", project, f"/{record['_id']}/raw")
    assert raw.content == text.encode()
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"


def test_multipart_files_are_listed_and_downloadable(stack, project):
    image = png(16, 16)
    blob = bytes(range(256)) + b"\r\n--not-a-boundary\r\n"
    response = stack.request(
        "POST",
        project,
        files={
            "photo": ("café.png", image, "image/png"),
            "data": ("x.bin", blob, "application/octet-stream"),
        },
        data={"caption": "hi"},
    )
    record = stack.wait_row(project, accepted(response))
    files = stack.rows(project, "files", record_id=str(record["_id"]))
    by_field = {f["field"]: f for f in files}
    page = stack.request("GET", project, f"/{record['_id']}").text
    for file in files:
        assert f'href="/{record["_id"]}/files/{file["_id"]}"' in page
    photo = stack.request("GET", project, f"/{record['_id']}/files/{by_field['photo']['_id']}")
    assert photo.content == image and photo.headers["content-type"] == "image/png"
    assert "filename*=UTF-8''caf%C3%A9.png" in photo.headers["content-disposition"]
    data = stack.request("GET", project, f"/{record['_id']}/files/{by_field['data']['_id']}")
    assert data.content == blob
    assert data.headers["content-length"] == str(len(blob))
    # the project page shows the files too
    assert f"/{record['_id']}/files/{by_field['photo']['_id']}" in stack.request("GET", project, "/").text
    # the JSON lists them, without their content
    document = stack.request("GET", project, f"/{record['_id']}.json").json()
    assert document["caption"] == "hi"
    assert [(f["field"], f["filename"], f["size"]) for f in document["_files"]] == [
        ("photo", "café.png", len(image)),
        ("data", "x.bin", len(blob)),
    ]
    assert all(
        "content" not in f and f["url"].startswith(f"/{record['_id']}/files/") for f in document["_files"]
    )
    # a file id of another record is not this record's
    other = stored(stack, project, "other")
    wrong = stack.request("GET", project, f"/{other['_id']}/files/{by_field['photo']['_id']}")
    assert wrong.status_code == 404


# -- a record's URLs --------------------------------------------------------------


def test_record_json_by_id_request_id_and_accept_header(stack, project):
    record = stored(stack, project, '{"user":"ann","n":null}', JSON)
    rid, number = record["_request_id"], record["_id"]
    document = stack.request("GET", project, f"/{number}.json").json()
    assert document["user"] == "ann" and document["_request_id"] == rid
    assert "n" not in document  # NULL user columns are left out, system columns never
    assert document["_query"] is None
    by_accept = stack.request("GET", project, f"/{number}", headers={"Accept": "application/json"})
    assert by_accept.json() == document
    assert "Accept" in by_accept.headers["vary"]
    assert stack.request("GET", project, f"/{rid}.json").json() == document
    assert stack.request("GET", project, f"/{rid}", headers={"Accept": "application/json"}).json() == document
    redirect = stack.request("GET", project, f"/{rid}")
    assert redirect.status_code == 302 and redirect.headers["location"] == f"/{number}"
    assert stack.request("GET", project, f"/{rid}/raw").content == b'{"user":"ann","n":null}'


def test_record_page_shows_every_column(stack, project):
    record = stored(stack, project, '{"user":"ann","tags":["a","b"]}', JSON, path="/x?y=1")
    html = stack.request("GET", project, f"/{record['_id']}").text
    for name in ("_id", "_request_id", "_received", "_method", "_path", "_query", "_kind", "user", "tags"):
        assert f'<th scope="row">{name}</th>' in html
    assert record["_request_id"] in html
    assert '{\n  "user": "ann",' in unescape(html)  # the JSON body, indented


def test_unknown_records_are_404_in_html_and_json(stack, project):
    stored(stack, project, "one")
    page = stack.request("GET", project, "/999999")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "There is no record 999999" in page.text
    too_big = "9" * 19  # more than SQLite's largest integer
    for path in (
        "/999999.json",
        "/999999/raw",
        "/1/files/999999",
        f"/{too_big}.json",
        f"/1/files/{too_big}",
        f"/{uuid.uuid4().hex}.json",
    ):
        response = stack.request("GET", project, path)
        assert response.status_code == 404, path
        assert response.json()["status"] == 404
    assert stack.request("GET", project, "/999999", headers={"Accept": "application/json"}).status_code == 404


def test_a_project_that_does_not_exist_says_how_to_create_it(stack, project):
    page = stack.request("GET", project, "/")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert f"There is no project “{project}” yet" in page.text
    assert """curl -d '{"hello": "world"}' -H 'Content-Type: application/json'""" in unescape(page.text)
    assert f"http://{project}.localhost:{stack.port}/" in page.text
    answer = stack.request("GET", project, "/1.json")
    assert answer.status_code == 404
    assert answer.json()["create"].endswith(f"http://{project}.localhost:{stack.port}/")
    assert stack.request("GET", project, "/_stats.json").status_code == 404


def test_a_rejected_request_id_says_why(stack, project):
    rid = accepted(stack.post(project, b'{"user": ann}', headers=JSON))
    reject = stack.wait_row(project, rid, table="rejects")
    answer = stack.request("GET", project, f"/{rid}.json")
    assert answer.status_code == 404
    assert answer.json()["error"] == f"request {rid} was rejected: {reject['_reason']}"
    assert answer.json()["reject"] == f"/{project}/rejects/{reject['_id']}"
    assert f"/{project}/rejects/{reject['_id']}" in stack.request("GET", project, f"/{rid}").text


# -- pages of records ---------------------------------------------------------------


def test_pages_of_fifty_newest_first_with_older_and_newer_links(stack, project):
    ids = [accepted(stack.post(project, f"n={n}")) for n in range(55)]
    stack.wait_row(project, ids[-1])
    first = stack.request("GET", project, "/").text
    assert row_ids(first) == list(range(55, 5, -1))
    assert 'href="?before=6"' in first
    older = stack.request("GET", project, "/", params={"before": "6"})
    assert row_ids(older.text) == [5, 4, 3, 2, 1]
    assert 'href="/" rel="prev"' in older.text and "?before=1" not in older.text
    assert 'id="st-live"' not in older.text  # live only on the newest page
    middle = stack.request("GET", project, "/", params={"before": "53"}).text
    assert row_ids(middle)[0] == 52 and row_ids(middle)[-1] == 3
    assert 'href="/" rel="prev"' in middle and 'href="?before=3"' in middle
    deep = stack.request("GET", project, "/", params={"before": "2"}).text
    assert row_ids(deep) == [1] and 'href="?before=52" rel="prev"' in deep
    assert stack.request("GET", project, "/", params={"before": "x"}).status_code == 400
    assert row_ids(stack.request("GET", project, "/", params={"before": "9" * 19}).text)[0] == 55


# -- stats -----------------------------------------------------------------------


def bucket(buckets: list[dict], received: str, length: int) -> dict:
    """The bucket (hour: length 13, day: length 10) that a ``_received`` time falls in."""
    [found] = [b for b in buckets if b["start"][:length] == received[:length]]
    return found


def test_stats_json_counts_what_was_posted(stack, project):
    rows = [
        stored(stack, project, '{"a":1}', JSON),
        stored(stack, project, "hello", {"Content-Type": "text/plain; charset=utf-8"}),
        stored(stack, project, "hello again", {"Content-Type": "Text/Plain"}),
    ]
    reject = stack.wait_row(project, accepted(stack.post(project, b"{nope", headers=JSON)), table="rejects")
    stats = stack.request("GET", project, "/_stats.json").json()
    assert (stats["project"], stats["records"], stats["rejects"]) == (project, 3, 1)
    assert stats["last_post"] == max(r["_received"] for r in [*rows, reject])
    assert stats["database_bytes"] >= (project_db(stack, project)).stat().st_size > 0
    assert len(stats["hourly"]) == 48 and len(stats["daily"]) == 28
    assert sum(b["records"] for b in stats["hourly"]) == 3
    assert sum(b["bytes"] for b in stats["daily"]) == sum(r["_size"] for r in rows)
    hour = bucket(stats["hourly"], rows[0]["_received"], 13)
    assert hour["records"] >= 1
    assert stats["content_types"] == [
        {"content_type": "text/plain", "records": 2},
        {"content_type": "application/json", "records": 1},
    ]


def project_db(stack, project: str) -> Path:
    return stack.home / "data" / f"{project}.db"


def make_project(stack, project: str, rows: list[tuple[datetime, int, str | None]]) -> list[str]:
    """A project database written directly, with chosen receive times, sizes and content types;
    returns the ``_received`` of each row.

    Nothing is posted to it, so the stack's ingestd never opens it; Datasette
    finds it as it finds any new project.
    """
    received = [iso_time(when.timestamp()) for when, _, _ in rows]
    conn = open_database(project_db(stack, project))
    try:
        conn.execute("ALTER TABLE records ADD COLUMN user")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO records (_request_id, _received, _method, _path, _content_type, _size, _kind,"
            " _body, user) VALUES (?, ?, 'POST', '/', ?, ?, 'json', ?, ?)",
            [
                (uuid.uuid4().hex, received[n], ctype, size, json.dumps({"user": n}), n)
                for n, (_, size, ctype) in enumerate(rows)
            ],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return received


def test_stats_json_on_known_history(stack, project):
    now = datetime.now(UTC)
    three_hours_ago, _, _, ten_days_ago, *_ = make_project(
        stack,
        project,
        [
            (now - timedelta(hours=3), 10, "application/json"),
            (now - timedelta(hours=3), 20, "application/json"),
            (now - timedelta(hours=30), 5, "text/plain"),
            *[(now - timedelta(days=10), 100, None)] * 4,
            (now - timedelta(days=40), 1000, "application/json"),
        ],
    )
    stats = stack.request("GET", project, "/_stats.json").json()
    assert stats["records"] == 8 and stats["rejects"] == 0
    assert bucket(stats["hourly"], three_hours_ago, 13) == {
        "start": three_hours_ago[:13] + ":00:00Z",
        "records": 2,
        "bytes": 30,
    }
    assert sum(b["records"] for b in stats["hourly"]) == 3  # 3 and 30 hours ago: within 48 hours
    assert bucket(stats["daily"], ten_days_ago, 10) == {
        "start": ten_days_ago[:10] + "T00:00:00Z",
        "records": 4,
        "bytes": 400,
    }
    assert sum(b["records"] for b in stats["daily"]) == 7  # 40 days ago is outside the 4 weeks
    assert stats["content_types"] == [
        {"content_type": None, "records": 4},
        {"content_type": "application/json", "records": 3},
        {"content_type": "text/plain", "records": 1},
    ]
    # the page draws the same numbers
    html = stack.request("GET", project, "/").text
    charts = [ElementTree.fromstring(svg) for svg in re.findall(r"<svg .*?</svg>", html, flags=re.S)]
    bars = [len(chart.findall("{http://www.w3.org/2000/svg}rect")) for chart in charts]
    assert bars == [48, 28, 48, 28]  # records per hour, per day; bytes per hour, per day
    assert "records per hour: max 2" in html and "records per day: max 4" in html
    assert "bytes per day: max 400 bytes" in html


def test_big_project_pages_answer_with_exact_stats(stack, project):
    """10,000 records over four weeks: every page answers, stats exact. (How fast is
    bench/read_side.py's; the timings here are written to test-artifacts/ only.)"""
    now = datetime.now(UTC)
    received = make_project(
        stack,
        project,
        [(now - timedelta(minutes=4 * n), 300 + n % 700, "application/json") for n in range(10_000)],
    )
    timings = {}
    for path in ("/", "/_stats.json", "/?before=5000", "/5000", "/5000.json", "/5000/raw"):
        stack.request("GET", project, path).raise_for_status()  # the first open of a file is not the point
        started = time.perf_counter()
        stack.request("GET", project, path).raise_for_status()
        timings[path] = round(time.perf_counter() - started, 4)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browse-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    stats = stack.request("GET", project, "/_stats.json").json()
    assert stats["records"] == 10_000
    for period in ("hourly", "daily"):
        expected = sum(1 for when in received if when >= stats[period][0]["start"])
        assert sum(b["records"] for b in stats[period]) == expected, period


# -- the docs' examples -------------------------------------------------------------

BROWSE_DOC = Path(__file__).resolve().parent.parent / "docs" / "browse.md"


def doc_curl_lines(doc: Path) -> list[str]:
    """Every ``curl`` line on project ``demo`` of the doc's ``sh`` blocks, in order (not the
    template for a project ``NAME``)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", doc.read_text(), flags=re.MULTILINE | re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]
    return [line for line in lines if "NAME.localhost" not in line]


def curl_request(line: str, files: dict[str, bytes]) -> dict:
    """The request one doc curl line makes, as ``httpx`` arguments, for the flags the docs use.

    An unknown flag fails the test: the docs keep to what this reads.
    """
    words = shlex.split(line)[1:]
    if ">" in words:
        words = words[: words.index(">")]
    headers, data, form, uploads, get, url, content = {}, [], {}, {}, False, None, None
    while words:
        word = words.pop(0)
        if word == "-H":
            name, _, value = words.pop(0).partition(": ")
            headers[name] = value
        elif word in ("-d", "--data-urlencode"):
            value = words.pop(0)
            data.append(
                value if word == "-d" else re.sub(r"^([^=]*)=(.*)$", _urlencode_value, value, flags=re.S)
            )
        elif word == "--data-binary":
            content = files[words.pop(0).removeprefix("@")]
        elif word == "-F":
            name, _, value = words.pop(0).partition("=")
            if value.startswith("@"):
                uploads[name] = (value[1:], files[value[1:]], "image/png")
            else:
                form[name] = value
        elif word == "-G":
            get = True
        elif word.startswith("http://"):
            url = word
        else:
            raise AssertionError(f"the docs' curl lines use a flag this test does not read: {word}")
    if data and not get and content is None:
        content = "&".join(data)
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif data:
        url += ("&" if "?" in url else "?") + "&".join(data)
    method = "POST" if (content is not None or uploads or form) else "GET"
    return {
        "method": method,
        "url": url,
        "headers": headers,
        "content": content,
        "files": uploads,
        "data": form,
    }


def _urlencode_value(match: re.Match) -> str:
    return f"{match[1]}={quote(match[2], safe='')}"


def test_every_curl_line_of_the_browse_doc_runs(stack, project):
    """Each line, on a fresh project in place of ``demo``, in order: posts are accepted and
    loaded, reads answer 200."""
    photo = png(32, 24)
    lines = doc_curl_lines(BROWSE_DOC)
    assert len(lines) >= 12
    for line in lines:
        request = curl_request(line, {"photo.png": photo})
        url = urlsplit(request.pop("url"))
        assert url.netloc == "demo.localhost:8080", line
        path = re.sub(r"^/demo(?=[/.?]|$)", f"/{project}", url.path) + (f"?{url.query}" if url.query else "")
        response = stack.request(request.pop("method"), project, path, **request)
        assert response.status_code in (200, 202), f"{line}\n{response.status_code} {response.text[:300]}"
        if response.status_code == 202:
            stack.wait_row(project, response.json()["id"])
    assert stack.request("GET", project, "/3/raw").content == photo
    assert stack.request("GET", project, "/4/files/1").content == photo
