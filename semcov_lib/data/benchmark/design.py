"""The benchmark's design, no pixels: which lesion gets which class, skin tone, concepts, split,
appearance vector, metadata and MONET-like scores. Every draw comes from ``numpy.random.Generator``
streams derived from ``(config, seed)``; the order of the draws within a stream is part of the
benchmark's identity (a change needs a GENERATOR_VERSION bump)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from semcov_lib.data.benchmark.config import (
    APPEARANCE_FIELDS, CLASS_APPEARANCE, CONCEPTS, REFERENCE_SPLIT, SKIN_TONES, BenchmarkConfig,
)
from semcov_lib.data.datasets.milk10k import MONET_COLUMNS

SITES = ("foot", "genital", "hand", "head_neck_face", "lower_extremity", "trunk", "upper_extremity")

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

# per-image noise: additive sd of the geometry and colour fields (plus a shared brightness sd),
# multiplicative log-sd of the pattern weights (a pattern absent from a class stays absent)
_APP_NOISE = np.array([0.05, 0.12, 0.035, 0.03, 0.035, 0.035, 0.035] + [0.0] * 8, dtype=np.float64)
_BRIGHTNESS_NOISE = 0.07
_PATTERN_LOG_NOISE = 0.35
_APP_LOW = np.array([0.14, 0.85, 0.0, 0.025, 0.03, 0.03, 0.03] + [0.0] * 8)
_APP_HIGH = np.array([0.72, 1.80, 0.30, 0.35, 0.97, 0.97, 0.97] + [1.0] * 8)

# systematic change of each concept's log-odds from the darkest to the lightest tone
_TONE_EFFECT = np.array([0.0, 0.0, 0.2, 0.6, -0.3, 0.0, 0.0])
# MONET-like miscalibration of each concept: logit offset and gain factor
_CALIB_OFFSET = np.array([-0.3, 0.4, -0.2, 0.3, 0.5, -0.4, 0.0])
_CALIB_GAIN = np.array([0.9, 1.1, 0.8, 1.0, 1.2, 1.0, 0.9])

_AGE = {"NV": (40, 15), "BKL": (62, 12), "BCC": (66, 12), "MEL": (60, 15), "SCCKA": (70, 11), "VASC": (45, 20),
        "AKIEC": (70, 10), "DF": (42, 14), "INF": (50, 20), "BEN_OTH": (50, 18), "MAL_OTH": (65, 14)}
_SITE_BASE = np.array([0.04, 0.01, 0.03, 0.18, 0.20, 0.38, 0.16])
_SITE_FACE_HEAVY = frozenset({"BCC", "SCCKA", "AKIEC", "MAL_OTH"})


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
    stream, so it does not move any other draw. With ``concept_variant_scope="concept"`` every
    class shares the concept's look (pattern, colour direction, size sign), so the rare SCGs of
    one concept teach each other: the compositional case.
    """
    if cfg.concept_variant_scope == "concept":
        return _shared_variant_shifts(cfg, seed)
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


def _shared_variant_shifts(cfg: BenchmarkConfig, seed: int) -> np.ndarray:
    """(C, K, F) variant looks with one look per concept: the same pattern field (+0.7), colour
    direction (0.15) and size sign (+-20% of the class's radius) in every class."""
    names = cfg.resolved_class_names()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 223]))
    shifts = np.zeros((len(names), len(CONCEPTS), len(APPEARANCE_FIELDS)))
    radius = np.array([CLASS_APPEARANCE[n][0] for n in names])
    for k in range(len(CONCEPTS)):
        colour = rng.normal(size=3)
        shifts[:, k, 4:7] = 0.15 * colour / np.linalg.norm(colour)
        shifts[:, k, 0] = radius * rng.choice([-0.2, 0.2])
        shifts[:, k, 7 + rng.integers(len(APPEARANCE_FIELDS) - 7)] = 0.7
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


@dataclass(frozen=True)
class _Lesions:
    """Per-lesion draws (N lesions), before the images (1 or 2 per lesion) are laid out."""

    label: np.ndarray  # (N,) class index
    tone: np.ndarray  # (N,) skin_tone_class
    present: np.ndarray  # (N, K) bool
    intensity: np.ndarray  # (N, K) float, 0 where absent
    split: np.ndarray  # (N,) split name
    appearance: np.ndarray  # (N, F)
    age: np.ndarray  # (N,) float, NaN where missing
    sex: np.ndarray  # (N,) object, NaN where missing
    site: np.ndarray  # (N,) object


def _draw(cfg: BenchmarkConfig, seed: int, balanced_train: bool) -> _Design:
    """Draw every per-lesion and per-image quantity (all but pixel-level randomness).

    ``balanced_train`` changes only the rates the training split's concepts are compared with:
    the number and order of random draws is the same, so every other split is identical."""
    ss = np.random.SeedSequence([int(seed), 7])
    # one stream per kind of quantity, so each kind's draws never shift another's
    r_split, r_concept, r_app, r_meta, r_score, r_order = (np.random.default_rng(s) for s in ss.spawn(6))
    profile = concept_profile(cfg, seed)

    # ---- lesions: class, tone, concepts
    label, tone, present, split = _draw_lesions(cfg, profile, balanced_train, r_split, r_concept)
    order = r_order.permutation(len(label))  # interleave splits, as lesion ids of real data are
    label, tone, present, split = label[order], tone[order], present[order], split[order]
    n_les = len(label)
    intensity = np.where(present, r_concept.uniform(cfg.intensity_min, 1.0, size=(n_les, len(CONCEPTS))), 0.0)
    appearance = _draw_appearance(cfg, seed, label, intensity, r_app)
    age, sex, site = _draw_metadata(cfg, label, r_meta)
    lesions = _Lesions(label, tone, present, intensity, split, appearance, age, sex, site)
    return _lay_out_images(cfg, lesions, r_score)


def _draw_appearance(cfg: BenchmarkConfig, seed: int, label: np.ndarray, intensity: np.ndarray,
                     r_app: np.random.Generator) -> np.ndarray:
    """(N, F) appearance of each lesion: its class signature, pulled towards the home class of its
    rare concepts (mimicry), plus the (class, concept) variant of rare concepts, plus noise."""
    app_c = _class_appearance(cfg)
    home, rarity = _mimicry_targets(cfg)
    pull = intensity * rarity[label]  # (N, K): rarity of each present concept for the lesion's class
    amount = np.minimum(1.0, cfg.concept_mimicry * pull.sum(axis=1))
    # target: the pull-weighted mean of the home classes' signatures (own class when nothing pulls)
    target = (pull @ app_c[home]) / np.maximum(pull.sum(axis=1, keepdims=True), 1e-9)
    target = np.where(pull.sum(axis=1, keepdims=True) > 0, target, app_c[label])
    appearance = (1 - amount)[:, None] * app_c[label] + amount[:, None] * target
    # variant: appearance += sum_k min(1, concept_variant * rarity_ck * intensity_k) * shift_ck
    variant = np.minimum(1.0, cfg.concept_variant * pull)
    appearance += np.einsum("nk,nkf->nf", variant, _variant_shifts(cfg, seed)[label])
    noise = cfg.appearance_noise
    appearance = appearance + r_app.normal(size=appearance.shape) * _APP_NOISE * noise
    appearance[:, 4:7] += r_app.normal(size=(len(label), 1)) * _BRIGHTNESS_NOISE * noise  # shared brightness
    appearance[:, 7:] *= np.exp(r_app.normal(size=(len(label), 8)) * _PATTERN_LOG_NOISE * noise)
    return np.clip(appearance, _APP_LOW, _APP_HIGH)


def _draw_metadata(cfg: BenchmarkConfig, label: np.ndarray,
                   r_meta: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age (5-year steps, class-dependent), sex and anatomic site of each lesion, with missing values."""
    names = cfg.resolved_class_names()
    n_les = len(label)
    age_mu = np.array([_AGE[n][0] for n in names])[label]
    age_sd = np.array([_AGE[n][1] for n in names])[label]
    age = np.clip(np.round(r_meta.normal(age_mu, age_sd) / 5.0) * 5.0, 5.0, 85.0)
    age[r_meta.random(n_les) < cfg.missing_rate] = np.nan
    sex = np.where(r_meta.random(n_les) < 0.5, "male", "female").astype(object)
    sex[r_meta.random(n_les) < cfg.missing_rate] = np.nan
    site_p = np.tile(_SITE_BASE, (len(names), 1))
    for c, name in enumerate(names):
        if name in _SITE_FACE_HEAVY:
            site_p[c, SITES.index("head_neck_face")] += 0.35
    site_p /= site_p.sum(axis=1, keepdims=True)
    # inverse-CDF draw: the site index is the number of cumulative probabilities below u
    cum = site_p[label].cumsum(axis=1)
    site = np.array(SITES, dtype=object)[(r_meta.random((n_les, 1)) > cum).sum(axis=1).clip(max=len(SITES) - 1)]
    return age, sex, site


def _draw_scores(cfg: BenchmarkConfig, appearance: np.ndarray, intensity: np.ndarray,
                 r_score: np.random.Generator) -> np.ndarray:
    """(M, K) MONET-like scores of the images: a noisy, miscalibrated detector that also reacts to
    look-alike lesion colours (dark -> pigment, red -> erythema and vessels)."""
    col = appearance[:, 4:7]
    darkness = np.clip(1.0 - col.mean(axis=1) / 0.6, 0.0, 1.0)
    redness = np.clip((col[:, 0] - col[:, 1]) * 2.0 - 0.3, 0.0, 1.0)
    confound = np.zeros(intensity.shape)
    confound[:, CONCEPTS.index("pigment")] = 2.0 * darkness
    confound[:, CONCEPTS.index("erythema")] = 1.5 * redness
    confound[:, CONCEPTS.index("vessels")] = 1.0 * redness
    # logit = bias + offset + gain * intensity + confound + noise (offset, gain scaled by miscalibration)
    logits = (cfg.score_bias + cfg.score_miscalibration * _CALIB_OFFSET
              + cfg.score_gain * (1 + cfg.score_miscalibration * (_CALIB_GAIN - 1)) * intensity
              + cfg.score_confound * confound
              + cfg.score_noise * r_score.normal(size=intensity.shape))
    if cfg.descriptor_kind == "hard":  # annotator: present when the logit passes the halfway point
        return (logits >= cfg.score_bias + 0.5 * cfg.score_gain * cfg.intensity_min).astype(np.float64)
    return np.round(_sigmoid(logits), 6)


def _lay_out_images(cfg: BenchmarkConfig, les: _Lesions, r_score: np.random.Generator) -> _Design:
    """The images (1 or 2 per lesion: dermoscopic, then the clinical close-up) and their scores."""
    n_les = len(les.label)
    views = 2 if cfg.clinical_variant else 1
    rep = np.repeat(np.arange(n_les), views)  # lesion of each image
    clinical = np.tile([True, False], n_les) if views == 2 else np.zeros(n_les, dtype=bool)
    img_present = les.present[rep].copy()
    img_present[clinical, CONCEPTS.index("gel")] = False  # no immersion fluid on a clinical photo
    img_int = np.where(img_present, les.intensity[rep], 0.0)
    app_img = les.appearance[rep]
    scores = _draw_scores(cfg, app_img, img_int, r_score)
    frame = _metadata_frame(cfg, les, rep, clinical, img_present, scores)
    n_s = cfg.n_skin_tones
    # skin_tone_class spread over the 6-tone palette (one tone: the middle one)
    palette = np.round(les.tone * (len(SKIN_TONES) - 1) / (n_s - 1)).astype(np.int64) if n_s > 1 else np.full(n_les, 3)
    return _Design(frame, les.label[rep], palette[rep], img_present, img_int, app_img, clinical, les.split[rep])


def _metadata_frame(cfg: BenchmarkConfig, les: _Lesions, rep: np.ndarray, clinical: np.ndarray,
                    img_present: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """One row per image, columns in the written metadata CSV's order, plus ``label`` and ``class_name``."""
    frame = pd.DataFrame({
        "lesion_id": [f"IL_{i + 1:07d}" for i in rep],
        "image_type": np.where(clinical, "clinical: close-up", "dermoscopic"),
        "isic_id": [f"ISIC_{i + 1:07d}" for i in range(len(rep))],
        "attribution": "semcov procedural benchmark",
        "copyright_license": "CC0",
        "image_manipulation": "instrument only",
        "age_approx": les.age[rep],
        "sex": les.sex[rep],
        "skin_tone_class": les.tone[rep],
        "site": les.site[rep],
    })
    for j, column in enumerate(MONET_COLUMNS):
        frame[column] = scores[:, j]
    frame["split"] = les.split[rep]
    for j, column in enumerate(MONET_COLUMNS):
        frame[f"gt_{column}"] = img_present[:, j].astype(np.int64)
    frame["label"] = les.label[rep]
    frame["class_name"] = np.array(cfg.resolved_class_names(), dtype=object)[les.label[rep]]
    return frame
