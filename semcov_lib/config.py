"""Configuration plumbing shared by every command: YAML files and ``--set key=value``.

Configurations are dataclasses; this module turns files and overrides into them with
clear errors (an unknown key names itself and the valid keys). Every value goes through one
validator, :func:`coerce_value`: it converts to the type of the key's default, rejects
mistyped and non-finite numbers naming the key, and is used for the training configuration,
the benchmark configuration and the method hyper-parameters alike. Range checks on top of the
types use :func:`require`.

Numbers are read as numbers whatever way users type them: YAML 1.1 (PyYAML) reads ``1e-4``,
``1E3`` and ``+.5`` as strings; :class:`_Loader` reads them as floats (as YAML 1.2 does).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from semcov_lib.errors import SemcovError

T = TypeVar("T")


class ConfigError(SemcovError, ValueError):
    """A configuration file or override is invalid."""


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-4``, ``1E3``, ``+.5`` as floats (YAML 1.2 number syntax)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+"
               r"|[-+]\.[0-9][0-9_]*)$"),
    list("-+0123456789."),
)


def load_yaml_text(text: str) -> Any:
    """Parse YAML with :class:`_Loader` (safe; numbers read as numbers)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


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
            result[key] = load_yaml_text(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from exc
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = load_yaml_text(path.read_text()) or {}
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
    changes = coerce_values(overrides, {k: getattr(config, k) for k in overrides}, source)
    return dataclasses.replace(config, **changes)


def coerce_values(values: dict[str, Any], defaults: dict[str, Any], source: str) -> dict[str, Any]:
    """Each of ``values`` through :func:`coerce_value` against the default of its key."""
    return {key: coerce_value(key, value, defaults.get(key), source) for key, value in values.items()}


def coerce_value(key: str, value: Any, current: Any, source: str) -> Any:
    """``value`` converted to the type of ``current`` (int 3 -> 3.0, list -> tuple, "1e-4" -> 1e-4);
    a mistyped or non-finite value raises :class:`ConfigError` naming ``key``."""
    value = _coerce(key, value, current, source)
    _check_finite(key, value, source)
    return value


def require(ok: bool, source: str, key: str, value: Any, what: str) -> None:
    """Raise ``{source}: {key} must be {what}, got {value!r}`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{source}: {key} must be {what}, got {value!r}")


def _check_finite(key: str, value: Any, source: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(key, item, source)
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(f"{key}.{name}", item, source)


def _number(text: str) -> float | None:
    """A number typed as text (``"1e-4"``), else None."""
    try:
        return float(text.replace("_", ""))
    except ValueError:
        return None


def _coerce(key: str, value: Any, current: Any, source: str) -> Any:
    """Coerce ``value`` to the type of the current value (int 3 -> float 3.0, list -> tuple)."""
    if current is None or value is None:
        return value
    if isinstance(value, str) and isinstance(current, (int, float)) and not isinstance(current, bool):
        value = _number(value) if _number(value) is not None else value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true/false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(current, (tuple, list)):
        if isinstance(value, (list, tuple)):
            return type(current)(value)
        raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
    if isinstance(current, dict) and not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a mapping of key: value, got {value!r}")
    if isinstance(current, str) and not isinstance(value, str):
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{source}: {key} must be text, got {value!r}")
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
