"""Evaluation metrics (docs/METHODS.md, section "Metrics"), scikit-learn backed, plus ``evaluate`` -> one flat dict.

Conventions shared by every function here:

* ``y`` holds class indices, ``probs`` is (N, T) with rows summing to ~1, ``pred = probs.argmax(1)``.
* Per-class averages (balanced accuracy, macro-F1, macro AUROC, macro Sens@95%Spec,
  head/medium/tail accuracy) run over the classes *present in the evaluation labels*; a class
  absent from the evaluation split is left out with a :class:`MetricWarning` (never a crash), and
  a metric with nothing left to average is NaN.
* Sensitivity at 95% specificity is the largest TPR on the ROC curve (all thresholds, no point
  dropped) whose FPR is at most 0.05.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from semcov_lib.sci.coverage import CoverageError, check_labels

if TYPE_CHECKING:  # pragma: no cover
    from semcov_lib.sci.cdi import CDIResult, Resampling, SCGReference

SHOT_MANY, SHOT_FEW = 100, 20
SHOT_REFERENCE_MAX = 1280  # largest class of ImageNet-LT, where the 100/20 thresholds come from


class MetricWarning(UserWarning):
    """A metric is partly or wholly undefined for these inputs (NaN or a reduced average)."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


def _probs(probs: np.ndarray, n: int | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise CoverageError(f"probs: expected an (N, T) array, got shape {p.shape}")
    if n is not None and len(p) != n:
        raise CoverageError(f"probs ({len(p)} rows) and labels ({n}) differ in length")
    if not np.all(np.isfinite(p)):
        raise CoverageError("probs: contains NaN or infinite values")
    return p


def _labels(y: np.ndarray, n_classes: int, what: str = "labels") -> np.ndarray:
    return check_labels(np.asarray(y), n_classes, what=what)


def _present(y: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    """Classes with at least one evaluation sample; warn about the others."""
    counts = np.bincount(y, minlength=n_classes)
    absent = np.flatnonzero(counts == 0)
    if len(absent):
        _warn(f"{what}: class(es) {absent.tolist()} absent from the evaluation labels are left out")
    return np.flatnonzero(counts > 0)


# --------------------------------------------------------------------------- classification
def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of correct predictions (NaN for an empty split)."""
    if len(y) == 0:
        return float("nan")
    return float(accuracy_score(y, pred))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y`` (sklearn ``balanced_accuracy_score``)."""
    y, pred = np.asarray(y), np.asarray(pred)
    if len(y) == 0:
        return float("nan")
    if n_classes is not None:
        _present(_labels(y, n_classes), n_classes, "balanced accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(y, pred))


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int | None = None) -> float:
    """Macro F1 over the classes present in ``y`` (a predicted-only class still costs precision)."""
    y, pred = np.asarray(y), np.asarray(pred)
    if len(y) == 0:
        return float("nan")
    labels = _present(_labels(y, n_classes), n_classes, "macro-F1") if n_classes is not None else np.unique(y)
    return float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))


def _binary_ok(yb: np.ndarray) -> bool:
    return 0 < yb.sum() < len(yb)


def auroc(y: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUROC (binary: AUROC of class 1); classes without positives are left out."""
    p = _probs(probs, len(y))
    y = _labels(y, p.shape[1])
    if p.shape[1] == 2:
        yb = y == 1
        if not _binary_ok(yb):
            _warn("AUROC: the evaluation labels hold a single class; AUROC is NaN")
            return float("nan")
        return float(roc_auc_score(yb, p[:, 1]))
    classes = _present(y, p.shape[1], "AUROC")
    aucs = [roc_auc_score(y == c, p[:, c]) for c in classes if _binary_ok(y == c)]
    if not aucs:
        _warn("AUROC: no class has both positives and negatives; AUROC is NaN")
        return float("nan")
    return float(np.mean(aucs))


def sens_at_spec(y_true: np.ndarray, score: np.ndarray, specificity: float = 0.95) -> float:
    """Largest TPR with FPR <= 1 - specificity on the ROC curve of a binary problem (NaN if one class)."""
    yb = np.asarray(y_true).astype(bool)
    if not _binary_ok(yb):
        _warn("Sens@Spec: needs both positives and negatives; value is NaN")
        return float("nan")
    fpr, tpr, _ = roc_curve(yb, score, drop_intermediate=False)
    ok = fpr <= (1.0 - specificity) + 1e-12
    return float(tpr[ok].max())


def class_sens_at_spec(y: np.ndarray, probs: np.ndarray, class_idx: int, specificity: float = 0.95) -> float:
    """Sens@Spec of one class against the rest (e.g. MEL on dermatology data)."""
    p = _probs(probs, len(y))
    y = _labels(y, p.shape[1])
    return sens_at_spec(y == class_idx, p[:, class_idx], specificity)


def sens_at_95spec(y: np.ndarray, probs: np.ndarray, specificity: float = 0.95) -> float:
    """Binary: Sens@95%Spec of class 1; multi-class: macro over classes (one-vs-rest)."""
    p = _probs(probs, len(y))
    y = _labels(y, p.shape[1])
    if p.shape[1] == 2:
        return sens_at_spec(y == 1, p[:, 1], specificity)
    classes = [c for c in _present(y, p.shape[1], "Sens@95%Spec") if _binary_ok(y == c)]
    if not classes:
        _warn("Sens@95%Spec: no class has both positives and negatives; value is NaN")
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return float(np.mean([sens_at_spec(y == c, p[:, c], specificity) for c in classes]))


# --------------------------------------------------------------------------- calibration
def reliability_data(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin top-label confidence, accuracy and count; equal-width bins (lo, hi] over [0, 1].

    Columns: bin, lower, upper, confidence (mean), accuracy, count (empty bins: NaN, 0).
    """
    p = _probs(probs, len(y))
    y = np.asarray(y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        acc = np.bincount(b, weights=correct, minlength=n_bins) / count
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:],
                         "confidence": mean_conf, "accuracy": acc, "count": count})


def ece(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error over ``n_bins`` equal-width confidence bins (NaN for an empty split)."""
    if len(y) == 0:
        return float("nan")
    rel = reliability_data(y, probs, n_bins)
    used = rel["count"] > 0
    # ECE = sum_b (n_b / N) |acc_b - conf_b|; empty bins hold NaN and weigh 0
    gap = (rel["accuracy"] - rel["confidence"]).abs()[used]
    return float((gap * rel["count"][used]).sum() / rel["count"].sum())


# --------------------------------------------------------------------------- groups
def wilson_interval(successes: int | np.ndarray, n: int | np.ndarray, confidence: float = 0.95):
    """Wilson score interval of a binomial proportion k / n (NaN where n = 0); scalars or arrays."""
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = float(norm.ppf(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        # Wilson: shrinks k / n towards 1/2, so the interval stays inside [0, 1] even at k = 0 or n
        centre = (k + z * z / 2) / (n + z * z)
        half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    low, high = np.where(n > 0, centre - half, np.nan), np.where(n > 0, centre + half, np.nan)
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def group_accuracy(y: np.ndarray, pred: np.ndarray, subgroups: np.ndarray | None,
                   classes: Sequence[str] | None = None, subgroup_levels: Sequence[str] | None = None,
                   confidence: float = 0.95) -> pd.DataFrame:
    """Accuracy per (class, subgroup) group with at least one sample, with its Wilson CI.

    Columns: class, subgroup (indices), group (``"class / subgroup"`` with names when given), n,
    correct, accuracy, ci_low, ci_high; sorted by (class, subgroup).
    """
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred)
    s = np.zeros_like(y) if subgroups is None else np.asarray(subgroups, dtype=np.int64)
    frame = pd.DataFrame({"class": y, "subgroup": s, "correct": (pred == y).astype(float)})
    out = frame.groupby(["class", "subgroup"], sort=True)["correct"].agg(["size", "sum"]).reset_index()
    out = out.rename(columns={"size": "n", "sum": "correct"})
    out["accuracy"] = out["correct"] / out["n"]
    out["ci_low"], out["ci_high"] = wilson_interval(out["correct"].to_numpy(), out["n"].to_numpy(), confidence)
    cname = (lambda c: str(classes[c])) if classes is not None else str
    sname = (lambda g: str(subgroup_levels[g])) if subgroup_levels is not None else str
    out.insert(2, "group", [f"{cname(c)} / {sname(g)}" for c, g in zip(out["class"], out["subgroup"])])
    return out


def worst_group(y: np.ndarray, pred: np.ndarray, subgroups: np.ndarray | None, min_count: int = 30,
                classes: Sequence[str] | None = None, subgroup_levels: Sequence[str] | None = None) -> dict:
    """Lowest-accuracy (class, subgroup) group among those with >= ``min_count`` samples.

    Keys: worst_group_accuracy, worst_group (name), worst_group_n, worst_group_ci_low/high (Wilson
    95%), worst_group_candidates (groups that were large enough). NaN / "" when none is.
    """
    groups = group_accuracy(y, pred, subgroups, classes, subgroup_levels)
    groups = groups[groups["n"] >= min_count]
    if groups.empty:
        _warn(f"worst-group accuracy: no (class, subgroup) group has >= {min_count} samples; value is NaN")
        return {"worst_group_accuracy": float("nan"), "worst_group": "", "worst_group_n": 0,
                "worst_group_ci_low": float("nan"), "worst_group_ci_high": float("nan"),
                "worst_group_candidates": 0}
    row = groups.sort_values(["accuracy", "n"], kind="stable").iloc[0]  # ties: the smaller group
    return {"worst_group_accuracy": float(row["accuracy"]), "worst_group": row["group"],
            "worst_group_n": int(row["n"]), "worst_group_ci_low": float(row["ci_low"]),
            "worst_group_ci_high": float(row["ci_high"]), "worst_group_candidates": int(len(groups))}


def worst_group_accuracy(y: np.ndarray, pred: np.ndarray, subgroups: np.ndarray | None, min_count: int = 1) -> float:
    """Lowest accuracy over (class, subgroup) groups holding at least ``min_count`` samples."""
    return worst_group(y, pred, subgroups, min_count)["worst_group_accuracy"]


def per_class_recall(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from ``y``), (T,)."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred)
    n = np.bincount(y, minlength=n_classes)
    hits = np.bincount(y, weights=(pred == y).astype(float), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan)


def worst_class(y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Lowest per-class recall among the classes present: worst_class_accuracy, worst_class."""
    recall = per_class_recall(y, pred, len(classes))
    if not np.isfinite(recall).any():
        return {"worst_class_accuracy": float("nan"), "worst_class": ""}
    c = int(np.nanargmin(recall))
    return {"worst_class_accuracy": float(recall[c]), "worst_class": str(classes[c])}


def shot_thresholds(train_class_counts: np.ndarray, many: float = SHOT_MANY, few: float = SHOT_FEW,
                    scale: float | str = 1.0) -> tuple[float, float]:
    """(many, few) shot thresholds, optionally scaled for small data.

    ``scale="auto"`` keeps the ratio of the thresholds to the largest class that they have on
    ImageNet-LT (largest class 1280 images), i.e. multiplies them by ``min(1, n_max / 1280)``.
    """
    if isinstance(scale, str):
        if scale != "auto":
            raise CoverageError(f"shot scale must be a number or 'auto', got {scale!r}")
        n_max = float(np.max(train_class_counts, initial=0))
        scale = min(1.0, n_max / SHOT_REFERENCE_MAX) if n_max > 0 else 1.0
    return many * float(scale), few * float(scale)


def shot_groups(train_class_counts: np.ndarray, many: float = SHOT_MANY, few: float = SHOT_FEW,
                scale: float | str = 1.0) -> np.ndarray:
    """'head' (> many), 'medium' (few..many) or 'tail' (< few) per class, by training count."""
    counts = np.asarray(train_class_counts, dtype=np.float64)
    hi, lo = shot_thresholds(counts, many, few, scale)
    return np.where(counts > hi, "head", np.where(counts < lo, "tail", "medium"))


def shot_accuracy(y: np.ndarray, pred: np.ndarray, train_class_counts: np.ndarray, many: float = SHOT_MANY,
                  few: float = SHOT_FEW, scale: float | str = 1.0) -> dict[str, float]:
    """Head/medium/tail accuracy: mean per-class accuracy over the bucket's classes present in ``y``.

    A bucket without classes is NaN; classes of a bucket absent from ``y`` are left out with a warning.
    """
    counts = np.asarray(train_class_counts)
    y = _labels(y, len(counts))
    pred = np.asarray(pred)
    buckets = shot_groups(counts, many, few, scale)
    n = np.bincount(y, minlength=len(counts))
    hits = np.bincount(y, weights=(pred == y).astype(float), minlength=len(counts))
    out = {}
    for name in ("head", "medium", "tail"):
        members = np.flatnonzero(buckets == name)
        present = members[n[members] > 0]
        if len(present) < len(members):
            _warn(f"{name} accuracy: class(es) {members[n[members] == 0].tolist()} absent from the evaluation "
                  "labels are left out")
        out[f"{name}_accuracy"] = float(np.mean(hits[present] / n[present])) if len(present) else float("nan")
    return out


def stratum_errors(per_scg: pd.DataFrame) -> dict[str, float]:
    """Weighted error sum_g w_g e_g / sum_g w_g of the valid SCGs in each Tail/Middle/Head stratum."""
    out = {}
    valid = per_scg[per_scg["valid"].astype(bool)]
    for name in ("Tail", "Middle", "Head"):
        rows = valid[valid["stratum"] == name]
        w = rows["weight"].to_numpy(dtype=float)
        out[f"{name.lower()}_error"] = float((w * rows["error"].to_numpy(dtype=float)).sum() / w.sum()) \
            if len(rows) and w.sum() > 0 else float("nan")
    return out


# --------------------------------------------------------------------------- multi-label
def multilabel_metrics(Y: np.ndarray, scores: np.ndarray, threshold: float = 0.5, top_k: int = 3) -> dict[str, float]:
    """mAP, CP/CR/CF1, OP/OR/OF1 at ``threshold`` and their top-k variants (keys ``CP_top3`` ...), SADCL §4.

    ``n_labels_ap``: labels that entered mAP (those with a positive; the others are left out with a
    warning).
    """
    Y = np.asarray(Y)
    s = np.asarray(scores, dtype=np.float64)
    if Y.ndim != 2 or Y.shape != s.shape:
        raise CoverageError(f"multilabel_metrics: Y {Y.shape} and scores {s.shape} must be equal (N, L) arrays")
    Y = Y > 0.5
    with_pos = np.flatnonzero(Y.any(axis=0))
    if len(with_pos) < Y.shape[1]:
        _warn(f"mAP: label(s) {np.flatnonzero(~Y.any(axis=0)).tolist()[:10]} have no positive and are left out")
    aps = [average_precision_score(Y[:, j], s[:, j]) for j in with_pos]  # mAP: mean AP over labels
    res: dict[str, float] = {"mAP": float(np.mean(aps)) if aps else float("nan"), "n_labels_ap": len(aps)}

    def prf(pred: np.ndarray, suffix: str) -> None:
        # C*: macro (per label, then averaged), O*: micro (pooled); 0/0 counts as 0; F1 = harmonic mean
        if Y.size == 0:
            cp = cr = op = orr = float("nan")
        else:
            cp = float(precision_score(Y, pred, average="macro", zero_division=0))
            cr = float(recall_score(Y, pred, average="macro", zero_division=0))
            op = float(precision_score(Y, pred, average="micro", zero_division=0))
            orr = float(recall_score(Y, pred, average="micro", zero_division=0))
        res.update({
            f"CP{suffix}": cp, f"CR{suffix}": cr, f"CF1{suffix}": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
            f"OP{suffix}": op, f"OR{suffix}": orr, f"OF1{suffix}": 2 * op * orr / (op + orr) if op + orr else 0.0,
        })

    prf(s >= threshold, "")
    # top-k: each sample predicts its k highest-scoring labels
    k = min(top_k, Y.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    pred_top = np.zeros_like(Y)
    np.put_along_axis(pred_top, top, True, axis=1)
    prf(pred_top, f"_top{top_k}")
    return res


# --------------------------------------------------------------------------- everything
COUNT_KEYS = ("n_valid_scgs", "n_scgs", "n_removed_coverage", "n_removed_train_n", "n_removed_weight",
              "n_within_classes", "worst_group_n", "worst_group_candidates", "n_samples")
TEXT_KEYS = ("worst_group", "worst_class")


def evaluate_split(
    y: np.ndarray,
    probs: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    reference: "SCGReference",
    resampling: "Resampling | None" = None,
    shot_scale: float | str = 1.0,
) -> tuple[dict, "CDIResult"]:
    """Every metric as one flat dict (floats, counts, names), and the CDI result behind it.

    ``reference`` is the training :class:`~semcov_lib.sci.cdi.SCGReference` (coverage, counts, names,
    rules). Keys: accuracy, balanced_accuracy, macro_f1, auroc, sens_at_95spec, ece;
    worst_group_accuracy, worst_group, worst_group_n, worst_group_ci_low/high (groups with >=
    ``reference.min_group_n`` samples, Wilson 95% CI), worst_class_accuracy, worst_class; cdi,
    cdi_ci_low, cdi_ci_high, cdi_signed_rho, cdi_pearson_log, cdi_weighted, cdi_within,
    cdi_within_signed, cdi_within_ci_low/high, cdi_p, cdi_within_p; n_valid_scgs, n_scgs,
    n_removed_coverage, n_removed_train_n, n_removed_weight, n_within_classes; tail_error,
    middle_error, head_error; head/medium/tail_accuracy; sens_at_95spec_mel when a class is named
    MEL. NaN stays NaN (JSON conversion is the caller's).
    """
    from semcov_lib.sci.cdi import compute_cdi

    classes = list(reference.classes)
    p = _probs(probs)
    if p.shape[1] != len(classes):
        raise CoverageError(f"probs have {p.shape[1]} columns for {len(classes)} classes")
    y = _labels(y, len(classes))
    if len(y) != len(p):
        raise CoverageError(f"labels ({len(y)}) and probs ({len(p)}) differ in length")
    pred = p.argmax(axis=1)
    T = len(classes)
    out = {
        "n_samples": len(y),
        "accuracy": accuracy(y, pred),
        "balanced_accuracy": balanced_accuracy(y, pred, T),
        "macro_f1": macro_f1(y, pred, T),
        "auroc": auroc(y, p),
        "sens_at_95spec": sens_at_95spec(y, p),
        "ece": ece(y, p),
        **worst_group(y, pred, subgroups, reference.min_group_n, classes, reference.subgroups),
        **worst_class(y, pred, classes),
    }
    mel = [i for i, c in enumerate(classes) if c.upper() == "MEL"]
    if mel:
        out["sens_at_95spec_mel"] = class_sens_at_spec(y, p, mel[0])
    res = compute_cdi(reference, y, pred, subgroups, scores, probs=p, resampling=resampling)
    out.update({
        "cdi": res.cdi, "cdi_ci_low": res.ci_low, "cdi_ci_high": res.ci_high, "cdi_signed_rho": res.signed_rho,
        "cdi_pearson_log": res.pearson_log, "cdi_weighted": res.weighted, "cdi_within": res.cdi_within,
        "cdi_within_signed": res.cdi_within_signed, "cdi_within_ci_low": res.within_ci_low,
        "cdi_within_ci_high": res.within_ci_high, "cdi_p": res.cdi_p, "cdi_within_p": res.cdi_within_p,
        "n_valid_scgs": res.n_valid, "n_scgs": res.n_scgs, "n_removed_coverage": res.n_removed_coverage,
        "n_removed_train_n": res.n_removed_train_n, "n_removed_weight": res.n_removed_weight,
        "n_within_classes": res.n_within_classes,
    })
    out.update(stratum_errors(res.per_scg))
    if reference.class_counts is not None:
        out.update(shot_accuracy(y, pred, reference.class_counts, scale=shot_scale))
    return {k: (int(v) if k in COUNT_KEYS else v if k in TEXT_KEYS else float(v)) for k, v in out.items()}, res


def evaluate(*args, **kwargs) -> dict:
    """The flat metric dict of :func:`evaluate_split` (same arguments), without the CDI result."""
    return evaluate_split(*args, **kwargs)[0]


__all__ = [
    "MetricWarning",
    "accuracy",
    "auroc",
    "balanced_accuracy",
    "class_sens_at_spec",
    "ece",
    "evaluate",
    "evaluate_split",
    "group_accuracy",
    "per_class_recall",
    "macro_f1",
    "multilabel_metrics",
    "reliability_data",
    "sens_at_95spec",
    "sens_at_spec",
    "shot_accuracy",
    "shot_groups",
    "shot_thresholds",
    "stratum_errors",
    "wilson_interval",
    "worst_class",
    "worst_group",
    "worst_group_accuracy",
]
