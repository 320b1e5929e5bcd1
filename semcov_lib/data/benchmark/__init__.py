"""The embedded procedural dermatology benchmark, with Semantic Coverage Imbalance by construction.

Real dermatology data (MILK10k, ...) cannot be downloaded by tests, so the package generates a
dermoscopy-like benchmark whose coverage imbalance is known:

* a skin background whose tone is the subgroup (``skin_tone_class`` 0 = very dark .. 5 = very
  light) and a lesion whose shape, border, size, colour and internal pattern depend on the class;
* the 7 MILK10k MONET concepts drawn visibly (crust, hair, vessels, erythema, pigment network,
  gel bubbles, purple pen marks);
* long-tailed class priors, and for every (class, subgroup) a long-tailed (Zipf-like) profile of
  concept probabilities, so most (class, concept, subgroup) groups (SCGs) are rare;
* the SCI mechanism, in two separate knobs scaled by how rare the concept is for the class:
  ``concept_variant`` (default 1.0, *reducible*): a rare concept gives the lesion a variant look
  of its own (a pattern the class never shows, a colour and size change), the same for every
  lesion of that (class, concept), which a model learns once it has seen enough of them;
  ``concept_mimicry`` (default 0.1, *irreducible*): the lesion is pulled towards the class in
  which the concept is common, a confusion more data cannot remove (``strong_mimicry``: 0.6).
  Plain ERM therefore errs more on samples carrying rare concepts (negative coverage-error
  correlation);
* an oracle: ``train_coverage="balanced"`` draws the training split's concepts with flat
  coverage (every concept equally likely for every (class, subgroup); same size, same random
  draws, same appearance rules) and also writes the natural training rows as
  ``coverage_reference`` (evaluate the oracle against their coverage); all other splits are
  byte-identical to the natural benchmark, so ``CDI(ERM) - CDI(oracle)`` is the SCI more coverage
  would remove;
* evaluation splits: iid ``val`` and ``test``, the coverage-balanced ``stress`` split (every
  (class, concept, subgroup) group equally often, one concept per image; sized so one run's CDI
  bootstrap standard error is about 0.03) and its validation twin ``val_stress`` (for tuning);
* MONET-like scores: noisy, miscalibrated probabilities of each concept that also react to
  look-alike lesion colours (``descriptor_kind="hard"``: the same detector thresholded to 0/1
  annotations, CelebA-like); the true presence is stored in ``gt_<column>``.

Everything is drawn from ``numpy.random.Generator`` streams derived from ``(config, seed)`` and
rendered with vectorised NumPy in fixed-size batches, so the same seed gives byte-identical files
on the same machine, whatever the number of worker threads. The files follow the MILK10k layout,
so :func:`semcov_lib.data.datasets.milk10k.load_milk10k` reads them unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from semcov_lib.config import ConfigError, apply_overrides, load_yaml, parse_overrides, to_dict
from semcov_lib.data.datasets.milk10k import GROUNDTRUTH_FILE, INPUT_DIR, METADATA_FILE, MILK10K_CLASSES, MONET_COLUMNS

GENERATOR_VERSION = 3  # bump whenever the drawn data change for an unchanged config (invalidates caches)

# short internal names of the MONET concepts, same order as MONET_COLUMNS
CONCEPTS = ("ulcer", "hair", "vessels", "erythema", "pigment", "gel", "pen")
DIAGNOSTIC_CONCEPTS = ("ulcer", "vessels", "erythema", "pigment")
ARTEFACT_CONCEPTS = ("hair", "gel", "pen")

# order in which classes are taken (and their prior rank: first = most frequent)
CLASS_PRIORITY = ("NV", "BKL", "BCC", "MEL", "SCCKA", "VASC", "AKIEC", "DF", "INF", "BEN_OTH", "MAL_OTH")
SITES = ("foot", "genital", "hand", "head_neck_face", "lower_extremity", "trunk", "upper_extremity")
CONFIG_FILE = "benchmark_config.yaml"
SPLIT_ORDER = ("train", "val", "test", "stress", "val_stress")
# rows of the natural training split written beside a balanced-coverage (oracle) training split:
# the coverage the oracle is evaluated against, never trained on
REFERENCE_SPLIT = "coverage_reference"
# random stream of each split's pixels: the reference rows reuse the natural training stream, so
# their images are byte-identical to the natural benchmark's training images
_RENDER_STREAM = {"train": 0, "val": 1, "test": 2, "stress": 3, "val_stress": 4, REFERENCE_SPLIT: 0}
TRAIN_COVERAGES = ("natural", "balanced")
DESCRIPTOR_KINDS = ("soft", "hard")

# Concepts of each class from most to least frequent (the Zipf rank of the concept profile).
CONCEPT_RANKS: dict[str, tuple[str, ...]] = {
    "NV": ("pigment", "hair", "gel", "erythema", "pen", "vessels", "ulcer"),
    "BKL": ("hair", "ulcer", "gel", "pigment", "pen", "erythema", "vessels"),
    "BCC": ("vessels", "ulcer", "erythema", "gel", "hair", "pigment", "pen"),
    "MEL": ("pen", "pigment", "ulcer", "gel", "hair", "erythema", "vessels"),
    "SCCKA": ("ulcer", "erythema", "vessels", "hair", "gel", "pen", "pigment"),
    "VASC": ("erythema", "vessels", "gel", "hair", "pen", "ulcer", "pigment"),
    "AKIEC": ("erythema", "ulcer", "hair", "vessels", "gel", "pen", "pigment"),
    "DF": ("gel", "pigment", "erythema", "hair", "pen", "vessels", "ulcer"),
    "INF": ("erythema", "ulcer", "vessels", "hair", "pen", "gel", "pigment"),
    "BEN_OTH": ("gel", "hair", "erythema", "vessels", "pigment", "pen", "ulcer"),
    "MAL_OTH": ("ulcer", "pigment", "vessels", "erythema", "pen", "hair", "gel"),
}

# Lesion appearance of each class: one vector per class (fields below); interpolated and noised.
APPEARANCE_FIELDS = (
    "radius", "aspect", "irregularity", "softness", "col_r", "col_g", "col_b",
    "dark_centre", "globules", "ridges", "variegation", "streaks", "nests", "lacunae", "keratin",
)
CLASS_APPEARANCE: dict[str, tuple[float, ...]] = {
    #          rad   asp   irr   soft  r     g     b     dcen glob ridg varg strk nest lacu kera
    "NV":      (0.34, 1.10, 0.04, 0.10, 0.50, 0.32, 0.22, 0.6, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "BKL":     (0.44, 1.35, 0.08, 0.04, 0.64, 0.49, 0.34, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.2),
    "BCC":     (0.38, 1.15, 0.09, 0.12, 0.78, 0.56, 0.56, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0),
    "MEL":     (0.47, 1.25, 0.17, 0.10, 0.32, 0.20, 0.16, 0.2, 0.3, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0),
    "SCCKA":   (0.42, 1.10, 0.11, 0.16, 0.83, 0.64, 0.58, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.9),
    "VASC":    (0.30, 1.20, 0.05, 0.06, 0.62, 0.17, 0.27, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0),
    "AKIEC":   (0.40, 1.35, 0.12, 0.20, 0.80, 0.50, 0.46, 0.0, 0.0, 0.3, 0.2, 0.0, 0.0, 0.0, 0.3),
    "DF":      (0.30, 1.00, 0.03, 0.18, 0.58, 0.41, 0.33, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6),
    "INF":     (0.55, 1.40, 0.14, 0.28, 0.80, 0.46, 0.43, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.2, 0.0),
    "BEN_OTH": (0.36, 1.10, 0.06, 0.10, 0.70, 0.55, 0.46, 0.3, 0.4, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0),
    "MAL_OTH": (0.45, 1.20, 0.14, 0.12, 0.55, 0.30, 0.36, 0.0, 0.0, 0.0, 0.5, 0.2, 0.3, 0.2, 0.0),
}
# per-image noise: additive sd of the geometry and colour fields (plus a shared brightness sd),
# multiplicative log-sd of the pattern weights (a pattern absent from a class stays absent)
_APP_NOISE = np.array([0.05, 0.12, 0.035, 0.03, 0.035, 0.035, 0.035] + [0.0] * 8, dtype=np.float64)
_BRIGHTNESS_NOISE = 0.07
_PATTERN_LOG_NOISE = 0.35
_APP_LOW = np.array([0.14, 0.85, 0.0, 0.025, 0.03, 0.03, 0.03] + [0.0] * 8)
_APP_HIGH = np.array([0.72, 1.80, 0.30, 0.35, 0.97, 0.97, 0.97] + [1.0] * 8)

# skin tones 0 (very dark) .. 5 (very light), RGB in [0, 1]
SKIN_TONES = np.array([
    [0.31, 0.21, 0.16],
    [0.46, 0.32, 0.24],
    [0.61, 0.44, 0.34],
    [0.75, 0.57, 0.46],
    [0.86, 0.69, 0.58],
    [0.93, 0.79, 0.71],
])
# systematic change of each concept's log-odds from the darkest to the lightest tone
_TONE_EFFECT = np.array([0.0, 0.0, 0.2, 0.6, -0.3, 0.0, 0.0])
# MONET-like miscalibration of each concept: logit offset and gain factor
_CALIB_OFFSET = np.array([-0.3, 0.4, -0.2, 0.3, 0.5, -0.4, 0.0])
_CALIB_GAIN = np.array([0.9, 1.1, 0.8, 1.0, 1.2, 1.0, 0.9])

_AGE = {"NV": (40, 15), "BKL": (62, 12), "BCC": (66, 12), "MEL": (60, 15), "SCCKA": (70, 11), "VASC": (45, 20),
        "AKIEC": (70, 10), "DF": (42, 14), "INF": (50, 20), "BEN_OTH": (50, 18), "MAL_OTH": (65, 14)}
_SITE_BASE = np.array([0.04, 0.01, 0.03, 0.18, 0.20, 0.38, 0.16])
_SITE_FACE_HEAVY = {"BCC", "SCCKA", "AKIEC", "MAL_OTH"}


class BenchmarkError(ValueError):
    """The benchmark configuration or output folder is invalid."""


# ------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class BenchmarkConfig:
    """Every parameter of the generator (sizes are lesions per split; 2 images each with the clinical variant)."""

    image_size: int = 64
    n_train: int = 5000
    n_val: int = 700
    n_test: int = 2500  # large enough that ~100 SCGs reach the CDI weight m = 5
    n_stress: int = 4032  # 16 per (class, concept, subgroup) group with 6 classes and 6 tones
    n_val_stress: int = 2016  # coverage-balanced validation part, built as the stress split (8 per group)
    train_coverage: str = "natural"  # natural | balanced (oracle: every concept equally likely per (class, subgroup))
    n_classes: int = 6
    class_names: tuple = ()  # empty: the first n_classes of CLASS_PRIORITY; order = prior rank
    imbalance_ratio: float = 20.0  # prior of the most / least frequent class
    n_skin_tones: int = 6
    skin_tone_weights: tuple = (0.08, 0.12, 0.18, 0.22, 0.22, 0.18)
    # concept profiles: p(rank j) = coverage_max * (j + 1) ** -coverage_tail_exponent
    coverage_max: float = 0.8
    coverage_tail_exponent: float = 2.0
    coverage_floor: float = 0.008
    subgroup_jitter: float = 0.35  # sd of per-(class, concept, subgroup) log-odds noise
    tone_effect: float = 1.0  # scale of the systematic skin-tone change of concept rates
    # appearance
    class_separation: float = 0.6  # 0: all classes look alike; 1: the built-in signatures at full contrast
    appearance_noise: float = 1.2  # scale of per-image appearance noise
    concept_strength: float = 1.0  # visual strength of the rendered concepts
    # reducible SCI: a concept that is rare for a class gives the lesion a (class, concept)-specific
    # variant look (extra pattern, colour and size change), learnable from enough examples
    concept_variant: float = 1.0
    # irreducible SCI: how far a rare concept pulls the lesion towards the concept's home class
    concept_mimicry: float = 0.1
    intensity_min: float = 0.5  # concept intensity ~ U(intensity_min, 1)
    # MONET-like scores: sigmoid(score_bias + score_gain * intensity * present + confound + noise)
    score_bias: float = -4.5
    score_gain: float = 7.5
    score_noise: float = 0.8
    score_miscalibration: float = 1.0
    score_confound: float = 1.0  # how much look-alike colours raise pigment/erythema/vessel scores
    # soft: MONET-like probabilities; hard: 0/1 annotations (CelebA-like), the same noisy detector
    # thresholded halfway between an absent concept and a present one of the lowest intensity
    descriptor_kind: str = "soft"
    # stress split: one concept forced present per image, the others at this fraction of their rate
    stress_background: float = 0.0
    clinical_variant: bool = False  # also write a "clinical: close-up" image per lesion
    missing_rate: float = 0.004  # fraction of missing age / sex values
    jpeg_quality: int = 95

    def resolved_class_names(self) -> list[str]:
        """The class names in prior order (most frequent first)."""
        names = list(self.class_names) if self.class_names else list(CLASS_PRIORITY[: self.n_classes])
        return names

    def validate(self) -> "BenchmarkConfig":
        """Raise :class:`BenchmarkError` naming the offending key."""
        def bad(key: str, why: str) -> None:
            raise BenchmarkError(f"benchmark config: {key}={getattr(self, key)!r} {why}")

        if not 16 <= self.image_size <= 256:
            bad("image_size", "must be in 16..256")
        for key in ("n_train", "n_val", "n_test", "n_stress", "n_val_stress"):
            if getattr(self, key) < 0:
                bad(key, "must be >= 0")
        if self.n_train < 1:
            bad("n_train", "must be >= 1")
        if not 2 <= self.n_classes <= len(MILK10K_CLASSES):
            bad("n_classes", f"must be in 2..{len(MILK10K_CLASSES)}")
        if self.class_names:
            names = list(self.class_names)
            unknown = [n for n in names if n not in CLASS_APPEARANCE]
            if unknown:
                bad("class_names", f"holds {unknown}; valid names: {list(MILK10K_CLASSES)}")
            if len(set(names)) != len(names) or len(names) != self.n_classes:
                bad("class_names", f"must list {self.n_classes} distinct names (n_classes)")
        if self.imbalance_ratio < 1:
            bad("imbalance_ratio", "must be >= 1")
        if not 1 <= self.n_skin_tones <= 6:
            bad("n_skin_tones", "must be in 1..6")
        if self.skin_tone_weights and len(self.skin_tone_weights) != self.n_skin_tones:
            bad("skin_tone_weights", f"must have n_skin_tones={self.n_skin_tones} entries (or be [] for uniform)")
        if any(w < 0 for w in self.skin_tone_weights) or (self.skin_tone_weights and sum(self.skin_tone_weights) <= 0):
            bad("skin_tone_weights", "must be non-negative with a positive sum")
        if not 0 < self.coverage_max < 1:
            bad("coverage_max", "must be in (0, 1)")
        if not 0 < self.coverage_floor < self.coverage_max:
            bad("coverage_floor", "must be in (0, coverage_max)")
        if self.coverage_tail_exponent < 0:
            bad("coverage_tail_exponent", "must be >= 0")
        if not 0 <= self.intensity_min <= 1:
            bad("intensity_min", "must be in [0, 1]")
        if not 0 <= self.stress_background <= 1:
            bad("stress_background", "must be in [0, 1]")
        if not 0 <= self.missing_rate < 0.5:
            bad("missing_rate", "must be in [0, 0.5)")
        if not 1 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", "must be in 1..100")
        if self.train_coverage not in TRAIN_COVERAGES:
            bad("train_coverage", f"must be one of {list(TRAIN_COVERAGES)}")
        if self.descriptor_kind not in DESCRIPTOR_KINDS:
            bad("descriptor_kind", f"must be one of {list(DESCRIPTOR_KINDS)}")
        for key in ("class_separation", "appearance_noise", "concept_strength", "concept_mimicry", "concept_variant",
                    "score_noise",
                    "subgroup_jitter", "score_gain", "score_confound", "score_miscalibration", "tone_effect"):
            if getattr(self, key) < 0:
                bad(key, "must be >= 0")
        return self

    @property
    def n_lesions(self) -> int:
        """Lesions written, the natural training split's reference rows of a balanced benchmark included."""
        reference = self.n_train if self.train_coverage == "balanced" else 0
        return self.n_train + self.n_val + self.n_test + self.n_stress + self.n_val_stress + reference

    @property
    def n_images(self) -> int:
        return self.n_lesions * (2 if self.clinical_variant else 1)


BENCHMARK_PROFILES: dict[str, BenchmarkConfig] = {
    # Two skin tones and 6 stress images per SCG, so that even the smoke profile has SCGs that pass the
    # CDI's validity rules (>= 10 training images per (class, subgroup), evaluation weight >= 5).
    "smoke": BenchmarkConfig(image_size=32, n_train=900, n_val=120, n_test=300, n_stress=504, n_val_stress=504,
                             n_skin_tones=2, skin_tone_weights=(0.5, 0.5)),
    "default": BenchmarkConfig(),
    "paper": BenchmarkConfig(image_size=96, n_train=18000, n_val=2500, n_test=4000, n_stress=6048, n_val_stress=3024),
}


@dataclass(frozen=True)
class NamedConfiguration:
    """A benchmark configuration of the pipeline: overrides applied on top of a size profile."""

    purpose: str  # what the configuration tests
    overrides: dict


BENCHMARK_CONFIGS: dict[str, NamedConfiguration] = {
    "default": NamedConfiguration(
        "6 classes, soft MONET-like scores; SCI mostly reducible (rare SCGs carry their own learnable "
        "variant look, weak mimicry): what a coverage-aware method can fix.", {}),
    "many_classes": NamedConfiguration(
        "9 classes and a steeper concept-coverage tail (exponent 2.5): more tail classes and rarer SCGs "
        "for the same training size; stress sizes keep the same count per SCG.",
        {"n_classes": 9, "coverage_tail_exponent": 2.5}),
    "hard_descriptors": NamedConfiguration(
        "0/1 concept annotations (CelebA-like) instead of soft probabilities: coverage and CDI weights "
        "become counts, and a method cannot lean on score calibration.", {"descriptor_kind": "hard"}),
    "strong_mimicry": NamedConfiguration(
        "The harder case: a rare concept pulls the lesion strongly towards the concept's home class "
        "(mimicry 0.6, the first benchmark version's value), so rare SCGs are also confusable with "
        "another class. Measured (ERM, seed 0, stress): CDI 0.57 vs 0.50 on the default, but a "
        "balanced-coverage oracle still brings it to 0.06, because the variant look stays learnable; "
        "a nearly irreducible case needs concept_variant=0 and mimicry near 1.", {"concept_mimicry": 0.6}),
    "confusable": NamedConfiguration(
        "The irreducible case: a rare concept makes the lesion look like the concept's home class "
        "(mimicry 1.0) and carries no variant look of its own. Measured (ERM, seed 0, stress): CDI "
        "0.58, balanced-coverage oracle 0.17 (within-class rho -0.61 vs -0.38): a large part of its "
        "SCI is confusion more coverage does not remove.", {"concept_mimicry": 1.0, "concept_variant": 0.0}),
}


def configuration_overrides(name: str, profile: str = "default") -> dict[str, Any]:
    """The overrides of a named configuration for a profile; stress-like splits keep the profile's
    count per (class, concept, subgroup) group when the configuration changes the number of groups."""
    if name not in BENCHMARK_CONFIGS:
        raise ConfigError(f"unknown benchmark configuration {name!r}; choose one of {sorted(BENCHMARK_CONFIGS)}")
    if profile not in BENCHMARK_PROFILES:
        raise ConfigError(f"unknown benchmark profile {profile!r}; choose one of {sorted(BENCHMARK_PROFILES)}")
    overrides = dict(BENCHMARK_CONFIGS[name].overrides)
    base = BENCHMARK_PROFILES[profile]
    cfg = apply_overrides(base, overrides, source=f"benchmark configuration {name}")
    groups, base_groups = cfg.n_classes * cfg.n_skin_tones, base.n_classes * base.n_skin_tones
    if groups != base_groups:
        for key in ("n_stress", "n_val_stress"):
            overrides.setdefault(key, getattr(base, key) // base_groups * groups)
    return overrides


def benchmark_config(profile: str = "default", config_file: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> BenchmarkConfig:
    """The profile's config, updated by a YAML file and then by ``overrides`` (unknown keys raise)."""
    if profile not in BENCHMARK_PROFILES:
        raise ConfigError(f"unknown benchmark profile {profile!r}; choose one of {sorted(BENCHMARK_PROFILES)}")
    cfg = BENCHMARK_PROFILES[profile]
    if config_file is not None:
        data = load_yaml(config_file)
        data.pop("seed", None)  # a benchmark_config.yaml written by generate_benchmark carries its seed
        data.pop("generator_version", None)
        cfg = apply_overrides(cfg, data, source=str(config_file))
    if overrides:
        cfg = apply_overrides(cfg, dict(overrides), source="benchmark override")
    return cfg.validate()


def config_hash(cfg: BenchmarkConfig, seed: int) -> str:
    """Short stable hash of (config, seed, generator version)."""
    text = yaml.safe_dump({"config": to_dict(cfg), "seed": int(seed), "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------ design (no pixels)
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def class_priors(cfg: BenchmarkConfig) -> np.ndarray:
    """Long-tailed class priors: geometric from 1 to 1/imbalance_ratio."""
    c = cfg.n_classes
    w = cfg.imbalance_ratio ** (-np.arange(c) / max(c - 1, 1))
    return w / w.sum()


def base_concept_profile(cfg: BenchmarkConfig) -> np.ndarray:
    """(C, K) concept probabilities of each class before subgroup effects (Zipf over the class's ranks)."""
    names = cfg.resolved_class_names()
    out = np.zeros((len(names), len(CONCEPTS)))
    for c, name in enumerate(names):
        for rank, concept in enumerate(CONCEPT_RANKS[name]):
            p = cfg.coverage_max * (rank + 1.0) ** (-cfg.coverage_tail_exponent)
            out[c, CONCEPTS.index(concept)] = max(p, cfg.coverage_floor)
    return out


def concept_profile(cfg: BenchmarkConfig, seed: int) -> np.ndarray:
    """(C, K, S) probability that a concept is present, per class and skin tone (the designed SCI)."""
    base = base_concept_profile(cfg)
    s = cfg.n_skin_tones
    tone_pos = np.linspace(-1.0, 1.0, s) if s > 1 else np.zeros(1)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 101]))
    jitter = rng.normal(0.0, cfg.subgroup_jitter, size=(base.shape[0], base.shape[1], s))
    logits = _logit(base)[:, :, None] + cfg.tone_effect * _TONE_EFFECT[None, :, None] * tone_pos[None, None, :] + jitter
    return np.clip(_sigmoid(logits), 1e-4, 0.98)


def _mimicry_targets(cfg: BenchmarkConfig) -> tuple[np.ndarray, np.ndarray]:
    """Home class of each concept (K,) and the rarity (C, K) in [0, 1] of each concept for each class."""
    base = base_concept_profile(cfg)
    home = base.argmax(axis=0)
    p_home = base[home, np.arange(base.shape[1])]
    span = np.log(cfg.coverage_max / cfg.coverage_floor)
    rarity = np.clip(np.log(p_home[None, :] / base) / max(span, 1e-9), 0.0, 1.0)
    return home, rarity


def _variant_shifts(cfg: BenchmarkConfig, seed: int) -> np.ndarray:
    """(C, K, F) appearance change of each (class, concept) variant at full strength.

    The learnable structure of a rare SCG: a pattern the class never shows (one of its absent
    pattern fields, weight 0.7), a colour shift of 0.15 in a fixed direction and a size change
    of +-20%. It is the same for every lesion of the SCG (only its amount varies with the
    concept's intensity), so a model that saw enough of the SCG learns it; drawn from its own
    stream, so it does not move any other draw.
    """
    names = cfg.resolved_class_names()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 211]))
    shifts = np.zeros((len(names), len(CONCEPTS), len(APPEARANCE_FIELDS)))
    for c, name in enumerate(names):
        absent = [7 + j for j, w in enumerate(CLASS_APPEARANCE[name][7:]) if w == 0.0]
        for k in range(len(CONCEPTS)):
            colour = rng.normal(size=3)
            shifts[c, k, 4:7] = 0.15 * colour / np.linalg.norm(colour)
            shifts[c, k, 0] = CLASS_APPEARANCE[name][0] * rng.choice([-0.2, 0.2])
            shifts[c, k, absent[rng.integers(len(absent))]] = 0.7
    return shifts


def _class_appearance(cfg: BenchmarkConfig) -> np.ndarray:
    """(C, F) appearance vectors, pulled towards their mean by class_separation."""
    app = np.array([CLASS_APPEARANCE[n] for n in cfg.resolved_class_names()], dtype=np.float64)
    mean = app.mean(axis=0, keepdims=True)
    return mean + cfg.class_separation * (app - mean)


@dataclass
class _Design:
    frame: pd.DataFrame  # one row per image (metadata, scores, gt, split, label)
    label: np.ndarray  # (N,)
    tone: np.ndarray  # (N,) index into SKIN_TONES (skin_tone_class spread over the 6-tone palette)
    present: np.ndarray  # (N, K) bool
    intensity: np.ndarray  # (N, K) float, 0 where absent
    appearance: np.ndarray  # (N, F)
    clinical: np.ndarray  # (N,) bool
    split: np.ndarray  # (N,) split name of each image (``coverage_reference`` included)


def sample_benchmark_metadata(cfg: BenchmarkConfig, seed: int) -> pd.DataFrame:
    """The benchmark's metadata table (labels, splits, concepts, scores) without rendering any pixel.

    Columns as in the written metadata CSV plus ``label`` and ``class_name``; useful for fast
    statistics of the designed coverage imbalance.
    """
    return _design(cfg.validate(), seed).frame


def balanced_profile(profile: np.ndarray) -> np.ndarray:
    """(C, K, S) oracle profile: every concept equally likely within a (class, subgroup), at the
    natural profile's mean rate there (so an image carries as many concepts on average)."""
    return np.broadcast_to(profile.mean(axis=1, keepdims=True), profile.shape)


def _design(cfg: BenchmarkConfig, seed: int) -> _Design:
    """The benchmark's design; a balanced-coverage benchmark adds the natural training rows as
    ``coverage_reference`` (new ids after the others), everything else identical to the natural one."""
    natural = _draw(cfg, seed, balanced_train=False)
    if cfg.train_coverage == "natural":
        return natural
    oracle = _draw(cfg, seed, balanced_train=True)
    keep = natural.split == "train"
    ref = natural.frame[keep].copy()
    n_les, n_img = oracle.frame["lesion_id"].nunique(), len(oracle.frame)
    lesion_no = ref["lesion_id"].str[3:].astype(np.int64)
    ref["lesion_id"] = [f"IL_{n_les + i:07d}" for i in lesion_no]
    ref["isic_id"] = [f"ISIC_{n_img + i + 1:07d}" for i in range(len(ref))]
    ref["split"] = REFERENCE_SPLIT
    frame = pd.concat([oracle.frame, ref], ignore_index=True)
    parts = [(getattr(oracle, f), getattr(natural, f)[keep]) for f in
             ("label", "tone", "present", "intensity", "appearance", "clinical", "split")]
    label, tone, present, intensity, appearance, clinical, split = (np.concatenate(p) for p in parts)
    split[len(oracle.split):] = REFERENCE_SPLIT
    return _Design(frame, label, tone, present, intensity, appearance, clinical, split)


def _draw_lesions(cfg: BenchmarkConfig, profile: np.ndarray, balanced_train: bool, r_split, r_concept):
    """Class, tone, concept presence and split of every lesion, split by split (stress-like splits
    force one concept per lesion, every (class, concept, subgroup) equally often)."""
    n_c, n_k, n_s = profile.shape
    priors = class_priors(cfg)
    tone_w = np.asarray(cfg.skin_tone_weights or [1.0] * n_s, dtype=np.float64)
    tone_w = tone_w / tone_w.sum()
    labels, tones, present, splits = [], [], [], []
    for split in ("train", "val", "test"):
        n = getattr(cfg, f"n_{split}")
        y = r_split.choice(n_c, size=n, p=priors)
        s = r_split.choice(n_s, size=n, p=tone_w)
        rates = balanced_profile(profile) if (split == "train" and balanced_train) else profile
        pres = r_concept.random((n, n_k)) < rates[y, :, s]  # same draws whatever the rates
        labels.append(y)
        tones.append(s)
        present.append(pres)
        splits += [split] * n
    for split in ("stress", "val_stress"):
        n = getattr(cfg, f"n_{split}")
        if not n:
            continue
        groups = np.arange(n) % (n_c * n_k * n_s)
        groups = r_split.permutation(groups)
        y, rest = np.divmod(groups, n_k * n_s)
        k, s = np.divmod(rest, n_s)
        pres = r_concept.random((n, n_k)) < profile[y, :, s] * cfg.stress_background
        pres[np.arange(n), k] = True
        labels.append(y)
        tones.append(s)
        present.append(pres)
        splits += [split] * n
    return (np.concatenate(labels).astype(np.int64), np.concatenate(tones).astype(np.int64),
            np.concatenate(present), np.array(splits, dtype=object))


def _draw(cfg: BenchmarkConfig, seed: int, balanced_train: bool) -> _Design:
    """Draw every per-lesion and per-image quantity (all but pixel-level randomness).

    ``balanced_train`` changes only the rates the training split's concepts are compared with:
    the number and order of random draws is the same, so every other split is identical."""
    ss = np.random.SeedSequence([int(seed), 7])
    r_split, r_concept, r_app, r_meta, r_score, r_order = (np.random.default_rng(s) for s in ss.spawn(6))
    names = cfg.resolved_class_names()
    n_c, n_k, n_s = len(names), len(CONCEPTS), cfg.n_skin_tones
    profile = concept_profile(cfg, seed)

    # ---- lesions: class, tone, concepts
    label, tone, present, split = _draw_lesions(cfg, profile, balanced_train, r_split, r_concept)
    order = r_order.permutation(len(label))  # interleave splits, as lesion ids of real data are
    label, tone, present, split = label[order], tone[order], present[order], split[order]
    n_les = len(label)
    intensity = np.where(present, r_concept.uniform(cfg.intensity_min, 1.0, size=(n_les, n_k)), 0.0)

    # ---- appearance: class signature, pulled towards the home class of rare concepts (mimicry),
    # plus the (class, concept) variant of rare concepts, plus noise
    app_c = _class_appearance(cfg)
    home, rarity = _mimicry_targets(cfg)
    pull = intensity * rarity[label]  # (N, K): rarity of each present concept for the lesion's class
    amount = np.minimum(1.0, cfg.concept_mimicry * pull.sum(axis=1))
    target = (pull @ app_c[home]) / np.maximum(pull.sum(axis=1, keepdims=True), 1e-9)
    target = np.where(pull.sum(axis=1, keepdims=True) > 0, target, app_c[label])
    appearance = (1 - amount)[:, None] * app_c[label] + amount[:, None] * target
    # variant: appearance += sum_k min(1, concept_variant * rarity_ck * intensity_k) * shift_ck
    variant = np.minimum(1.0, cfg.concept_variant * pull)
    appearance += np.einsum("nk,nkf->nf", variant, _variant_shifts(cfg, seed)[label])
    noise = cfg.appearance_noise
    appearance = appearance + r_app.normal(size=appearance.shape) * _APP_NOISE * noise
    appearance[:, 4:7] += r_app.normal(size=(n_les, 1)) * _BRIGHTNESS_NOISE * noise
    appearance[:, 7:] *= np.exp(r_app.normal(size=(n_les, 8)) * _PATTERN_LOG_NOISE * noise)
    appearance = np.clip(appearance, _APP_LOW, _APP_HIGH)

    # ---- metadata per lesion
    age_mu = np.array([_AGE[n][0] for n in names])[label]
    age_sd = np.array([_AGE[n][1] for n in names])[label]
    age = np.clip(np.round(r_meta.normal(age_mu, age_sd) / 5.0) * 5.0, 5.0, 85.0)
    age[r_meta.random(n_les) < cfg.missing_rate] = np.nan
    sex = np.where(r_meta.random(n_les) < 0.5, "male", "female").astype(object)
    sex[r_meta.random(n_les) < cfg.missing_rate] = np.nan
    site_p = np.tile(_SITE_BASE, (n_c, 1))
    for c, name in enumerate(names):
        if name in _SITE_FACE_HEAVY:
            site_p[c, SITES.index("head_neck_face")] += 0.35
    site_p /= site_p.sum(axis=1, keepdims=True)
    cum = site_p[label].cumsum(axis=1)
    site = np.array(SITES, dtype=object)[(r_meta.random((n_les, 1)) > cum).sum(axis=1).clip(max=len(SITES) - 1)]

    # ---- images (1 or 2 per lesion) and MONET-like scores
    views = 2 if cfg.clinical_variant else 1
    rep = np.repeat(np.arange(n_les), views)
    clinical = np.tile([True, False], n_les) if views == 2 else np.zeros(n_les, dtype=bool)
    img_present = present[rep].copy()
    img_present[clinical, CONCEPTS.index("gel")] = False  # no immersion fluid on a clinical photo
    img_int = np.where(img_present, intensity[rep], 0.0)
    app_img = appearance[rep]
    col = app_img[:, 4:7]
    darkness = np.clip(1.0 - col.mean(axis=1) / 0.6, 0.0, 1.0)
    redness = np.clip((col[:, 0] - col[:, 1]) * 2.0 - 0.3, 0.0, 1.0)
    confound = np.zeros((len(rep), n_k))
    confound[:, CONCEPTS.index("pigment")] = 2.0 * darkness
    confound[:, CONCEPTS.index("erythema")] = 1.5 * redness
    confound[:, CONCEPTS.index("vessels")] = 1.0 * redness
    logits = (cfg.score_bias + cfg.score_miscalibration * _CALIB_OFFSET
              + cfg.score_gain * (1 + cfg.score_miscalibration * (_CALIB_GAIN - 1)) * img_int
              + cfg.score_confound * confound
              + cfg.score_noise * r_score.normal(size=img_int.shape))
    if cfg.descriptor_kind == "hard":  # annotator: present when the logit passes the halfway point
        scores = (logits >= cfg.score_bias + 0.5 * cfg.score_gain * cfg.intensity_min).astype(np.float64)
    else:
        scores = np.round(_sigmoid(logits), 6)

    n_img = len(rep)
    frame = pd.DataFrame({
        "lesion_id": [f"IL_{i + 1:07d}" for i in rep],
        "image_type": np.where(clinical, "clinical: close-up", "dermoscopic"),
        "isic_id": [f"ISIC_{i + 1:07d}" for i in range(n_img)],
        "attribution": "semcov procedural benchmark",
        "copyright_license": "CC0",
        "image_manipulation": "instrument only",
        "age_approx": age[rep],
        "sex": sex[rep],
        "skin_tone_class": tone[rep],
        "site": site[rep],
    })
    for j, column in enumerate(MONET_COLUMNS):
        frame[column] = scores[:, j]
    frame["split"] = split[rep]
    for j, column in enumerate(MONET_COLUMNS):
        frame[f"gt_{column}"] = img_present[:, j].astype(np.int64)
    frame["label"] = label[rep]
    frame["class_name"] = np.array(names, dtype=object)[label[rep]]
    palette = np.round(tone * (len(SKIN_TONES) - 1) / (n_s - 1)).astype(np.int64) if n_s > 1 else np.full(n_les, 3)
    return _Design(frame, label[rep], palette[rep], img_present, img_int, app_img, clinical, split[rep])


# ------------------------------------------------------------------------------ rendering
def _render_batch_size(size: int) -> int:
    """Images per render batch: fixed by the image size only, so results never depend on threads."""
    return int(max(16, min(512, 128 * (64 / size) ** 2)))


_F32 = np.float32


def _mix(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: img += alpha * (colour - img); img (B,3,H,W) channel-first (fast broadcasting),
    alpha (B,H,W), colour (B,3)."""
    delta = colour[:, :, None, None] - img
    delta *= alpha[:, None]
    img += delta


def _mix_rows(img: np.ndarray, rows: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """:func:`_mix` on the given rows of ``img`` (alpha and colour hold those rows only)."""
    if len(rows) == len(img):  # rows are sorted and unique: all of them
        _mix(img, alpha, colour)
        return
    sub = img[rows]
    _mix(sub, alpha, colour)
    img[rows] = sub


def _const(rgb: tuple[float, float, float], n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=_F32), (n, 3))


def _line_alpha(x: np.ndarray, p0: np.ndarray, angle: np.ndarray, curv: np.ndarray, half_width: np.ndarray,
                length: np.ndarray | None, px: float, one_sided: bool = False) -> np.ndarray:
    """Anti-aliased curved strokes, (B,H,W): the curve n = curv * t^2 through p0 along ``angle``."""
    ca, sa = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx = x[None, None, :] - p0[:, 0, None, None]
    dy = x[None, :, None] - p0[:, 1, None, None]
    t = dx * ca + dy * sa
    d = dy * ca - dx * sa
    d -= curv[:, None, None] * (t * t)
    np.abs(d, out=d)
    d *= (1.0 / half_width)[:, None, None]
    a = np.subtract(1.0, d, out=d)
    np.clip(a, 0.0, 1.0, out=a)
    if length is not None:
        lt = t if one_sided else np.abs(t)
        a *= np.clip((length[:, None, None] - lt) * (1.0 / px), 0.0, 1.0)
        if one_sided:
            a *= np.clip(t * (1.0 / px) + 1.0, 0.0, 1.0)
    return a


def _gauss1d(coord: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(B, H) Gaussian profiles exp(-((coord - centre) / width)^2)."""
    return np.exp(-np.square((coord[None, :] - centre[:, None]) / width[:, None]))


def _blob_sum(x: np.ndarray, cx: np.ndarray, cy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,H,W) sum of n separable Gaussian blobs as one batched matmul; cx, cy, w are (B, n), w = 0 disables a blob."""
    wj = np.maximum(w, 1e-6)[:, :, None]
    gx = np.exp(-np.square((x[None, None, :] - cx[:, :, None]) / wj)) * (w > 0)[:, :, None]  # (B, n, W)
    gy = np.exp(-np.square((x[None, None, :] - cy[:, :, None]) / wj))  # (B, n, H)
    return np.matmul(gy.transpose(0, 2, 1), gx)


def _smooth_noise(rng: np.random.Generator, b: int, size: int, octaves: list[tuple[int, np.ndarray | float]]) -> np.ndarray:
    """(B,H,W) sum of smooth noise fields, one per (cells, sd) octave (sd per image or scalar).

    Each octave is a coarse Gaussian grid (cells x cells) upsampled with a Gaussian kernel; all
    octaves together cost two small batched matmuls (block-diagonal coarse grid).
    """
    total = sum(cells for cells, _ in octaves)
    kernel = np.zeros((size, total), dtype=_F32)
    coarse = np.zeros((b, total, total), dtype=_F32)
    at = 0
    for cells, sd in octaves:
        grid = np.linspace(0, cells - 1, size)
        k = np.exp(-np.square(grid[:, None] - np.arange(cells)[None, :]) / 0.8)
        k /= k.sum(axis=1, keepdims=True)
        norm = 1.0 / float(np.square(k).sum(axis=1).mean())  # makes the field's sd about 1
        kernel[:, at:at + cells] = k
        block = rng.standard_normal((b, cells, cells), dtype=_F32)
        block *= np.asarray(sd, dtype=_F32).reshape(-1, 1, 1) * _F32(norm)
        coarse[:, at:at + cells, at:at + cells] = block
        at += cells
    return kernel @ coarse @ kernel.T


def _render_batch(app: np.ndarray, tone: np.ndarray, intensity: np.ndarray, clinical: np.ndarray,
                  size: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Render one batch of images: uint8 (B, size, size, 3) (computed channel-first).

    Layers, back to front: skin (tone, illumination, texture, dermoscope vignette), erythema halo,
    lesion body and the class patterns, then the concepts (pigment network, vessels, crust, hair,
    gel bubbles, pen). Every pattern and concept is computed only for the rows that carry it.
    """
    f32 = _F32
    b = app.shape[0]
    px = 2.0 / size
    x = np.linspace(-1 + px / 2, 1 - px / 2, size, dtype=f32)
    clin = clinical.astype(f32)
    app = app.astype(f32)
    view_scale = np.where(clinical, 0.62, 1.0).astype(f32)  # clinical close-ups: wider field of view
    pat = np.clip(app[:, 7:15] * np.where(clinical, 0.4, 1.0).astype(f32)[:, None], 0, 1)  # pattern weights
    level_of = np.minimum(1.0, strength * intensity).astype(f32)  # (B, K) concept visibility

    def rows_of(weights: np.ndarray, thr: float = 0.08) -> np.ndarray:
        return np.nonzero(weights > thr)[0]

    def take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return a if len(rows) == b else a[rows]  # batches are grouped by class: often all rows

    def get(rows: np.ndarray) -> np.ndarray:
        return img if len(rows) == b else img[rows]

    def put(rows: np.ndarray, sub: np.ndarray) -> None:
        if len(rows) != b:
            img[rows] = sub

    # ---- skin
    skin = (SKIN_TONES[tone] * (1 + rng.normal(0, 0.03, (b, 3)))).astype(f32)
    lightness = (SKIN_TONES[tone].mean(axis=1) / SKIN_TONES[-1].mean()).astype(f32)
    texture = _smooth_noise(rng, b, size, [(size // 8 + 2, 0.2)])  # also drives the crust colour
    gx, gy = (rng.normal(0, 0.07, (2, b)) * (1 + clin)).astype(f32)
    vig = np.clip((x[None, :] ** 2 + x[:, None] ** 2 - 1.0) / 0.8, 0, 1)[None] * (
        rng.uniform(0.4, 0.9, b).astype(f32) * (1 - clin))[:, None, None]
    shade = rng.random((b, size, size), dtype=f32)  # fine grain
    shade *= f32(0.06)
    shade += texture * f32(0.08)
    shade += (gx[:, None] * x[None] + f32(0.97))[:, None, :] + (gy[:, None] * x[None])[:, :, None]
    shade -= shade * vig
    img = shade[:, None] * skin[:, :, None, None]  # (B,3,H,W)

    # ---- lesion geometry: rotated ellipse (aspect ratio) with an irregular, noise-modulated border
    radius = app[:, 0] * view_scale
    cx, cy = (np.clip(rng.normal(0, 0.08, (2, b)), -0.2, 0.2) * view_scale).astype(f32)
    ang = rng.uniform(0, np.pi, b).astype(f32)
    ca, sa = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    dx = x[None, None, :] - cx[:, None, None]
    dy = x[None, :, None] - cy[:, None, None]
    u = dx * ca + dy * sa
    v = dy * ca - dx * sa
    v *= app[:, 1, None, None]
    rho = u * u
    rho += v * v
    np.sqrt(rho, out=rho)
    rho += f32(1e-4)
    # irregular border: the radius is modulated by smooth noise at two scales (lobes and notches)
    wobble = _smooth_noise(rng, b, size, [(6, app[:, 2] * 1.2), (11, app[:, 2] * 0.6)])
    wobble += _F32(1.0)
    np.maximum(wobble, _F32(0.3), out=wobble)
    wobble *= radius[:, None, None]
    rn = np.divide(rho, wobble, out=wobble)  # normalised radius: 1 on the lesion border
    soft = app[:, 3] * (1 + 0.5 * clin)
    alpha = np.subtract(1.0, rn)
    alpha *= (1.0 / soft)[:, None, None]
    alpha += f32(0.5)
    np.clip(alpha, 0, 1, out=alpha)

    # ---- erythema halo on the skin around the lesion
    k = CONCEPTS.index("erythema")
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        width = rng.uniform(0.4, 0.9, len(rows)).astype(f32)
        halo = np.clip(1 - (take(rn, rows) - 0.9) / width[:, None, None], 0, 1)
        halo *= np.minimum(0.6 * level_of[rows, k], 0.85)[:, None, None]
        red = np.array([0.90, 0.33, 0.36], dtype=f32) * (0.55 + 0.45 * lightness[rows])[:, None]
        _mix_rows(img, rows, halo, red)

    # ---- lesion body, then the class patterns inside it
    col = app[:, 4:7] * (0.6 + 0.4 * lightness)[:, None]
    _mix(img, alpha, col)
    rows = rows_of(pat[:, 0])  # darker centre
    if len(rows):
        dark = np.clip(1 - take(rn, rows) ** 2 / 0.35, 0, 1) * (0.45 * pat[rows, 0])[:, None, None] * take(alpha, rows)
        sub = get(rows)
        sub *= (1 - dark)[:, None]
        put(rows, sub)
    rows = rows_of(pat[:, 1])  # globules / dots on a jittered grid
    if len(rows):
        n = len(rows)
        f = rng.uniform(9, 15, (2, n)).astype(f32) / np.maximum(radius[rows], 0.15)[None] * 0.35
        ph = rng.uniform(0, 2 * np.pi, (2, n)).astype(f32)
        sx = np.sin(f[0, :, None] * x[None] + ph[0, :, None])
        sy = np.sin(f[1, :, None] * x[None] + ph[1, :, None])
        glob = np.clip((sx[:, None, :] * sy[:, :, None] - 0.45) * 4, 0, 1) * (0.5 * pat[rows, 1])[:, None, None]
        glob *= take(alpha, rows)
        sub = get(rows)
        sub *= (1 - glob)[:, None]
        put(rows, sub)
    rows = rows_of(pat[:, 2])  # cerebriform ridges: sin(a x + b y) = sin(a x) cos(b y) + cos(a x) sin(b y)
    if len(rows):
        n = len(rows)
        fr = rng.uniform(10, 18, n).astype(f32)
        ra = rng.uniform(0, np.pi, n).astype(f32)
        ax, ay = (fr * np.cos(ra))[:, None] * x[None], (fr * np.sin(ra))[:, None] * x[None]
        ridge = np.sin(ax)[:, None, :] * np.cos(ay)[:, :, None]
        ridge += np.cos(ax)[:, None, :] * np.sin(ay)[:, :, None]
        np.clip(ridge, 0, 1, out=ridge)
        ridge *= (0.35 * pat[rows, 2])[:, None, None] * take(alpha, rows)
        _mix_rows(img, rows, ridge, _const((0.93, 0.85, 0.72), n))
    rows = rows_of(pat[:, 3])  # variegation: low-frequency blue-grey and black zones
    if len(rows):
        n = len(rows)
        fv = rng.uniform(3, 6, (2, n)).astype(f32)
        pv = rng.uniform(0, 2 * np.pi, (2, n)).astype(f32)
        var = (np.cos(fv[0, :, None] * x[None] + pv[0, :, None])[:, None, :]
               * np.cos(fv[1, :, None] * x[None] + pv[1, :, None])[:, :, None])
        var *= 2.0
        w_var = pat[rows, 3][:, None, None] * take(alpha, rows)
        sub = get(rows)
        grey = np.array([0.42, 0.46, 0.58], dtype=f32) * col[rows].mean(1, keepdims=True) * 2.2
        _mix(sub, np.clip(var, 0, 1) * w_var * 0.8, grey)
        _mix(sub, np.clip(-var, 0, 1) * w_var * 0.7, _const((0.10, 0.07, 0.07), n))
        put(rows, sub)
    rows = rows_of(pat[:, 4])  # radial streaks at the periphery: cos(9 theta) = T_9(cos theta)
    if len(rows):
        c1 = take(u, rows) / take(rho, rows)
        c2 = c1 + c1
        t_a, t_b = np.ones_like(c1), c1
        for _ in range(8):
            t_a, t_b = t_b, c2 * t_b - t_a
        streak = np.clip(t_b, 0, 1)
        streak *= np.clip(1 - np.abs(take(rn, rows) - 0.95) / 0.25, 0, 1)
        streak *= (0.9 * pat[rows, 4])[:, None, None]
        _mix_rows(img, rows, streak, _const((0.16, 0.10, 0.08), len(rows)))
    for j, n_blobs, wr, colour in ((5, 4, (0.18, 0.30), (0.40, 0.44, 0.55)),  # blue-grey ovoid nests (BCC-like)
                                   (6, 6, (0.12, 0.20), (0.45, 0.06, 0.20))):  # red-purple lacunae (VASC-like)
        rows = rows_of(pat[:, j])
        if not len(rows):
            continue
        n = len(rows)
        rs = radius[rows, None]
        bx = cx[rows, None] + rng.uniform(-0.6, 0.6, (n, n_blobs)).astype(f32) * rs
        by = cy[rows, None] + rng.uniform(-0.6, 0.6, (n, n_blobs)).astype(f32) * rs
        bw = rng.uniform(*wr, (n, n_blobs)).astype(f32) * rs
        a = np.clip(_blob_sum(x, bx, by, bw) * 1.6 - 0.3, 0, 1)
        a *= pat[rows, j][:, None, None] * take(alpha, rows)
        _mix_rows(img, rows, a, np.array(colour, dtype=f32)[None] * (0.6 + 0.4 * lightness[rows])[:, None])
    rows = rows_of(pat[:, 7])  # white keratin centre (SCCKA/DF-like)
    if len(rows):
        ker = np.clip(1 - take(rn, rows) ** 2 / 0.3, 0, 1) * (0.85 * pat[rows, 7])[:, None, None]
        _mix_rows(img, rows, ker, _const((0.95, 0.92, 0.84), len(rows)))

    # ---- concepts drawn over the lesion
    def inside(rows: np.ndarray) -> np.ndarray:
        return np.clip((1.1 - take(rn, rows)) / 0.15, 0, 1)

    def strokes(rows: np.ndarray, lo: int, hi: int, draw) -> np.ndarray:
        """(n,H,W) max over lo..hi-1 random strokes per row; ``draw(pos, j)`` gives stroke j of rows[pos].

        Rows are visited by decreasing stroke count, so stroke j is drawn on a prefix only."""
        count = rng.integers(lo, hi, len(rows))
        order = np.argsort(-count, kind="stable")
        count = count[order]
        acc = np.zeros((len(rows), size, size), dtype=f32)
        for j in range(hi - 1):
            m = int((count > j).sum())
            if m == 0:
                break
            np.maximum(acc[:m], draw(order[:m], j), out=acc[:m])
        out = np.empty_like(acc)
        out[order] = acc
        return out

    k = CONCEPTS.index("pigment")  # dark brown network and dots, darkening the lesion
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        n = len(rows)
        fp = rng.uniform(14, 22, (2, n)).astype(f32)
        pp = rng.uniform(0, 2 * np.pi, (2, n)).astype(f32)
        lx = np.clip(1 - np.abs(np.sin(fp[0, :, None] * x[None] + pp[0, :, None])) / 0.35, 0, 1)
        ly = np.clip(1 - np.abs(np.sin(fp[1, :, None] * x[None] + pp[1, :, None])) / 0.35, 0, 1)
        region = inside(rows) * level_of[rows, k][:, None, None]
        net = np.maximum(lx[:, None, :], ly[:, :, None])
        net *= region * f32(0.75)
        sub = get(rows)
        sub *= (1 - 0.3 * region)[:, None]
        _mix(sub, net, _const((0.20, 0.11, 0.06), n))
        put(rows, sub)

    k = CONCEPTS.index("vessels")  # thin red branching lines inside the lesion
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        n = len(rows)
        origin = np.stack([cx[rows], cy[rows]], 1) + rng.normal(0, 0.25, (n, 2)).astype(f32) * radius[rows, None]
        base_angle = rng.uniform(0, 2 * np.pi, n)

        def vessel(pos: np.ndarray, j: int) -> np.ndarray:
            m = len(pos)
            return _line_alpha(x, origin[pos], (base_angle[pos] + j * 2 * np.pi / 5 + rng.normal(0, 0.3, m)).astype(f32),
                               rng.normal(0, 4.0, m).astype(f32), np.full(m, 0.9 * px, f32),
                               (radius[rows[pos]] * rng.uniform(0.6, 1.1, m)).astype(f32), px, one_sided=True)

        acc = strokes(rows, 3, 6, vessel)
        acc *= inside(rows) * (0.95 * level_of[rows, k])[:, None, None]
        _mix_rows(img, rows, acc, _const((0.80, 0.08, 0.12), n))

    k = CONCEPTS.index("ulcer")  # crusted dark-red / yellow patches inside the lesion
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        n = len(rows)
        rs = radius[rows, None]
        nb = 3
        bx = cx[rows, None] + rng.uniform(-0.5, 0.5, (n, nb)).astype(f32) * rs
        by = cy[rows, None] + rng.uniform(-0.5, 0.5, (n, nb)).astype(f32) * rs
        keep = np.arange(nb)[None] < rng.integers(1, nb + 1, (n, 1))
        bw = rng.uniform(0.25, 0.5, (n, nb)).astype(f32) * rs * keep
        a = np.clip(_blob_sum(x, bx, by, bw) * 2.0 - 0.5, 0, 1)
        a *= (0.4 + 0.6 * inside(rows)) * (0.95 * level_of[rows, k])[:, None, None]
        yellow = np.clip(take(texture, rows) * 4.0 + 0.5, 0, 1)
        sub = get(rows)
        _mix(sub, a, _const((0.42, 0.09, 0.06), n))
        _mix(sub, a * yellow, _const((0.82, 0.65, 0.28), n))
        put(rows, sub)

    k = CONCEPTS.index("hair")  # thin dark curved strands across the image
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        n = len(rows)

        def hair(pos: np.ndarray, j: int) -> np.ndarray:
            m = len(pos)
            return _line_alpha(x, rng.uniform(-0.8, 0.8, (m, 2)).astype(f32), rng.uniform(0, np.pi, m).astype(f32),
                               rng.normal(0, 0.4, m).astype(f32), (rng.uniform(0.7, 1.2, m) * px).astype(f32), None, px)

        acc = strokes(rows, 2, 7, hair)
        acc *= (0.9 * level_of[rows, k])[:, None, None]
        _mix_rows(img, rows, acc, _const((0.07, 0.05, 0.04), n))

    k = CONCEPTS.index("gel")  # bright round bubbles with a specular highlight
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        n = len(rows)
        nb = 5
        bx = rng.uniform(-0.85, 0.85, (n, nb)).astype(f32)
        by = rng.uniform(-0.85, 0.85, (n, nb)).astype(f32)
        keep = np.arange(nb)[None] < rng.integers(2, nb + 1, (n, 1))
        br = rng.uniform(0.07, 0.2, (n, nb)).astype(f32) * keep
        outer = _blob_sum(x, bx, by, br)
        inner = _blob_sum(x, bx, by, br * 0.7)
        a = outer - inner
        a *= 3.2
        a += _blob_sum(x, bx - 0.35 * br, by - 0.35 * br, br * 0.22)
        a += 0.25 * inner
        np.clip(a, 0, 1, out=a)
        a *= (0.85 * level_of[rows, k])[:, None, None]
        _mix_rows(img, rows, a, _const((0.97, 0.98, 1.0), n))

    k = CONCEPTS.index("pen")  # purple pen strokes near the lesion border
    rows = rows_of(level_of[:, k], 0)
    if len(rows):
        n = len(rows)

        def pen(pos: np.ndarray, j: int) -> np.ndarray:
            m, r = len(pos), rows[pos]
            om = rng.uniform(0, 2 * np.pi, m)
            dist = radius[r] * rng.uniform(1.15, 1.5, m) + 0.05
            p0 = np.stack([cx[r] + dist * np.cos(om), cy[r] + dist * np.sin(om)], 1).astype(f32)
            return _line_alpha(x, p0, (om + np.pi / 2 + rng.normal(0, 0.3, m)).astype(f32),
                               rng.normal(0, 1.0, m).astype(f32), (rng.uniform(1.2, 2.0, m) * px).astype(f32),
                               rng.uniform(0.15, 0.4, m).astype(f32), px)

        acc = strokes(rows, 1, 3, pen)
        acc *= (0.9 * level_of[rows, k])[:, None, None]
        _mix_rows(img, rows, acc, _const((0.44, 0.17, 0.62), n))

    img *= f32(255)
    img += f32(0.5)
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------------ writing
def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _decode_jpeg(data: bytes, size: int) -> np.ndarray:
    """Decode our own baseline RGB JPEG with PIL's C decoder directly (skips the Python header parser;
    same pixels as ``Image.open``, which :func:`semcov_lib.data.images.load_images` uses: tested)."""
    from PIL import Image

    return np.asarray(Image.frombytes("RGB", (size, size), data, "jpeg", "RGB", ""))


def _render_plan(design: _Design, cfg: BenchmarkConfig) -> list[tuple[int, int, np.ndarray]]:
    """Render batches as (stream, batch number, rows): each split on its own, grouped by class (so a
    batch mostly shares its class's patterns), so a split's pixels never depend on another split's
    content (the oracle's training split changes nothing else)."""
    bs = _render_batch_size(cfg.image_size)
    plan = []
    for name in (*SPLIT_ORDER, REFERENCE_SPLIT):
        rows = np.flatnonzero(design.split == name)
        rows = rows[np.argsort(design.label[rows], kind="stable")]
        plan += [(_RENDER_STREAM[name], j, rows[at:at + bs]) for j, at in enumerate(range(0, len(rows), bs))]
    return plan


def _render_rows(design: _Design, cfg: BenchmarkConfig, seed: int, item: tuple[int, int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Render one batch of the plan: (row indices, uint8 images (B, H, W, 3))."""
    stream, batch, rows = item
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 23, stream, batch]))
    pixels = _render_batch(design.appearance[rows], design.tone[rows], design.intensity[rows],
                           design.clinical[rows], cfg.image_size, cfg.concept_strength, rng)
    return rows, pixels


def _process_batch(item: tuple[int, int, np.ndarray], design: _Design, cfg: BenchmarkConfig, seed: int, tmp: Path,
                   rel_paths: list[str], cache: np.ndarray) -> None:
    """Render, encode, write and decode (for the uint8 cache) one batch of images."""
    rows, pixels = _render_rows(design, cfg, seed, item)
    for i, row in enumerate(rows):
        data = _encode_jpeg(pixels[i], cfg.jpeg_quality)
        path = tmp / rel_paths[row]
        path.parent.mkdir(exist_ok=True)  # lesion folder (the clinical variant puts 2 images in it)
        with open(path, "wb") as fh:
            fh.write(data)
        cache[row] = _decode_jpeg(data, cfg.image_size).transpose(2, 0, 1)


def render_images(cfg: BenchmarkConfig, seed: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The rendered (pre-JPEG) uint8 images (N, H, W, 3) of metadata rows ``start:stop``, without
    writing anything; for previews, tests and quick experiments. Same pixels as the written
    benchmark before JPEG compression."""
    design = _design(cfg.validate(), seed)
    n = len(design.label)
    stop = n if stop is None else min(stop, n)
    wanted = np.arange(start, stop)
    out = np.empty((len(wanted), cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    slot = np.full(n, -1, dtype=np.int64)
    slot[wanted] = np.arange(len(wanted))
    for item in _render_plan(design, cfg):
        if (slot[item[2]] >= 0).any():
            rows, pixels = _render_rows(design, cfg, seed, item)
            keep = slot[rows] >= 0
            out[slot[rows[keep]]] = pixels[keep]
    return out


def _ground_truth_frame(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    lesions = frame.drop_duplicates("lesion_id").sort_values("lesion_id")
    header = list(MILK10K_CLASSES) if len(names) == len(MILK10K_CLASSES) else names
    onehot = np.zeros((len(lesions), len(header)))
    col = np.array([header.index(n) for n in names])[lesions["label"].to_numpy()]
    onehot[np.arange(len(lesions)), col] = 1.0
    gt = pd.DataFrame(onehot, columns=header)
    gt.insert(0, "lesion_id", lesions["lesion_id"].to_numpy())
    return gt


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def estimated_memory(cfg: BenchmarkConfig, workers: int) -> int:
    """Bytes a generation needs at its peak: the uint8 image cache, the design tables (about 2 kB a
    row with the pandas frame and the CSV text) and each worker's float32 render buffers (about 40
    full-batch planes)."""
    size = cfg.image_size
    per_worker = 40 * _render_batch_size(size) * 3 * size * size * 4
    return cfg.n_images * (3 * size * size + 2048) + max(1, workers) * per_worker + 300 * 2**20


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux, else free pages); None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: BenchmarkConfig, workers: int) -> None:
    """Refuse up front (one line, with the estimate) a generation that would not fit in memory."""
    need, have = estimated_memory(cfg, workers), available_memory()
    if have is not None and need > have:
        raise BenchmarkError(
            f"benchmark of {cfg.n_images} images of {cfg.image_size}x{cfg.image_size} px needs about "
            f"{need / 2**30:.1f} GiB of memory, {have / 2**30:.1f} GiB available; lower image_size or the "
            "split sizes (n_train, n_test, n_stress, ...), or use --workers 1")


# top-level entries a generation writes; everything else in an output folder belongs to the user
_OWN_ENTRIES = (METADATA_FILE, GROUNDTRUTH_FILE, INPUT_DIR, ".semcov", CONFIG_FILE)
_OWN_IMAGE = re.compile(r"IL_\d{7}/ISIC_\d{7}\.jpg")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """An existing ``out_dir`` must be empty or a previous benchmark whose image folder holds only
    the generator's files (the user's other files beside it are kept)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BenchmarkError(f"{out_dir} is a file, not a folder; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / CONFIG_FILE).is_file():
        raise BenchmarkError(f"{out_dir} exists, is not empty and is not a benchmark folder; refusing to overwrite it")
    if not overwrite:
        raise BenchmarkError(f"{out_dir} already holds a benchmark (overwrite=False)")
    images = out_dir / INPUT_DIR
    if images.is_dir():
        for path in images.rglob("*"):
            rel = path.relative_to(images).as_posix()
            if path.is_file() and not _OWN_IMAGE.fullmatch(rel):
                raise BenchmarkError(f"{out_dir} holds {path.relative_to(out_dir)}, not a generated file, inside "
                                     f"{INPUT_DIR}; move it out or choose another --out")


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the generated entries of ``tmp`` into ``out_dir``, replacing only the generator's own
    entries; the config file goes last, so an interrupted swap never looks like a finished benchmark."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    trash.mkdir()
    try:
        for name in (CONFIG_FILE, *_OWN_ENTRIES[:-1]):
            if (out_dir / name).exists():
                (out_dir / name).rename(trash / name)
        for name in _OWN_ENTRIES:
            if (tmp / name).exists():
                (tmp / name).rename(out_dir / name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def generate_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, seed: int = 0, *,
                       workers: int | None = None, overwrite: bool = True, _keep_existing: bool = False) -> Path:
    """Write the benchmark in the MILK10k layout into ``out_dir`` (atomically) and return it.

    Files: ``MILK10k_Training_Metadata.csv`` (one row per image, with ``split`` and ``gt_*``
    columns), ``MILK10k_Training_GroundTruth.csv`` (one-hot per lesion),
    ``MILK10k_Training_Input/<lesion_id>/<isic_id>.jpg``, ``benchmark_config.yaml`` and a uint8
    image bundle that :func:`semcov_lib.data.images.load_images` uses instead of decoding the JPEGs.
    An existing ``out_dir`` must be empty or a previous benchmark: only the generator's own files
    are replaced (files the user added beside them are kept), and a generation that would not fit
    in memory is refused before anything is written.
    """
    from semcov_lib.data import images as images_mod

    cfg = cfg.validate()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    check_memory(cfg, workers or _default_workers())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        design = _design(cfg, seed)
        frame = design.frame
        names = cfg.resolved_class_names()
        rel_paths = [f"{INPUT_DIR}/{les}/{isic}.jpg" for les, isic in zip(frame["lesion_id"], frame["isic_id"])]
        (tmp / INPUT_DIR).mkdir()
        size = cfg.image_size
        cache = np.empty((len(frame), 3, size, size), dtype=np.uint8)
        plan = _render_plan(design, cfg)
        n_workers = workers or _default_workers()
        if n_workers > 1 and len(plan) > 1:
            with ThreadPoolExecutor(n_workers) as pool:
                futures = [pool.submit(_process_batch, item, design, cfg, seed, tmp, rel_paths, cache) for item in plan]
                for fut in futures:
                    fut.result()
        else:
            for item in plan:
                _process_batch(item, design, cfg, seed, tmp, rel_paths, cache)

        meta = frame.drop(columns=["label", "class_name"])
        meta.to_csv(tmp / METADATA_FILE, index=False, lineterminator="\n")
        _ground_truth_frame(frame, names).to_csv(tmp / GROUNDTRUTH_FILE, index=False, lineterminator="\n")
        info = {"seed": int(seed), "generator_version": GENERATOR_VERSION, **to_dict(cfg)}
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(info, sort_keys=False))
        images_mod.write_bundle(tmp, rel_paths, cache)

        if out_dir.exists() and _keep_existing and (out_dir / CONFIG_FILE).is_file():
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent generation of the same benchmark won
            return out_dir
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_benchmark(profile: str = "default", seed: int = 0, overrides: dict[str, Any] | None = None,
                     config_file: str | Path | None = None, workers: int | None = None) -> Path:
    """Generate the benchmark once into ``cache_dir()/benchmarks/<profile>-s<seed>-<hash>/``; reuse it afterwards."""
    from semcov_lib.paths import cache_dir

    cfg = benchmark_config(profile, config_file=config_file, overrides=overrides)
    target = cache_dir() / "benchmarks" / f"{profile}-s{int(seed)}-{config_hash(cfg, seed)}"
    if (target / CONFIG_FILE).is_file():
        return target
    try:
        return generate_benchmark(cfg, target, seed, workers=workers, overwrite=True, _keep_existing=True)
    except OSError:
        if (target / CONFIG_FILE).is_file():  # another process finished first
            return target
        raise


def load_benchmark(profile: str = "default", seed: int = 0, overrides: dict[str, Any] | None = None,
                   config_file: str | Path | None = None, **loader_options: Any):
    """Ensure the benchmark exists and read it as an :class:`~semcov_lib.data.table.SCITable`."""
    from semcov_lib.data.datasets.milk10k import load_milk10k

    root = ensure_benchmark(profile, seed, overrides=overrides, config_file=config_file)
    table = load_milk10k(root, **loader_options)
    table.name = f"benchmark-{profile}-s{int(seed)}"
    table.meta.update({"benchmark_profile": profile, "benchmark_seed": int(seed),
                       "benchmark_config": load_yaml(root / CONFIG_FILE)})
    return table


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m semcov_lib generate``."""
    parser.add_argument("--profile", default="default", choices=sorted(BENCHMARK_PROFILES), help="size profile")
    parser.add_argument("--configuration", default="default", choices=sorted(BENCHMARK_CONFIGS),
                        help="named benchmark configuration (its overrides come before --config and --set)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--out", default=None, help="output folder (default: the cache, reused if present)")
    parser.add_argument("--config", default=None, help="YAML file of BenchmarkConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="render/encode threads")


def run(args: argparse.Namespace) -> int:
    """Generate the benchmark and print a one-line summary."""
    from_file = load_yaml(args.config) if args.config else {}
    for key in ("seed", "generator_version"):  # a benchmark_config.yaml written by generate_benchmark
        from_file.pop(key, None)
    named = configuration_overrides(getattr(args, "configuration", "default"), args.profile)
    overrides = {**named, **from_file, **parse_overrides(args.overrides)}  # named < YAML file < --set
    cfg = benchmark_config(args.profile, overrides=overrides)
    t0 = time.perf_counter()
    if args.out:
        out = generate_benchmark(cfg, args.out, args.seed, workers=args.workers)
    else:
        out = ensure_benchmark(args.profile, args.seed, overrides=overrides or None, workers=args.workers)
    elapsed = time.perf_counter() - t0
    meta = pd.read_csv(out / METADATA_FILE, usecols=["split"])
    counts = meta["split"].value_counts()
    names = (*SPLIT_ORDER, REFERENCE_SPLIT) if REFERENCE_SPLIT in counts else SPLIT_ORDER
    parts = ", ".join(f"{s} {int(counts.get(s, 0))}" for s in names)
    print(f"benchmark {args.profile} seed {args.seed}: {len(meta)} images ({parts}), {cfg.n_classes} classes, "
          f"{cfg.image_size}x{cfg.image_size} px, {elapsed:.1f} s -> {out}")
    return 0
