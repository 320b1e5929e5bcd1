"""CDI (METHODS.md §2) against scipy and a loop reference; invariances, bootstrap and edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from semcov_lib.cdi import (
    CDIResult,
    CDIWarning,
    _row_spearman,
    compute_cdi,
    reduction,
    spearman,
    weighted_spearman,
)
from semcov_lib.coverage import CoverageError, coverage_array


def make(n=1500, T=4, K=3, S=2, seed=0, nan_frac=0.1):
    """Training coverage from one split; evaluation errors rising as coverage falls."""
    rng = np.random.default_rng(seed)
    y_tr, s_tr = rng.integers(0, T, n), rng.integers(0, S, n)
    base = rng.random((T, K, S))
    a_tr = np.clip(base[y_tr, :, s_tr] + rng.normal(0, 0.1, (n, K)), 0, 1)
    a_tr = np.round(a_tr, 1)  # ties in coverage-related quantities
    cov = coverage_array(y_tr, s_tr, a_tr, T, S)
    y, s = rng.integers(0, T, n), rng.integers(0, S, n)
    a = np.round(np.clip(base[y, :, s] + rng.normal(0, 0.1, (n, K)), 0, 1), 1)
    a[rng.random((n, K)) < nan_frac] = np.nan
    p_wrong = np.clip(0.6 - 0.5 * np.nanmean(base[y, :, s], axis=1), 0.05, 0.9)
    pred = np.where(rng.random(n) < p_wrong, (y + 1) % T, y)
    return cov, y, pred, s, a


def reference(cov, y, pred, s, a, min_weight=5, soft_err=None):
    """Per-SCG error by explicit loops, then scipy over valid SCGs."""
    T, K, S = cov.shape
    err = (pred != y).astype(float) if soft_err is None else soft_err
    e = np.full(cov.shape, np.nan)
    w = np.zeros(cov.shape)
    for c in range(T):
        for k in range(K):
            for g in range(S):
                rows = (y == c) & (s == g) & ~np.isnan(a[:, k])
                w[c, k, g] = a[rows, k].sum()
                if w[c, k, g] > 0:
                    e[c, k, g] = (a[rows, k] * err[rows]).sum() / w[c, k, g]
    valid = np.isfinite(cov) & (w >= min_weight)
    return e, w, valid


def test_cdi_matches_scipy_with_ties_and_nan():
    for seed in range(4):
        cov, y, pred, s, a = make(seed=seed)
        cov[0, 0, 0] = np.nan  # an SCG without training coverage
        res = compute_cdi(cov, y, pred, s, a, n_boot=0)
        e, w, valid = reference(cov, y, pred, s, a)
        np.testing.assert_allclose(res.per_scg["error"], e.ravel(), equal_nan=True)
        np.testing.assert_allclose(res.per_scg["weight"], w.ravel())
        assert (res.per_scg["valid"].to_numpy() == valid.ravel()).all()
        assert res.n_valid == valid.sum()
        rho = spearmanr(cov[valid], e[valid]).statistic
        assert res.signed_rho == pytest.approx(rho, abs=1e-12)
        assert res.cdi == pytest.approx(abs(rho), abs=1e-12)
        assert res.pearson_log == pytest.approx(pearsonr(np.log(cov[valid] + 1e-3), e[valid]).statistic, abs=1e-12)
        assert 0 <= res.weighted <= 1


def test_soft_error_and_hard_membership():
    cov, y, pred, s, a = make(seed=5)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(cov.shape[0]), size=len(y))
    res = compute_cdi(cov, y, None, s, a, probs=probs, error="soft", n_boot=0)
    e, _, valid = reference(cov, y, pred, s, a, soft_err=1 - probs[np.arange(len(y)), y])
    assert res.signed_rho == pytest.approx(spearmanr(cov[valid], e[valid]).statistic, abs=1e-12)
    # preds default to argmax(probs) for the hard error
    hard = compute_cdi(cov, y, None, s, a, probs=probs, n_boot=0)
    assert hard.cdi == pytest.approx(compute_cdi(cov, y, probs.argmax(1), s, a, n_boot=0).cdi)
    # hard membership: weights are 1[a >= tau]
    hm = compute_cdi(cov, y, pred, s, a, mode="hard", tau=0.5, n_boot=0)
    e2, _, valid2 = reference(cov, y, pred, s, np.where(np.isnan(a), np.nan, (a >= 0.5).astype(float)))
    assert hm.signed_rho == pytest.approx(spearmanr(cov[valid2], e2[valid2]).statistic, abs=1e-12)


def test_weighted_spearman_definition():
    rng = np.random.default_rng(1)
    x, yv = np.round(rng.random(30), 1), np.round(rng.random(30), 1)
    assert weighted_spearman(x, yv, np.ones(30)) == pytest.approx(spearmanr(x, yv).statistic)
    w = rng.integers(1, 5, 30)  # integer weights = duplicated SCGs
    assert weighted_spearman(x, yv, w) == pytest.approx(spearmanr(np.repeat(x, w), np.repeat(yv, w)).statistic)
    assert spearman(x, yv) == pytest.approx(spearmanr(x, yv).statistic)


def test_vectorised_row_spearman_matches_scipy():
    rng = np.random.default_rng(2)
    cov = np.round(rng.random(40), 1)
    err = np.round(rng.random((25, 40)), 1)
    valid = rng.random((25, 40)) < 0.7
    valid[0] = False
    valid[0, :2] = True  # too few valid -> NaN
    err[1] = 0.5  # constant error -> NaN
    rho = _row_spearman(cov, err, valid)
    assert np.isnan(rho[0]) and np.isnan(rho[1])
    for b in range(2, 25):
        m = valid[b]
        assert rho[b] == pytest.approx(spearmanr(cov[m], err[b, m]).statistic, abs=1e-12)


def test_permuting_class_labels_leaves_cdi_unchanged():
    cov, y, pred, s, a = make(seed=3)
    perm = np.array([2, 0, 3, 1])  # new index of each old class
    inv = np.argsort(perm)
    res = compute_cdi(cov, y, pred, s, a, n_boot=0)
    res2 = compute_cdi(cov[inv], perm[y], perm[pred], s, a, n_boot=0)
    for key in ("cdi", "signed_rho", "pearson_log", "weighted"):
        assert getattr(res2, key) == pytest.approx(getattr(res, key), abs=1e-12)
    assert res2.n_valid == res.n_valid


def test_duplicating_evaluation_samples_keeps_point_estimate():
    cov, y, pred, s, a = make(seed=4)
    res = compute_cdi(cov, y, pred, s, a, n_boot=0)
    dup = compute_cdi(cov, np.tile(y, 2), np.tile(pred, 2), np.tile(s, 2), np.tile(a, (2, 1)), n_boot=0,
                      min_weight=10)
    assert dup.cdi == pytest.approx(res.cdi)


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    cov, y, pred, s, a = make(n=3000, seed=6)
    res = compute_cdi(cov, y, pred, s, a, n_boot=300, seed=1)
    assert res.ci_low <= res.cdi <= res.ci_high
    assert 0 <= res.ci_low < res.ci_high <= 1
    assert res.boot.shape == (300,)
    again = compute_cdi(cov, y, pred, s, a, n_boot=300, seed=1)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)
    other = compute_cdi(cov, y, pred, s, a, n_boot=300, seed=2)
    assert (other.ci_low, other.ci_high) != (res.ci_low, res.ci_high)


def test_bootstrap_distribution_matches_naive_resampling():
    cov, y, pred, s, a = make(n=800, seed=7)
    res = compute_cdi(cov, y, pred, s, a, n_boot=400, seed=0)
    rng = np.random.default_rng(0)
    naive = []
    for _ in range(400):
        idx = rng.integers(0, len(y), len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CDIWarning)
            naive.append(compute_cdi(cov, y[idx], pred[idx], s[idx], a[idx], n_boot=0).cdi)
    assert np.nanmean(res.boot) == pytest.approx(np.nanmean(naive), abs=0.03)
    assert np.nanstd(res.boot) == pytest.approx(np.nanstd(naive), rel=0.25)


def test_too_few_valid_scgs_warns_and_gives_nan():
    cov, y, pred, s, a = make(n=40, seed=8)
    with pytest.warns(CDIWarning, match="valid SCG"):
        res = compute_cdi(cov, y, pred, s, a, min_weight=50, n_boot=10)
    assert np.isnan(res.cdi) and np.isnan(res.ci_low) and res.n_valid < 3
    assert len(res.per_scg) == cov.size


def test_constant_coverage_or_error_warns():
    cov, y, pred, s, a = make(seed=9)
    with pytest.warns(CDIWarning, match="coverage is constant"):
        assert np.isnan(compute_cdi(np.full_like(cov, 0.3), y, pred, s, a, n_boot=0).cdi)
    with pytest.warns(CDIWarning, match="error is constant"):
        assert np.isnan(compute_cdi(cov, y, y, s, a, n_boot=0).cdi)


def test_bad_inputs():
    cov, y, pred, s, a = make(seed=10)
    with pytest.raises(CoverageError, match="outside"):
        compute_cdi(cov, y, pred, s, a * 2 - 1, n_boot=0)
    with pytest.raises(CoverageError, match="not in the class list"):
        compute_cdi(cov, y + 10, pred, s, a, n_boot=0)
    with pytest.raises(CoverageError, match="preds"):
        compute_cdi(cov, y, pred + 10, s, a, n_boot=0)
    with pytest.raises(CoverageError, match="descriptors"):
        compute_cdi(cov, y, pred, s, a[:, :2], n_boot=0)
    with pytest.raises(CoverageError, match="soft"):
        compute_cdi(cov, y, pred, s, a, error="soft", n_boot=0)
    with pytest.raises(CoverageError, match="subgroups is None"):
        compute_cdi(cov, y, pred, None, a, n_boot=0)


def test_class_absent_from_evaluation_is_fine():
    cov, y, pred, s, a = make(seed=11)
    keep = y != 2
    res = compute_cdi(cov, y[keep], pred[keep], s[keep], a[keep], n_boot=20)
    assert np.isfinite(res.cdi)
    assert not res.per_scg.loc[res.per_scg["class_idx"] == 2, "valid"].any()


def test_result_dict_strata_and_reduction():
    cov, y, pred, s, a = make(seed=12)
    res = compute_cdi(cov, y, pred, s, a, n_boot=20, classes=list("ABCD"), descriptors=["x", "y", "z"],
                      subgroup_levels=["u", "v"])
    assert isinstance(res, CDIResult)
    d = res.to_dict()
    for key in ("cdi", "signed_rho", "pearson_log", "weighted", "ci_low", "ci_high", "n_valid"):
        assert key in d
    assert set(res.per_scg["class"]) == set("ABCD")
    assert set(res.per_scg.loc[res.per_scg["valid"], "stratum"]) <= {"Tail", "Middle", "Head"}
    # (class, descriptor) variant: a (T, K) coverage and no subgroups
    y2 = np.repeat(np.arange(4), 50)
    a2 = np.random.default_rng(0).random((200, 3))
    cov2 = coverage_array(y2, None, a2, 4)[:, :, 0]
    r2 = compute_cdi(cov2, y2, (y2 + (a2[:, 0] < 0.3)) % 4, None, a2, n_boot=0)
    assert r2.n_valid == 12
    assert reduction(0.5, 0.25) == pytest.approx(0.5)
    assert reduction(0.5, 0.25, percent=True) == pytest.approx(50.0)
    assert np.isnan(reduction(0.0, 0.1)) and np.isnan(reduction(float("nan"), 0.1))
