"""The benchmark's configuration: the classes and concepts it knows, :class:`BenchmarkConfig` (every
knob of the generator, validated), the size profiles, the named configurations of the pipeline,
and the stable config hash that names a cached benchmark."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from semcov_lib.config import ConfigError, apply_overrides, load_yaml, to_dict
from semcov_lib.data.datasets.milk10k import MILK10K_CLASSES
from semcov_lib.profiles import PROFILES

GENERATOR_VERSION = 3  # bump whenever the drawn data change for an unchanged config (invalidates caches)

# short internal names of the MONET concepts, same order as MONET_COLUMNS
CONCEPTS = ("ulcer", "hair", "vessels", "erythema", "pigment", "gel", "pen")
DIAGNOSTIC_CONCEPTS = ("ulcer", "vessels", "erythema", "pigment")
ARTEFACT_CONCEPTS = ("hair", "gel", "pen")

# order in which classes are taken (and their prior rank: first = most frequent)
CLASS_PRIORITY = ("NV", "BKL", "BCC", "MEL", "SCCKA", "VASC", "AKIEC", "DF", "INF", "BEN_OTH", "MAL_OTH")
SPLIT_ORDER = ("train", "val", "test", "stress", "val_stress")
# rows of the natural training split written beside a balanced-coverage (oracle) training split:
# the coverage the oracle is evaluated against, never trained on
REFERENCE_SPLIT = "coverage_reference"
TRAIN_COVERAGES = ("natural", "balanced")
DESCRIPTOR_KINDS = ("soft", "hard")
VARIANT_SCOPES = ("scg", "concept")

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

# skin tones 0 (very dark) .. 5 (very light), RGB in [0, 1]
SKIN_TONES = np.array([
    [0.31, 0.21, 0.16],
    [0.46, 0.32, 0.24],
    [0.61, 0.44, 0.34],
    [0.75, 0.57, 0.46],
    [0.86, 0.69, 0.58],
    [0.93, 0.79, 0.71],
])


class BenchmarkError(ValueError):
    """The benchmark configuration or output folder is invalid."""


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
    # whose variant look it is: "scg" = its own look for every (class, concept); "concept" = one look
    # per concept, shared by every class in which the concept is rare (compositional)
    concept_variant_scope: str = "scg"
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
        if self.concept_variant_scope not in VARIANT_SCOPES:
            bad("concept_variant_scope", f"must be one of {list(VARIANT_SCOPES)}")
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


#: Each profile's benchmark size (the one profile table is :data:`semcov_lib.profiles.PROFILES`).
BENCHMARK_PROFILES: dict[str, BenchmarkConfig] = {name: BenchmarkConfig(**p.benchmark) for name, p in PROFILES.items()}


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
    "compositional": NamedConfiguration(
        "A concept that is rare for a class gives the lesion the concept's own variant look, shared by "
        "every class in which it is rare (concept_variant_scope=concept), so the rare SCGs of one concept "
        "pool their examples. Measured (3 seeds, stress): ERM CDI 0.34, balanced-coverage oracle 0.09; "
        "sharing the look did not let SemCovNet (closed_loop), erm_desc or GroupDRO remove any of the gap.",
        {"concept_variant_scope": "concept"}),
    "shortcut": NamedConfiguration(
        "Neither a variant look nor mimicry (both 0): what is left of the SCI is the concepts' own "
        "correlation with the classes. Measured (3 seeds, stress): ERM CDI 0.33, balanced-coverage "
        "oracle 0.04, so most of the default's reducible SCI exists without the designed mechanism.",
        {"concept_variant": 0.0, "concept_mimicry": 0.0}),
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


def _profile(profile: str) -> BenchmarkConfig:
    """The size profile of that name (a ConfigError naming the valid ones otherwise)."""
    if profile not in BENCHMARK_PROFILES:
        raise ConfigError(f"unknown benchmark profile {profile!r}; choose one of {sorted(BENCHMARK_PROFILES)}")
    return BENCHMARK_PROFILES[profile]


def configuration_overrides(name: str, profile: str = "default") -> dict[str, Any]:
    """The overrides of a named configuration for a profile; stress-like splits keep the profile's
    count per (class, concept, subgroup) group when the configuration changes the number of groups."""
    if name not in BENCHMARK_CONFIGS:
        raise ConfigError(f"unknown benchmark configuration {name!r}; choose one of {sorted(BENCHMARK_CONFIGS)}")
    base = _profile(profile)
    overrides = dict(BENCHMARK_CONFIGS[name].overrides)
    cfg = apply_overrides(base, overrides, source=f"benchmark configuration {name}")
    groups, base_groups = cfg.n_classes * cfg.n_skin_tones, base.n_classes * base.n_skin_tones
    if groups != base_groups:
        for key in ("n_stress", "n_val_stress"):
            overrides.setdefault(key, getattr(base, key) // base_groups * groups)
    return overrides


def benchmark_config(profile: str = "default", config_file: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> BenchmarkConfig:
    """The profile's config, updated by a YAML file and then by ``overrides`` (unknown keys raise)."""
    cfg = _profile(profile)
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
