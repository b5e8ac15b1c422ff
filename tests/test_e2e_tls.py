"""TLS: `render-config` / `up` serve HTTPS when the config names a certificate and a key;
tested with a self-signed certificate, the real openssl, curl and nginx."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from .conftest import free_port, start_stack, stop_stack

pytestmark = pytest.mark.e2e


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """Run curl; (status, headers, body)."""
    result = subprocess.run(
        ["curl", "-sS", "-D", "-", *args], capture_output=True, text=True, timeout=30, check=True
    )
    head, _, body = result.stdout.partition("\n\n")  # (text mode: curl's CRLFs read as LF)
    lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_tls_serves_https_and_moves_plain_reads_there(tmp_path, project):
    host = f"{project}.localhost"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert), "-addext", f"subjectAltName=DNS:localhost,DNS:{host}"],
        check=True, capture_output=True,
    )  # fmt: skip
    tls_port = free_port()
    config = tmp_path / "smalltable.yaml"
    config.write_text(f"tls:\n  certificate: {cert}\n  key: {key}\n  port: {tls_port}\n")
    running = start_stack(tmp_path / "home", ["--config", str(config)])
    try:
        rendered = (running.home / "conf" / "smalltable.conf").read_text()
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in rendered
        https = f"https://{host}:{tls_port}"
        resolve = ["--cacert", str(cert), "--resolve", f"{host}:{tls_port}:127.0.0.1"]
        status, headers, body = curl(*resolve, "-d", '{"over":"tls"}', f"{https}/")
        assert status == 202
        answer = json.loads(body)
        assert answer["status_url"] == f"{https}/_status/{answer['id']}"
        rows_url = f"{https}/{project}/records.json?_shape=array&_request_id__exact={answer['id']}"
        deadline = time.monotonic() + 15
        # until a list with the row and its column: before ingestd made the database, Datasette
        # answers an error object; and it reads a table's columns before its rows, so a read
        # across the commit that added the column "over" shows the row without it
        while not isinstance(rows := json.loads(curl(*resolve, rows_url)[2] or "[]"), list) or not (
            rows and "over" in rows[0]
        ):
            assert time.monotonic() < deadline, "the write over TLS was not loaded"
            time.sleep(0.1)
        assert rows[0]["over"] == "tls"
        assert curl(*resolve, f"{https}/")[0] == 200
        assert curl(*resolve, "--tlsv1.2", "--tls-max", "1.2", f"{https}/")[0] == 200
        # Plain HTTP: reads are sent to HTTPS, writes are still accepted.
        plain = f"http://{host}:{running.port}"
        resolve_plain = ["--resolve", f"{host}:{running.port}:127.0.0.1"]
        status, headers, _ = curl(*resolve_plain, f"{plain}/{project}/records.json?_size=1")
        assert status == 301 and headers["location"] == f"{https}/{project}/records.json?_size=1"
        assert curl(*resolve_plain, "-d", "plain", f"{plain}/")[0] == 202
        # A client that does not trust the certificate is refused.
        untrusted = subprocess.run(
            ["curl", "-sS", "--resolve", f"{host}:{tls_port}:127.0.0.1", f"{https}/"], capture_output=True
        )
        assert untrusted.returncode == 60  # SSL certificate problem
    finally:
        stop_stack(running)


def test_tls_needs_both_a_certificate_and_a_key(tmp_path):
    config = tmp_path / "smalltable.yaml"
    config.write_text("tls:\n  certificate: /etc/cert.pem\n")
    out = str(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "ingestd", "render-config", "--config", str(config), "--out", out],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "'tls.certificate' and 'tls.key': give both (TLS) or neither" in result.stderr
