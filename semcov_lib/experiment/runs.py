"""Run folders: seeding, folder locks, configuration hashes and run manifests.

A run folder holds everything one training run produced. Files are written atomically
(:mod:`semcov_lib.files`); the trainer writes a completion marker last, so a folder without
one is resumable or disposable. :func:`folder_lock` keeps two processes out of one folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from filelock import FileLock, Timeout

from semcov_lib import __version__
from semcov_lib.errors import SemcovError
from semcov_lib.paths import REPO_ROOT

LOCK_NAME = ".lock"


class RunFolderError(SemcovError, ValueError):
    """An output folder is unusable: in use, unreadable, a file, or holds another run."""


@contextmanager
def folder_lock(folder: str | Path, what: str = "run") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (file ``.lock`` inside it) for the block.

    A second process (or a second call in this one) asking for the same folder gets a
    :class:`RunFolderError` at once: results are never silently overwritten or lost. The OS
    releases the lock when the holder dies, so a killed run never leaves it stuck.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0, is_singleton=False, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"{folder} is in use by another semcov process ({what})",
                             hint="wait for it to finish, or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def read_json(path: str | Path) -> Any:
    """A JSON file of a run or cache; a missing, truncated or invalid file names its path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing", hint="re-run with --force to redo this folder") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is truncated or not valid JSON ({exc})",
                             hint="re-run with --force to redo this folder") from None


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, NumPy and torch; turn on deterministic algorithms where supported."""
    import torch  # local: the audit command uses this module's folder lock and never needs torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def config_hash(config: dict[str, Any], length: int = 10) -> str:
    """A short stable hash of a JSON-serialisable configuration (key order ignored)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def git_state() -> dict[str, Any]:
    """The repository's commit and whether the work tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def environment_versions() -> dict[str, Any]:
    """Versions of what shapes the numbers: Python, NumPy, torch, semcov_lib, device."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "semcov_lib": __version__,
    }
    try:
        import torch  # local, as in seed_everything

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = None
    for name in ("pandas", "sklearn", "scipy"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:  # pragma: no cover
            info[name] = None
    return info


def run_manifest(config: dict[str, Any], seed: int, timings: dict[str, float], **extra: Any) -> dict[str, Any]:
    """The manifest stored in every run folder (config, seed, git, versions, timings)."""
    return {
        "config": config,
        "config_hash": config_hash(config),
        "seed": seed,
        "git": git_state(),
        "versions": environment_versions(),
        "timings_s": timings,
        "created_unix": time.time(),
        **extra,
    }


@contextmanager
def timer(timings: dict[str, float], name: str) -> Iterator[None]:
    """Accumulate the wall time of a block into ``timings[name]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
