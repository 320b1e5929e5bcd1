"""Validate and coerce a notebook's papermill parameters against the types its parameters cell declares.

papermill's ``-p name value`` passes anything that is not a number or a boolean as a string, so
``-p seeds "[1]"`` arrives as the text ``"[1]"`` and would fail deep inside training. Notebooks
therefore declare their parameters with types and descriptions, which papermill's
``--help-notebook`` shows::

    seeds: list[int] = [0]  # training seeds, one run each

and call ``check_parameters(globals())`` in the next cell. Strings are parsed as YAML (``"[1]"``
-> ``[1]``, ``"0.5"`` -> ``0.5``), then every value is checked against its annotation; a value
that does not fit stops the notebook with one line naming the parameter and the expected type.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Mapping, MutableMapping

import yaml


class ParameterError(ValueError):
    """A notebook parameter that does not fit its declared type."""


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) if not typing.get_args(annotation) else str(annotation).replace(
        "typing.", "")


def _from_text(value: Any, annotation: Any) -> Any:
    """Parse a string as YAML unless the parameter is a string itself."""
    if not isinstance(value, str) or annotation is str or str in typing.get_args(annotation):
        return value
    if value.strip() == "None":  # Python's spelling of YAML's null
        return None
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value  # the type check below reports it


def _scalar(value: Any, annotation: type) -> Any:
    """``value`` as ``annotation`` (bool, int, float, str) or raise TypeError."""
    if annotation in (int, float) and isinstance(value, str):
        try:  # YAML 1.1 leaves "1e-3" a string
            value = float(value)
        except ValueError:
            raise TypeError from None
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if annotation not in (bool, int, float, str) and isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise TypeError


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` (scalars, list[...], dict, X | None) or TypeError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is None and value is None:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if origin in (list, tuple):
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # a scalar means a list of one
        return [coerce(v, args[0]) for v in items] if args else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise TypeError
        return value
    return _scalar(value, annotation)


def check_parameters(namespace: MutableMapping[str, Any], annotations: Mapping[str, Any] | None = None) -> dict:
    """Coerce every annotated parameter in ``namespace`` (a notebook's ``globals()``) in place.

    ``annotations`` defaults to ``namespace["__annotations__"]`` (what ``name: type = value``
    lines record). Returns the coerced parameters; raises ``ParameterError`` with one line naming
    the first parameter that does not fit.
    """
    annotations = namespace.get("__annotations__", {}) if annotations is None else annotations
    checked = {}
    for name, annotation in annotations.items():
        if name not in namespace:
            continue
        raw = namespace[name]
        try:
            checked[name] = coerce(_from_text(raw, annotation), annotation)
        except TypeError:
            raise ParameterError(f"parameter {name!r} must be {_type_name(annotation)}, got {raw!r} "
                                 f"({type(raw).__name__}); e.g. papermill -p {name} <value> or -y '{name}: <yaml>'"
                                 ) from None
        namespace[name] = checked[name]
    return checked


__all__ = ["ParameterError", "check_parameters", "coerce"]
