"""The run protocol: what a training run is and where its folder lives.

:class:`TrainConfig` (built by :func:`train_config` from a profile of :data:`TRAIN_PROFILES`)
determines a run; :meth:`TrainConfig.identity` is what makes two runs the same run, and its
hash names the run folder (:func:`run_dir_for`). A run folder is finished once its ``COMPLETE``
marker names that hash (:func:`is_finished`, :func:`finished_metrics`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcov_lib.config import ConfigError, apply_overrides, coerce_values, load_yaml, require, to_dict
from semcov_lib.data.benchmark import benchmark_config
from semcov_lib.data.benchmark import config_hash as benchmark_hash
from semcov_lib.experiment.runs import RunFolderError, config_hash, read_json
from semcov_lib.files import write_json_atomic
from semcov_lib.models.methods import method_defaults
from semcov_lib.paths import RUNS_DIR
from semcov_lib.profiles import PROFILES

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


#: Each profile's training protocol (the one profile table is :data:`semcov_lib.profiles.PROFILES`).
TRAIN_PROFILES: dict[str, dict[str, Any]] = {name: dict(p.train) for name, p in PROFILES.items()}


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


# --------------------------------------------------------------------------- finished runs
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


def unfinished(configs: list[TrainConfig], root: str | Path | None = None) -> list[TrainConfig]:
    """The configurations without a finished run folder, one per folder, in order."""
    todo: dict[Path, TrainConfig] = {}
    for c in configs:
        folder = run_dir_for(c, root)
        if not is_finished(folder):
            todo.setdefault(folder, c)
    return list(todo.values())


def load_run(config: TrainConfig, root: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a finished run; a clear error when it has not been trained."""
    path = run_dir_for(config, root) / "metrics.json"
    if not is_finished(path.parent):
        raise FileNotFoundError(f"no finished run for {config.method} seed {config.seed} at {path.parent}")
    return json.loads(path.read_text())
