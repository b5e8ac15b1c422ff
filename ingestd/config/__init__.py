"""Load and validate SmallTable's YAML config. Every default lives here, in SETTINGS.

A config file holds only what differs from the defaults::

    domain: smalltable.example
    home: /var/lib/smalltable
    nginx:
      port: 80

Anything wrong (an unknown key, a bad value) raises :class:`ConfigError` naming
the file, the key and what was expected; callers print it, never a traceback.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..model.project import UNCLAIMED, Settings
from ..support import values as checks
from .settings import SETTINGS, Setting

__all__ = ["SETTINGS", "Config", "ConfigError", "Setting", "default_settings", "defaults_yaml", "load_config"]


class ConfigError(Exception):
    """A config problem, worded for the person who wrote the file."""


@dataclass(frozen=True)
class Config:
    """Validated settings (``values`` by dotted key) and the home they are relative to."""

    values: dict[str, Any]
    source: str

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def home(self) -> Path:
        return Path(self.values["home"]).absolute()

    def path(self, key: str) -> Path:
        """A ``paths.*`` setting as an absolute path (relative ones are under home)."""
        return self.home / self.values[f"paths.{key}"]


def default_settings(
    type_: str | None = None, retention_days: int | None = None, quota_mb: float | None = None
) -> Settings:
    """The settings of a project nobody has claimed: the values given, else the documented
    ``projects.*`` defaults (a deployment passes its config's)."""
    return Settings(
        UNCLAIMED,
        "",
        SETTINGS["projects.type"].default if type_ is None else type_,
        None,
        SETTINGS["projects.retention_days"].default if retention_days is None else retention_days,
        SETTINGS["projects.quota_mb"].default if quota_mb is None else quota_mb,
    )


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (YAML; None for defaults only), apply ``overrides``, validate all.

    ``overrides`` (from command-line flags) win over the file.
    """
    source = str(path) if path else "(defaults)"
    data: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{source}: not a text file: a byte that is not UTF-8 at offset {exc.start}"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping of settings at the top level")
        data = checks.flatten(loaded, SETTINGS)
    values = {key: setting.default for key, setting in SETTINGS.items()}
    for key, value in {**data, **(overrides or {})}.items():
        setting = SETTINGS.get(key)
        if setting is None:
            hint = difflib.get_close_matches(key, SETTINGS, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{source}: unknown key {key!r}{suggestion}")
        try:
            values[key] = setting.check(value)
        except (ValueError, TypeError):
            raise ConfigError(f"{source}: key {key!r}: expected {setting.expected}, got {value!r}") from None
    floor = 3 * values["nginx.max_body_bytes"]
    if values["datasette.max_value_bytes"] < floor:
        raise ConfigError(
            f"{source}: key 'datasette.max_value_bytes': expected at least 3 times nginx.max_body_bytes "
            f"({floor}), so every stored row can be read; got {values['datasette.max_value_bytes']}"
        )
    if bool(values["tls.certificate"]) != bool(values["tls.key"]):
        raise ConfigError(f"{source}: keys 'tls.certificate' and 'tls.key': give both (TLS) or neither")
    return Config(values, source)


def defaults_yaml() -> str:
    """Every setting with its default and meaning, as a commented YAML document."""
    return checks.commented_yaml(SETTINGS)
