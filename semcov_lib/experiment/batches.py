"""Data preparation: a configuration's dataset as tensors per split, and its batches.

:func:`prepare_data` loads the table, the images (or their frozen backbone features, cached on
disk by image content) and the training split's coverage statistics; it keeps nothing between
calls. A caller that prepares the same data for several runs owns a :class:`DataCache`.
:func:`make_batch` slices a batch and :func:`epoch_order` gives an epoch's sample order.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from semcov_lib.data.benchmark import load_benchmark
from semcov_lib.data.datasets import load_dataset
from semcov_lib.data.images import load_images
from semcov_lib.data.table import SCITable
from semcov_lib.experiment.protocol import TrainConfig
from semcov_lib.experiment.runs import config_hash
from semcov_lib.files import write_npy_atomic
from semcov_lib.memory import keep_freed_memory
from semcov_lib.models.backbones import extract_features
from semcov_lib.models.methods.base import DataInfo
from semcov_lib.models.text_embed import descriptor_text
from semcov_lib.paths import cache_dir
from semcov_lib.sci.coverage import Membership, coverage_array, group_counts, prevalence


# --------------------------------------------------------------------------- tensors per split
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
    """A configuration's dataset ready for training and evaluation (see :func:`prepare_data`)."""

    table: SCITable
    info: DataInfo  # what methods may know: statistics of the train split only
    splits: dict[str, SplitTensors]
    key: str
    eval_reference: EvalReference | None = None  # set by prepare_data
    images: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict, repr=False)  # split_images' memo

    def __post_init__(self) -> None:
        if self.eval_reference is None:
            info = self.info
            self.eval_reference = EvalReference("train", info.coverage, info.group_counts, info.class_counts)


#: Splits carried into :class:`PreparedData` when present (``train``, ``val``, ``test`` are required).
DATA_SPLITS = ("train", "val", "test", "stress", "val_stress")
#: Natural training split of an oracle benchmark: evaluation coverage only, never trained on.
COVERAGE_REFERENCE_SPLIT = "coverage_reference"


def load_table(config: TrainConfig) -> SCITable:
    """The dataset of a configuration: a folder via a loader, or the embedded benchmark."""
    if config.data:
        return load_dataset(config.dataset, config.data, **config.dataset_options)
    return load_benchmark(config.profile, seed=config.benchmark_seed, overrides=config.benchmark_overrides or None)


def data_key(config: TrainConfig) -> str:
    """What decides a configuration's prepared data (runs of other methods or seeds share it)."""
    keys = ("profile", "data", "dataset", "dataset_options", "benchmark_seed", "benchmark_overrides",
            "image_size", "feature_cache", "feature_backbone", "feature_input_size")
    return config_hash({k: getattr(config, k) for k in keys}, 16)


# --------------------------------------------------------------------------- feature cache
def cached_features(images: torch.Tensor, config: TrainConfig, progress: bool) -> torch.Tensor:
    """Frozen backbone features of all images, cached on disk by image content.

    Each image is keyed by a hash of its pixels, so benchmarks that share images (an oracle and its
    natural twin share every split but ``train``) extract the shared ones once. A feature depends
    on its image alone (eval mode; batch composition does not change it, tested), so reuse does
    not change any number.
    """
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


# --------------------------------------------------------------------------- preparation
class DataCache:
    """Prepared data by :func:`data_key`, owned by a caller that prepares the same data for several
    runs (``train_many`` prepares each dataset once, not once per run)."""

    def __init__(self) -> None:
        self._prepared: dict[str, PreparedData] = {}

    def get(self, config: TrainConfig, progress: bool = False) -> PreparedData:
        """``prepare_data(config)``, computed on the first request for its data key."""
        key = data_key(config)
        if key not in self._prepared:
            self._prepared[key] = prepare_data(config, progress)
        return self._prepared[key]


def prepare_data(config: TrainConfig, progress: bool = False) -> PreparedData:
    """Load the table, images (or cached features) and the training-split statistics (no reuse:
    see :class:`DataCache`)."""
    keep_freed_memory()  # generation and extraction allocate the same large arrays again and again
    table = load_table(config)
    for needed in ("train", "val", "test"):
        if not table.has_split(needed):
            raise ValueError(f"dataset {table.name!r} has no {needed!r} rows; training needs train, val and test")
    images = load_images(table, config.image_size)
    inputs = cached_features(images, config, progress) if config.feature_cache else images
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
    return PreparedData(table=table, info=info, splits=splits, key=data_key(config),
                        eval_reference=_eval_reference(split_col, columns, info))


def split_images(data: PreparedData, config: TrainConfig, name: str) -> torch.Tensor:
    """The uint8 images (N, 3, H, W) of split ``name``, in the split's row order (also when the
    prepared split holds cached features); kept on ``data``, so the runs sharing it load them once."""
    key = (name, int(config.image_size))
    if key not in data.images:
        rows = np.flatnonzero(data.table.frame["split"].to_numpy() == name)
        data.images[key] = load_images(data.table, config.image_size)[torch.from_numpy(rows)]
    return data.images[key]


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
    return {
        "class_counts": np.bincount(y, minlength=n_classes),
        "coverage": coverage_array(y, g, scores, n_classes, n_subgroups),
        "presence": coverage_array(y, g, scores, n_classes, n_subgroups, Membership("hard")),
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


# --------------------------------------------------------------------------- batches
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


def epoch_order(n: int, labels: torch.Tensor, mode: str, seed: int, epoch: int,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sample order of one epoch, a pure function of (seed, epoch) so resumes repeat it.

    ``"weighted"`` draws n samples with replacement, sample i with probability ∝ ``weights[i]``.
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if mode == "instance":
        return torch.randperm(n, generator=gen)
    if mode == "class_balanced":
        counts = torch.bincount(labels)
        weights = (1.0 / counts.clamp(min=1).float())[labels]
        return torch.multinomial(weights, n, replacement=True, generator=gen)
    if mode == "weighted":
        if weights is None or weights.shape != (n,) or not bool(torch.all(weights >= 0)) or not weights.sum() > 0:
            raise ValueError(f"weighted sampling needs {n} non-negative weights with a positive sum")
        return torch.multinomial(weights.double().cpu(), n, replacement=True, generator=gen)
    raise ValueError(f"unknown sampling mode {mode!r}; expected 'instance', 'class_balanced' or 'weighted'")


