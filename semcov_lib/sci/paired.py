"""Paired comparison of method B against method A: hierarchical bootstrap over seeds and samples.

Each bootstrap draw resamples the seeds with replacement (A and B are paired by seed) and, within
each drawn seed, resamples the evaluation samples with replacement, *with the same indices for
both methods*; the metric is recomputed for both and averaged over the drawn seeds. Reported per
metric: A and B (means over seeds on the original data), Delta = B - A, its percentile CI, the
two-sided bootstrap p-value ``p = 2 min(P(Delta* <= 0), P(Delta* >= 0))`` (at most 1; 0 means
below 1 / n_boot),
``significant`` (the CI excludes 0) and, for CDI-type metrics, the relative reduction
``(A - B) / A`` with its percentile CI.

The built-in metrics (:data:`FAST_METRICS`) are computed for every draw at once from per-(class,
subgroup) cell sums of resampled rows (the bootstrap engine of the CDI), so thousands of draws on
tens of thousands of samples take seconds. Any other metric can be given as a callable
``f(y, probs, subgroups, scores, reference) -> dict[str, float]``; it is called twice per drawn
seed and draw (slow, but general).

``tail_accuracy`` is the mean recall of the tail-shot classes (training count below the ``few``
threshold of :func:`~semcov_lib.sci.metrics.shot_thresholds` at the run's ``shot_scale``), as in
:func:`~semcov_lib.sci.metrics.shot_accuracy`. ``worst_group_accuracy`` is the lowest accuracy
over the (class, subgroup) groups with at least ``reference.min_group_n`` samples *in the seed's
original evaluation split*, as in :func:`~semcov_lib.sci.metrics.worst_group`; the groups are
fixed per seed, so every draw compares the same groups.

Levelling down: a method that lowers the CDI by raising the error of well-covered SCGs. With
``head_error``/``middle_error`` among the metrics, :func:`flag_levelling_down` marks rows whose
Delta > 0 has a CI excluding 0.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from semcov_lib.sci.cdi import SCGReference, evaluation_inputs, sample_errors, scg_statistics
from semcov_lib.sci.coverage import CoverageError, _sorted_by_cell, bootstrap_cell_sums, cell_sums, cells_to_tks
from semcov_lib.sci.metrics import shot_groups

FAST_METRICS = ("cdi", "cdi_signed_rho", "cdi_within", "cdi_within_signed", "accuracy", "balanced_accuracy",
                "macro_f1", "worst_class_accuracy", "tail_accuracy", "worst_group_accuracy", "tail_error",
                "middle_error", "head_error")
DEFAULT_METRICS = ("cdi", "cdi_within", "macro_f1", "balanced_accuracy", "tail_accuracy", "worst_group_accuracy",
                   "tail_error", "middle_error", "head_error")
RELATIVE_METRICS = ("cdi", "cdi_within")  # lower is better and 0 is ideal: report (A - B) / A
LEVELLING_METRICS = ("head_error", "middle_error")
MetricFn = Callable[..., dict]


@dataclass(frozen=True)
class SeedPair:
    """One seed's evaluation split with both methods' class probabilities (same samples, same order)."""

    y: np.ndarray
    subgroups: np.ndarray | None
    scores: np.ndarray
    probs_a: np.ndarray
    probs_b: np.ndarray


# --------------------------------------------------------------------------- fast built-in metrics
def _pair_values(pair: SeedPair, reference: SCGReference) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample columns whose cell sums give every built-in metric of A and B, and the cells.

    Columns: w*err_A (K) | w*err_B (K) | w (K) | onehot(pred_A) (T) | onehot(pred_B) (T).
    """
    T, K, _ = reference.shape
    y, cells, wz = evaluation_inputs(reference, pair.y, pair.subgroups, pair.scores)
    blocks = [None, None, wz, None, None]
    for j, probs in enumerate((pair.probs_a, pair.probs_b)):
        probs = np.asarray(probs, dtype=np.float64)
        err = sample_errors(y, None, probs, T, reference.error)
        blocks[j] = wz * err[:, None]
        blocks[3 + j] = np.eye(T)[probs.argmax(axis=1)]
    return np.concatenate(blocks, axis=1), cells


def _confusion_metrics(conf: np.ndarray, tail: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced accuracy, macro-F1, worst-class and tail accuracy from (R, T, T) confusion counts.

    conf[r, c, j] = samples of class c predicted j; ``tail`` (T,) marks the tail-shot classes.
    Averages run over the classes present (n_c > 0), as in :mod:`semcov_lib.sci.metrics`;
    F1_c = 2 TP / (2 TP + FP + FN).
    """
    tp = np.diagonal(conf, axis1=1, axis2=2)
    n = conf.sum(axis=2)
    predicted = conf.sum(axis=1)
    present = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / np.maximum(n, 1), np.nan)
        f1 = np.where(present, 2 * tp / np.maximum(n + predicted, 1), np.nan)  # 2TP+FP+FN = n + predicted
        return {
            "accuracy": tp.sum(axis=1) / n.sum(axis=1),
            "balanced_accuracy": np.nanmean(recall, axis=1),
            "macro_f1": np.nanmean(f1, axis=1),
            "worst_class_accuracy": np.nanmin(recall, axis=1),
            # mean recall over the tail classes present; NaN when there are none
            "tail_accuracy": np.nanmean(np.where(tail, recall, np.nan), axis=1),
        }


def _worst_group_accuracy(cells: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Lowest accuracy over the ``eligible`` (T, S) groups, from (R, T, S, T) prediction counts.

    cells[r, c, s, j] = samples of class c and subgroup s predicted j. A group without samples in
    a draw is left out; NaN when no eligible group has any.
    """
    correct = np.einsum("rcsc->rcs", cells)  # samples of group (c, s) predicted c
    n = cells.sum(axis=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(eligible & (n > 0), correct / np.maximum(n, 1), np.nan)
    return np.nanmin(acc.reshape(len(acc), -1), axis=1)


def _fast_metrics(sums: np.ndarray, reference: SCGReference, tail: np.ndarray,
                  eligible: np.ndarray) -> tuple[dict, dict]:
    """Built-in metrics of A and B for each row of per-cell sums (R, T*S, 3K + 2T).

    ``tail`` (T,): the tail-shot classes; ``eligible`` (T, S): the groups worst-group accuracy
    looks at.
    """
    T, K, S = reference.shape
    r = sums.shape[0]
    den = cells_to_tks(sums[..., 2 * K:3 * K], T, S).reshape(r, -1)
    out = []
    for j in range(2):
        num = cells_to_tks(sums[..., j * K:(j + 1) * K], T, S).reshape(r, -1)
        stats = scg_statistics(reference, num, den)
        cells = sums[..., 3 * K + j * T:3 * K + (j + 1) * T].reshape(r, T, S, T)  # [r, class, subgroup, pred]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
            metrics = _confusion_metrics(cells.sum(axis=2), tail)
            metrics["worst_group_accuracy"] = _worst_group_accuracy(cells, eligible)
        metrics.update({
            "cdi": np.abs(stats["signed_rho"]), "cdi_signed_rho": stats["signed_rho"],
            "cdi_within": np.abs(stats["within_signed"]), "cdi_within_signed": stats["within_signed"],
            "tail_error": stats["tail_error"], "middle_error": stats["middle_error"],
            "head_error": stats["head_error"],
        })
        out.append(metrics)
    return out[0], out[1]


def _fast_seed(pair: SeedPair, reference: SCGReference, n_draws: int, rng: np.random.Generator,
               tail: np.ndarray) -> tuple[dict, dict, dict, dict]:
    """(original A, original B, A over n_draws resamples, B over n_draws resamples) of one seed."""
    T, K, S = reference.shape
    values, cells = _pair_values(pair, reference)
    # worst-group accuracy looks at the groups with >= min_group_n samples in this seed's original split
    n_group = np.bincount(cells, minlength=T * S).reshape(T, S)
    eligible = (n_group >= reference.min_group_n) & (n_group > 0)
    a0, b0 = _fast_metrics(cell_sums(cells, values, T * S)[None], reference, tail, eligible)
    if n_draws == 0:
        return a0, b0, {k: np.empty(0) for k in a0}, {k: np.empty(0) for k in b0}
    order, bounds = _sorted_by_cell(cells, T * S)
    sums = bootstrap_cell_sums(values[order], bounds, n_draws, rng)
    a, b = _fast_metrics(sums, reference, tail, eligible)
    return a0, b0, a, b


# --------------------------------------------------------------------------- any metric
def _generic_seed(pair: SeedPair, reference: SCGReference, n_draws: int, rng: np.random.Generator,
                  metric: MetricFn) -> tuple[dict, dict, dict, dict]:
    """Same as :func:`_fast_seed` for a metric callable (one call per method and resample)."""
    def run(idx, probs):
        s = None if pair.subgroups is None else np.asarray(pair.subgroups)[idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(np.asarray(pair.y)[idx], np.asarray(probs)[idx], s, np.asarray(pair.scores)[idx],
                          reference)

    everything = np.arange(len(pair.y))
    a0, b0 = run(everything, pair.probs_a), run(everything, pair.probs_b)
    a = {k: np.empty(n_draws) for k in a0}
    b = {k: np.empty(n_draws) for k in b0}
    for d in range(n_draws):
        idx = rng.integers(0, len(pair.y), len(pair.y))
        for store, probs in ((a, pair.probs_a), (b, pair.probs_b)):
            for k, v in run(idx, probs).items():
                store[k][d] = v
    wrap = lambda m: {k: np.asarray([v], dtype=np.float64) for k, v in m.items()}  # noqa: E731
    return wrap(a0), wrap(b0), a, b


# --------------------------------------------------------------------------- the comparison
def paired_bootstrap(
    pairs: Sequence[SeedPair],
    reference: SCGReference,
    metrics: Sequence[str] | MetricFn = DEFAULT_METRICS,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    shot_scale: float | str = 1.0,
) -> pd.DataFrame:
    """Hierarchical paired bootstrap of B against A (see module docstring), one row per metric.

    ``pairs``: one :class:`SeedPair` per seed. ``metrics``: names from :data:`FAST_METRICS` or a
    callable ``f(y, probs, subgroups, scores, reference) -> dict``. ``shot_scale``: the runs'
    training setting that scales the shot thresholds of ``tail_accuracy`` (its tail classes are
    those below ``shot_thresholds(reference.class_counts, scale=shot_scale)``'s ``few``; none when
    the class counts are unknown).
    Columns: metric, a, b, delta, ci_low, ci_high, p, significant, rel_reduction, rel_ci_low,
    rel_ci_high, n_seeds, n_boot.
    """
    if not pairs:
        raise CoverageError("paired_bootstrap: no seed pairs given")
    if not 0 < ci < 1:
        raise CoverageError(f"ci must be in (0, 1), got {ci}")
    names = None if callable(metrics) else list(metrics)
    unknown = [] if names is None else [m for m in names if m not in FAST_METRICS]
    if unknown:
        raise CoverageError(f"paired_bootstrap: unknown metric(s) {unknown}; built-in: {list(FAST_METRICS)} "
                            "(or pass a callable)")
    T = reference.shape[0]
    counts = reference.class_counts
    tail = np.zeros(T, bool) if counts is None else shot_groups(counts, scale=shot_scale) == "tail"
    if counts is None and names is not None and "tail_accuracy" in names:
        warnings.warn("paired_bootstrap: the reference has no class counts, so no class is a tail class and "
                      "tail_accuracy is NaN; build the SCGReference with class_counts", stacklevel=2)
    rng = np.random.default_rng(seed)
    n_seeds = len(pairs)
    drawn = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # seeds of each draw, with replacement
    orig_a, orig_b, boot_a, boot_b = {}, {}, {}, {}
    for r, pair in enumerate(pairs):
        slots = drawn == r  # every time seed r is drawn, it gets its own sample resample
        if names is None:
            a0, b0, a, b = _generic_seed(pair, reference, int(slots.sum()), rng, metrics)
        else:
            a0, b0, a, b = _fast_seed(pair, reference, int(slots.sum()), rng, tail)
        for store, orig, part, whole in ((boot_a, orig_a, a, a0), (boot_b, orig_b, b, b0)):
            for k in part:
                store.setdefault(k, np.full((n_boot, n_seeds), np.nan))[slots] = part[k]
                orig.setdefault(k, []).append(float(whole[k][0]))
    keys = names if names is not None else list(orig_a)
    rows = [_summarise(k, orig_a[k], orig_b[k], boot_a[k], boot_b[k], ci) for k in keys]
    frame = pd.DataFrame(rows)
    frame["n_seeds"], frame["n_boot"] = n_seeds, n_boot
    return frame


def _summarise(name: str, orig_a: list, orig_b: list, boot_a: np.ndarray, boot_b: np.ndarray, ci: float) -> dict:
    """Delta, CI, p and (CDI-type) relative reduction of one metric from (n_boot, n_seeds) draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw where the metric is undefined: NaN
        a, b = float(np.nanmean(orig_a)), float(np.nanmean(orig_b))
        ma, mb = np.nanmean(boot_a, axis=1), np.nanmean(boot_b, axis=1)  # average over the drawn seeds
    delta = (mb - ma)[np.isfinite(mb - ma)]
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(delta, [alpha, 1 - alpha]) if len(delta) else (np.nan, np.nan)
    p = min(1.0, 2 * min(np.mean(delta <= 0), np.mean(delta >= 0))) if len(delta) else np.nan
    row = {"metric": name, "a": a, "b": b, "delta": b - a, "ci_low": float(lo), "ci_high": float(hi),
           "p": float(p), "significant": bool(lo > 0 or hi < 0),
           "rel_reduction": np.nan, "rel_ci_low": np.nan, "rel_ci_high": np.nan}
    if name in RELATIVE_METRICS:
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = ((ma - mb) / ma)[np.isfinite(ma) & np.isfinite(mb) & (ma != 0)]
        row["rel_reduction"] = (a - b) / a if a else np.nan
        if len(rel):
            row["rel_ci_low"], row["rel_ci_high"] = (float(x) for x in np.quantile(rel, [alpha, 1 - alpha]))
    return row


def flag_levelling_down(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``levelling_down``: Head/Middle-stratum error rose (Delta > 0, CI excluding 0)."""
    out = table.copy()
    out["levelling_down"] = out["metric"].isin(LEVELLING_METRICS) & (out["ci_low"] > 0)
    return out


def levels_down(table: pd.DataFrame) -> bool:
    """True when :func:`flag_levelling_down` flags any row of a paired table."""
    return bool(flag_levelling_down(table)["levelling_down"].any())


# --------------------------------------------------------------------------- run folders
def _seed_of(run_dir: Path) -> int | None:
    """A run's seed: ``seed`` in metrics.json, else the ``-s<seed>`` suffix of its folder."""
    path = run_dir / "metrics.json"
    if path.is_file():
        seed = json.loads(path.read_text()).get("seed")
        if seed is not None:
            return int(seed)
    match = re.search(r"-s(\d+)$", run_dir.name)
    return int(match.group(1)) if match else None


def _shot_scale(run_dir: Path) -> float | str:
    """A run's ``shot_scale`` training setting from its config.json (1.0, the default, when absent)."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()).get("shot_scale", 1.0) if path.is_file() else 1.0


def _read_split(run_dir: Path, split: str, reference: SCGReference) -> pd.DataFrame:
    path = run_dir / f"predictions_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (the run has no {split!r} split or predates it)")
    frame = pd.read_csv(path, keep_default_na=True)
    needed = ["sample_id", "label", "subgroup"] + [f"prob_{c}" for c in reference.classes] + \
        [f"score_{d}" for d in reference.descriptors]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise CoverageError(f"{path}: missing column(s) {missing[:5]}; re-run the evaluation with this version")
    return frame.set_index(frame["sample_id"].astype(str))


def load_pair(run_a: str | Path, run_b: str | Path, split: str, reference: SCGReference) -> SeedPair:
    """A :class:`SeedPair` from two run folders' ``predictions_<split>.csv`` (B aligned to A's ids)."""
    fa, fb = _read_split(Path(run_a), split, reference), _read_split(Path(run_b), split, reference)
    if set(fa.index) != set(fb.index):
        raise CoverageError(f"{run_a} and {run_b}: predictions_{split}.csv hold different samples")
    fb = fb.loc[fa.index]
    levels = {name: i for i, name in enumerate(reference.subgroups)}
    sub_text = fa["subgroup"].astype(str)
    unknown = sorted(set(sub_text) - set(levels))
    if unknown:
        raise CoverageError(f"{run_a}: subgroup(s) {unknown[:5]} are not in reference.json's {list(levels)}")
    prob_cols = [f"prob_{c}" for c in reference.classes]
    return SeedPair(y=fa["label"].to_numpy(np.int64), subgroups=sub_text.map(levels).to_numpy(np.int64),
                    scores=fa[[f"score_{d}" for d in reference.descriptors]].to_numpy(np.float64),
                    probs_a=fa[prob_cols].to_numpy(np.float64), probs_b=fb[prob_cols].to_numpy(np.float64))


def paired_from_runs(
    run_dirs_a: Sequence[str | Path],
    run_dirs_b: Sequence[str | Path],
    split: str = "stress",
    metrics: Sequence[str] | MetricFn = DEFAULT_METRICS,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`paired_bootstrap` of method B against A from run folders (files only, no dataset).

    Runs are paired by seed (``metrics.json``'s seed or the ``-s<seed>`` folder suffix; by position
    when neither is known). The reference is read from A's first ``reference.json`` and must be the
    same in every run (same training data); so must the ``shot_scale`` of ``tail_accuracy`` (each
    run's ``config.json``).
    """
    dirs_a, dirs_b = [Path(d) for d in run_dirs_a], [Path(d) for d in run_dirs_b]
    if not dirs_a or len(dirs_a) != len(dirs_b):
        raise CoverageError(f"paired_from_runs: {len(dirs_a)} runs of A and {len(dirs_b)} of B; need equal, > 0")
    seeds_a, seeds_b = [_seed_of(d) for d in dirs_a], [_seed_of(d) for d in dirs_b]
    if None not in seeds_a + seeds_b:
        if sorted(seeds_a) != sorted(seeds_b) or len(set(seeds_a)) != len(seeds_a):
            raise CoverageError(f"paired_from_runs: seeds of A {seeds_a} and B {seeds_b} do not pair one to one")
        by_seed = dict(zip(seeds_b, dirs_b))
        dirs_b = [by_seed[s] for s in seeds_a]
    reference = SCGReference.load(dirs_a[0] / "reference.json")
    for d in dirs_a[1:] + dirs_b:
        other = SCGReference.load(d / "reference.json")
        if other.shape != reference.shape or not np.allclose(other.coverage, reference.coverage, equal_nan=True):
            raise CoverageError(f"{d}/reference.json differs from {dirs_a[0]}/reference.json: runs were trained "
                                "on different data and cannot be paired")
    scales = {d: _shot_scale(d) for d in dirs_a + dirs_b}
    if len(set(scales.values())) > 1:  # tail classes would differ between A and B
        odd = next(d for d in scales if scales[d] != scales[dirs_a[0]])
        raise CoverageError(f"{odd}/config.json has shot_scale {scales[odd]!r}, {dirs_a[0]}/config.json "
                            f"{scales[dirs_a[0]]!r}: the runs define tail classes differently; compare runs "
                            "of the same profile")
    pairs = [load_pair(a, b, split, reference) for a, b in zip(dirs_a, dirs_b)]
    return paired_bootstrap(pairs, reference, metrics, n_boot=n_boot, seed=seed, shot_scale=scales[dirs_a[0]])


__all__ = [
    "DEFAULT_METRICS",
    "FAST_METRICS",
    "SeedPair",
    "flag_levelling_down",
    "levels_down",
    "load_pair",
    "paired_bootstrap",
    "paired_from_runs",
]
