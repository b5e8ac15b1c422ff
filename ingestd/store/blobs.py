"""The blob stores: content-addressed copies of uploaded files, each verified after writing.

A blob's id is ``sha256-`` and the SHA-256 of its bytes (64 lowercase hex digits), so the
same bytes are stored once, whoever uploads them and however often. A store is a local
directory or an S3-compatible bucket (:mod:`ingestd.support.s3`):

- a directory keeps ``DIR/ab/sha256-ab…`` (the first two hex digits fan the files out)
  and, beside it, ``sha256-ab….type`` with its Content-Type, which nginx serves it with
  (no Python in the download path);
- a bucket keeps ``PREFIX/sha256-ab…`` with its Content-Type as the object's own.

A copy counts only once it was written whole and read back with the right size and
SHA-256 (:meth:`Store.put`); :meth:`Store.check` re-reads it to find missing or corrupt ones.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..support.s3 import Bucket, S3Error

BLOB_ID = re.compile(r"^sha256-[0-9a-f]{64}$")
_CHUNK = 1 << 20


class StoreError(OSError):
    """A store that could not take or give a copy (a full disk, S3 down, a bad copy).

    An OSError, so that the ingest loop holds at its checkpoint and retries, as for a full data disk."""


def is_blob_id(value: object) -> bool:
    """True for ``sha256-`` and 64 lowercase hex digits."""
    return isinstance(value, str) and BLOB_ID.match(value) is not None


def hash_file(path: Path) -> tuple[str, int]:
    """The id and size of the file at ``path``, read a chunk at a time."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while data := f.read(_CHUNK):
            digest.update(data)
            size += len(data)
    return f"sha256-{digest.hexdigest()}", size


def _hash_chunks(chunks: Iterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for data in chunks:
        digest.update(data)
        size += len(data)
    return f"sha256-{digest.hexdigest()}", size


@dataclass(frozen=True)
class LocalStore:
    """A directory of blobs (nginx serves them straight from it)."""

    directory: Path

    @property
    def name(self) -> str:
        return f"dir:{self.directory}"

    def path(self, blob_id: str) -> Path:
        """Where the blob's bytes are (or would be)."""
        return self.directory / blob_id[7:9] / blob_id

    def put(self, blob_id: str, source: Path, size: int, content_type: str | None) -> None:
        """Copy ``source`` in (temp file, fsync, read back and checked, rename), with its type."""
        target = self.path(blob_id)
        temp = target.with_name(f".{blob_id}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _durable_write(target.with_name(blob_id + ".type"), (content_type or "").encode())
            with source.open("rb") as src, temp.open("wb") as out:
                while data := src.read(_CHUNK):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if hash_file(temp) != (blob_id, size):
                raise StoreError(f"{self.name}: the copy of {blob_id} read back wrong (its source changed?)")
            os.replace(temp, target)
            _sync_dir(target.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)  # a full disk keeps no half copy
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{self.name}: cannot write {blob_id}: {exc.strerror or exc}") from None

    def check(self, blob_id: str, size: int, full: bool = True) -> str:
        """``ok``, ``missing`` or ``corrupt`` (wrong size; with ``full``, wrong SHA-256)."""
        path = self.path(blob_id)
        try:
            if path.stat().st_size != size:
                return "corrupt"
            if full and hash_file(path) != (blob_id, size):
                return "corrupt"
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise StoreError(f"{self.name}: cannot read {blob_id}: {exc.strerror}") from None
        return "ok"

    def read(self, blob_id: str) -> Iterator[bytes]:
        with self.path(blob_id).open("rb") as f:
            while data := f.read(_CHUNK):
                yield data

    def content_type(self, blob_id: str) -> str | None:
        try:
            return self.path(blob_id).with_name(blob_id + ".type").read_text() or None
        except OSError:
            return None

    def remove(self, blob_id: str) -> None:
        """Drop a (corrupt) copy, so that a good one can take its place."""
        self.path(blob_id).unlink(missing_ok=True)


@dataclass(frozen=True)
class S3Store:
    """A bucket (and prefix) of blobs."""

    bucket: Bucket

    @property
    def name(self) -> str:
        return f"s3:{self.bucket.endpoint}/{self.bucket.bucket}/{self.bucket.prefix}"

    def put(self, blob_id: str, source: Path, size: int, content_type: str | None) -> None:
        """Upload ``source``, then read it back: counted only with the right size and SHA-256."""
        try:
            self.bucket.put_file(blob_id, source, content_type)
            if _hash_chunks(self.bucket.read(blob_id)) != (blob_id, size):
                raise StoreError(f"{self.name}: the copy of {blob_id} read back wrong")
        except S3Error as exc:
            raise StoreError(f"{self.name}: {exc}") from None

    def check(self, blob_id: str, size: int, full: bool = True) -> str:
        try:
            found = self.bucket.head(blob_id)
            if found is None:
                return "missing"
            if found != size or (full and _hash_chunks(self.bucket.read(blob_id)) != (blob_id, size)):
                return "corrupt"
        except S3Error as exc:
            raise StoreError(f"{self.name}: {exc}") from None
        return "ok"

    def read(self, blob_id: str) -> Iterator[bytes]:
        try:
            yield from self.bucket.read(blob_id)
        except S3Error as exc:
            raise StoreError(f"{self.name}: {exc}") from None

    def content_type(self, blob_id: str) -> str | None:
        try:
            return self.bucket.client.head_object(
                Bucket=self.bucket.bucket, Key=self.bucket.key(blob_id)
            ).get("ContentType")
        except Exception:  # the type is a nicety: a store that cannot say has none
            return None

    def remove(self, blob_id: str) -> None:
        try:
            self.bucket.delete(blob_id)
        except S3Error as exc:
            raise StoreError(f"{self.name}: {exc}") from None


Store = LocalStore | S3Store


def stores_from(specs: list[dict], home: Path) -> list[Store]:
    """The stores ``blobs.stores`` names (directories relative to ``home``)."""
    stores: list[Store] = []
    for spec in specs:
        if "dir" in spec:
            stores.append(LocalStore(home / spec["dir"]))
        else:
            bucket = Bucket(
                spec["s3"], spec["bucket"], spec.get("prefix", ""), spec.get("region", "us-east-1")
            )
            stores.append(S3Store(bucket))
    return stores


def local_stores(stores: list[Store]) -> list[LocalStore]:
    """The directories among ``stores``, in order: nginx serves from the first that has a copy."""
    return [s for s in stores if isinstance(s, LocalStore)]


def _durable_write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
