"""Semantic Coverage Imbalance (SCI) analysis on the training split (docs/METHODS.md, section "Coverage").

A Semantic Coverage Group (SCG) is g = (class c, descriptor k, subgroup s). Sample i belongs to
g with weight ``w_ig = 1[y_i=c] 1[s_i=s] phi(a_ik)``, where ``phi(a) = a`` (soft, default) or
``1[a >= tau]`` (hard; ``tau`` = 0.5 or the per-descriptor training median). A NaN score means
"not observed": it is masked, never counted as 0, so the denominator of a coverage is the number of
samples of (c, s) whose descriptor k was observed.

``support n_g = sum_i w_ig`` and ``coverage cov_g = n_g / N_cs`` (NaN where N_cs = 0). The
(class, descriptor) variant is the same computation with a single subgroup (``subgroups=None``).

Everything is vectorised: a sample falls in exactly one (class, subgroup) *cell*, so every sum
over an SCG is a per-cell sum of per-sample K-vectors (``np.bincount``), and bootstrap or
permutation replicates are per-cell sums of resampled rows (matrix products on counts).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import false_discovery_control
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:  # pragma: no cover
    from semcov_lib.data.table import SCITable

STRATA = ("Tail", "Middle", "Head")
MODES = ("soft", "hard")


CI_METHODS = ("percentile", "bca")
MAX_BLOCK = 4_000_000  # replicate x row entries per block of the resampling engine (memory bound)


class CoverageError(ValueError):
    """Inputs of a coverage computation are malformed (the message names what and where)."""


@dataclass(frozen=True, eq=False)
class Membership:
    """How a descriptor score becomes SCG membership: phi(a) = a (soft) or 1[a >= threshold] (hard).

    ``thresholds``: None (``tau`` for every descriptor), a (K,) array, or ``"median"``; see
    :func:`membership`.
    """

    mode: str = "soft"
    tau: float = 0.5
    thresholds: np.ndarray | str | None = None

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return membership(scores, self.mode, self.tau, self.thresholds)


@dataclass(frozen=True)
class Resampling:
    """Bootstrap and permutation settings: replicates, seed, CI level and method (coverage and CDI)."""

    n_boot: int = 1000
    n_perm: int = 1000
    seed: int = 0
    ci: float = 0.95
    ci_method: str = "percentile"
    max_jackknife: int = 2000  # BCa: leave-one-out up to this many samples, groups above

    def __post_init__(self) -> None:
        if not 0 < self.ci < 1:
            raise CoverageError(f"ci must be in (0, 1), got {self.ci}")
        if self.ci_method not in CI_METHODS:
            raise CoverageError(f"ci_method must be one of {CI_METHODS}, got {self.ci_method!r}")
        if self.n_boot < 0 or self.n_perm < 0:
            raise CoverageError(f"n_boot and n_perm must be >= 0, got {self.n_boot}, {self.n_perm}")


# --------------------------------------------------------------------------- input checks
def check_scores(scores: np.ndarray, names: Sequence[str] | None = None, where: str = "descriptor scores") -> np.ndarray:
    """Return ``scores`` as a float64 (N, K) array; raise if a value is infinite or outside [0, 1]."""
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise CoverageError(f"{where}: expected an (N, K) array, got shape {a.shape}")
    bad = np.isinf(a) | (a < 0) | (a > 1)  # NaN compares False: allowed (= not observed)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = names[col] if names is not None and col < len(names) else f"#{col}"
        hint = ""
        if np.any(np.isfinite(a) & (a < 0)):
            hint = "; for a -1/+1 sign convention rescale with (a + 1) / 2"
        raise CoverageError(
            f"{where}: descriptor {name!r} holds {a[row, col]!r} (row {row}), outside [0, 1] "
            f"({int(bad[:, col].sum())} such values){hint}"
        )
    return a


def check_labels(labels: np.ndarray, n_classes: int, what: str = "labels") -> np.ndarray:
    """Return integer class indices; raise when a value is not an index into the class list."""
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise CoverageError(f"{what}: expected a 1-D array, got shape {raw.shape}")
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            bad = raw[~np.isfinite(raw) | (raw != np.round(raw))][0]
            raise CoverageError(f"{what}: {bad!r} is not a class index")
    elif raw.dtype.kind not in "iub":
        raise CoverageError(f"{what}: expected integer class indices, got dtype {raw.dtype}")
    out = raw.astype(np.int64)
    outside = (out < 0) | (out >= n_classes)
    if outside.any():
        raise CoverageError(
            f"{what}: value {out[outside][0]} is not in the class list (expected 0..{n_classes - 1}; "
            f"{int(outside.sum())} such rows)"
        )
    return out


def check_subgroups(subgroups: np.ndarray | None, n: int, n_subgroups: int) -> np.ndarray:
    """Subgroup indices (``None`` = one subgroup, all zeros)."""
    if n_subgroups < 1:
        raise CoverageError(f"n_subgroups must be >= 1, got {n_subgroups}")
    if subgroups is None:
        return np.zeros(n, dtype=np.int64)
    out = check_labels(subgroups, n_subgroups, what="subgroups")
    if len(out) != n:
        raise CoverageError(f"subgroups: {len(out)} values for {n} samples")
    return out


def _check_lengths(labels: np.ndarray, scores: np.ndarray) -> None:
    if len(labels) != len(scores):
        raise CoverageError(f"labels ({len(labels)}) and descriptor scores ({len(scores)}) differ in length")


# --------------------------------------------------------------------------- membership
def median_thresholds(scores: np.ndarray) -> np.ndarray:
    """Per-descriptor median of the observed scores (hard membership with a data-driven tau)."""
    a = check_scores(scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN threshold
        return np.nanmedian(a, axis=0) if len(a) else np.full(a.shape[1], np.nan)


def membership(
    scores: np.ndarray,
    mode: str = "soft",
    tau: float = 0.5,
    thresholds: np.ndarray | str | None = None,
) -> np.ndarray:
    """phi(a) per sample and descriptor, (N, K) float64 with NaN kept where a is NaN.

    ``mode="soft"``: phi(a) = a. ``mode="hard"``: phi(a) = 1[a >= threshold] with the threshold
    ``tau`` for every descriptor, or ``thresholds`` ((K,) array, or ``"median"`` for the
    per-descriptor median of these scores; pass the *training* medians when scoring other splits).
    """
    a = check_scores(scores)
    if mode == "soft":
        return a
    if mode != "hard":
        raise CoverageError(f"mode must be one of {MODES}, got {mode!r}")
    if thresholds is None:
        thr = np.full(a.shape[1], float(tau))
    elif isinstance(thresholds, str):
        if thresholds != "median":
            raise CoverageError(f"thresholds must be an array or 'median', got {thresholds!r}")
        thr = median_thresholds(a)
    else:
        thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if thr.shape != (a.shape[1],):
            raise CoverageError(f"thresholds: expected {a.shape[1]} values, got {thr.shape[0]}")
    with np.errstate(invalid="ignore"):
        phi = (a >= thr[None, :]).astype(np.float64)
    phi[np.isnan(a)] = np.nan
    return phi


# --------------------------------------------------------------------------- cell sums
def cell_index(labels: np.ndarray, subgroups: np.ndarray, n_subgroups: int) -> np.ndarray:
    """Flat (class, subgroup) cell of each sample: ``c * S + s``."""
    return labels * n_subgroups + subgroups


def cell_sums(cells: np.ndarray, values: np.ndarray, n_cells: int) -> np.ndarray:
    """Per-cell column sums of ``values`` (N, M) -> (n_cells, M), one vectorised ``bincount``."""
    values = np.asarray(values, dtype=np.float64)
    n, m = values.shape
    if n == 0:
        return np.zeros((n_cells, m))
    keys = (cells[:, None] * m + np.arange(m)[None, :]).ravel()
    return np.bincount(keys, weights=values.ravel(), minlength=n_cells * m).reshape(n_cells, m)


def cells_to_tks(x: np.ndarray, n_classes: int, n_subgroups: int) -> np.ndarray:
    """(..., T*S, K) per-cell array -> (..., T, K, S) SCG array."""
    lead = x.shape[:-2]
    k = x.shape[-1]
    return np.moveaxis(x.reshape(*lead, n_classes, n_subgroups, k), -1, -2)


def _checked_indices(labels, subgroups, a: np.ndarray, n_classes: int, n_subgroups: int):
    """Validated (labels, subgroups) index arrays for the checked (N, K) scores ``a``."""
    labels = check_labels(labels, n_classes)
    _check_lengths(labels, a)
    return labels, check_subgroups(subgroups, len(labels), n_subgroups)


def _membership_columns(phi: np.ndarray) -> np.ndarray:
    """(N, 2K) = phi with NaN -> 0 | observed indicator: their cell sums are support | N_cs."""
    obs = ~np.isnan(phi)
    return np.concatenate([np.where(obs, phi, 0.0), obs], axis=1)


def _ratio(support: np.ndarray, n_obs: np.ndarray) -> np.ndarray:
    """cov = support / N_cs, NaN where N_cs (observed) is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_obs > 0, support / np.maximum(n_obs, 1), np.nan)


def _coverage_of_sums(sums: np.ndarray, k: int, n_classes: int, n_subgroups: int) -> np.ndarray:
    """(..., T*S, 2K) cell sums of :func:`_membership_columns` -> (..., T, K, S) coverage."""
    return _ratio(cells_to_tks(sums[..., :k], n_classes, n_subgroups),
                  cells_to_tks(sums[..., k:], n_classes, n_subgroups))


def _parts(labels, subgroups, scores, n_classes: int, n_subgroups: int, rule: Membership):
    """Validated inputs -> (support (T,K,S), observed counts (T,K,S), group counts (T,S))."""
    scores = check_scores(scores)
    labels, subgroups = _checked_indices(labels, subgroups, scores, n_classes, n_subgroups)
    cells = cell_index(labels, subgroups, n_subgroups)
    sums = cell_sums(cells, _membership_columns(rule(scores)), n_classes * n_subgroups)
    k = scores.shape[1]
    support = cells_to_tks(sums[:, :k], n_classes, n_subgroups)
    n_obs = cells_to_tks(sums[:, k:], n_classes, n_subgroups)
    groups = np.bincount(cells, minlength=n_classes * n_subgroups).reshape(n_classes, n_subgroups)
    return support, n_obs, groups


def coverage_array(
    labels: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    n_classes: int,
    n_subgroups: int = 1,
    rule: Membership = Membership(),
) -> np.ndarray:
    """Coverage cov_g = n_g / N_cs as a (T, K, S) array, NaN where N_cs (observed) is 0."""
    support, n_obs, _ = _parts(labels, subgroups, scores, n_classes, n_subgroups, rule)
    return _ratio(support, n_obs)


def support_array(
    labels: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    n_classes: int,
    n_subgroups: int = 1,
    rule: Membership = Membership(),
) -> np.ndarray:
    """Support n_g = sum_i w_ig as a (T, K, S) array, NaN where N_cs (observed) is 0."""
    support, n_obs, _ = _parts(labels, subgroups, scores, n_classes, n_subgroups, rule)
    return np.where(n_obs > 0, support, np.nan)


def observed_counts(
    labels: np.ndarray, subgroups: np.ndarray | None, scores: np.ndarray, n_classes: int, n_subgroups: int = 1
) -> np.ndarray:
    """N_cs per descriptor: samples of (c, s) whose descriptor k is observed, (T, K, S) int."""
    _, n_obs, _ = _parts(labels, subgroups, scores, n_classes, n_subgroups, Membership())
    return n_obs.astype(np.int64)


def group_counts(labels: np.ndarray, subgroups: np.ndarray | None, n_classes: int, n_subgroups: int = 1) -> np.ndarray:
    """Samples per (class, subgroup), (T, S) int."""
    labels = check_labels(labels, n_classes)
    subgroups = check_subgroups(subgroups, len(labels), n_subgroups)
    cells = cell_index(labels, subgroups, n_subgroups)
    return np.bincount(cells, minlength=n_classes * n_subgroups).reshape(n_classes, n_subgroups)


def prevalence(scores: np.ndarray, rule: Membership = Membership()) -> np.ndarray:
    """Global prevalence pi_k = mean over observed samples of phi(a_ik), (K,) (NaN if never observed)."""
    phi = rule(scores)
    obs = ~np.isnan(phi)
    n = obs.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(obs, phi, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


# --------------------------------------------------------------------------- strata
def strata_thresholds(coverage: np.ndarray) -> tuple[float, float]:
    """(Q25, Q75) of the finite values of ``coverage`` (NaN, NaN when there are none)."""
    values = np.asarray(coverage, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    q25, q75 = np.quantile(values, [0.25, 0.75])
    return float(q25), float(q75)


def assign_strata(coverage: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Tail (cov <= Q25) / Head (cov >= Q75) / Middle, quartiles of ``reference`` (default: itself).

    Tail wins when Q25 == Q75. Non-finite coverage gets ``None``. Returns an object array shaped
    like ``coverage``.
    """
    cov = np.asarray(coverage, dtype=np.float64)
    q25, q75 = strata_thresholds(cov if reference is None else reference)
    out = np.full(cov.shape, None, dtype=object)
    finite = np.isfinite(cov)
    if np.isnan(q25):
        return out
    out[finite] = "Middle"
    out[finite & (cov >= q75)] = "Head"
    out[finite & (cov <= q25)] = "Tail"
    return out


# --------------------------------------------------------------------------- tidy table
def _names(names: Sequence[str] | int | None, n: int, what: str) -> list[str]:
    if names is None or isinstance(names, (int, np.integer)):
        return [str(i) for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise CoverageError(f"{what}: {len(names)} names for {n} entries")
    return names


def coverage_table(
    labels: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    classes: Sequence[str] | int,
    descriptors: Sequence[str] | None = None,
    subgroup_levels: Sequence[str] | None = None,
    membership: Membership = Membership(),
) -> pd.DataFrame:
    """One row per SCG (class, descriptor, subgroup), in (T, K, S) C-order.

    Columns: class, class_idx, descriptor, descriptor_idx, subgroup, subgroup_idx, n_cs (samples of
    the cell), n_obs (those with the descriptor observed: the coverage denominator), support (n_g),
    coverage, prevalence (pi_k), excess (D_g = cov_g - pi_k), stratum (Tail/Middle/Head by quartiles
    of the finite coverages; missing where coverage is NaN).
    """
    n_classes = classes if isinstance(classes, (int, np.integer)) else len(classes)
    a = check_scores(scores, names=None if descriptors is None else list(descriptors))
    n_sub = 1 if subgroup_levels is None and subgroups is None else (
        len(subgroup_levels) if subgroup_levels is not None else int(np.max(subgroups, initial=-1)) + 1)
    class_names = _names(classes, n_classes, "classes")
    desc_names = _names(descriptors, a.shape[1], "descriptors")
    sub_names = list(subgroup_levels) if subgroup_levels is not None else (
        ["all"] if subgroups is None else [str(i) for i in range(n_sub)])
    support, n_obs, groups = _parts(labels, subgroups, a, n_classes, max(n_sub, 1), membership)
    cov = _ratio(support, n_obs)
    pi = prevalence(a, membership)
    T, K, S = cov.shape
    ci, ki, si = (x.ravel() for x in np.meshgrid(np.arange(T), np.arange(K), np.arange(S), indexing="ij"))
    frame = pd.DataFrame({
        "class": np.asarray(class_names, dtype=object)[ci],
        "class_idx": ci,
        "descriptor": np.asarray(desc_names, dtype=object)[ki],
        "descriptor_idx": ki,
        "subgroup": np.asarray(sub_names, dtype=object)[si],
        "subgroup_idx": si,
        "n_cs": groups[ci, si],
        "n_obs": n_obs.ravel().astype(np.int64),
        "support": np.where(n_obs > 0, support, np.nan).ravel(),
        "coverage": cov.ravel(),
        "prevalence": pi[ki],
        "excess": cov.ravel() - pi[ki],
        "stratum": assign_strata(cov.ravel()),
    })
    return frame


def table_coverage(
    table: "SCITable",
    split: str = "train",
    by_subgroup: bool = True,
    membership: Membership = Membership(),
    subgroup_levels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`coverage_table` of one split of an :class:`SCITable` (subgroup levels of the whole table)."""
    part = table.split(split)
    if len(part) == 0:
        raise CoverageError(f"{table._where()}: split {split!r} has no rows")
    levels, codes = None, None  # by_subgroup=False: one pooled level, "all"
    if by_subgroup:
        levels = table.subgroup_levels() if subgroup_levels is None else list(subgroup_levels)
        codes = part.subgroup_codes(levels)
    return coverage_table(part.labels(), codes, part.scores(), table.classes, table.descriptors, levels, membership)


# --------------------------------------------------------------------------- resampling engine
def _sorted_by_cell(cells: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable order grouping samples by cell, and the cell boundaries in that order (n_cells + 1,)."""
    order = np.argsort(cells, kind="stable")
    bounds = np.searchsorted(cells[order], np.arange(n_cells + 1))
    return order, bounds


def bootstrap_cell_sums(
    values: np.ndarray,
    bounds: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    strata: np.ndarray | None = None,
    active: np.ndarray | None = None,
    max_block: int = MAX_BLOCK,
) -> np.ndarray:
    """Per-cell sums of ``values`` over ``n_boot`` bootstrap resamples, (n_boot, n_cells, M).

    ``values`` (N, M) are sorted by cell (cell j = rows ``bounds[j]:bounds[j+1]``). Resampling is
    with replacement within each stratum of cells (``strata[j]``; default one stratum: the plain
    bootstrap of all rows), drawn exactly: the number of draws landing in each cell of a stratum is
    multinomial, then the draws inside a cell are uniform over its rows. The per-row counts of a
    replicate come from a ``bincount`` and the sums from one matrix product per cell and block, so
    the cost is O(n_boot * N) 16-bit integer draws and no Python loop over SCGs or samples. Sums
    are accumulated in float32 (counts are exact; relative rounding ~1e-7 is irrelevant to a CI).
    Cells with ``active[j] == False`` are skipped (their sums are 0).
    """
    values = np.asarray(values, dtype=np.float64)
    n_cells = len(bounds) - 1
    n = np.diff(bounds)
    strata = np.zeros(n_cells, dtype=np.int64) if strata is None else np.asarray(strata)
    active = np.ones(n_cells, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    draws = np.zeros((n_boot, n_cells), dtype=np.int64)
    for h in np.unique(strata):  # a handful of strata (classes), not SCGs
        cells = np.flatnonzero((strata == h) & (n > 0))
        total = int(n[cells].sum())
        if total == 0:
            continue
        if len(cells) == 1:
            draws[:, cells[0]] = total
        else:
            draws[:, cells] = rng.multinomial(total, n[cells] / total, size=n_boot)
    out = np.zeros((n_boot, n_cells, values.shape[1]))
    with threadpool_limits(1, user_api="blas"):  # small products: threads only add overhead
        _accumulate(out, values, bounds, draws, np.flatnonzero(active & (n > 0)), rng, max_block)
    return out


def _accumulate(out, values, bounds, draws, cells, rng, max_block) -> None:
    """Fill ``out[:, j]`` with the resampled sums of cell j for every cell in ``cells``."""
    n_boot = out.shape[0]
    for j in cells:  # loop over (class, subgroup) cells
        nj = int(bounds[j + 1] - bounds[j])
        block = values[bounds[j]:bounds[j + 1]].astype(np.float32)
        dtype = np.uint16 if nj <= np.iinfo(np.uint16).max else np.int64
        step = max(1, min(n_boot, max_block // nj))
        for b0 in range(0, n_boot, step):
            b1 = min(n_boot, b0 + step)
            m = draws[b0:b1, j]
            idx = rng.integers(0, nj, size=int(m.sum()), dtype=dtype)
            if nj >= 512:
                # large cell: one small bincount per replicate (fits in cache, no offset arrays)
                ends = np.cumsum(m)
                counts = np.empty((b1 - b0, nj), dtype=np.float32)
                for r, (lo, hi) in enumerate(zip(ends - m, ends)):
                    counts[r] = np.bincount(idx[lo:hi], minlength=nj)
            else:
                # small cell: one bincount over the block with a per-replicate offset
                keys = idx.astype(np.intp) + np.repeat(np.arange(b1 - b0, dtype=np.intp) * nj, m)
                counts = np.bincount(keys, minlength=(b1 - b0) * nj).reshape(b1 - b0, nj).astype(np.float32)
            out[b0:b1, j] = counts @ block


# --------------------------------------------------------------------------- statistical controls
def across_class_variance(coverage: np.ndarray) -> np.ndarray:
    """Mean over (descriptor, subgroup) of the variance across classes of coverage.

    ``coverage`` is (..., T, K, S); classes with NaN coverage are left out, and (k, s) pairs with
    fewer than two finite classes do not count. Returns the leading shape (a float for one table).
    """
    cov = np.asarray(coverage, dtype=np.float64)
    finite = np.isfinite(cov)
    cnt = finite.sum(axis=-3)
    x = np.where(finite, cov, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=-3) / cnt
        var = np.where(finite, (x - np.expand_dims(mean, -3)) ** 2, 0.0).sum(axis=-3) / cnt
        ok = cnt >= 2
        return np.where(ok, var, 0.0).sum(axis=(-2, -1)) / ok.sum(axis=(-2, -1))


@dataclass
class PermutationResult:
    """Observed across-class coverage variance against its label-permutation null."""

    statistic: float
    null: np.ndarray = field(repr=False)
    p_value: float
    n_perm: int
    within_subgroup: bool

    def to_dict(self) -> dict:
        null = self.null[np.isfinite(self.null)]
        return {
            "statistic": float(self.statistic),
            "p_value": float(self.p_value),
            "n_perm": int(self.n_perm),
            "within_subgroup": bool(self.within_subgroup),
            "null_mean": float(null.mean()) if len(null) else float("nan"),
            "null_q95": float(np.quantile(null, 0.95)) if len(null) else float("nan"),
        }


def permutation_test(
    labels: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    n_classes: int,
    n_subgroups: int = 1,
    resampling: Resampling = Resampling(),
    membership: Membership = Membership(),
    within_subgroup: bool = True,
) -> PermutationResult:
    """Is coverage more unequal across classes than chance? Shuffle y, keep a (and s).

    Statistic: :func:`across_class_variance` of the coverage table; null: the same statistic after
    ``resampling.n_perm`` label permutations (seed ``resampling.seed``), within each subgroup by
    default, which keeps every N_cs fixed.
    """
    a = check_scores(scores)
    observed, null = _permutation_null(labels, subgroups, a, (n_classes, n_subgroups), resampling, membership,
                                       within_subgroup, across_class_variance)
    valid = np.isfinite(null)
    # p = (1 + #{null >= observed}) / (1 + n_perm), with a relative tolerance for float ties
    p = (1.0 + np.sum(null[valid] >= observed * (1 - 1e-12))) / (1.0 + valid.sum()) if np.isfinite(observed) else np.nan
    return PermutationResult(float(observed), null, float(p), int(resampling.n_perm), bool(within_subgroup))


def across_class_variance_by_descriptor(coverage: np.ndarray) -> np.ndarray:
    """:func:`across_class_variance` of each descriptor alone (mean over subgroups), (..., K)."""
    cov = np.asarray(coverage, dtype=np.float64)
    return np.stack([across_class_variance(cov[..., k:k + 1, :]) for k in range(cov.shape[-2])], axis=-1)


def descriptor_permutation_tests(
    labels: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    n_classes: int,
    n_subgroups: int = 1,
    resampling: Resampling = Resampling(),
    membership: Membership = Membership(),
    descriptors: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One label-permutation test per descriptor, with Benjamini-Hochberg adjusted p-values.

    Statistic of descriptor k: across-class variance of its coverage (mean over subgroups); null
    from the same label permutations (within subgroups) for every descriptor. Columns:
    descriptor, statistic, null_mean, p_value, q_value (BH, ``scipy.stats.false_discovery_control``),
    significant (q < 0.05).
    """
    a = check_scores(scores)
    observed, null = _permutation_null(labels, subgroups, a, (n_classes, n_subgroups), resampling, membership,
                                       True, across_class_variance_by_descriptor)
    with np.errstate(invalid="ignore"):
        exceed = np.where(np.isfinite(null), null >= observed[None, :] * (1 - 1e-12), False).sum(axis=0)
    n_ok = np.isfinite(null).sum(axis=0)
    p = np.where(np.isfinite(observed), (1.0 + exceed) / (1.0 + n_ok), np.nan)
    q = np.full_like(p, np.nan)
    if np.isfinite(p).any():
        q[np.isfinite(p)] = false_discovery_control(p[np.isfinite(p)], method="bh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        null_mean = np.nanmean(null, axis=0)
    return pd.DataFrame({"descriptor": _names(descriptors, a.shape[1], "descriptors"), "statistic": observed,
                         "null_mean": null_mean, "p_value": p, "q_value": q, "significant": q < 0.05})


def _permutation_null(labels, subgroups, a: np.ndarray, shape: tuple[int, int], resampling: Resampling,
                      membership: Membership, within_subgroup: bool, statistic):
    """(statistic of the coverage, statistics of ``n_perm`` label-permuted coverages)."""
    n_classes, n_subgroups = shape
    labels, subgroups = _checked_indices(labels, subgroups, a, n_classes, n_subgroups)
    support, n_obs, _ = _parts(labels, subgroups, a, n_classes, n_subgroups, membership)
    observed = statistic(_ratio(support, n_obs))
    values = _membership_columns(membership(a))  # (N, 2K)
    strata = subgroups if within_subgroup else np.zeros_like(subgroups)
    rng = np.random.default_rng(resampling.seed)
    n_perm = resampling.n_perm
    null = np.empty((n_perm,) + np.shape(observed))
    # Sort by (stratum, class): a permutation shuffles a stratum's rows into its fixed class
    # blocks, so the per-(replicate, cell) sums are one sparse assignment matrix times the rows.
    order = np.lexsort((labels, strata))
    lab, sub, strat, vals = labels[order], subgroups[order], strata[order], values[order]
    n_strata = int(strat.max(initial=-1)) + 1
    sb = np.searchsorted(strat, np.arange(n_strata + 1))
    n_cells, m = n_classes * n_subgroups, values.shape[1]
    step = max(1, min(n_perm, MAX_BLOCK // max(len(lab) * m, 1)))
    for b0 in range(0, n_perm, step):
        b1 = min(n_perm, b0 + step)
        nb = b1 - b0
        sums = np.zeros((nb, n_cells, m))
        for h in range(n_strata):  # strata = subgroups (or one), not SCGs
            lo, hi = sb[h], sb[h + 1]
            if hi == lo:
                continue
            n_h = hi - lo
            perm = rng.permuted(np.tile(np.arange(n_h), (nb, 1)), axis=1)  # (nb, n_h) local row ids
            # position p of the stratum keeps its class label and receives row perm[b, p]
            starts = np.flatnonzero(np.r_[True, lab[lo + 1:hi] != lab[lo:hi - 1]])
            if within_subgroup:
                # replicate b, class block j sums rows perm[b, starts[j]:starts[j+1]]: one CSR product
                indptr = np.r_[(np.arange(nb)[:, None] * n_h + starts[None, :]).ravel(), nb * n_h]
                assign = sparse.csr_matrix((np.ones(nb * n_h), perm.ravel(), indptr), shape=(nb * len(starts), n_h))
                blocks = (assign @ vals[lo:hi]).reshape(nb, len(starts), m)
                sums[:, lab[lo + starts] * n_subgroups + h] += blocks
            else:
                # the subgroup travels with the row: cell = (class of the position, subgroup of the row)
                rows = (np.arange(nb)[:, None] * n_cells + lab[lo:hi] * n_subgroups + sub[lo:hi][perm]).ravel()
                assign = sparse.coo_matrix((np.ones(nb * n_h), (rows, perm.ravel())), shape=(nb * n_cells, n_h))
                sums += (assign.tocsr() @ vals[lo:hi]).reshape(nb, n_cells, m)
        null[b0:b1] = statistic(_coverage_of_sums(sums, a.shape[1], n_classes, n_subgroups))
    return observed, null


def bootstrap_coverage_ci(
    labels: np.ndarray,
    subgroups: np.ndarray | None,
    scores: np.ndarray,
    n_classes: int,
    n_subgroups: int = 1,
    resampling: Resampling = Resampling(),
    membership: Membership = Membership(),
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI (level ``resampling.ci``) of every cov_g, resampling samples within each class.

    Class sizes stay fixed; subgroup composition and descriptor values vary. Returns (low, high),
    each (T, K, S), NaN where the coverage is undefined.
    """
    a = check_scores(scores)
    labels, subgroups = _checked_indices(labels, subgroups, a, n_classes, n_subgroups)
    values = _membership_columns(membership(a))
    n_cells = n_classes * n_subgroups
    order, bounds = _sorted_by_cell(cell_index(labels, subgroups, n_subgroups), n_cells)
    strata = np.repeat(np.arange(n_classes), n_subgroups)  # cell j = c * S + s belongs to class c
    sums = bootstrap_cell_sums(values[order], bounds, resampling.n_boot, np.random.default_rng(resampling.seed),
                               strata=strata)
    cov = _coverage_of_sums(sums, a.shape[1], n_classes, n_subgroups)  # (n_boot, T, K, S)
    alpha = (1 - resampling.ci) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(cov, [alpha, 1 - alpha], axis=0)
    return low, high


__all__ = [
    "MAX_BLOCK",
    "STRATA",
    "CoverageError",
    "Membership",
    "PermutationResult",
    "Resampling",
    "across_class_variance",
    "assign_strata",
    "bootstrap_cell_sums",
    "bootstrap_coverage_ci",
    "cell_index",
    "cell_sums",
    "across_class_variance_by_descriptor",
    "cells_to_tks",
    "check_labels",
    "check_scores",
    "check_subgroups",
    "coverage_array",
    "coverage_table",
    "descriptor_permutation_tests",
    "group_counts",
    "median_thresholds",
    "membership",
    "observed_counts",
    "permutation_test",
    "prevalence",
    "strata_thresholds",
    "support_array",
    "table_coverage",
]
