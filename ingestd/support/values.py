"""Checks of config values: each returns the value as the config keeps it, or raises ValueError.

``ingestd.config`` pairs each setting with one of these; they know nothing of
SmallTable, only of numbers, names, sizes and addresses.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import yaml


def int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value

    return check


def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError
    return float(value)


def fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError
    return float(value)


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError
        return value

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError
    return value


def path(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError
    return value


_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$"
)


def domain(value: Any) -> str:
    if not isinstance(value, str) or not _DOMAIN_RE.match(value):
        raise ValueError
    return value


_SIZE_RE = re.compile(r"^[1-9][0-9]*[kMG]?$")


def size(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _SIZE_RE.match(str(value)):
        raise ValueError
    return str(value)


def worker_user(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]*", value) or value == "root":
        raise ValueError
    return value


def addresses(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError
    for item in value:
        ipaddress.ip_address(str(item))
    return [str(item) for item in value]


def host_ports(value: Any) -> list[str]:
    """A list of distinct ``ADDRESS:PORT`` (an IP address, ``[v6]``, or a host name), maybe empty."""
    if not isinstance(value, list) or len(set(map(str, value))) != len(value):
        raise ValueError
    for item in value:
        host, _, port = str(item).rpartition(":")
        if not re.fullmatch(r"\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+", host) or not port.isdigit():
            raise ValueError
        int_range(1, 65535)(int(port))
    return [str(item) for item in value]


def optional_path(value: Any) -> str:
    """A path, or the empty string for none."""
    if not isinstance(value, str) or "\0" in value:
        raise ValueError
    return value


BLOB_STORES_EXPECTED = (
    "a non-empty list of stores, each {dir: PATH} or {s3: ENDPOINT, bucket: NAME} (and optionally prefix, "
    "region); no credentials here: S3 keys come from the environment or the AWS files"
)
_S3_KEYS = {"s3", "bucket", "prefix", "region"}


def blob_stores(value: Any) -> list[dict]:
    """``blobs.stores``: directories and buckets, never a credential."""
    if not isinstance(value, list) or not value:
        raise ValueError("not a list")
    for store in value:
        if not isinstance(store, dict) or not all(isinstance(v, str) and v for v in store.values()):
            raise ValueError("not a mapping of strings")
        if set(store) != {"dir"} and not ({"s3", "bucket"} <= set(store) <= _S3_KEYS):
            raise ValueError("neither a directory nor a bucket")
    return value


def s3_url(value: Any) -> str:
    """An ``s3://BUCKET/PREFIX`` URL (the bucket's DNS-style name), or empty for none."""
    if value in ("", None):
        return ""
    if not isinstance(value, str) or not re.fullmatch(
        r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", value
    ):
        raise ValueError
    return value.rstrip("/")


def flatten(data: dict, known: Collection[str], prefix: str = "") -> dict[str, Any]:
    """Nested sections to dotted keys: ``{"nginx": {"port": 80}}`` → ``{"nginx.port": 80}``.

    A section left empty (every setting in it commented out) is no setting at
    all; a mapping that is not a ``known`` key is a section, known or not, so a
    typo in a section name is reported with its full key (``ngnix.port``).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in known:
            flat[dotted] = value
        elif isinstance(value, dict):
            flat.update(flatten(value, known, f"{dotted}."))
        elif value is None and any(k.startswith(f"{dotted}.") for k in known):
            continue
        else:
            flat[dotted] = value
    return flat


def commented_yaml(settings: Mapping[str, Any]) -> str:
    """Settings (with ``default`` and ``doc``) by dotted key, as a commented YAML document."""
    sections: dict[str, list[tuple[str, Any]]] = {}
    for key, setting in settings.items():
        head, _, leaf = key.rpartition(".")
        sections.setdefault(head, []).append((leaf, setting))
    lines: list[str] = []
    for head, entries in sections.items():
        indent = "  " if head else ""
        if head:
            lines.append(f"{head}:")
        for leaf, setting in entries:
            lines.append(f"{indent}# {setting.doc}")
            dumped = yaml.safe_dump({leaf: setting.default}, default_flow_style=True, width=math.inf)
            lines.append(f"{indent}{dumped.strip()[1:-1]}")
    return "\n".join(lines) + "\n"
