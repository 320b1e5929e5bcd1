"""Coverage Disparity Index (CDI): does error depend on training coverage? (docs/METHODS.md, section
"Coverage Disparity Index").

Per-SCG error on the evaluation split is weighted by the same membership as the coverage; all the
evaluation needs from the training split travels in one :class:`SCGReference`, built once from the
training arrays by the trainer and the audit alike. An SCG is *valid* when its training coverage is
finite, its (class, subgroup) has at least ``min_train_n`` training samples (no coverage estimated
from 1-3 images) and its evaluation weight is at least ``min_weight``; :class:`CDIResult` counts what
each rule removes, in that order. Over the valid SCGs, :func:`compute_cdi` gives the CDI
``|Spearman(cov, e)|`` and its variants (signed, class-stratified, log-Pearson, support-weighted),
permutation p-values and a bootstrap CI; each formula is written where it is computed. Fewer than 3
valid SCGs, constant coverage or constant error give NaN and a :class:`CDIWarning`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata

from semcov_lib.sci.coverage import (
    MODES,
    CoverageError,
    Membership,
    Resampling,
    _sorted_by_cell,
    assign_strata,
    bootstrap_cell_sums,
    cell_index,
    cell_sums,
    cells_to_tks,
    check_labels,
    check_scores,
    check_subgroups,
    coverage_array,
    group_counts,
    median_thresholds,
)

LOG_EPS = 1e-3
MIN_VALID = 3
MIN_CLASS_SCGS = 4  # valid SCGs a class needs to enter cdi_within
ERRORS = ("hard", "soft")


class CDIWarning(UserWarning):
    """The CDI (or one of its variants) is undefined for these inputs; the value is NaN."""


# --------------------------------------------------------------------------- the training reference
def _name_tuple(given: Sequence[str] | None, n: int, what: str) -> tuple[str, ...]:
    if given is None:
        return tuple(str(i) for i in range(n))
    names = tuple(str(x) for x in given)
    if len(names) != n:
        raise CoverageError(f"{what}: {len(names)} names for {n} entries")
    return names


@dataclass(frozen=True, eq=False)
class SCGReference:
    """What an SCG evaluation needs from the training split, and the rules it applies.

    ``coverage`` (T, K, S) training coverage (NaN where undefined), ``group_counts`` (T, S)
    training samples per (class, subgroup) (``None``: unknown, so the ``min_train_n`` rule is not
    applied), ``class_counts`` (T,) training samples per class; names of classes, descriptors and
    subgroup levels; membership ``mode``/``tau``/``thresholds`` (hard mode: pass the *training*
    thresholds; :meth:`from_training` resolves ``"median"``); validity rules ``min_weight`` (m),
    ``min_train_n``; ``min_group_n`` for worst-group accuracy; ``error`` (``hard``|``soft``).
    Build it with :meth:`from_training` from the training arrays, or :meth:`from_dict` from a
    saved ``reference.json``.
    """

    coverage: np.ndarray
    group_counts: np.ndarray | None = None
    class_counts: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    descriptors: tuple[str, ...] | None = None
    subgroups: tuple[str, ...] | None = None
    mode: str = "soft"
    tau: float = 0.5
    thresholds: np.ndarray | None = None
    min_weight: float = 5.0
    min_train_n: int = 10
    min_group_n: int = 30
    error: str = "hard"

    def __post_init__(self) -> None:
        cov = np.asarray(self.coverage, dtype=np.float64)
        cov = cov[:, :, None] if cov.ndim == 2 else cov
        if cov.ndim != 3:
            raise CoverageError(f"reference coverage: expected a (T, K, S) array, got shape {cov.shape}")
        T, K, S = cov.shape
        fix = {"coverage": cov, "classes": _name_tuple(self.classes, T, "classes"),
               "descriptors": _name_tuple(self.descriptors, K, "descriptors"),
               "subgroups": _name_tuple(self.subgroups, S, "subgroup levels")}
        if self.group_counts is not None:
            gc = np.asarray(self.group_counts, dtype=np.int64)
            gc = gc[:, None] if gc.ndim == 1 else gc
            if gc.shape != (T, S):
                raise CoverageError(f"reference group_counts: expected shape {(T, S)}, got {gc.shape}")
            fix["group_counts"] = gc
        if self.class_counts is not None:
            fix["class_counts"] = np.asarray(self.class_counts, dtype=np.int64).reshape(T)
        elif self.group_counts is not None:
            fix["class_counts"] = fix["group_counts"].sum(axis=1)
        if self.thresholds is not None:
            fix["thresholds"] = np.asarray(self.thresholds, dtype=np.float64).reshape(K)
        if self.mode not in MODES:
            raise CoverageError(f"reference mode must be one of {MODES}, got {self.mode!r}")
        if self.error not in ERRORS:
            raise CoverageError(f"reference error must be one of {ERRORS}, got {self.error!r}")
        for key in ("min_weight", "min_train_n", "min_group_n"):
            value = getattr(self, key)
            if not np.isfinite(value) or value < 0:
                raise CoverageError(f"reference {key} must be a finite number >= 0, got {value!r}")
        for key, value in fix.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_training(cls, labels: np.ndarray, subgroups: np.ndarray | None, scores: np.ndarray,
                      classes: Sequence[str], descriptors: Sequence[str] | None = None,
                      subgroup_levels: Sequence[str] | None = None, **options: Any) -> "SCGReference":
        """The reference of a training split (class/subgroup indices, (N, K) scores, names).

        ``options`` are the rule fields (mode, tau, thresholds, min_weight, min_train_n, min_group_n,
        error); ``thresholds="median"`` becomes the training medians.
        """
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)}
                         - {"coverage", "group_counts", "class_counts", "classes", "descriptors", "subgroups"})
        if unknown:
            raise CoverageError(f"SCGReference: unknown option(s) {unknown}")
        T = len(classes)
        if subgroup_levels is None and subgroups is not None:  # unnamed levels 0..max
            subgroup_levels = [str(g) for g in range(int(np.max(subgroups, initial=0)) + 1)]
        S = 1 if subgroup_levels is None else len(subgroup_levels)
        a = check_scores(scores, names=None if descriptors is None else list(descriptors), where="training scores")
        if isinstance(options.get("thresholds"), str):
            if options["thresholds"] != "median":
                raise CoverageError(f"thresholds must be an array or 'median', got {options['thresholds']!r}")
            options["thresholds"] = median_thresholds(a)
        mode, tau = options.get("mode", "soft"), options.get("tau", 0.5)
        cov = coverage_array(labels, subgroups, a, T, S, Membership(mode, tau, options.get("thresholds")))
        counts = group_counts(labels, subgroups, T, S)
        return cls(coverage=cov, group_counts=counts, class_counts=counts.sum(axis=1), classes=classes,
                   descriptors=descriptors, subgroups=subgroup_levels, **options)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.coverage.shape  # type: ignore[return-value]

    @property
    def membership(self) -> Membership:
        """The membership rule (mode, tau, training thresholds) every split is weighted with."""
        return Membership(self.mode, self.tau, self.thresholds)

    def train_ok(self) -> np.ndarray:
        """(T, K, S) SCGs passing the training rules: finite coverage and N_cs >= min_train_n."""
        ok = np.isfinite(self.coverage)
        if self.group_counts is not None:
            ok &= (self.group_counts >= self.min_train_n)[:, None, :]
        return ok

    def replace(self, **changes: Any) -> "SCGReference":
        """A copy with some fields changed (e.g. ``min_weight=10``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN coverage -> None); :meth:`from_dict` reads it back."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = [None if isinstance(x, float) and not np.isfinite(x) else x for x in v.ravel().tolist()]
                v = {"shape": list(getattr(self, f.name).shape), "values": v}
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "reference") -> "SCGReference":
        """Inverse of :meth:`to_dict` (``where`` names the source in error messages)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "coverage" not in data:
            raise CoverageError(f"{where}: expected keys {sorted(known)}; unknown {unknown}, "
                                f"coverage {'present' if 'coverage' in data else 'missing'}")
        kw = {}
        for key, v in data.items():
            if isinstance(v, dict) and "shape" in v:
                v = np.array([np.nan if x is None else x for x in v["values"]], dtype=np.float64).reshape(v["shape"])
            kw[key] = v
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "SCGReference":
        """Read a ``reference.json`` written with :meth:`to_dict`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (a run folder writes reference.json)")
        return cls.from_dict(json.loads(path.read_text()), where=str(path))


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
    """Weighted Spearman: w-weighted Pearson of weighted mid-ranks; equal weights give Spearman exactly."""
    w = np.asarray(w, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        return float("nan")
    # ranks by weight, not count: an SCG backed by many evaluation samples moves the rank scale more
    return _pearson(weighted_midranks(x, w), weighted_midranks(y, w), w)


def rank_correlations(coverage: np.ndarray, error: np.ndarray, weight: np.ndarray | None = None) -> dict:
    """Signed Spearman, Pearson on log(cov + 1e-3) and weighted Spearman over the given SCGs."""
    cov, err = np.asarray(coverage, float), np.asarray(error, float)
    w = np.ones_like(cov) if weight is None else np.asarray(weight, float)
    return {
        "signed_rho": spearman(cov, err),
        "pearson_log": _pearson(np.log(cov + LOG_EPS), err),  # signed r(log(cov + 1e-3), e)
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


def _row_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) along each row of a (B, G) array, as ``rankdata(axis=1)``."""
    b, g = x.shape
    order = np.argsort(x, axis=1)
    xs = np.take_along_axis(x, order, axis=1)
    pos = np.broadcast_to(np.arange(g), (b, g))
    new = np.ones((b, g), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=1)  # first position of each tie group
    last_flag = np.ones((b, g), dtype=bool)
    last_flag[:, :-1] = new[:, 1:]
    last = np.minimum.accumulate(np.where(last_flag, pos, g)[:, ::-1], axis=1)[:, ::-1]  # its last position
    ranks = np.empty((b, g))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _masked_rank_pearson(rc: np.ndarray, re: np.ndarray, valid: np.ndarray, min_n: int) -> np.ndarray:
    """Pearson r of rank arrays over the valid entries of the last axis (ranks 1..n of the valid)."""
    n = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (n + 1) / 2.0  # ranks 1..n always average (n + 1) / 2
        dc = np.where(valid, rc - mean[..., None], 0.0)
        de = np.where(valid, re - mean[..., None], 0.0)
        sxx, syy = (dc * dc).sum(-1), (de * de).sum(-1)
        rho = (dc * de).sum(-1) / np.sqrt(sxx * syy)
    rho[(n < min_n) | (sxx <= 1e-12) | (syy <= 1e-12)] = np.nan
    return np.clip(rho, -1.0, 1.0)


def _row_spearman(cov: np.ndarray, err: np.ndarray, valid: np.ndarray, min_n: int = MIN_VALID) -> np.ndarray:
    """Spearman rho per row of (B, G) errors against the fixed coverage (G,) over valid entries.

    Coverage ranks come from :func:`_fixed_order_ranks`; errors of invalid entries are moved to
    +inf before ranking, so valid entries get exactly their average ranks among the valid ones.
    Rows then go through a masked Pearson correlation; NaN where fewer than ``min_n`` are valid
    or a variable is constant.
    """
    if cov.shape[0] == 0:
        return np.full(valid.shape[0], np.nan)
    rc = _fixed_order_ranks(cov, valid)
    re = _row_ranks(np.where(valid, err, np.inf))
    return _masked_rank_pearson(rc, re, valid, min_n)


def _row_within(cov: np.ndarray, err: np.ndarray, valid: np.ndarray, n_classes: int) -> np.ndarray:
    """Class-stratified rho per row: sum_c n_c rho_c / sum_c n_c over classes with >= 4 valid SCGs.

    SCGs are in flattened (T, K, S) order, so class c owns the contiguous block of P = G / T
    columns. One ranking serves every class: with the key ``c * span + value`` (span larger than
    any value range) a valid entry's global rank is its rank within its class plus the entries
    of earlier classes (all P c of them for the errors, whose invalid entries sit at the top of
    their class; the valid ones for the fixed coverage).
    """
    b, g = valid.shape
    per = g // n_classes
    cls = np.repeat(np.arange(n_classes), per)
    span_e = 2.0 + np.abs(np.where(valid, err, 0.0)).max(initial=0.0)
    re = _row_ranks(cls * 2 * span_e + np.where(valid, err, span_e)) - cls * per
    span_c = 2.0 + np.abs(np.nan_to_num(cov)).max(initial=0.0)
    rc = _fixed_order_ranks(cls * span_c + np.nan_to_num(cov), valid)
    n_c = valid.reshape(b, n_classes, per).sum(axis=2)
    before = np.cumsum(n_c, axis=1) - n_c  # valid entries of earlier classes
    rc = rc - np.repeat(before, per, axis=1)
    rho_c = _masked_rank_pearson(rc.reshape(b, n_classes, per), re.reshape(b, n_classes, per),
                                 valid.reshape(b, n_classes, per), MIN_CLASS_SCGS)
    ok = np.isfinite(rho_c)
    num = np.where(ok, n_c * np.nan_to_num(rho_c), 0.0).sum(axis=1)
    den = np.where(ok, n_c, 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _row_quantile(cov: np.ndarray, valid: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolation quantile (as ``np.quantile``) of the valid coverages of each row."""
    srt = np.sort(np.where(valid, cov[None, :], np.inf), axis=1)
    n = valid.sum(axis=1)
    h = (np.maximum(n, 1) - 1) * q
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    v_lo = np.take_along_axis(srt, lo[:, None], 1)[:, 0]
    v_hi = np.take_along_axis(srt, hi[:, None], 1)[:, 0]
    with np.errstate(invalid="ignore"):
        out = v_lo + (h - lo) * (v_hi - v_lo)
    return np.where(n > 0, np.where(hi == lo, v_lo, out), np.nan)


def scg_statistics(reference: SCGReference, num: np.ndarray, den: np.ndarray) -> dict[str, np.ndarray]:
    """The CDI family for each row of SCG error numerators/denominators (B, G), G = T*K*S flattened.

    Returns (B,) arrays: ``signed_rho``, ``within_signed``, ``tail_error``/``middle_error``/
    ``head_error`` (sum of numerators over sum of weights of the valid SCGs in each stratum, strata
    by quartiles of the row's valid coverages), ``n_valid``. The one vectorised path used by the
    bootstrap, the BCa jackknife and the paired comparison.
    """
    cov = reference.coverage.reshape(-1)
    valid = reference.train_ok().reshape(-1)[None, :] & (den >= reference.min_weight) & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(valid, num / np.where(valid, den, 1.0), 0.0)
    n = valid.sum(axis=1)
    out = {"signed_rho": _row_spearman(cov, err, valid),
           "within_signed": _row_within(cov, err, valid, reference.shape[0]), "n_valid": n}
    q25, q75 = _row_quantile(cov, valid, 0.25)[:, None], _row_quantile(cov, valid, 0.75)[:, None]
    tail = valid & (cov[None, :] <= q25)
    head = valid & ~tail & (cov[None, :] >= q75)
    for name, mask in (("tail", tail), ("middle", valid & ~tail & ~head), ("head", head)):
        w = np.where(mask, den, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{name}_error"] = np.where((w > 0) & (n >= MIN_VALID), np.where(mask, num, 0.0).sum(axis=1) / w,
                                            np.nan)
    return out


# --------------------------------------------------------------------------- permutation p-values
def _perm_rhos(rc: np.ndarray, re: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Pearson r of the ranks ``rc`` against ``n_perm`` permutations of the ranks ``re``, (n_perm,)."""
    dc, de = rc - rc.mean(), re - re.mean()
    scale = np.sqrt((dc * dc).sum() * (de * de).sum())
    perm = rng.permuted(np.tile(np.arange(len(re)), (n_perm, 1)), axis=1)
    return (de[perm] @ dc) / scale


def permutation_p_values(cov: np.ndarray, err: np.ndarray, class_of: np.ndarray, n_perm: int = 1000,
                         seed: int = 0) -> tuple[float, float]:
    """(p of the pooled rho, p of rho_within) over the given valid SCGs, permuting e_g.

    Pooled: e_g permuted among all SCGs; within: among the SCGs of each class (classes with >= 4
    SCGs and a defined rho_c, weighted by their size as in ``cdi_within``).
    p = (1 + #{|rho*| >= |rho|}) / (1 + n_perm); NaN when the statistic is undefined.
    """
    rng = np.random.default_rng(seed)
    tol = 1e-12

    def p_of(observed: float, null: np.ndarray) -> float:
        if not np.isfinite(observed) or n_perm == 0:
            return float("nan")
        return float((1 + np.sum(np.abs(null) >= abs(observed) - tol)) / (1 + n_perm))

    pooled = spearman(cov, err) if len(cov) >= MIN_VALID else float("nan")
    p_pooled = p_of(pooled, _perm_rhos(rankdata(cov), rankdata(err), n_perm, rng)) if np.isfinite(pooled) \
        else float("nan")
    num_obs, num_null, den = 0.0, np.zeros(n_perm), 0
    for c in np.unique(class_of):  # loop over classes
        m = class_of == c
        rho_c = spearman(cov[m], err[m]) if m.sum() >= MIN_CLASS_SCGS else float("nan")
        if not np.isfinite(rho_c):
            continue
        num_obs += m.sum() * rho_c
        num_null += m.sum() * _perm_rhos(rankdata(cov[m]), rankdata(err[m]), n_perm, rng)
        den += m.sum()
    p_within = p_of(num_obs / den, num_null / den) if den else float("nan")
    return p_pooled, p_within


# --------------------------------------------------------------------------- BCa interval
def bca_interval(boot: np.ndarray, estimate: float, jackknife: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval (Efron 1987), as ``scipy.stats.bootstrap``.

    Non-finite replicates / jackknife values are left out.
    """
    b = boot[np.isfinite(boot)]
    jack = jackknife[np.isfinite(jackknife)]
    if len(b) == 0 or not np.isfinite(estimate) or len(jack) < 2:
        return float("nan"), float("nan")
    # bias: z0 = Phi^-1(share of replicates below the estimate, ties counted half)
    z0 = ndtri(((b < estimate).sum() + (b <= estimate).sum()) / (2.0 * len(b)))
    # acceleration from the jackknife values J_i: a = sum d^3 / (6 (sum d^2)^1.5), d = mean_J - J_i
    d = jack.mean() - jack
    denom = 6.0 * (d * d).sum() ** 1.5
    accel = (d ** 3).sum() / denom if denom > 0 else 0.0
    alpha = (1 - ci) / 2
    out = []
    for q in (alpha, 1 - alpha):
        zq = ndtri(q)
        level = ndtr(z0 + (z0 + zq) / (1 - accel * (z0 + zq)))  # adjusted percentile of the replicates
        out.append(float(np.percentile(b, 100 * level)) if np.isfinite(level) else float("nan"))
    return out[0], out[1]


def _jackknife_cdi(reference: SCGReference, values: np.ndarray, cells: np.ndarray, max_groups: int,
                   rng: np.random.Generator) -> np.ndarray:
    """|rho| leaving out one evaluation sample at a time (or one of ``max_groups`` random groups)."""
    T, K, S = reference.shape
    n_cells, n = T * S, len(cells)
    groups = np.arange(n) if n <= max_groups else rng.permutation(n) % max_groups
    n_groups = int(groups.max(initial=-1)) + 1
    total = cell_sums(cells, values, n_cells)  # (n_cells, 2K)
    out = np.empty(n_groups)
    step = max(1, 2_000_000 // max(n_cells * 2 * K, 1))
    for g0 in range(0, n_groups, step):  # chunks of left-out groups
        g1 = min(n_groups, g0 + step)
        rows = np.flatnonzero((groups >= g0) & (groups < g1))
        part = cell_sums((groups[rows] - g0) * n_cells + cells[rows], values[rows], (g1 - g0) * n_cells)
        left = total[None] - part.reshape(g1 - g0, n_cells, 2 * K)
        num = cells_to_tks(left[..., :K], T, S).reshape(g1 - g0, -1)
        den = cells_to_tks(left[..., K:], T, S).reshape(g1 - g0, -1)
        out[g0:g1] = np.abs(scg_statistics(reference, num, den)["signed_rho"])
    return out


# --------------------------------------------------------------------------- result
@dataclass
class CDIResult:
    """CDI, its variants, p-values and CI, validity counts and the per-SCG table behind them."""

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
    cdi_within: float = float("nan")
    cdi_within_signed: float = float("nan")
    within_ci_low: float = float("nan")
    within_ci_high: float = float("nan")
    cdi_p: float = float("nan")
    cdi_within_p: float = float("nan")
    n_within_classes: int = 0
    n_removed_coverage: int = 0
    n_removed_train_n: int = 0
    n_removed_weight: int = 0
    min_train_n: int = 10
    n_perm: int = 0
    ci_method: str = "percentile"
    boot_within: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def to_dict(self) -> dict:
        """Scalar results as plain Python numbers (NaN stays NaN; JSON conversion is the caller's)."""
        floats = ("cdi", "signed_rho", "pearson_log", "weighted", "ci_low", "ci_high", "ci", "min_weight",
                  "cdi_within", "cdi_within_signed", "within_ci_low", "within_ci_high", "cdi_p", "cdi_within_p")
        ints = ("n_valid", "n_scgs", "n_boot", "n_within_classes", "n_removed_coverage", "n_removed_train_n",
                "n_removed_weight", "min_train_n", "n_perm")
        out = {k: float(getattr(self, k)) for k in floats}
        out.update({k: int(getattr(self, k)) for k in ints})
        out.update(error=self.error, ci_method=self.ci_method)
        return out


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


def evaluation_inputs(reference: SCGReference, labels: np.ndarray, subgroups: np.ndarray | None,
                      scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (labels, cells, membership weights with NaN -> 0) of an evaluation split."""
    T, K, S = reference.shape
    a = check_scores(scores, names=list(reference.descriptors), where="evaluation scores")
    if a.shape[1] != K:
        raise CoverageError(f"evaluation scores have {a.shape[1]} descriptors, the training coverage {K}")
    y = check_labels(labels, T)
    if len(y) != len(a):
        raise CoverageError(f"labels ({len(y)}) and evaluation scores ({len(a)}) differ in length")
    if subgroups is None and S > 1:
        raise CoverageError(f"subgroups is None but the training coverage has {S} subgroups; pass the "
                            "evaluation subgroup indices (or a (T, K) / (T, K, 1) coverage)")
    s = check_subgroups(subgroups, len(y), S)
    phi = reference.membership(a)
    return y, cell_index(y, s, S), np.where(np.isnan(phi), 0.0, phi)


def compute_cdi(
    reference: SCGReference,
    labels: np.ndarray,
    preds: np.ndarray | None,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    probs: np.ndarray | None = None,
    resampling: Resampling | None = None,
) -> CDIResult:
    """CDI family of predictions on an evaluation split against a training :class:`SCGReference`.

    ``labels``/``preds`` are class indices, ``subgroups`` indices into the reference's subgroup
    levels (``None`` for a single level), ``scores`` the (N, K) evaluation descriptor scores (NaN
    masked). ``preds`` may be ``None`` when ``probs`` are given (argmax).
    """
    rs = Resampling() if resampling is None else resampling
    T, K, S = reference.shape
    y, cells, wz = evaluation_inputs(reference, labels, subgroups, scores)
    err = sample_errors(y, preds, probs, T, reference.error)
    # e_g = sum_i w_ig err_i / sum_i w_ig: per-cell sums of (N, 2K) = numerator | denominator
    values = np.concatenate([wz * err[:, None], wz], axis=1)
    sums = cell_sums(cells, values, T * S)
    num, den = cells_to_tks(sums[:, :K], T, S), cells_to_tks(sums[:, K:], T, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    cov_train = reference.coverage
    train_ok = reference.train_ok()
    valid = train_ok & (den >= reference.min_weight) & (den > 0)
    counts = {"n_removed_coverage": int((~np.isfinite(cov_train)).sum()),
              "n_removed_train_n": int((np.isfinite(cov_train) & ~train_ok).sum()),
              "n_removed_weight": int((train_ok & ~valid).sum())}
    res = CDIResult(cdi=np.nan, signed_rho=np.nan, pearson_log=np.nan, weighted=np.nan, ci_low=np.nan,
                    ci_high=np.nan, n_valid=int(valid.sum()), per_scg=pd.DataFrame(), n_scgs=int(T * K * S),
                    n_boot=int(rs.n_boot), ci=float(rs.ci), min_weight=float(reference.min_weight),
                    error=reference.error, min_train_n=int(reference.min_train_n), n_perm=int(rs.n_perm),
                    ci_method=rs.ci_method, **counts)
    stratum = np.full(cov_train.shape, None, dtype=object)
    if res.n_valid < MIN_VALID:
        warnings.warn(
            f"CDI undefined: only {res.n_valid} valid SCG(s) (finite training coverage, >= "
            f"{reference.min_train_n} training samples in the (class, subgroup), evaluation weight >= "
            f"{reference.min_weight}); at least {MIN_VALID} are needed", CDIWarning, stacklevel=2)
    else:
        stratum = assign_strata(cov_train, reference=cov_train[valid])
        _fill_estimates(res, reference, e, den, valid, rs.seed)
        if rs.n_boot > 0 and np.isfinite(res.cdi):
            _fill_intervals(res, reference, values, cells, rs)
    res.per_scg = _per_scg_frame(reference, e, den, valid, stratum)
    return res


def _fill_estimates(res: CDIResult, reference: SCGReference, e: np.ndarray, den: np.ndarray,
                    valid: np.ndarray, seed: int) -> None:
    """Point estimates and permutation p-values over the valid SCGs (warn when undefined)."""
    cv, ev, wv = reference.coverage[valid], e[valid], den[valid]
    for what, values in (("training coverage", cv), ("evaluation error", ev)):
        if np.ptp(values) == 0:
            warnings.warn(f"CDI undefined: {what} is constant ({values[0]:.4g}) over the "
                          f"{res.n_valid} valid SCGs", CDIWarning, stacklevel=3)
            return
    corr = rank_correlations(cv, ev, wv)
    res.signed_rho, res.pearson_log = corr["signed_rho"], corr["pearson_log"]
    res.cdi, res.weighted = abs(res.signed_rho), abs(corr["weighted_rho"])  # CDI = |rho|; SCI predicts rho < 0
    # cdi_within = |sum_c n_c rho_c / sum_c n_c| over classes with >= 4 valid SCGs: the pooled rho
    # mixes a between-class relation (rare classes err more and keep valid SCGs mostly where
    # coverage is high) with the within-class SCI effect
    class_of = np.broadcast_to(np.arange(reference.shape[0])[:, None, None], valid.shape)[valid]
    within = _row_within(reference.coverage.reshape(-1), np.where(valid, e, 0.0).reshape(1, -1),
                         valid.reshape(1, -1), reference.shape[0])[0]
    res.cdi_within_signed, res.cdi_within = float(within), float(abs(within))
    sizes = np.bincount(class_of, minlength=reference.shape[0])
    res.n_within_classes = int(np.sum(sizes >= MIN_CLASS_SCGS))
    if res.n_perm > 0:
        res.cdi_p, res.cdi_within_p = permutation_p_values(cv, ev, class_of, res.n_perm, seed)


def _fill_intervals(res: CDIResult, reference: SCGReference, values: np.ndarray, cells: np.ndarray,
                    rs: Resampling) -> None:
    """Bootstrap replicates of |rho| and |rho_within| and their intervals.

    Evaluation samples are resampled with replacement and validity is re-evaluated in every
    replicate. Evaluation noise attenuates |rho|, so the interval describes the CDI at this
    evaluation size, not the noise-free relation (``bench/bench_cdi.py --calibration``).
    """
    T, K, S = reference.shape
    rng = np.random.default_rng(rs.seed)
    order, bounds = _sorted_by_cell(cells, T * S)
    active = (reference.train_ok().any(axis=1)).reshape(T * S)  # cells holding a possibly valid SCG
    sums = bootstrap_cell_sums(values[order], bounds, rs.n_boot, rng, active=active)
    num = cells_to_tks(sums[..., :K], T, S).reshape(rs.n_boot, -1)
    den = cells_to_tks(sums[..., K:], T, S).reshape(rs.n_boot, -1)
    stats = scg_statistics(reference, num, den)
    res.boot, res.boot_within = np.abs(stats["signed_rho"]), np.abs(stats["within_signed"])
    if rs.ci_method == "bca":  # acceleration from leave-one-out (or one of max_jackknife groups)
        jack = _jackknife_cdi(reference, values, cells, rs.max_jackknife, rng)
        res.ci_low, res.ci_high = bca_interval(res.boot, res.cdi, jack, rs.ci)
    else:
        res.ci_low, res.ci_high = _percentile_ci(res.boot, rs.ci)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CDIWarning)
        res.within_ci_low, res.within_ci_high = _percentile_ci(res.boot_within, rs.ci)


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


def _per_scg_frame(reference: SCGReference, err, weight, valid, stratum) -> pd.DataFrame:
    """One row per SCG in (T, K, S) order: names, indices, coverage, n_cs, error, weight, validity."""
    cov = reference.coverage
    T, K, S = cov.shape
    ci, ki, si = (x.ravel() for x in np.meshgrid(np.arange(T), np.arange(K), np.arange(S), indexing="ij"))
    n_cs = reference.group_counts[ci, si] if reference.group_counts is not None else np.full(len(ci), -1)
    return pd.DataFrame({
        "class": np.asarray(reference.classes, dtype=object)[ci],
        "class_idx": ci,
        "descriptor": np.asarray(reference.descriptors, dtype=object)[ki],
        "descriptor_idx": ki,
        "subgroup": np.asarray(reference.subgroups, dtype=object)[si],
        "subgroup_idx": si,
        "coverage": cov.ravel(),
        "n_cs": n_cs,
        "error": err.ravel(),
        "weight": weight.ravel(),
        "valid": valid.ravel(),
        "stratum": stratum.ravel(),
    })


__all__ = [
    "CDIResult",
    "CDIWarning",
    "Resampling",
    "SCGReference",
    "bca_interval",
    "compute_cdi",
    "evaluation_inputs",
    "permutation_p_values",
    "rank_correlations",
    "reduction",
    "sample_errors",
    "scg_statistics",
    "spearman",
    "weighted_midranks",
    "weighted_spearman",
]
