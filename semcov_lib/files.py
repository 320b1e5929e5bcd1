"""Atomic file writes and strict JSON: the one place that writes a file so a reader never sees
half of it (a temporary sibling, then a rename), used by runs, caches, tables and figures."""

from __future__ import annotations

import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed over ``path``,
    when it fails it is removed. The suffix is kept so ``np.save``/``savefig`` add nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # dot-prefixed and '.tmp' inside: run-folder fingerprints skip such names (they come and go)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def json_ready(value: Any) -> Any:
    """Convert NumPy scalars/arrays and non-finite floats into strict-JSON values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Strict JSON (NaN written as null), atomically."""
    return write_text_atomic(path, json.dumps(json_ready(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv_atomic(path: str | Path, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    return write_text_atomic(path, frame.to_csv(index=False))


def write_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as ``.npy`` atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)
    return Path(path)
