"""The trainer every method uses: one run into its folder, many runs at once, the ``train`` command.

What a run is and where its folder lives: :mod:`~semcov_lib.experiment.protocol`; its data as
tensors and batches: :mod:`~semcov_lib.experiment.batches`.

One call of :func:`train` trains one (method, configuration, seed) and writes a run folder:

``manifest.json``     configuration, seed, git commit, versions, device, timings
``config.json``       the resolved configuration (also inside every checkpoint)
``log.csv``           one row per epoch: training loss parts, validation metrics, time
``checkpoint.pt``     latest state (written atomically each epoch; removed when done)
``predictions_<split>.csv``  sample id, label, prediction and class probabilities
``metrics.json``      test-split metrics plus a ``stress`` sub-object
``model.pt``          the selected weights
``COMPLETE``          the completion marker (configuration hash), written last

A folder whose ``COMPLETE`` marker matches the configuration is reused, not retrained; any
other folder resumes from its checkpoint (a kill between the final writes included). A lock
file (``.lock``) keeps two processes from training into one folder at once. Training is seeded and
deterministic on the CPU (same seed, same machine -> same numbers), uses mixed precision
on CUDA, and runs data-parallel under ``torchrun`` (DistributedDataParallel).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from semcov_lib.config import ConfigError, parse_overrides
from semcov_lib.data.datasets import available_datasets
from semcov_lib.data.views import ViewBank, view_bank
from semcov_lib.errors import SemcovError
from semcov_lib.experiment.batches import (
    DataCache,
    PreparedData,
    SplitTensors,
    cached_features,
    data_key,
    epoch_order,
    make_batch,
    prepare_data,
    split_images,
)
from semcov_lib.experiment.protocol import (
    COMPLETE_MARKER,
    TRAIN_PROFILES,
    TrainConfig,
    finished_metrics,
    run_dir_for,
    train_config,
    unfinished,
)
from semcov_lib.experiment.runs import (
    RunFolderError,
    config_hash,
    folder_lock,
    read_json,
    run_manifest,
    seed_everything,
    timer,
)
from semcov_lib.experiment.workers import RunProgress, init_worker, progress_enabled, visible_gpus, worker_cache
from semcov_lib.files import atomic_path, json_ready, write_csv_atomic, write_json_atomic
from semcov_lib.memory import keep_freed_memory
from semcov_lib.models.methods import METHODS, build_method
from semcov_lib.models.methods.base import Method, TrainContext
from semcov_lib.sci.cdi import Resampling, SCGReference
from semcov_lib.sci.metrics import accuracy, balanced_accuracy, evaluate_split, macro_f1, worst_class


# --------------------------------------------------------------------------- training
def _device(config: TrainConfig) -> torch.device:
    """The device to train on; ``device=cuda`` without a usable GPU is a configuration error."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train config: device={config.device} but no CUDA GPU is available; "
                          "use --set device=cpu (or device=auto)")
    return torch.device(config.device)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _local_batch_size(batch_size: int, world: int) -> int:
    """Per-process batch: the global ``batch_size`` split evenly over ``world`` processes."""
    if batch_size % world:
        raise ConfigError(f"batch_size={batch_size} must be divisible by the number of processes ({world}) "
                          "so each process takes an equal share of every batch")
    return batch_size // world


@torch.no_grad()
def predict_probs(model: Method, split: SplitTensors, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Class probabilities of a split (evaluation mode)."""
    model.eval()
    out = []
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        logits = model.predict_logits(make_batch(split, idx, device))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.info.classes)))


def _quick_scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The cheap validation metrics used for model selection each epoch."""
    pred = probs.argmax(1)
    worst = worst_class(y, pred, [str(c) for c in range(probs.shape[1])])["worst_class_accuracy"]  # min recall
    return {"accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred), "macro_f1": macro_f1(y, pred),
            "worst_class_accuracy": worst}


def _selection_score(rule: str, val: dict[str, float], epoch: int) -> float:
    """The number selection maximises at ``epoch`` (NaN counts as the worst score)."""
    score = float(epoch) if rule == "last" else float(val[rule])
    return score if np.isfinite(score) else -np.inf


def _rank_shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's share of an epoch order, as ``DistributedSampler`` (no shuffle) deals it.

    The epoch order stays a pure function of (seed, epoch); rank r takes positions r, r + W, ...
    (padded by repeating the first positions so every rank takes as many steps), so with a
    per-rank batch of B / W the W ranks together see each global batch of B of one process.
    """
    sampler = DistributedSampler(order, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
    return order[torch.as_tensor(list(sampler), dtype=torch.long)]


def _lr_factor(config: TrainConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay, per step."""
    t = epoch + step_in_epoch / max(steps_per_epoch, 1)
    if config.warmup_epochs and t < config.warmup_epochs:
        return float((t + 1.0 / max(steps_per_epoch, 1)) / config.warmup_epochs)
    span = max(config.epochs - config.warmup_epochs, 1e-9)
    return float(0.5 * (1.0 + np.cos(np.pi * min((t - config.warmup_epochs) / span, 1.0))))


class CheckpointError(SemcovError, RuntimeError):
    """A checkpoint is corrupt or belongs to another configuration."""

    hint = "re-run with --force to train from scratch, or choose another --out"


def load_checkpoint(path: Path, expected_hash: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check it is ours.

    Never falls back to unpickling arbitrary objects: a file that does not load with
    ``weights_only=True`` is reported as corrupt (torch's own message, which suggests
    otherwise, is deliberately not passed on).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means unusable
        raise CheckpointError(f"checkpoint {path} is truncated, corrupt or not a semcov checkpoint "
                              f"({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "config_hash" not in state:
        raise CheckpointError(f"checkpoint {path} is not a semcov checkpoint (missing 'model'/'config_hash')")
    if expected_hash is not None and state["config_hash"] != expected_hash:
        raise CheckpointError(
            f"checkpoint {path} was written by configuration {state['config_hash']}, not {expected_hash} "
            "(another configuration trained into this folder)"
        )
    return state


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(config: TrainConfig, run_dir: str | Path | None = None, progress: bool = True,
          force: bool = False, cache: DataCache | None = None) -> dict[str, Any]:
    """Train one run and return its metrics (reusing a finished run folder when it matches).

    Only a folder with a matching ``COMPLETE`` marker counts as finished; anything else resumes
    from its checkpoint. The folder is locked while training: a second process on the same
    folder gets a :class:`RunFolderError` at once instead of silently overwriting. ``cache``
    lends prepared data to several runs of one dataset (else it is prepared for this run).
    """
    keep_freed_memory()  # every batch allocates the same activations: reuse them, do not page-fault
    rank, _ = _distributed()
    run_dir = Path(run_dir) if run_dir else run_dir_for(config)
    _device(config)  # device=cuda without a GPU fails before any work
    identity = config.identity()
    chash = config_hash(identity)
    if not force and (done := finished_metrics(run_dir, chash)) is not None:
        return done
    if rank != 0:  # torchrun workers: rank 0 holds the lock and writes the folder
        return _train_locked(config, run_dir, progress, force, identity, chash, cache)
    _prepare_run_dir(run_dir)
    with folder_lock(run_dir, "training run"):
        if not force and (done := finished_metrics(run_dir, chash)) is not None:
            return done  # another process finished it while we waited for nothing
        if force:
            (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        return _train_locked(config, run_dir, progress, force, identity, chash, cache)


def _prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder; a path that is a file or not writable is a one-line error."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file, not a folder", hint="choose a folder for --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunFolderError(f"run folder {run_dir} is not writable", hint="choose another --out")


def _train_locked(config: TrainConfig, run_dir: Path, progress: bool, force: bool, identity: dict[str, Any],
                  chash: str, cache: DataCache | None) -> dict[str, Any]:
    """The training proper (the caller holds the folder lock)."""
    # ----------------------------------------------------------------- data, device, model, optimiser
    rank, world = _distributed()
    metrics_path = run_dir / "metrics.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = progress and rank == 0 and os.environ.get("TQDM_DISABLE", "") not in ("1", "true", "True")

    timings: dict[str, float] = {}
    with timer(timings, "data"):
        data = cache.get(config, progress) if cache is not None else prepare_data(config, progress=progress)
    device = _device(config)
    if world > 1:
        _init_distributed(device)
    seed_everything(config.seed)
    model = build_method(config.method, data.info, config.resolved_hp()).to(device)
    views = method_views(model, data, config, progress)  # None unless the method shows rows as views
    select_from = model.selection_start_epoch(config.epochs)  # first epoch of the final phase
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, best_score, best_epoch, best_state, log = 0, -np.inf, -1, None, []

    # ----------------------------------------------------------------- resume from the checkpoint
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.is_file() and not force:
        state = load_checkpoint(ckpt_path, chash)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        best_state, log = state["best_state"], list(state["log"])
        timings.update(state.get("timings", {}))

    # ----------------------------------------------------------------- epochs: train, validate, checkpoint
    forward = model
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    use_amp = config.amp and device.type == "cuda"
    train_split, val_split = data.splits["train"], data.splits["val"]
    steps_per_epoch = int(np.ceil(len(train_split) / config.batch_size))
    local_batch = _local_batch_size(config.batch_size, world)
    step = start_epoch * steps_per_epoch
    stop_after = int(os.environ.get("SEMCOV_STOP_AFTER_EPOCH", -1))  # simulates a kill (tests)

    bar = tqdm(range(start_epoch, config.epochs), desc=f"{config.method} s{config.seed}", disable=not progress,
               leave=False)
    for epoch in bar:
        ctx = TrainContext(epoch=epoch, n_epochs=config.epochs, step=step, device=device)
        model.on_epoch_start(ctx)
        mode = model.sampling(ctx)
        draw = model.sample_weights(train_split) if mode == "weighted" else None
        order = epoch_order(len(train_split), train_split.y, mode, config.seed, epoch, draw)
        if world > 1:
            order = _rank_shard(order, rank, world)
        aug_gen = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        model.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, len(order), local_batch)):
            idx = order[start:start + local_batch]
            batch = make_batch(train_split, idx, device, augment=config.augment and not config.feature_cache,
                               generator=aug_gen)
            if views is not None:
                views.apply(batch, idx, aug_gen)
            for group in optimiser.param_groups:
                group["lr"] = config.lr * _lr_factor(config, epoch, i, steps_per_epoch)
            ctx.step = step
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = forward(batch)
                loss, parts = model.loss(batch, out, ctx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{config.method}: non-finite loss {float(loss)} at epoch {epoch}, step {step}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            model.after_step(batch, out, ctx)
            step += 1
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            if config.max_steps and step >= config.max_steps:
                break
        model.on_epoch_end(ctx)
        train_time = time.perf_counter() - t0
        timings["train"] = timings.get("train", 0.0) + train_time
        n_batches = i + 1
        row = {"epoch": epoch, **{f"train_{k}": v / n_batches for k, v in sums.items()}, "epoch_time_s": train_time,
               "lr": optimiser.param_groups[0]["lr"]}
        if rank == 0:
            val = _quick_scores(val_split.y.numpy(), predict_probs(model, val_split, device))
            row.update({f"val_{k}": v for k, v in val.items()})
            score = _selection_score(config.selection_metric, val, epoch)
            if epoch >= select_from and score > best_score:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            log.append(row)
            _save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimiser.state_dict(), "epoch": epoch,
                "best_state": best_state, "best_score": float(best_score), "best_epoch": best_epoch,
                "log": json_ready(log), "torch_rng": torch.get_rng_state(), "config_hash": chash,
                "config": json_ready(identity), "timings": timings,
            })
            bar.set_postfix(loss=f"{row.get('train_loss', float('nan')):.3f}", val_f1=f"{val['macro_f1']:.3f}")
        if epoch == stop_after:
            os._exit(17)  # simulated kill right after a checkpoint (resume tests)
        if config.max_steps and step >= config.max_steps:
            break

    # ----------------------------------------------------------------- select the best epoch, evaluate
    if world > 1:
        dist.barrier()
    if rank != 0:
        _finish_distributed(world)
        return {}
    if best_state is not None:
        model.load_state_dict(best_state)
    else:  # stopped (max_steps) before the final phase: keep the last epoch's weights
        best_epoch = int(log[-1]["epoch"]) if log else -1
        warnings.warn(f"{config.method}: no epoch from {select_from} on was trained; using the last epoch",
                      stacklevel=2)
    with timer(timings, "evaluate"):
        metrics = _evaluate_and_write(model, data, config, run_dir, device)
    metrics["best_epoch"] = best_epoch
    metrics["selection_metric"] = config.selection_metric
    metrics["selection_start_epoch"] = select_from
    metrics["sees_descriptors_at_test"] = bool(model.sees_descriptors_at_test)
    metrics["method"] = config.method
    metrics["seed"] = config.seed

    # ----------------------------------------------------------------- write the run folder (COMPLETE last)
    write_csv_atomic(run_dir / "log.csv", pd.DataFrame(log))
    write_json_atomic(run_dir / "config.json", identity)
    write_json_atomic(run_dir / "manifest.json", run_manifest(
        identity, config.seed, timings, config_hash=chash, device=str(device), world_size=world,
        dataset=data.table.name, n_train=len(train_split), dataset_counts=data.table.meta.get("counts", {}),
    ))
    write_json_atomic(metrics_path, metrics)
    _stop_point("metrics")  # simulated kill between the final writes (tests)
    with atomic_path(run_dir / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    write_json_atomic(run_dir / COMPLETE_MARKER, {"config_hash": chash})  # last: the run is finished
    ckpt_path.unlink(missing_ok=True)
    _finish_distributed(world)
    return read_json(metrics_path)


def method_views(model: Method, data: PreparedData, config: TrainConfig, progress: bool = False) -> ViewBank | None:
    """The :class:`ViewBank` of the training rows ``model`` shows as dihedral views, or None.
    With cached features the views' features come from the feature cache (extracted once)."""
    request = model.view_rows(data.splits["train"])
    if request is None:
        return None
    n_rows = len(data.splits["train"])
    if not config.feature_cache:
        return view_bank(request.rows, n_rows, request.n, None)
    images = split_images(data, config, "train")[request.rows]
    return view_bank(request.rows, n_rows, request.n, images, lambda views: cached_features(views, config, progress))


def _extract_views(configs: list[TrainConfig], cache: DataCache, progress: bool) -> None:
    """Fill the feature cache with the views that ``configs`` ask for, once per (dataset, rows, n),
    here with every core (a pool worker would extract on one)."""
    done = set()
    for c in configs:
        data = cache.get(c)
        model = build_method(c.method, data.info, c.resolved_hp())
        request = model.view_rows(data.splits["train"])
        key = None if request is None else (data.key, request.n, request.rows.numpy().tobytes())
        if key is not None and key not in done:
            method_views(model, data, c, progress)
            done.add(key)


def _stop_point(name: str) -> None:
    """Exit at once (code 17) when ``SEMCOV_STOP_AT`` names this point: simulates a kill in tests."""
    if os.environ.get("SEMCOV_STOP_AT") == name:
        os._exit(17)


def _evaluate_and_write(model: Method, data: PreparedData, config: TrainConfig, run_dir: Path,
                        device: torch.device) -> dict[str, Any]:
    """Predict every evaluation split; write its predictions, per-SCG table, the reference, metrics.

    Files: ``reference.json`` (the training reference that recomputes any CDI from predictions),
    and per split present among test, stress, val, val_stress: ``predictions_<split>.csv``
    (sample_id, label, pred, subgroup, prob_<class>, score_<descriptor>) and ``per_scg_<split>.csv``.
    Returns the test metrics with the other splits as sub-objects ``stress``, ``val``, ``val_stress``.
    """
    info, ref = data.info, data.eval_reference
    # The training reference (coverage, (class, subgroup) counts, class counts): the training split's,
    # or an oracle benchmark's `coverage_reference` split (the natural coverage it is judged against).
    reference = SCGReference(coverage=ref.coverage, group_counts=ref.group_counts, class_counts=ref.class_counts,
                             classes=info.classes, descriptors=info.descriptors, subgroups=info.subgroups,
                             min_weight=config.min_weight, min_train_n=getattr(config, "min_train_n", 10),
                             min_group_n=getattr(config, "min_group_n", 30))
    write_json_atomic(run_dir / "reference.json", reference.to_dict())
    resampling = Resampling(n_boot=config.n_boot, seed=config.seed)
    per_scg_columns = ["class", "descriptor", "subgroup", "coverage", "n_cs", "weight", "error", "stratum", "valid"]
    results = {}
    for name in ("test", "stress", "val", "val_stress"):
        split = data.splits.get(name)
        if split is None:
            continue
        probs = predict_probs(model, split, device)
        frame = pd.concat([
            pd.DataFrame({"sample_id": split.sample_ids, "label": split.y.numpy(), "pred": probs.argmax(1),
                          "subgroup": [info.subgroups[g] for g in split.subgroup.numpy()]}),
            pd.DataFrame(probs, columns=[f"prob_{c}" for c in info.classes]),
            pd.DataFrame(split.scores, columns=[f"score_{d}" for d in info.descriptors]),
        ], axis=1)
        write_csv_atomic(run_dir / f"predictions_{name}.csv", frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[name], cdi = evaluate_split(split.y.numpy(), probs, split.subgroup.numpy(), split.scores,
                                                reference, resampling, config.shot_scale)
        write_csv_atomic(run_dir / f"per_scg_{name}.csv", cdi.per_scg[per_scg_columns])
    metrics = dict(results["test"])
    metrics.update({name: results[name] for name in ("stress", "val", "val_stress") if name in results})
    return json_ready(metrics)


def _init_distributed(device: torch.device) -> None:
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def _finish_distributed(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- many runs
def _train_worker(args: tuple[TrainConfig, str | None]) -> dict[str, Any]:
    """One run in a pool worker (it prepares its data from the disk caches the parent filled, once
    per dataset in this worker)."""
    torch.set_num_threads(1)
    config, root = args
    return train(config, run_dir_for(config, root), progress=False, cache=worker_cache())


def train_many(configs: list[TrainConfig], jobs: int = 1, root: str | Path | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Train (or reuse) several runs; ``jobs > 1`` runs independent ones in parallel processes.

    Data (benchmark, image and feature caches) is prepared once per dataset in this process first
    (serial runs reuse it; worker processes only read the disk caches). Each worker process gets
    one GPU (round-robin over :func:`visible_gpus`) when there are GPUs. A line per finished run
    reports progress.
    """
    todo = unfinished(configs, root)
    cache = DataCache()
    for config in {data_key(c): c for c in todo}.values():
        cache.get(config, progress=progress_enabled(progress))
    report = RunProgress(len(todo), len(set(run_dir_for(c, root) for c in configs)) - len(todo), progress)
    if jobs <= 1 or len(todo) <= 1:
        for c in todo:
            train(c, run_dir_for(c, root), progress=False, cache=cache)
            report.finished(c, run_dir_for(c, root))
        return [train(c, run_dir_for(c, root), progress=False) for c in configs]
    _extract_views(todo, cache, progress_enabled(progress))
    ctx = mp.get_context("spawn")
    root_str = str(root) if root else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=init_worker,
                             initargs=(ctx.Value("i", 0), visible_gpus())) as pool:
        futures = {pool.submit(_train_worker, (c, root_str)): c for c in todo}
        for f in as_completed(futures):
            f.result()
            report.finished(futures[f], run_dir_for(futures[f], root))
    return [train(c, run_dir_for(c, root), progress=False) for c in configs]


# --------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--method", required=True, choices=sorted(METHODS), metavar="METHOD",
                        help=f"method to train: {', '.join(sorted(METHODS))}")
    parser.add_argument("--profile", default="default", choices=sorted(TRAIN_PROFILES),
                        help="training profile: smoke (tiny, seconds), default (cached frozen features, "
                             "laptop CPU), paper (end-to-end fine-tuning); default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="training seed, an integer >= 0 (default: 0)")
    parser.add_argument("--out", help="run folder (default: reports/runs/<method>/<hash>-s<seed>)")
    parser.add_argument("--data", help="dataset folder to train on instead of the profile's benchmark")
    parser.add_argument("--dataset", default="milk10k", choices=available_datasets(), metavar="LOADER",
                        help=f"loader for --data: {', '.join(available_datasets())} (default: milk10k)")
    parser.add_argument("--missing-images", choices=("error", "drop", "keep"),
                        help="images listed by the dataset but absent on disk: stop (error, the default), "
                             "drop their rows with a counted warning, or keep the rows")
    parser.add_argument("--config", help="YAML file of training keys and method hyper-parameters")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training key or method hyper-parameter (repeatable); "
                             "dataset_options.NAME=VALUE sets a loader option")
    parser.add_argument("--force", action="store_true", help="retrain even when a finished run exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args) -> int:
    overrides = parse_overrides(args.set)
    if args.data:
        overrides.update(data=str(Path(args.data).resolve()), dataset=args.dataset)
    if args.missing_images:
        overrides["dataset_options.missing_images"] = args.missing_images
    config = train_config(args.method, args.profile, args.seed, overrides, args.config)
    out = Path(args.out) if args.out else run_dir_for(config)
    metrics = train(config, out, progress=not args.no_progress, force=args.force)
    if metrics:
        keys = ("accuracy", "macro_f1", "auroc", "ece", "cdi", "cdi_ci_low", "cdi_ci_high")
        summary = ", ".join(f"{k}={metrics[k]:.3f}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}"
                            for k in keys)
        print(f"{config.method} seed {config.seed} -> {out}: {summary}")
        dropped = _manifest_counts(out).get("missing_images")
        if dropped:
            policy = config.dataset_options.get("missing_images", "error")
            print(f"{dropped} listed image(s) absent on disk: {'dropped' if policy == 'drop' else 'kept'} "
                  f"(missing_images={policy})")
    return 0


def _manifest_counts(run_dir: Path) -> dict[str, Any]:
    """The loader's counts (e.g. missing images) recorded in a run's manifest."""
    path = run_dir / "manifest.json"
    return (json.loads(path.read_text()).get("dataset_counts") or {}) if path.is_file() else {}
