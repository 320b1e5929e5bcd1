"""Configuration plumbing shared by every command: YAML files and ``--set key=value``.

Configurations are dataclasses; this module turns files and overrides into them with
clear errors (an unknown key names itself and the valid keys).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["a=1", "b=x", "c=[1, 2]"]`` into a dict; values are read as YAML scalars."""
    result: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            result[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from exc
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def apply_overrides(config: T, overrides: dict[str, Any], source: str = "override") -> T:
    """Return a copy of dataclass ``config`` with ``overrides`` applied (types are checked)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    changes = {}
    for key, value in overrides.items():
        current = getattr(config, key)
        changes[key] = _coerce(key, value, current, source)
    return dataclasses.replace(config, **changes)


def _coerce(key: str, value: Any, current: Any, source: str) -> Any:
    """Coerce ``value`` to the type of the current value (int 3 -> float 3.0, list -> tuple)."""
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true/false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(current, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
    if isinstance(current, str) and not isinstance(value, str):
        return str(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a dataclass (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}
