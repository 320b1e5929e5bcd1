"""CDI (docs/METHODS.md, section "Coverage Disparity Index") against scipy and a loop reference; invariances, bootstrap and edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from semcov_lib.sci.cdi import (
    CDIResult,
    CDIWarning,
    Resampling,
    SCGReference,
    _row_spearman,
    _row_within,
    bca_interval,
    compute_cdi,
    permutation_p_values,
    reduction,
    spearman,
    weighted_spearman,
)
from semcov_lib.sci.coverage import CoverageError, coverage_array, group_counts


def cdi(cov, y, pred, s, a, probs=None, n_boot=0, seed=0, n_perm=0, ci_method="percentile", **options):
    """compute_cdi with a reference holding only the coverage (no training counts: no min_train_n rule)."""
    if "subgroup_levels" in options:
        options["subgroups"] = options.pop("subgroup_levels")
    return compute_cdi(SCGReference(cov, **options), y, pred, s, a, probs,
                       Resampling(n_boot=n_boot, n_perm=n_perm, seed=seed, ci_method=ci_method))


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
        res = cdi(cov, y, pred, s, a, n_boot=0)
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
    res = cdi(cov, y, None, s, a, probs=probs, error="soft", n_boot=0)
    e, _, valid = reference(cov, y, pred, s, a, soft_err=1 - probs[np.arange(len(y)), y])
    assert res.signed_rho == pytest.approx(spearmanr(cov[valid], e[valid]).statistic, abs=1e-12)
    # preds default to argmax(probs) for the hard error
    hard = cdi(cov, y, None, s, a, probs=probs, n_boot=0)
    assert hard.cdi == pytest.approx(cdi(cov, y, probs.argmax(1), s, a, n_boot=0).cdi)
    # hard membership: weights are 1[a >= tau]
    hm = cdi(cov, y, pred, s, a, mode="hard", tau=0.5, n_boot=0)
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
    res = cdi(cov, y, pred, s, a, n_boot=0)
    res2 = cdi(cov[inv], perm[y], perm[pred], s, a, n_boot=0)
    for key in ("cdi", "signed_rho", "pearson_log", "weighted"):
        assert getattr(res2, key) == pytest.approx(getattr(res, key), abs=1e-12)
    assert res2.n_valid == res.n_valid


def test_duplicating_evaluation_samples_keeps_point_estimate():
    cov, y, pred, s, a = make(seed=4)
    res = cdi(cov, y, pred, s, a, n_boot=0)
    dup = cdi(cov, np.tile(y, 2), np.tile(pred, 2), np.tile(s, 2), np.tile(a, (2, 1)), n_boot=0,
                      min_weight=10)
    assert dup.cdi == pytest.approx(res.cdi)


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    cov, y, pred, s, a = make(n=3000, seed=6)
    res = cdi(cov, y, pred, s, a, n_boot=300, seed=1)
    assert res.ci_low <= res.cdi <= res.ci_high
    assert 0 <= res.ci_low < res.ci_high <= 1
    assert res.boot.shape == (300,)
    again = cdi(cov, y, pred, s, a, n_boot=300, seed=1)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)
    other = cdi(cov, y, pred, s, a, n_boot=300, seed=2)
    assert (other.ci_low, other.ci_high) != (res.ci_low, res.ci_high)


def test_bootstrap_distribution_matches_naive_resampling():
    cov, y, pred, s, a = make(n=800, seed=7)
    res = cdi(cov, y, pred, s, a, n_boot=400, seed=0)
    rng = np.random.default_rng(0)
    naive = []
    for _ in range(400):
        idx = rng.integers(0, len(y), len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CDIWarning)
            naive.append(cdi(cov, y[idx], pred[idx], s[idx], a[idx], n_boot=0).cdi)
    assert np.nanmean(res.boot) == pytest.approx(np.nanmean(naive), abs=0.03)
    assert np.nanstd(res.boot) == pytest.approx(np.nanstd(naive), rel=0.25)


def test_too_few_valid_scgs_warns_and_gives_nan():
    cov, y, pred, s, a = make(n=40, seed=8)
    with pytest.warns(CDIWarning, match="valid SCG"):
        res = cdi(cov, y, pred, s, a, min_weight=50, n_boot=10)
    assert np.isnan(res.cdi) and np.isnan(res.ci_low) and res.n_valid < 3
    assert len(res.per_scg) == cov.size


def test_constant_coverage_or_error_warns():
    cov, y, pred, s, a = make(seed=9)
    with pytest.warns(CDIWarning, match="coverage is constant"):
        assert np.isnan(cdi(np.full_like(cov, 0.3), y, pred, s, a, n_boot=0).cdi)
    with pytest.warns(CDIWarning, match="error is constant"):
        assert np.isnan(cdi(cov, y, y, s, a, n_boot=0).cdi)


def test_bad_inputs():
    cov, y, pred, s, a = make(seed=10)
    with pytest.raises(CoverageError, match="outside"):
        cdi(cov, y, pred, s, a * 2 - 1, n_boot=0)
    with pytest.raises(CoverageError, match="not in the class list"):
        cdi(cov, y + 10, pred, s, a, n_boot=0)
    with pytest.raises(CoverageError, match="preds"):
        cdi(cov, y, pred + 10, s, a, n_boot=0)
    with pytest.raises(CoverageError, match="descriptors"):
        cdi(cov, y, pred, s, a[:, :2], n_boot=0)
    with pytest.raises(CoverageError, match="soft"):
        cdi(cov, y, pred, s, a, error="soft", n_boot=0)
    with pytest.raises(CoverageError, match="subgroups is None"):
        cdi(cov, y, pred, None, a, n_boot=0)


def test_class_absent_from_evaluation_is_fine():
    cov, y, pred, s, a = make(seed=11)
    keep = y != 2
    res = cdi(cov, y[keep], pred[keep], s[keep], a[keep], n_boot=20)
    assert np.isfinite(res.cdi)
    assert not res.per_scg.loc[res.per_scg["class_idx"] == 2, "valid"].any()


def test_result_dict_strata_and_reduction():
    cov, y, pred, s, a = make(seed=12)
    res = cdi(cov, y, pred, s, a, n_boot=20, classes=list("ABCD"), descriptors=["x", "y", "z"],
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
    r2 = cdi(cov2, y2, (y2 + (a2[:, 0] < 0.3)) % 4, None, a2, n_boot=0)
    assert r2.n_valid == 12
    assert reduction(0.5, 0.25) == pytest.approx(0.5)
    assert reduction(0.5, 0.25, percent=True) == pytest.approx(50.0)
    assert np.isnan(reduction(0.0, 0.1)) and np.isnan(reduction(float("nan"), 0.1))


# --------------------------------------------------------------------------- reference, validity, cdi_within
def test_reference_from_training_and_round_trip(tmp_path):
    rng = np.random.default_rng(20)
    y, s, a = rng.integers(0, 3, 200), rng.integers(0, 2, 200), rng.random((200, 4))
    a[rng.random((200, 4)) < 0.1] = np.nan
    ref = SCGReference.from_training(y, s, a, list("ABC"), list("wxyz"), ["u", "v"], min_weight=3)
    np.testing.assert_allclose(ref.coverage, coverage_array(y, s, a, 3, 2), equal_nan=True)
    assert (ref.group_counts == group_counts(y, s, 3, 2)).all()
    assert (ref.class_counts == np.bincount(y, minlength=3)).all()
    (tmp_path / "reference.json").write_text(__import__("json").dumps(ref.to_dict()))
    back = SCGReference.load(tmp_path / "reference.json")
    np.testing.assert_allclose(back.coverage, ref.coverage, equal_nan=True)
    assert back.classes == ("A", "B", "C") and back.subgroups == ("u", "v") and back.min_weight == 3
    hard = SCGReference.from_training(y, s, a, list("ABC"), mode="hard", thresholds="median", subgroup_levels="uv")
    np.testing.assert_allclose(hard.thresholds, np.nanmedian(a, axis=0))
    with pytest.raises(CoverageError, match="unknown option"):
        SCGReference.from_training(y, s, a, list("ABC"), min_wieght=3)
    with pytest.raises(CoverageError, match="group_counts"):
        SCGReference(ref.coverage, group_counts=np.ones((2, 2)))


def test_min_train_n_rule_and_removal_counts():
    rng = np.random.default_rng(21)
    T, K, S = 3, 4, 2
    y_tr, s_tr = rng.integers(0, T, 600), rng.integers(0, S, 600)
    rare = np.flatnonzero((y_tr == 2) & (s_tr == 1))
    keep = np.setdiff1d(np.arange(600), rare[2:])  # (class 2, subgroup 1) keeps 2 training samples
    y_tr, s_tr = y_tr[keep], s_tr[keep]
    a_tr = rng.random((len(y_tr), K))
    y, s, a = rng.integers(0, T, 900), rng.integers(0, S, 900), rng.random((900, K))
    pred = np.where(rng.random(900) < 0.3, (y + 1) % T, y)
    ref = SCGReference.from_training(y_tr, s_tr, a_tr, list("ABC"), subgroup_levels=["u", "v"])
    res = compute_cdi(ref, y, pred, s, a, resampling=Resampling(n_boot=0, n_perm=0))
    table = res.per_scg
    rare_rows = (table["class_idx"] == 2) & (table["subgroup_idx"] == 1)
    assert (table.loc[rare_rows, "n_cs"] == 2).all() and not table.loc[rare_rows, "valid"].any()
    assert res.n_removed_train_n == K and res.n_removed_coverage == 0
    assert res.n_removed_coverage + res.n_removed_train_n + res.n_removed_weight + res.n_valid == res.n_scgs == T * K * S
    loose = compute_cdi(ref.replace(min_train_n=0), y, pred, s, a, resampling=Resampling(n_boot=0, n_perm=0))
    assert loose.n_removed_train_n == 0 and loose.per_scg.loc[rare_rows, "valid"].all()
    assert loose.n_valid == res.n_valid + K


def slow_within(cov, err, valid, n_classes):
    """Per-class scipy Spearman over valid SCGs, weighted by the class's number of valid SCGs."""
    per = len(cov) // n_classes
    num = den = 0.0
    for c in range(n_classes):
        m = np.zeros(len(cov), bool)
        m[c * per:(c + 1) * per] = True
        m &= valid
        if m.sum() < 4:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = spearmanr(cov[m], err[m]).statistic
        if np.isfinite(rho):
            num, den = num + m.sum() * rho, den + m.sum()
    return num / den if den else np.nan


def test_cdi_within_matches_slow_per_class_scipy():
    rng = np.random.default_rng(22)
    T, per = 5, 12
    cov = np.round(rng.random(T * per), 1)  # ties in coverage
    err = np.round(rng.random((40, T * per)), 1)  # ties in error
    valid = rng.random((40, T * per)) < 0.6
    valid[:, 2 * per:3 * per] = False
    valid[:, 2 * per:2 * per + 3] = True  # class 2 has only 3 valid SCGs: left out
    err[:, 3 * per:4 * per] = 0.25  # class 3 has constant error: rho_3 undefined, left out
    valid[5] = False  # no class left: NaN
    fast = _row_within(cov, err, valid, T)
    for b in range(40):
        ref = slow_within(cov, err[b], valid[b], T)
        assert (np.isnan(fast[b]) and np.isnan(ref)) or fast[b] == pytest.approx(ref, abs=1e-12), b
    # through compute_cdi: its per-SCG table gives the same number
    cov3, y, pred, s, a = make(n=3000, T=4, K=4, S=2, seed=23)
    res = cdi(cov3, y, pred, s, a)
    t = res.per_scg
    ref = slow_within(t["coverage"].to_numpy(), t["error"].fillna(0).to_numpy(), t["valid"].to_numpy(), 4)
    assert res.cdi_within_signed == pytest.approx(ref, abs=1e-12)
    assert res.cdi_within == pytest.approx(abs(ref), abs=1e-12)


def test_permutation_p_values_are_uniform_under_the_null_and_small_under_dependence():
    rng = np.random.default_rng(24)
    class_of = np.repeat(np.arange(4), 10)
    p = np.array([permutation_p_values(rng.random(40), rng.random(40), class_of, 1000, seed=i) for i in range(200)])
    for j in range(2):  # pooled, within
        share = np.mean(p[:, j] < 0.05)
        assert 0.02 <= share <= 0.09, (j, share)
    cov = rng.random(40)
    p_dep = permutation_p_values(cov, -cov + 0.01 * rng.random(40), class_of, 1000, seed=0)
    assert p_dep == (pytest.approx(1 / 1001), pytest.approx(1 / 1001))
    cov3, y, pred, s, a = make(n=3000, seed=25)
    res = cdi(cov3, y, pred, s, a, n_perm=200)
    assert 1 / 201 <= res.cdi_p <= 1 and 1 / 201 <= res.cdi_within_p <= 1


def test_bca_interval_matches_scipy_bootstrap():
    from scipy.stats import bootstrap

    cov, y, pred, s, a = make(n=300, T=3, K=3, S=2, seed=26, nan_frac=0.0)
    T, K, S = cov.shape
    err = (pred != y).astype(float)
    member = np.zeros((len(y), T * K * S))  # sample i's weight in each SCG (flattened (T, K, S))
    for k in range(K):
        member[np.arange(len(y)), y * K * S + k * S + s] = a[:, k]

    def statistic(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        lead = idx.shape[:-1]
        flat = idx.reshape(-1, idx.shape[-1])
        counts = np.stack([np.bincount(row, minlength=len(y)) for row in flat]).astype(float)
        num, den = counts @ (member * err[:, None]), counts @ member
        valid = (den >= 5) & np.isfinite(cov.ravel())[None]
        e = np.where(valid, num / np.where(valid, den, 1), 0)
        return np.abs(_row_spearman(cov.ravel(), e, valid)).reshape(lead)

    ours = cdi(cov, y, pred, s, a, n_boot=4000, ci_method="bca")
    assert ours.cdi == pytest.approx(statistic(np.arange(len(y))[None])[0], abs=1e-12)
    theirs = bootstrap((np.arange(len(y)),), statistic, vectorized=True, method="BCa", n_resamples=4000,
                       random_state=0).confidence_interval
    assert ours.ci_low == pytest.approx(theirs.low, abs=0.03)
    assert ours.ci_high == pytest.approx(theirs.high, abs=0.03)
    # the formula on a known sample: symmetric jackknife (a = 0) and median-centred replicates (z0 = 0)
    boot = np.linspace(0, 1, 1001)
    lo, hi = bca_interval(boot, 0.5, np.array([-1.0, 1.0]), 0.9)
    assert (lo, hi) == (pytest.approx(0.05), pytest.approx(0.95))
