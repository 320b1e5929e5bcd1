"""Coverage (docs/METHODS.md, section "Coverage") against slow, obvious loop implementations, plus invariances and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semcov_lib.sci.coverage import (
    CoverageError,
    Membership,
    Resampling,
    across_class_variance,
    assign_strata,
    bootstrap_cell_sums,
    bootstrap_coverage_ci,
    coverage_array,
    coverage_table,
    group_counts,
    median_thresholds,
    membership,
    observed_counts,
    permutation_test,
    prevalence,
    support_array,
    table_coverage,
)


def random_data(n=400, T=4, K=3, S=3, seed=0, nan_frac=0.15, hard=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, T, n)
    s = rng.integers(0, S, n)
    a = rng.integers(0, 2, (n, K)).astype(float) if hard else np.round(rng.random((n, K)), 2)  # ties
    a[rng.random((n, K)) < nan_frac] = np.nan
    return y, s, a


def slow_coverage(y, s, a, T, S, phi=lambda v: v):
    """Explicit loops over every SCG: the definition, nothing clever."""
    K = a.shape[1]
    cov = np.full((T, K, S), np.nan)
    sup = np.full((T, K, S), np.nan)
    for c in range(T):
        for k in range(K):
            for g in range(S):
                total, count = 0.0, 0
                for i in range(len(y)):
                    if y[i] == c and s[i] == g and not np.isnan(a[i, k]):
                        total += phi(a[i, k])
                        count += 1
                if count:
                    cov[c, k, g] = total / count
                    sup[c, k, g] = total
    return cov, sup


def test_soft_coverage_matches_loops():
    y, s, a = random_data()
    cov, sup = slow_coverage(y, s, a, 4, 3)
    np.testing.assert_allclose(coverage_array(y, s, a, 4, 3), cov, equal_nan=True)
    np.testing.assert_allclose(support_array(y, s, a, 4, 3), sup, equal_nan=True)


def test_hard_coverage_tau_and_median():
    y, s, a = random_data(seed=1)
    cov, _ = slow_coverage(y, s, a, 4, 3, phi=lambda v: float(v >= 0.3))
    np.testing.assert_allclose(coverage_array(y, s, a, 4, 3, Membership("hard", tau=0.3)), cov, equal_nan=True)
    med = median_thresholds(a)
    np.testing.assert_allclose(med, [np.median(a[~np.isnan(a[:, k]), k]) for k in range(3)])
    expected = np.stack([slow_coverage(y, s, a[:, [k]], 4, 3, phi=lambda v, m=med[k]: float(v >= m))[0][:, 0]
                         for k in range(3)], axis=1)
    np.testing.assert_allclose(coverage_array(y, s, a, 4, 3, Membership("hard", thresholds="median")), expected,
                               equal_nan=True)
    np.testing.assert_allclose(coverage_array(y, s, a, 4, 3, Membership("hard", thresholds=med)), expected, equal_nan=True)


def test_nan_is_masked_not_zero():
    y = np.array([0, 0, 0, 1])
    a = np.array([[1.0], [np.nan], [0.5], [0.2]])
    cov = coverage_array(y, None, a, 2)
    assert cov.shape == (2, 1, 1)
    assert cov[0, 0, 0] == pytest.approx(0.75)  # (1 + 0.5) / 2, not / 3
    assert observed_counts(y, None, a, 2)[0, 0, 0] == 2
    assert group_counts(y, None, 2).tolist() == [[3], [1]]
    # membership keeps NaN
    assert np.isnan(membership(a, "hard")[1, 0])


def test_class_descriptor_variant_and_missing_class():
    y, s, a = random_data(T=3, seed=2)
    pooled = coverage_array(y, None, a, 4, 1)  # class 3 has no samples
    ref, _ = slow_coverage(y, np.zeros_like(s), a, 4, 1)
    np.testing.assert_allclose(pooled, ref, equal_nan=True)
    assert np.isnan(pooled[3]).all()
    np.testing.assert_allclose(coverage_array(y, np.zeros_like(y), a, 4, 1), pooled, equal_nan=True)


def test_duplication_leaves_coverage_unchanged():
    y, s, a = random_data(seed=3)
    cov = coverage_array(y, s, a, 4, 3)
    cov3 = coverage_array(np.tile(y, 3), np.tile(s, 3), np.tile(a, (3, 1)), 4, 3)
    np.testing.assert_allclose(cov3, cov, equal_nan=True)


def test_coverage_table_columns_and_values():
    y, s, a = random_data(seed=4)
    frame = coverage_table(y, s, a, ["A", "B", "C", "D"], ["d0", "d1", "d2"], ["x", "y", "z"])
    assert len(frame) == 4 * 3 * 3
    for col in ("class", "class_idx", "descriptor", "descriptor_idx", "subgroup", "subgroup_idx", "n_cs", "n_obs",
                "support", "coverage", "prevalence", "excess", "stratum"):
        assert col in frame.columns
    cov, sup = slow_coverage(y, s, a, 4, 3)
    np.testing.assert_allclose(frame["coverage"], cov.ravel(), equal_nan=True)
    np.testing.assert_allclose(frame["support"], sup.ravel(), equal_nan=True)
    pi = np.nanmean(a, axis=0)
    np.testing.assert_allclose(frame["prevalence"], pi[frame["descriptor_idx"]])
    np.testing.assert_allclose(frame["excess"], frame["coverage"] - frame["prevalence"])
    row = frame[(frame["class"] == "B") & (frame["descriptor"] == "d2") & (frame["subgroup"] == "z")].iloc[0]
    assert row["n_cs"] == np.sum((y == 1) & (s == 2))
    q25, q75 = np.quantile(cov[np.isfinite(cov)], [0.25, 0.75])
    expected = np.where(cov.ravel() <= q25, "Tail", np.where(cov.ravel() >= q75, "Head", "Middle"))
    assert (frame["stratum"].astype(str).to_numpy() == expected).all()
    np.testing.assert_allclose(prevalence(a), pi)


def test_strata_edge_cases():
    out = assign_strata(np.array([0.1, np.nan, 0.5, 0.9, 0.3]))
    assert out[1] is None
    assert out[0] == "Tail" and out[3] == "Head"
    assert assign_strata(np.array([np.nan]))[0] is None


def test_bad_inputs_raise_clear_errors():
    y = np.array([0, 1])
    with pytest.raises(CoverageError, match=r"outside \[0, 1\].*\(a \+ 1\) / 2"):
        coverage_array(y, None, np.array([[-1.0], [1.0]]), 2)
    with pytest.raises(CoverageError, match="outside"):
        coverage_array(y, None, np.array([[0.2], [np.inf]]), 2)
    with pytest.raises(CoverageError, match="not in the class list"):
        coverage_array(np.array([0, 5]), None, np.array([[0.2], [0.3]]), 2)
    with pytest.raises(CoverageError, match="subgroups"):
        coverage_array(y, np.array([0, 3]), np.array([[0.2], [0.3]]), 2, 2)
    with pytest.raises(CoverageError, match="differ in length"):
        coverage_array(y, None, np.array([[0.2]]), 2)
    with pytest.raises(CoverageError, match="mode"):
        coverage_array(y, None, np.array([[0.2], [0.3]]), 2, rule=Membership("fuzzy"))


def test_across_class_variance_matches_loops():
    rng = np.random.default_rng(5)
    cov = rng.random((4, 3, 2))
    cov[0, 1, 0] = np.nan
    cov[1:, 2, 1] = np.nan  # only one finite class: this (k, s) does not count
    values = []
    for k in range(3):
        for g in range(2):
            col = cov[:, k, g][np.isfinite(cov[:, k, g])]
            if len(col) >= 2:
                values.append(np.var(col))
    assert across_class_variance(cov) == pytest.approx(np.mean(values))


def test_permutation_test_detects_class_dependent_coverage_and_is_seeded():
    rng = np.random.default_rng(6)
    n, T, S = 300, 3, 2
    y, s = rng.integers(0, T, n), rng.integers(0, S, n)
    a = np.clip(0.2 + 0.3 * y[:, None] + rng.normal(0, 0.1, (n, 2)), 0, 1)
    res = permutation_test(y, s, a, T, S, Resampling(n_perm=99, seed=1))
    assert res.p_value == pytest.approx(0.01)
    assert res.null.shape == (99,) and np.all(res.null < res.statistic)
    again = permutation_test(y, s, a, T, S, Resampling(n_perm=99, seed=1))
    np.testing.assert_array_equal(res.null, again.null)
    glob = permutation_test(y, s, a, T, S, Resampling(n_perm=49, seed=1), within_subgroup=False)
    assert glob.p_value == pytest.approx(0.02)
    # null data: the permuted statistic is exchangeable with the observed one
    y0 = rng.integers(0, T, n)
    ps = [permutation_test(y0, s, rng.random((n, 2)), T, S, Resampling(n_perm=39, seed=i)).p_value for i in range(20)]
    assert 0.2 < np.mean(ps) < 0.8


def test_permutation_null_matches_slow_reference_in_distribution():
    rng = np.random.default_rng(7)
    n, T, S = 200, 3, 2
    y, s, a = rng.integers(0, T, n), rng.integers(0, S, n), rng.random((n, 2))
    fast = permutation_test(y, s, a, T, S, Resampling(n_perm=400, seed=0)).null
    slow = []
    r = np.random.default_rng(1)
    for _ in range(400):
        yp = y.copy()
        for g in range(S):
            idx = np.flatnonzero(s == g)
            yp[idx] = r.permutation(y[idx])
        slow.append(across_class_variance(coverage_array(yp, s, a, T, S)))
    assert np.mean(fast) == pytest.approx(np.mean(slow), rel=0.1)


def test_bootstrap_cell_sums_conserve_totals():
    rng = np.random.default_rng(8)
    bounds = np.array([0, 3, 3, 700, 1000])  # includes an empty cell and a large one
    values = np.ones((1000, 1))
    sums = bootstrap_cell_sums(values, bounds, 200, rng)
    assert np.all(sums[:, 1] == 0)
    np.testing.assert_allclose(sums.sum(axis=1)[:, 0], 1000)  # plain bootstrap keeps N
    strat = bootstrap_cell_sums(values, bounds, 200, rng, strata=np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(strat[:, :2].sum(axis=1)[:, 0], 3)
    np.testing.assert_allclose(strat[:, 2:].sum(axis=1)[:, 0], 997)
    vals = rng.random((1000, 2))
    mean = bootstrap_cell_sums(vals, bounds, 2000, rng).mean(axis=0)
    exact = np.array([vals[bounds[j]:bounds[j + 1]].sum(axis=0) for j in range(4)])
    np.testing.assert_allclose(mean, exact, rtol=0.03, atol=0.1)


def test_bootstrap_coverage_ci():
    y, s, a = random_data(n=600, T=3, S=2, seed=9, nan_frac=0.0)
    cov = coverage_array(y, s, a, 3, 2)
    lo, hi = bootstrap_coverage_ci(y, s, a, 3, 2, Resampling(n_boot=300, seed=0))
    assert lo.shape == cov.shape
    assert np.all(lo <= cov + 1e-9) and np.all(cov <= hi + 1e-9)
    lo2, hi2 = bootstrap_coverage_ci(y, s, a, 3, 2, Resampling(n_boot=300, seed=0))
    np.testing.assert_array_equal(lo, lo2)
    lo3, hi3 = bootstrap_coverage_ci(y, s, a, 4, 2, Resampling(n_boot=50, seed=0))
    assert np.isnan(lo3[3]).all()


def test_table_coverage_on_scitable():
    from semcov_lib.data.table import SCITable

    y, s, a = random_data(n=120, T=3, K=2, S=2, seed=10)
    frame = pd.DataFrame({
        "sample_id": [f"i{i}" for i in range(120)], "image_path": ["x.png"] * 120, "label": y,
        "subgroup": np.array(["dark", "light"])[s], "split": np.where(np.arange(120) < 80, "train", "test"),
        "hair": a[:, 0], "ruler": a[:, 1],
    })
    table = SCITable(frame, ["A", "B", "C"], ["hair", "ruler"])
    out = table_coverage(table)
    train = np.arange(120) < 80
    np.testing.assert_allclose(out["coverage"], coverage_array(y[train], s[train], a[train], 3, 2).ravel(),
                               equal_nan=True)
    assert set(out["subgroup"]) == {"dark", "light"}
    pooled = table_coverage(table, by_subgroup=False)
    assert len(pooled) == 6 and set(pooled["subgroup"]) == {"all"}
    with pytest.raises(CoverageError, match="no rows"):
        table_coverage(table, split="stress")
