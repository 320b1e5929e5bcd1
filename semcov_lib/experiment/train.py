"""The trainer every method uses, its run folders, and the ``train`` command.

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

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from semcov_lib.config import (
    ConfigError,
    apply_overrides,
    coerce_values,
    load_yaml,
    parse_overrides,
    require,
    to_dict,
)
from semcov_lib.errors import SemcovError
from semcov_lib.models.methods import build_method, method_defaults
from semcov_lib.models.methods.base import DataInfo, Method, TrainContext
from semcov_lib.paths import RUNS_DIR, cache_dir
from semcov_lib.experiment.runs import (
    RunFolderError,
    config_hash,
    folder_lock,
    read_json,
    run_manifest,
    seed_everything,
    timer,
)
from semcov_lib.data.table import SCITable
from semcov_lib.files import atomic_path, json_ready, write_csv_atomic, write_json_atomic, write_npy_atomic


# --------------------------------------------------------------------------- configuration
#: Backbone settings every method accepts (see ``backbones.build_backbone``).
BACKBONE_DEFAULTS: dict[str, Any] = {
    "adapter_channels": 256, "cnn_widths": [32, 64, 128, 128], "lite0_input_size": None, "pretrained": True,
}

#: Bumped when what a run computes changes for an unchanged configuration (so old folders are not reused):
#: 2 = phase-aware selection, the evaluation protocol's files and metrics, shipped text embeddings.
RUN_FORMAT = 2

#: Validation metrics a run may select its best epoch by (``last``: the final epoch).
SELECTION_METRICS = ("macro_f1", "worst_class_accuracy", "balanced_accuracy", "accuracy", "last")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (method hyper-parameters live in ``hp``)."""

    method: str = "erm"
    profile: str = "smoke"  # benchmark profile when ``data`` is empty
    seed: int = 0
    data: str = ""  # a dataset folder; empty = the profile's embedded benchmark
    dataset: str = "milk10k"  # loader used for ``data``
    dataset_options: dict = field(default_factory=dict)
    benchmark_seed: int = 0
    benchmark_overrides: dict = field(default_factory=dict)
    image_size: int = 32  # images are fed at this size (resized from the dataset)
    feature_cache: bool = False  # train heads on frozen pretrained features computed once
    feature_backbone: str = "lite0"
    feature_input_size: int = 96
    backbone: str = "cnn"  # backbone for end-to-end training (ignored with feature_cache)
    backbone_norm: str = "batch"  # batch | group | none (group/none make DDP match one process exactly)
    epochs: int = 2
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 0  # linear learning-rate warm-up before the cosine decay
    augment: bool = True  # random flips for end-to-end image training
    selection_metric: str = "macro_f1"  # model selection rule: macro_f1 | worst_class_accuracy | last
    n_boot: int = 1000  # bootstrap resamples for the CDI CI
    min_weight: float = 5.0  # CDI validity threshold m (also the smallest group for worst-group accuracy)
    shot_scale: float = 1.0  # head/medium/tail thresholds = (100, 20) x shot_scale training images
    max_steps: int = 0  # stop after this many optimisation steps (0 = no limit; for tests)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision (CUDA only)
    hp: dict = field(default_factory=dict)  # method hyper-parameter overrides

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "TrainConfig":
        """Range and choice checks on top of the types (``config.coerce_value``), naming the key."""
        src = "train config"
        for key in ("epochs", "batch_size", "image_size", "feature_input_size"):
            require(getattr(self, key) >= 1, src, key, getattr(self, key), "an integer >= 1")
        for key in ("seed", "benchmark_seed", "warmup_epochs", "max_steps", "n_boot"):
            require(getattr(self, key) >= 0, src, key, getattr(self, key), "an integer >= 0")
        for key in ("lr", "shot_scale"):
            require(getattr(self, key) > 0, src, key, getattr(self, key), "a number > 0")
        for key in ("weight_decay", "min_weight"):
            require(getattr(self, key) >= 0, src, key, getattr(self, key), "a number >= 0")
        require(self.selection_metric in SELECTION_METRICS, src, "selection_metric", self.selection_metric,
                f"one of {list(SELECTION_METRICS)}")
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), src, "device",
                self.device, "auto, cpu or cuda")
        require(self.backbone_norm in ("batch", "group", "none"), src, "backbone_norm", self.backbone_norm,
                "batch, group or none")
        return self

    def resolved_hp(self) -> dict[str, Any]:
        """The method's DEFAULTS, the profile's backbone choice, then explicit overrides."""
        hp = {**BACKBONE_DEFAULTS, **method_defaults(self.method)}
        hp["backbone"] = "cached" if self.feature_cache else self.backbone
        hp["norm"] = self.backbone_norm
        unknown = sorted(set(self.hp) - set(hp))
        if unknown:
            raise ConfigError(
                f"unknown hyper-parameter(s) {unknown} for method {self.method!r}; "
                f"valid: {sorted(hp)} or training keys {sorted(f.name for f in dataclasses.fields(TrainConfig))}"
            )
        hp.update(self.hp)
        return hp

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run (everything but bookkeeping switches)."""
        data = to_dict(self)
        data["hp"] = self.resolved_hp()
        data["dataset_fingerprint"] = dataset_fingerprint(self)
        data["run_format"] = RUN_FORMAT  # selection, evaluation or text-embedding changes: never reuse older runs
        for key in ("device", "amp"):
            data.pop(key)
        return data


TRAIN_PROFILES: dict[str, dict[str, Any]] = {
    # Proves every method runs: tiny images, the compact CNN trained end to end.
    # shot_scale puts the thresholds at about 30% and 6% of the largest training class, so the
    # benchmark's 6 classes split into head / medium / tail as on ImageNet-LT-style data.
    "smoke": dict(image_size=32, backbone="cnn", feature_cache=False, epochs=2, batch_size=64, lr=2e-3, n_boot=200,
                  shot_scale=0.35),
    # Laptop CPU: heads trained on frozen ImageNet EfficientNet-Lite0 features cached once.
    "default": dict(
        image_size=64, feature_cache=True, feature_backbone="lite0", feature_input_size=96,
        epochs=12, batch_size=128, lr=1e-3, warmup_epochs=1, n_boot=1000, shot_scale=7.0,
    ),
    # As the paper: EfficientNet-Lite0 fine-tuned end to end on larger images (GPU or a long CPU run).
    "paper": dict(
        image_size=128, backbone="lite0", feature_cache=False, epochs=30, batch_size=64, lr=3e-4,
        warmup_epochs=2, n_boot=1000, shot_scale=25.0,
    ),
}


def train_config(
    method: str = "erm",
    profile: str = "smoke",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
) -> TrainConfig:
    """Build a :class:`TrainConfig`: profile defaults < YAML file < ``overrides``.

    Keys that are not training fields are method hyper-parameters and go into ``hp``.
    """
    if profile not in TRAIN_PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(TRAIN_PROFILES)}")
    values: dict[str, Any] = dict(TRAIN_PROFILES[profile])
    if config_file:
        values.update(_nest_dotted(load_yaml(config_file)))
    for key, value in _nest_dotted(overrides or {}).items():  # dotted keys merge into their mapping
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) and key in _MAPPING_KEYS \
            else value
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    hp = dict(values.pop("hp", {}) or {})
    hp.update({k: v for k, v in values.items() if k not in train_keys})
    values = {k: v for k, v in values.items() if k in train_keys}
    require(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0, "train config", "seed",
            seed, "an integer >= 0")
    config = apply_overrides(TrainConfig(method=method, profile=profile, seed=seed), values, "train config")
    dataclasses.replace(config, hp=hp).resolved_hp()  # validates the method name and hyper-parameter keys now
    defaults = config.resolved_hp()  # (config.hp is still empty here)
    return dataclasses.replace(config, hp=coerce_values(hp, defaults, f"{method} hyper-parameter"))


_MAPPING_KEYS = ("dataset_options", "benchmark_overrides", "hp")


def _nest_dotted(values: dict[str, Any]) -> dict[str, Any]:
    """``{"dataset_options.missing_images": "drop"}`` -> ``{"dataset_options": {"missing_images": "drop"}}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        head, dot, rest = str(key).partition(".")
        if dot and head in _MAPPING_KEYS and rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[key] = value
    return out


def dataset_fingerprint(config: TrainConfig) -> str:
    """What identifies the data of a run, so a changed dataset never reuses an old run.

    The embedded benchmark: its resolved generator configuration, seed and generator version.
    A dataset folder: its path and every file below it (relative path, byte size, modification
    time in ns), so a replaced or touched image changes the fingerprint. Listing 270k files
    takes about a second; nothing is read.
    """
    if config.data:
        root = Path(config.data)
        digest = hashlib.sha256(f"semcov-data-v2 {root.resolve()}\n".encode())
        for rel, size, mtime in _walk_files(root):
            digest.update(f"{rel}\t{size}\t{mtime}\n".encode())
        return digest.hexdigest()[:16]
    from semcov_lib.data.benchmark import benchmark_config
    from semcov_lib.data.benchmark import config_hash as benchmark_hash

    cfg = benchmark_config(config.profile, overrides=config.benchmark_overrides or None)
    return benchmark_hash(cfg, config.benchmark_seed)


def _walk_files(root: Path) -> list[tuple[str, int, int]]:
    """(relative POSIX path, size, mtime_ns) of every file below ``root``, sorted; lock and
    temporary files (``.lock``, ``.*.tmp``) are skipped since they come and go."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if name == ".lock" or (name.startswith(".") and ".tmp" in name):
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:  # vanished while listing
                continue
            out.append((os.path.relpath(path, root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    return sorted(out)


def run_dir_for(config: TrainConfig, root: str | Path | None = None) -> Path:
    """The run folder of a configuration: ``runs/<method>/<config hash>-s<seed>``."""
    root = Path(root) if root else RUNS_DIR
    return root / config.method / f"{config_hash(config.identity())}-s{config.seed}"


# --------------------------------------------------------------------------- data
@dataclass
class SplitTensors:
    """One split, ready for batching: inputs, labels, descriptors, subgroups."""

    name: str
    x: torch.Tensor  # uint8 images (N,3,H,W) or float16 features (N,C,h,w)
    y: torch.Tensor
    desc: torch.Tensor  # NaN replaced by 0
    desc_mask: torch.Tensor
    subgroup: torch.Tensor
    scores: np.ndarray  # raw (N,K) scores with NaN, for evaluation
    sample_ids: list[str]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class EvalReference:
    """Training-coverage statistics that evaluation measures coverage against.

    By default those of the ``train`` split (the same arrays as ``DataInfo``). A dataset
    with a ``coverage_reference`` split (an oracle benchmark whose ``train`` split was
    rebalanced) measures coverage against that natural split instead; it is never trained on.
    """

    split: str  # "train" or "coverage_reference"
    coverage: np.ndarray  # (T, K, S) soft coverage, NaN where N_{c,s} = 0
    group_counts: np.ndarray  # (T, S) images per (class, subgroup)
    class_counts: np.ndarray  # (T,) images per class


@dataclass
class PreparedData:
    table: SCITable
    info: DataInfo  # what methods may know: statistics of the train split only
    splits: dict[str, SplitTensors]
    key: str
    eval_reference: EvalReference | None = None  # set by prepare_data

    def __post_init__(self) -> None:
        if self.eval_reference is None:
            info = self.info
            self.eval_reference = EvalReference("train", info.coverage, info.group_counts, info.class_counts)


#: Splits carried into :class:`PreparedData` when present (``train``, ``val``, ``test`` are required).
DATA_SPLITS = ("train", "val", "test", "stress", "val_stress")
#: Natural training split of an oracle benchmark: evaluation coverage only, never trained on.
COVERAGE_REFERENCE_SPLIT = "coverage_reference"


_DATA_CACHE: dict[str, PreparedData] = {}


def load_table(config: TrainConfig) -> SCITable:
    """The dataset of a configuration: a folder via a loader, or the embedded benchmark."""
    if config.data:
        from semcov_lib.data.datasets import load_dataset

        return load_dataset(config.dataset, config.data, **config.dataset_options)
    from semcov_lib.data.benchmark import load_benchmark

    return load_benchmark(config.profile, seed=config.benchmark_seed, overrides=config.benchmark_overrides or None)


def _data_key(config: TrainConfig) -> str:
    keys = ("profile", "data", "dataset", "dataset_options", "benchmark_seed", "benchmark_overrides",
            "image_size", "feature_cache", "feature_backbone", "feature_input_size")
    return config_hash({k: getattr(config, k) for k in keys}, 16)


def _cached_features(images: torch.Tensor, config: TrainConfig, progress: bool) -> torch.Tensor:
    """Frozen backbone features of all images, cached on disk by image content.

    Each image is keyed by a hash of its pixels, so benchmarks that share images (an oracle and its
    natural twin share every split but ``train``) extract the shared ones once. A feature depends
    on its image alone (eval mode; batch composition does not change it, tested), so reuse does
    not change any number.
    """
    from semcov_lib.models.backbones import extract_features

    store = cache_dir() / "features" / f"{config.feature_backbone}-{config.feature_input_size}"
    keys = _image_keys(images)
    path = store / f"{hashlib.sha1(keys.tobytes()).hexdigest()[:20]}.npy"
    feats = _read_features(path, len(images))
    if feats is not None:
        return torch.from_numpy(feats)
    known, feats = _features_from_store(store, keys)
    todo = np.flatnonzero(~known)
    if len(todo):
        fresh = extract_features(images[torch.from_numpy(todo)], name=config.feature_backbone,
                                 input_size=config.feature_input_size, progress=progress).numpy()
        feats = fresh if feats is None else feats
        feats[todo] = fresh
    store.mkdir(parents=True, exist_ok=True)
    write_npy_atomic(path, feats)
    write_npy_atomic(path.with_suffix(".keys.npy"), keys)  # written last: the pair is complete
    return torch.from_numpy(feats)


def _image_keys(images: torch.Tensor) -> np.ndarray:
    """(N,) 20-byte SHA-1 digests of each image's pixels."""
    flat = images.contiguous().numpy().reshape(len(images), -1)
    return np.array([hashlib.sha1(row.tobytes()).digest() for row in flat], dtype="S20")


def _read_features(path: Path, n: int) -> np.ndarray | None:
    """A cached feature array with ``n`` rows, or None (missing; truncated ones are rebuilt)."""
    if not path.is_file():
        return None
    try:
        feats = np.load(path)
        if len(feats) == n:
            return feats
        raise ValueError(f"{len(feats)} rows for {n} images")
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"feature cache {path} is unreadable ({exc}); rebuilding it", stacklevel=3)
        return None


def _features_from_store(store: Path, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of ``keys`` found in earlier complete caches of the same backbone: (found mask, features)."""
    known, feats = np.zeros(len(keys), dtype=bool), None
    for key_file in sorted(store.glob("*.keys.npy")) if store.is_dir() else []:
        try:
            other = np.load(key_file)
            _, ours, theirs = np.intersect1d(keys, other, return_indices=True)
            ours, theirs = ours[~known[ours]], theirs[~known[ours]]
            if not len(ours):
                continue
            stored = np.load(key_file.with_name(key_file.name.replace(".keys.npy", ".npy")), mmap_mode="r")
            if feats is None:
                feats = np.empty((len(keys), *stored.shape[1:]), dtype=stored.dtype)
            feats[ours], known[ours] = stored[theirs], True
        except (OSError, ValueError, EOFError):  # an unreadable cache is skipped, never trusted
            continue
    return known, feats


def _tensor_digest(tensor: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha1(tensor.contiguous().numpy().tobytes()).hexdigest()


def prepare_data(config: TrainConfig, progress: bool = False) -> PreparedData:
    """Load the table, images (or cached features) and the training-split statistics."""
    key = _data_key(config)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    from semcov_lib.data.images import load_images
    from semcov_lib.models.text_embed import descriptor_text

    table = load_table(config)
    for needed in ("train", "val", "test"):
        if not table.has_split(needed):
            raise ValueError(f"dataset {table.name!r} has no {needed!r} rows; training needs train, val and test")
    images = load_images(table, config.image_size)
    inputs = _cached_features(images, config, progress) if config.feature_cache else images
    levels = table.subgroup_levels()
    split_col = table.frame["split"].to_numpy()
    columns = (table.labels(), table.subgroup_codes(levels), table.scores())
    ids = table.frame["sample_id"].astype(str).to_numpy()
    splits = {}
    for name in DATA_SPLITS:
        rows = np.flatnonzero(split_col == name)
        if len(rows):
            splits[name] = _split_tensors(name, rows, inputs, columns, ids)
    train = splits["train"]
    stats = _coverage_statistics(train.y.numpy(), train.subgroup.numpy(), train.scores, table.n_classes, len(levels))
    empty = [table.classes[c] for c in np.flatnonzero(stats["class_counts"] == 0)]
    if empty:
        warnings.warn(f"{table.name}: classes with no training samples: {empty}", stacklevel=2)
    info = DataInfo(
        classes=list(table.classes),
        descriptors=list(table.descriptors),
        descriptor_text=descriptor_text(table.descriptors),
        subgroups=levels,
        input_shape=tuple(inputs.shape[1:]),
        features_cached=config.feature_cache,
        **stats,
    )
    data = PreparedData(table=table, info=info, splits=splits, key=key,
                        eval_reference=_eval_reference(split_col, columns, info))
    _DATA_CACHE[key] = data
    return data


def _split_tensors(name: str, rows: np.ndarray, inputs: torch.Tensor, columns: tuple, ids: np.ndarray) -> SplitTensors:
    """The rows of one split as tensors; ``columns`` = (labels, subgroup codes, raw scores)."""
    labels, codes, scores = columns
    s = scores[rows]
    return SplitTensors(
        name=name,
        x=inputs[torch.from_numpy(rows)],
        y=torch.from_numpy(labels[rows]),
        desc=torch.from_numpy(np.nan_to_num(s, nan=0.0)),
        desc_mask=torch.from_numpy(np.isfinite(s).astype(np.float32)),
        subgroup=torch.from_numpy(codes[rows]),
        scores=s,
        sample_ids=ids[rows].tolist(),
    )


def _coverage_statistics(y: np.ndarray, g: np.ndarray, scores: np.ndarray, n_classes: int,
                         n_subgroups: int) -> dict[str, np.ndarray]:
    """class_counts (T,), coverage (T,K,S), group_counts (T,S), prevalence (K,) of one split."""
    from semcov_lib.sci.coverage import coverage_array, group_counts, prevalence

    return {
        "class_counts": np.bincount(y, minlength=n_classes),
        "coverage": coverage_array(y, g, scores, n_classes, n_subgroups),
        "group_counts": group_counts(y, g, n_classes, n_subgroups),
        "prevalence": prevalence(scores),
    }


def _eval_reference(split_col: np.ndarray, columns: tuple, info: DataInfo) -> EvalReference:
    """Coverage that evaluation uses: the ``coverage_reference`` split when present, else train's."""
    rows = np.flatnonzero(split_col == COVERAGE_REFERENCE_SPLIT)
    if len(rows) == 0:
        return EvalReference("train", info.coverage, info.group_counts, info.class_counts)
    labels, codes, scores = columns
    stats = _coverage_statistics(labels[rows], codes[rows], scores[rows], info.n_classes, info.n_subgroups)
    return EvalReference(COVERAGE_REFERENCE_SPLIT, stats["coverage"], stats["group_counts"], stats["class_counts"])


def make_batch(split: SplitTensors, idx: torch.Tensor, device: torch.device, augment: bool = False,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Slice a batch; images become normalised floats, features floats; optional flips."""
    x = split.x[idx]
    if x.dtype == torch.uint8:
        x = x.float().div_(127.5).sub_(1.0)  # (u8/255 - 0.5) / 0.5
        if augment:
            flip_h = torch.rand(len(idx), generator=generator) < 0.5
            flip_v = torch.rand(len(idx), generator=generator) < 0.5
            x[flip_h] = x[flip_h].flip(-1)
            x[flip_v] = x[flip_v].flip(-2)
    else:
        x = x.float()
    return {
        "x": x.to(device),
        "y": split.y[idx].to(device),
        "desc": split.desc[idx].to(device),
        "desc_mask": split.desc_mask[idx].to(device),
        "subgroup": split.subgroup[idx].to(device),
        "index": idx.to(device),
    }


def epoch_order(n: int, labels: torch.Tensor, mode: str, seed: int, epoch: int) -> torch.Tensor:
    """Sample order of one epoch, a pure function of (seed, epoch) so resumes repeat it."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if mode == "instance":
        return torch.randperm(n, generator=gen)
    if mode == "class_balanced":
        counts = torch.bincount(labels)
        weights = (1.0 / counts.clamp(min=1).float())[labels]
        return torch.multinomial(weights, n, replacement=True, generator=gen)
    raise ValueError(f"unknown sampling mode {mode!r}; expected 'instance' or 'class_balanced'")


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
    from semcov_lib.sci.metrics import accuracy, balanced_accuracy, macro_f1, worst_class

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
    from torch.utils.data.distributed import DistributedSampler

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
          force: bool = False) -> dict[str, Any]:
    """Train one run and return its metrics (reusing a finished run folder when it matches).

    Only a folder with a matching ``COMPLETE`` marker counts as finished; anything else resumes
    from its checkpoint. The folder is locked while training: a second process on the same
    folder gets a :class:`RunFolderError` at once instead of silently overwriting.
    """
    rank, _ = _distributed()
    run_dir = Path(run_dir) if run_dir else run_dir_for(config)
    _device(config)  # device=cuda without a GPU fails before any work
    identity = config.identity()
    chash = config_hash(identity)
    if not force and (done := finished_metrics(run_dir, chash)) is not None:
        return done
    if rank != 0:  # torchrun workers: rank 0 holds the lock and writes the folder
        return _train_locked(config, run_dir, progress, force, identity, chash)
    _prepare_run_dir(run_dir)
    with folder_lock(run_dir, "training run"):
        if not force and (done := finished_metrics(run_dir, chash)) is not None:
            return done  # another process finished it while we waited for nothing
        if force:
            (run_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        return _train_locked(config, run_dir, progress, force, identity, chash)


#: Written last into a finished run folder: ``{"config_hash": ...}``.
COMPLETE_MARKER = "COMPLETE"


def is_finished(run_dir: Path) -> bool:
    """True once a run folder holds its completion marker (written after every other file)."""
    return (Path(run_dir) / COMPLETE_MARKER).is_file()


def finished_metrics(run_dir: Path, chash: str) -> dict[str, Any] | None:
    """Metrics of a finished run of configuration ``chash`` in ``run_dir``, else None.

    Finished = ``COMPLETE`` names ``chash``. A folder from before the marker existed counts as
    finished when metrics.json, model.pt and a matching manifest exist and no checkpoint is
    left (the old trainer deleted the checkpoint last); it gets its marker now.
    A finished run of another configuration raises :class:`RunFolderError`.
    """
    marker, metrics_path = run_dir / COMPLETE_MARKER, run_dir / "metrics.json"
    if marker.is_file():
        owner = read_json(marker).get("config_hash")
    elif metrics_path.is_file() and (run_dir / "model.pt").is_file() and not (run_dir / "checkpoint.pt").exists():
        owner = read_json(run_dir / "manifest.json").get("config_hash")
        if owner == chash:
            try:
                write_json_atomic(marker, {"config_hash": chash})
            except OSError:  # a read-only folder of results: reuse it all the same
                pass
    else:
        return None
    if owner != chash:
        raise RunFolderError(f"{run_dir} holds a finished run of another configuration ({owner}, not {chash})",
                             hint="choose another --out, or re-run with --force to replace it")
    return read_json(metrics_path)


def _prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder; a path that is a file or not writable is a one-line error."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file, not a folder", hint="choose a folder for --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunFolderError(f"run folder {run_dir} is not writable", hint="choose another --out")


def _train_locked(config: TrainConfig, run_dir: Path, progress: bool, force: bool, identity: dict[str, Any],
                  chash: str) -> dict[str, Any]:
    """The training proper (the caller holds the folder lock)."""
    rank, world = _distributed()
    metrics_path = run_dir / "metrics.json"
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = progress and rank == 0 and os.environ.get("TQDM_DISABLE", "") not in ("1", "true", "True")

    timings: dict[str, float] = {}
    with timer(timings, "data"):
        data = prepare_data(config, progress=progress)
    device = _device(config)
    if world > 1:
        _init_distributed(device)
    seed_everything(config.seed)
    model = build_method(config.method, data.info, config.resolved_hp()).to(device)
    select_from = model.selection_start_epoch(config.epochs)  # first epoch of the final phase
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, best_score, best_epoch, best_state, log = 0, -np.inf, -1, None, []

    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.is_file() and not force:
        state = load_checkpoint(ckpt_path, chash)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        best_state, log = state["best_state"], list(state["log"])
        timings.update(state.get("timings", {}))

    forward = model
    if world > 1:
        forward = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    use_amp = config.amp and device.type == "cuda"
    train_split, val_split = data.splits["train"], data.splits["val"]
    steps_per_epoch = int(np.ceil(len(train_split) / config.batch_size))
    local_batch = _local_batch_size(config.batch_size, world)
    step = start_epoch * steps_per_epoch
    stop_after = int(os.environ.get("SEMCOV_STOP_AFTER_EPOCH", -1))  # simulates a kill (tests)

    from tqdm.auto import tqdm

    bar = tqdm(range(start_epoch, config.epochs), desc=f"{config.method} s{config.seed}", disable=not progress,
               leave=False)
    for epoch in bar:
        ctx = TrainContext(epoch=epoch, n_epochs=config.epochs, step=step, device=device)
        model.on_epoch_start(ctx)
        order = epoch_order(len(train_split), train_split.y, model.sampling(ctx), config.seed, epoch)
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

    if world > 1:
        import torch.distributed as dist

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
    from semcov_lib.sci.cdi import Resampling, SCGReference
    from semcov_lib.sci.metrics import evaluate_split

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
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def _finish_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- many runs
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


def _init_worker(counter, gpus: list[str]) -> None:
    """Worker start-up: worker i (in start order) sees only GPU gpus[i mod len(gpus)]."""
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]


def _train_worker(args: tuple[TrainConfig, str | None]) -> dict[str, Any]:
    torch.set_num_threads(1)
    config, root = args
    return train(config, run_dir_for(config, root), progress=False)


def unfinished(configs: list[TrainConfig], root: str | Path | None = None) -> list[TrainConfig]:
    """The configurations without a finished run folder, one per folder, in order."""
    todo: dict[Path, TrainConfig] = {}
    for c in configs:
        folder = run_dir_for(c, root)
        if not is_finished(folder):
            todo.setdefault(folder, c)
    return list(todo.values())


def train_many(configs: list[TrainConfig], jobs: int = 1, root: str | Path | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Train (or reuse) several runs; ``jobs > 1`` runs independent ones in parallel processes.

    Data (benchmark, image and feature caches) is prepared once in this process first, so
    worker processes only read caches. Each worker process gets one GPU (round-robin over
    :func:`visible_gpus`) when there are GPUs. A line per finished run reports progress.
    """
    todo = unfinished(configs, root)
    for config in {_data_key(c): c for c in todo}.values():
        prepare_data(config, progress=progress_enabled(progress))
    report = RunProgress(len(todo), len(set(run_dir_for(c, root) for c in configs)) - len(todo), progress)
    if jobs <= 1 or len(todo) <= 1:
        for c in todo:
            train(c, run_dir_for(c, root), progress=False)
            report.finished(c, run_dir_for(c, root))
        return [train(c, run_dir_for(c, root), progress=False) for c in configs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    root_str = str(root) if root else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(ctx.Value("i", 0), visible_gpus())) as pool:
        futures = {pool.submit(_train_worker, (c, root_str)): c for c in todo}
        for f in as_completed(futures):
            f.result()
            report.finished(futures[f], run_dir_for(futures[f], root))
    return [train(c, run_dir_for(c, root), progress=False) for c in configs]


def load_run(config: TrainConfig, root: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a finished run; a clear error when it has not been trained."""
    path = run_dir_for(config, root) / "metrics.json"
    if not is_finished(path.parent):
        raise FileNotFoundError(f"no finished run for {config.method} seed {config.seed} at {path.parent}")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    from semcov_lib.data.datasets import available_datasets
    from semcov_lib.models.methods import METHODS

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
