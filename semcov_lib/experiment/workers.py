"""Runs side by side: one progress line per finished run, and one GPU per worker process.

Used by :func:`semcov_lib.experiment.train.train_many` (a process pool) and by the local
executor of :mod:`semcov_lib.experiment.grid` (submitit jobs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from semcov_lib.experiment.batches import DataCache
from semcov_lib.experiment.protocol import TrainConfig

#: This process's prepared data when it is a pool worker (made by :func:`init_worker`): a worker
#: trains many runs on the same few datasets, so it prepares each once, not once per run.
_worker_cache: DataCache | None = None


def progress_enabled(progress: bool = True) -> bool:
    """``progress`` unless the environment sets ``TQDM_DISABLE`` (1/true)."""
    return progress and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class RunProgress:
    """One line per finished run, in completion order: which run, how many are left, elapsed, ETA.

    ETA = elapsed / finished x left (the observed completion rate, so parallel runs count).
    """

    def __init__(self, n_todo: int, n_reused: int = 0, enabled: bool = True):
        self.n_todo, self.done, self.enabled = n_todo, 0, progress_enabled(enabled)
        self.start = time.perf_counter()
        if self.enabled and n_todo:
            print(f"{n_todo + n_reused} runs: {n_reused} finished already, {n_todo} to train", flush=True)

    def finished(self, config: TrainConfig, run_dir: Path | None = None, status: str = "done") -> str:
        """Count one finished run and print (and return) its line."""
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = self.n_todo - self.done
        where = f" ({run_dir.name})" if run_dir is not None else ""
        line = (f"[{self.done}/{self.n_todo}] {config.method} seed {config.seed}{where} {status}; {left} left, "
                f"elapsed {_clock(elapsed)}, ETA {_clock(elapsed / self.done * left)}")
        if self.enabled:
            print(line, flush=True)
        return line


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES`` when set, else all (none on CPU)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and not g.strip().startswith("-")]
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def init_worker(counter, gpus: list[str]) -> None:
    """Worker start-up: worker i (in start order) sees only GPU gpus[i mod len(gpus)]; it gets its
    own data cache (:func:`worker_cache`)."""
    global _worker_cache
    _worker_cache = DataCache()
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]


def worker_cache() -> DataCache | None:
    """The data cache of this pool worker process (None outside a pool worker)."""
    return _worker_cache
