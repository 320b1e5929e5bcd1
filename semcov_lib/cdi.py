"""Coverage Disparity Index (CDI): does error depend on training coverage? (METHODS.md §2)

Per-SCG error on the evaluation split is ``e_g = sum_i w_ig err_i / sum_i w_ig`` with the same
membership weights as the coverage (soft by default), ``err_i = 1[pred != y]`` (default) or the
soft error ``1 - p(y_i | x_i)``. An SCG is *valid* when its evaluation weight is at least ``m``
(default 5) and its training coverage is finite. Over valid SCGs:

* ``cdi``          ``|Spearman rho(cov, e)|`` with average ranks for ties (lower is better);
* ``signed_rho``   the signed Spearman rho (SCI predicts rho < 0);
* ``pearson_log``  the signed Pearson r between ``log(cov + 1e-3)`` and ``e``;
* ``weighted``     the support-weighted CDI: ``|weighted Spearman|``, where each SCG has weight
  w_g = its evaluation weight, each variable is replaced by its *weighted mid-rank* (the total
  weight of SCGs with a smaller value plus half the weight of its ties) and the two are correlated
  with the w-weighted Pearson correlation. With equal weights it equals ``cdi`` exactly;
* ``ci_low/ci_high``  percentile bootstrap CI of ``cdi`` from resampling evaluation samples with
  replacement (``n_boot`` replicates, seeded); validity is re-evaluated in every replicate.

Fewer than 3 valid SCGs, constant coverage or constant error give NaN and a :class:`CDIWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from semcov_lib.coverage import (
    CoverageError,
    _sorted_by_cell,
    assign_strata,
    bootstrap_cell_sums,
    cell_index,
    cell_sums,
    cells_to_tks,
    check_labels,
    check_scores,
    check_subgroups,
    membership,
)

LOG_EPS = 1e-3
MIN_VALID = 3
ERRORS = ("hard", "soft")


class CDIWarning(UserWarning):
    """The CDI (or one of its variants) is undefined for these inputs; the value is NaN."""


# --------------------------------------------------------------------------- correlations
def _pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) Pearson correlation; NaN when either variable is constant."""
    w = np.ones_like(x) if w is None else w
    w = w / w.sum()
    dx, dy = x - np.sum(w * x), y - np.sum(w * y)
    sxx, syy = np.sum(w * dx * dx), np.sum(w * dy * dy)
    scale = max(np.abs(x).max(initial=0), 1.0) ** 2 * 1e-24, max(np.abs(y).max(initial=0), 1.0) ** 2 * 1e-24
    if sxx <= scale[0] or syy <= scale[1]:
        return float("nan")
    return float(np.clip(np.sum(w * dx * dy) / np.sqrt(sxx * syy), -1.0, 1.0))


def weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mid-rank of each value: weight of strictly smaller values + half the weight of ties."""
    uniq, inv = np.unique(x, return_inverse=True)
    group_w = np.bincount(inv, weights=w, minlength=len(uniq))
    return (np.cumsum(group_w) - group_w / 2.0)[inv]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho with average ranks (NaN if either variable is constant)."""
    return _pearson(rankdata(x), rankdata(y))


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted Spearman: weighted Pearson of weighted mid-ranks (see module docstring)."""
    w = np.asarray(w, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        return float("nan")
    return _pearson(weighted_midranks(x, w), weighted_midranks(y, w), w)


def rank_correlations(coverage: np.ndarray, error: np.ndarray, weight: np.ndarray | None = None) -> dict:
    """Signed Spearman, Pearson on log(cov + 1e-3) and weighted Spearman over the given SCGs."""
    cov, err = np.asarray(coverage, float), np.asarray(error, float)
    w = np.ones_like(cov) if weight is None else np.asarray(weight, float)
    return {
        "signed_rho": spearman(cov, err),
        "pearson_log": _pearson(np.log(cov + LOG_EPS), err),
        "weighted_rho": weighted_spearman(cov, err, w),
    }


def _fixed_order_ranks(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Average ranks of the fixed values ``x`` (G,) among the valid entries of each row of ``valid``.

    The order of ``x`` never changes, only which entries count, so ranks come from cumulative
    counts over tie groups in sorted order: O(B * G), no per-row sort.
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    gid = np.cumsum(new_group) - 1  # tie group of each sorted position
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(xs)]
    cum = np.concatenate([np.zeros((valid.shape[0], 1)), np.cumsum(valid[:, order], axis=1)], axis=1)
    less = cum[:, starts]  # valid entries in earlier tie groups
    equal = cum[:, ends] - less
    ranks_sorted = (less + (equal + 1) / 2.0)[:, gid]
    ranks = np.empty_like(ranks_sorted)
    ranks[:, order] = ranks_sorted
    return ranks


def _row_spearman(cov: np.ndarray, err: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Spearman rho per row of (B, G) errors against the fixed coverage (G,) over valid entries.

    Coverage ranks come from :func:`_fixed_order_ranks`; errors of invalid entries are moved to
    +inf before ``rankdata``, so valid entries get exactly their average ranks among the valid
    ones. Rows then go through a masked Pearson correlation; NaN where fewer than 3 are valid or
    a variable is constant.
    """
    rc = np.where(valid, _fixed_order_ranks(cov, valid), 0.0)
    re = np.where(valid, rankdata(np.where(valid, err, np.inf), axis=1), 0.0)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (n + 1) / 2.0  # ranks 1..n always average (n + 1) / 2
        dc = np.where(valid, rc - mean[:, None], 0.0)
        de = np.where(valid, re - mean[:, None], 0.0)
        sxx, syy = (dc * dc).sum(1), (de * de).sum(1)
        rho = (dc * de).sum(1) / np.sqrt(sxx * syy)
    rho[(n < MIN_VALID) | (sxx <= 1e-12) | (syy <= 1e-12)] = np.nan
    return np.clip(rho, -1.0, 1.0)


# --------------------------------------------------------------------------- result
@dataclass
class CDIResult:
    """CDI, its variants and CI, and the per-SCG table behind them (see module docstring)."""

    cdi: float
    signed_rho: float
    pearson_log: float
    weighted: float
    ci_low: float
    ci_high: float
    n_valid: int
    per_scg: pd.DataFrame = field(repr=False)
    n_scgs: int = 0
    n_boot: int = 0
    ci: float = 0.95
    min_weight: float = 5.0
    error: str = "hard"
    boot: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def to_dict(self) -> dict:
        """Scalar results as plain Python numbers (NaN stays NaN; JSON conversion is the caller's)."""
        return {
            "cdi": float(self.cdi),
            "signed_rho": float(self.signed_rho),
            "pearson_log": float(self.pearson_log),
            "weighted": float(self.weighted),
            "ci_low": float(self.ci_low),
            "ci_high": float(self.ci_high),
            "n_valid": int(self.n_valid),
            "n_scgs": int(self.n_scgs),
            "n_boot": int(self.n_boot),
            "ci": float(self.ci),
            "min_weight": float(self.min_weight),
            "error": self.error,
        }


def reduction(cdi_baseline: float, cdi_method: float, percent: bool = False) -> float:
    """Relative CDI reduction (CDI_b - CDI_m) / CDI_b (0.45 = 45% lower); NaN if CDI_b is 0 or NaN."""
    b, m = float(cdi_baseline), float(cdi_method)
    if not np.isfinite(b) or not np.isfinite(m) or b == 0:
        return float("nan")
    r = (b - m) / b
    return 100.0 * r if percent else r


# --------------------------------------------------------------------------- main entry
def sample_errors(labels: np.ndarray, preds: np.ndarray | None, probs: np.ndarray | None, n_classes: int,
                  error: str = "hard") -> np.ndarray:
    """err_i: 1[pred != y] (``hard``) or 1 - p(y | x) (``soft``), float64 (N,)."""
    if error not in ERRORS:
        raise CoverageError(f"error must be one of {ERRORS}, got {error!r}")
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(labels), n_classes):
            raise CoverageError(f"probs: expected shape {(len(labels), n_classes)}, got {probs.shape}")
        if not np.all(np.isfinite(probs)):
            raise CoverageError("probs: contains NaN or infinite values")
    if error == "soft":
        if probs is None:
            raise CoverageError("error='soft' needs probs (N, T)")
        return 1.0 - probs[np.arange(len(labels)), labels]
    if preds is None:
        if probs is None:
            raise CoverageError("compute_cdi needs preds or probs")
        preds = probs.argmax(axis=1)
    preds = check_labels(preds, n_classes, what="preds")
    if len(preds) != len(labels):
        raise CoverageError(f"preds ({len(preds)}) and labels ({len(labels)}) differ in length")
    return (preds != labels).astype(np.float64)


def compute_cdi(
    train_coverage: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray | None,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    probs: np.ndarray | None = None,
    min_weight: float = 5,
    error: str = "hard",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    mode: str = "soft",
    tau: float = 0.5,
    thresholds: np.ndarray | str | None = None,
    classes: Sequence[str] | None = None,
    descriptors: Sequence[str] | None = None,
    subgroup_levels: Sequence[str] | None = None,
) -> CDIResult:
    """CDI of predictions on an evaluation split against the training coverage (T, K, S).

    ``labels``/``preds`` are class indices, ``subgroups`` indices into the coverage's subgroup axis
    (``None`` for a (T, K) / (T, K, 1) coverage), ``scores`` the (N, K) evaluation descriptor
    scores (NaN masked). For hard membership with median thresholds pass the *training* medians
    as ``thresholds``. Names only label the per-SCG table.
    """
    cov_train = np.asarray(train_coverage, dtype=np.float64)
    if cov_train.ndim == 2:
        cov_train = cov_train[:, :, None]
    if cov_train.ndim != 3:
        raise CoverageError(f"train_coverage: expected a (T, K, S) array, got shape {cov_train.shape}")
    T, K, S = cov_train.shape
    if not 0 < ci < 1:
        raise CoverageError(f"ci must be in (0, 1), got {ci}")
    a = check_scores(scores, names=None if descriptors is None else list(descriptors), where="evaluation scores")
    if a.shape[1] != K:
        raise CoverageError(f"evaluation scores have {a.shape[1]} descriptors, the training coverage {K}")
    y = check_labels(labels, T)
    if len(y) != len(a):
        raise CoverageError(f"labels ({len(y)}) and evaluation scores ({len(a)}) differ in length")
    if subgroups is None and S > 1:
        raise CoverageError(f"subgroups is None but the training coverage has {S} subgroups; pass the "
                            "evaluation subgroup indices (or a (T, K) / (T, K, 1) coverage)")
    s = check_subgroups(subgroups, len(y), S)
    err = sample_errors(y, preds, probs, T, error)

    phi = membership(a, mode, tau, thresholds)
    wz = np.where(np.isnan(phi), 0.0, phi)
    n_cells = T * S
    cells = cell_index(y, s, S)
    values = np.concatenate([wz * err[:, None], wz], axis=1)  # numerator | denominator
    sums = cell_sums(cells, values, n_cells)
    num, den = cells_to_tks(sums[:, :K], T, S), cells_to_tks(sums[:, K:], T, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    finite_cov = np.isfinite(cov_train)
    valid = finite_cov & (den >= min_weight) & (den > 0)
    n_valid = int(valid.sum())

    stratum = np.full(cov_train.shape, None, dtype=object)
    cdi = signed = pearson_log = weighted = lo = hi = float("nan")
    boot = np.empty(0)
    if n_valid < MIN_VALID:
        warnings.warn(
            f"CDI undefined: only {n_valid} valid SCG(s) (evaluation weight >= {min_weight} and finite "
            f"training coverage); at least {MIN_VALID} are needed", CDIWarning, stacklevel=2)
    else:
        cv, ev, wv = cov_train[valid], e[valid], den[valid]
        stratum = assign_strata(cov_train, reference=cv)
        if np.ptp(cv) == 0:
            warnings.warn(f"CDI undefined: training coverage is constant ({cv[0]:.4g}) over the "
                          f"{n_valid} valid SCGs", CDIWarning, stacklevel=2)
        elif np.ptp(ev) == 0:
            warnings.warn(f"CDI undefined: evaluation error is constant ({ev[0]:.4g}) over the "
                          f"{n_valid} valid SCGs", CDIWarning, stacklevel=2)
        else:
            corr = rank_correlations(cv, ev, wv)
            signed, pearson_log = corr["signed_rho"], corr["pearson_log"]
            cdi, weighted = abs(signed), abs(corr["weighted_rho"])
            if n_boot > 0:
                boot = _bootstrap(cov_train, values, cells, n_cells, T, K, S, min_weight, n_boot, seed,
                                  active=valid_cells(finite_cov, T, S))
                lo, hi = _percentile_ci(boot, ci)

    per_scg = _per_scg_frame(cov_train, e, den, valid, stratum, classes, descriptors, subgroup_levels)
    return CDIResult(cdi=float(cdi), signed_rho=float(signed), pearson_log=float(pearson_log),
                     weighted=float(weighted), ci_low=float(lo), ci_high=float(hi), n_valid=n_valid,
                     per_scg=per_scg, n_scgs=int(T * K * S), n_boot=int(n_boot), ci=float(ci),
                     min_weight=float(min_weight), error=error, boot=boot)


def valid_cells(finite_cov: np.ndarray, n_classes: int, n_subgroups: int) -> np.ndarray:
    """Cells (c * S + s) holding at least one SCG with finite training coverage."""
    return finite_cov.any(axis=1).reshape(n_classes * n_subgroups)


def _bootstrap(cov_train, values, cells, n_cells, T, K, S, min_weight, n_boot, seed, active) -> np.ndarray:
    """|rho| of ``n_boot`` bootstrap resamples of the evaluation samples (NaN where undefined)."""
    order, bounds = _sorted_by_cell(cells, n_cells)
    sums = bootstrap_cell_sums(values[order], bounds, n_boot, np.random.default_rng(seed), active=active)
    num = cells_to_tks(sums[..., :K], T, S).reshape(n_boot, -1)
    den = cells_to_tks(sums[..., K:], T, S).reshape(n_boot, -1)
    cov = cov_train.reshape(-1)
    valid = np.isfinite(cov)[None, :] & (den >= min_weight) & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(valid, num / np.where(valid, den, 1.0), 0.0)
    return np.abs(_row_spearman(cov, err, valid))


def _percentile_ci(boot: np.ndarray, ci: float) -> tuple[float, float]:
    finite = boot[np.isfinite(boot)]
    if len(finite) == 0:
        warnings.warn("CDI bootstrap: no replicate had a defined CDI; CI is NaN", CDIWarning, stacklevel=3)
        return float("nan"), float("nan")
    if len(finite) < 0.9 * len(boot):
        warnings.warn(f"CDI bootstrap: {len(boot) - len(finite)} of {len(boot)} replicates had an undefined "
                      "CDI (too few valid SCGs or constant error) and were left out of the CI",
                      CDIWarning, stacklevel=3)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _per_scg_frame(cov, err, weight, valid, stratum, classes, descriptors, subgroup_levels) -> pd.DataFrame:
    T, K, S = cov.shape
    ci, ki, si = (x.ravel() for x in np.meshgrid(np.arange(T), np.arange(K), np.arange(S), indexing="ij"))

    def names(given, n):
        return np.asarray([str(x) for x in given] if given is not None else [str(i) for i in range(n)], dtype=object)

    frame = pd.DataFrame({
        "class": names(classes, T)[ci],
        "class_idx": ci,
        "descriptor": names(descriptors, K)[ki],
        "descriptor_idx": ki,
        "subgroup": names(subgroup_levels, S)[si],
        "subgroup_idx": si,
        "coverage": cov.ravel(),
        "error": err.ravel(),
        "weight": weight.ravel(),
        "valid": valid.ravel(),
        "stratum": stratum.ravel(),
    })
    return frame


__all__ = [
    "CDIResult",
    "CDIWarning",
    "compute_cdi",
    "rank_correlations",
    "reduction",
    "sample_errors",
    "spearman",
    "weighted_midranks",
    "weighted_spearman",
]
