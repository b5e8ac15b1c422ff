"""S3-compatible object storage, as SmallTable uses it: put, get, head, delete one object.

One small interface (:class:`Bucket`) over boto3, shared by the blob stores and,
later, the log archive. Credentials never come from SmallTable's config: boto3 reads
them from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) or the
AWS files (``~/.aws/credentials``, ``AWS_SHARED_CREDENTIALS_FILE``), as every AWS tool does.
Every call is bounded in time (connect and read timeouts, few retries), so a slow or
dead endpoint fails the call rather than hanging its caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class S3Error(Exception):
    """An S3 call that failed (down, refused, 5xx, timed out); the message says which."""


@dataclass(frozen=True)
class Bucket:
    """One bucket (and key prefix) at one endpoint."""

    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    timeout: float = 10.0

    def key(self, name: str) -> str:
        """The object key of ``name`` under this bucket's prefix."""
        return f"{self.prefix.strip('/')}/{name}" if self.prefix.strip("/") else name

    @property
    def client(self):
        """The boto3 client (made once per bucket and thread's first use; boto3 clients are thread-safe)."""
        return _client(self.endpoint, self.region, self.timeout)

    def put_file(self, name: str, path: Path, content_type: str | None = None) -> None:
        """Upload the file at ``path`` as ``name`` (multipart past 8 MiB, by boto3)."""
        extra = {"ContentType": content_type} if content_type else {}
        with _errors(f"put {name}"):
            self.client.upload_file(str(path), self.bucket, self.key(name), ExtraArgs=extra)

    def head(self, name: str) -> int | None:
        """The object's size, or None when there is no such object."""
        import botocore.exceptions

        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise S3Error(f"head {name}: {exc}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise S3Error(f"head {name}: {exc}") from None
        return int(answer["ContentLength"])

    def read(self, name: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes, a chunk at a time."""
        with _errors(f"get {name}"):
            body: BinaryIO = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"]
            while data := body.read(chunk):
                yield data

    def delete(self, name: str) -> None:
        """Remove the object (no error when it is already gone)."""
        with _errors(f"delete {name}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def ensure(self) -> None:
        """Create the bucket if it does not exist yet."""
        import botocore.exceptions

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            with _errors(f"create bucket {self.bucket}"):
                self.client.create_bucket(Bucket=self.bucket)
        except botocore.exceptions.BotoCoreError as exc:
            raise S3Error(f"bucket {self.bucket}: {exc}") from None


class _errors:
    """Turn boto3's exceptions into :class:`S3Error` naming what was being done."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        import boto3.exceptions
        import botocore.exceptions

        failures = (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            boto3.exceptions.Boto3Error,
        )
        if exc is not None and isinstance(exc, failures):
            raise S3Error(f"{self.what}: {exc}") from None
        return False


_CLIENTS: dict[tuple[str, str, float], object] = {}


def _client(endpoint: str, region: str, timeout: float):
    """A boto3 S3 client for ``endpoint``, path-style, bounded timeouts, two retries."""
    key = (endpoint, region, timeout)
    if key not in _CLIENTS:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        _CLIENTS[key] = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region, config=config
        )
    return _CLIENTS[key]


# --- For the log archive (#24): an s3:// URL, listing, whole-object SHA-256, small objects. ---


def bucket_from_url(url: str, timeout: float = 30.0) -> Bucket:
    """The bucket and prefix of ``s3://BUCKET/PREFIX``; the endpoint is boto3's own choice
    (``AWS_ENDPOINT_URL``, or ``endpoint_url`` in the AWS config file, else AWS itself),
    so no endpoint or credential ever sits in SmallTable's config."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ValueError(f"not an s3://BUCKET/PREFIX URL: {url!r}")
    import os

    bucket, _, prefix = url[5:].partition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return Bucket(endpoint, bucket, prefix.strip("/"), timeout=timeout)  # type: ignore[arg-type]


def list_names(bucket: Bucket, under: str = "") -> list[str]:
    """Every object name (relative to the bucket's prefix) that starts with ``under``, sorted."""
    start = (
        bucket.key(under) if under else (bucket.prefix.strip("/") + "/" if bucket.prefix.strip("/") else "")
    )
    cut = len(bucket.key(""))
    names: list[str] = []
    with _errors(f"list {start or '/'}"):
        for page in bucket.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket.bucket, Prefix=start
        ):
            names.extend(item["Key"][cut:] for item in page.get("Contents", []))
    return sorted(names)


def sha256_of(bucket: Bucket, name: str, into: Path | None = None) -> tuple[int, str]:
    """The size and SHA-256 of the object as read back now (written to ``into`` too, when given)."""
    import hashlib

    digest, size = hashlib.sha256(), 0
    out = into.open("wb") if into is not None else None
    try:
        for chunk in bucket.read(name):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return size, digest.hexdigest()


def put_bytes(bucket: Bucket, name: str, data: bytes, content_type: str = "application/json") -> None:
    """Store a small object (a manifest, a pointer) in one request."""
    with _errors(f"put {name}"):
        bucket.client.put_object(
            Bucket=bucket.bucket, Key=bucket.key(name), Body=data, ContentType=content_type
        )


def get_bytes(bucket: Bucket, name: str) -> bytes | None:
    """A small object's bytes, or None when there is no such object."""
    if bucket.head(name) is None:
        return None
    return b"".join(bucket.read(name))
