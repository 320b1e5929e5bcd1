"""``python -m semcov_lib grid``: train every run the notebooks need, locally or on SLURM.

The notebooks' runs are listed by :func:`semcov_lib.experiment.plan.pipeline_configs` from the
parameter file ``notebooks/params/<profile>.yaml``. Run folders are keyed by configuration,
so once the grid has trained them the notebooks find every run finished and only re-plot.

* ``--print-commands`` prints one ``python -m semcov_lib train ...`` line per run (for any
  scheduler or a shell loop); each line reproduces its run folder exactly.
* ``--executor local`` (default) runs ``--jobs`` runs at a time as subprocesses through
  submitit's ``LocalExecutor``; with GPUs each worker sees one GPU (round-robin over
  ``CUDA_VISIBLE_DEVICES`` or all GPUs), on CPUs the cores are shared out.
* ``--executor slurm`` submits one SLURM job array through submitit's ``SlurmExecutor``
  (one run per array task, ``--jobs`` tasks at a time; ``--partition``, ``--time``,
  ``--gpus-per-node``, ``--cpus-per-task``); ``--wait`` follows it to the end.

Runs that already have a finished folder are skipped. Logs of each job (stdout, stderr, the
pickled result) go to ``<runs>/_submitit/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
import torch

from semcov_lib.config import ConfigError
from semcov_lib.experiment.batches import data_key, prepare_data
from semcov_lib.experiment.plan import pipeline_configs
from semcov_lib.experiment.protocol import TrainConfig, run_dir_for, train_config, unfinished
from semcov_lib.profiles import profile_params
from semcov_lib.experiment.train import train
from semcov_lib.experiment.workers import RunProgress, progress_enabled, visible_gpus
from semcov_lib.paths import RUNS_DIR

POLL_S = 1.0  # how often the local executor's jobs are checked


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of one SLURM array task (one training run)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 240  # wall-clock limit per run
    gpus_per_node: int = 1
    cpus_per_task: int = 8


# --------------------------------------------------------------------------- the grid
def _yaml_value(value: Any) -> str:
    """``value`` written so that ``yaml.safe_load`` gives it back with the same type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[repr(value)]
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return text if "." in mantissa or not e else f"{mantissa}.0e{exponent}"  # YAML 1.1 floats need a dot
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a --set value")


def train_command(config: TrainConfig, root: str | Path | None = None) -> str:
    """The ``python -m semcov_lib train`` line that trains ``config`` into its run folder.

    Only keys that differ from the profile's defaults are written; method hyper-parameters go
    in one ``hp={...}`` mapping (a method key may share a training key's name). With ``root``
    the line names the run folder (``--out``).
    """
    base = train_config(config.method, config.profile, config.seed)
    args = ["python", "-m", "semcov_lib", "train", "--method", config.method, "--profile", config.profile,
            "--seed", str(config.seed)]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name not in ("method", "profile", "seed", "hp") and value != getattr(base, f.name):
            args += ["--set", f"{f.name}={_yaml_value(value)}"]
    if config.hp:
        args += ["--set", f"hp={_yaml_value(config.hp)}"]
    if root is not None:
        args += ["--out", str(run_dir_for(config, root))]
    return shlex.join(args)


def run_one(config: TrainConfig, root: str | None, threads: int = 0) -> dict[str, Any]:
    """What one grid job does: train (or reuse) one run; a short summary of its metrics."""
    if threads:
        torch.set_num_threads(threads)
    folder = run_dir_for(config, root)
    metrics = train(config, folder, progress=False)
    return {"run_dir": str(folder), **{k: metrics.get(k) for k in ("method", "seed", "best_epoch", "macro_f1", "cdi")}}


# --------------------------------------------------------------------------- executors
def run_local(configs: list[TrainConfig], root: str | Path | None = None, jobs: int = 1,
              log_dir: str | Path | None = None, time_min: int = 24 * 60, progress: bool = True) -> list[str]:
    """Train the unfinished runs of ``configs``, ``jobs`` at a time, as submitit local jobs.

    Data and feature caches are prepared here first, so jobs only read them. Returns one line
    per failed run (empty when all finished); a failure does not stop the other runs.
    """
    todo = unfinished(configs, root)
    report = RunProgress(len(todo), len({run_dir_for(c, root) for c in configs}) - len(todo), progress)
    if not todo:
        return []
    for config in {data_key(c): c for c in todo}.values():  # fills the disk caches the jobs read
        prepare_data(config, progress=progress_enabled(progress))
    gpus = _gpu_indices()
    jobs = max(1, min(jobs, len(todo)))
    threads = 0 if gpus else max(1, (os.cpu_count() or 1) // jobs)
    executor = submitit.LocalExecutor(folder=_log_dir(root, log_dir))
    root_str = str(root) if root is not None else None
    pending, running, free, failures = list(todo), {}, list(range(jobs)), []
    while pending or running:
        while pending and free:
            slot, config = free.pop(0), pending.pop(0)
            gpu = {"gpus_per_node": 1, "visible_gpus": [gpus[slot % len(gpus)]]} if gpus else {"gpus_per_node": 0}
            executor.update_parameters(timeout_min=time_min, **gpu)
            running[executor.submit(run_one, config, root_str, threads)] = (config, slot)
        done = [job for job in running if job.done()]
        if not done:
            time.sleep(POLL_S)
        for job in done:
            config, slot = running.pop(job)
            free.append(slot)
            failures += _collect(job, config, root, report)
    return failures


def _collect(job, config: TrainConfig, root: str | Path | None, report: RunProgress) -> list[str]:
    """Count a finished job; a one-line failure (with its log file) when it raised."""
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - any failure of a run is reported, not raised
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        report.finished(config, run_dir_for(config, root), status="FAILED")
        return [f"{config.method} seed {config.seed}: {last} (log: {job.paths.stderr})"]
    report.finished(config, run_dir_for(config, root))
    return []


def submit_slurm(configs: list[TrainConfig], options: SlurmOptions, root: str | Path | None = None,
                 jobs: int = 0, log_dir: str | Path | None = None) -> list:
    """Submit the unfinished runs as one SLURM job array; returns the submitit jobs.

    One array task per run with ``options``' resources; ``jobs`` > 0 caps how many run at
    once (SLURM's ``%`` array throttle). Each task prepares its data from the shared cache.
    """
    todo = unfinished(configs, root)
    if not todo:
        return []
    executor = submitit.SlurmExecutor(folder=_log_dir(root, log_dir))
    executor.update_parameters(
        time=options.time_min, cpus_per_task=options.cpus_per_task, nodes=1, ntasks_per_node=1,
        job_name="semcov-grid", array_parallelism=jobs if jobs > 0 else len(todo),
        **({"partition": options.partition} if options.partition else {}),
        **({"gpus_per_node": options.gpus_per_node} if options.gpus_per_node > 0 else {}),
    )
    n = len(todo)
    root_str = str(root) if root is not None else None
    return executor.map_array(run_one, todo, [root_str] * n, [options.cpus_per_task] * n)


def wait_for(jobs: list, configs: list[TrainConfig], root: str | Path | None = None, progress: bool = True) -> list[str]:
    """Follow submitted jobs to the end, a progress line per finished run (completion order)."""
    report = RunProgress(len(jobs), 0, progress)
    running, failures = dict(zip(jobs, configs)), []
    while running:
        done = [job for job in running if job.done()]
        if not done:
            time.sleep(30 * POLL_S)
        for job in done:
            failures += _collect(job, running.pop(job), root, report)
    return failures


def _gpu_indices() -> list[int]:
    gpus = visible_gpus()
    if not all(g.isdigit() for g in gpus):
        raise ConfigError(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}: the local grid "
                          "hands out GPUs by index; list indices (e.g. 0,1), not UUIDs")
    return [int(g) for g in gpus]


def _log_dir(root: str | Path | None, log_dir: str | Path | None) -> Path:
    return Path(log_dir) if log_dir else Path(root or RUNS_DIR) / "_submitit"


# --------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="default",
                        help="notebook parameter file notebooks/params/<profile>.yaml (default: default)")
    parser.add_argument("--params", help="another notebook parameter file (YAML) instead of the profile's")
    parser.add_argument("--print-commands", action="store_true",
                        help="print one 'python -m semcov_lib train ...' line per run and exit")
    parser.add_argument("--executor", default="local", choices=("local", "slurm"),
                        help="local subprocesses or a SLURM job array (both through submitit)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (local: worker processes, one GPU each when there are GPUs; "
                             "slurm: array throttle, 0 = no limit)")
    parser.add_argument("--root", help="run folders' root (default: reports/runs)")
    parser.add_argument("--log-dir", help="submitit logs (default: <root>/_submitit)")
    parser.add_argument("--partition", help="slurm: partition (default: the cluster's default)")
    parser.add_argument("--time", type=int, default=SlurmOptions.time_min,
                        help="wall-clock minutes per run (slurm --time; local timeout)")
    parser.add_argument("--gpus-per-node", type=int, default=SlurmOptions.gpus_per_node, help="slurm: GPUs per run")
    parser.add_argument("--cpus-per-task", type=int, default=SlurmOptions.cpus_per_task, help="slurm: CPUs per run")
    parser.add_argument("--wait", action="store_true", help="slurm: wait for the array and report each run")
    parser.add_argument("--no-progress", action="store_true", help="no per-run progress lines")


def run(args) -> int:
    configs = _grid(args)
    if args.print_commands:
        for config in configs:
            print(train_command(config, args.root))
        return 0
    progress = not args.no_progress
    if args.executor == "local":
        failures = run_local(configs, args.root, args.jobs, args.log_dir, args.time, progress)
    else:
        options = SlurmOptions(args.partition, args.time, args.gpus_per_node, args.cpus_per_task)
        todo = unfinished(configs, args.root)
        jobs = submit_slurm(configs, options, args.root, args.jobs, args.log_dir)
        print(f"{len(configs)} runs: {len(configs) - len(todo)} finished already, {len(jobs)} submitted"
              + (f" as SLURM array {jobs[0].job_id.split('_')[0]}" if jobs else ""))
        failures = wait_for(jobs, todo, args.root, progress) if args.wait else []
    for line in failures:
        print(f"failed: {line}")
    return 1 if failures else 0


def _grid(args) -> list[TrainConfig]:
    return pipeline_configs(profile_params(args.profile, args.params))
