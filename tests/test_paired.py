"""Hierarchical paired bootstrap: exact nulls, clear differences, the seed level, run-folder loading."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from semcov_lib.sci.cdi import Resampling, SCGReference
from semcov_lib.sci.coverage import CoverageError
from semcov_lib.sci.metrics import evaluate
from semcov_lib.sci.paired import (
    FAST_METRICS,
    SeedPair,
    flag_levelling_down,
    levels_down,
    paired_bootstrap,
    paired_from_runs,
)

T, K, S = 4, 3, 2


def world(n=2000, seed=0):
    """A training reference and an evaluation split whose descriptors depend on class and subgroup."""
    rng = np.random.default_rng(seed)
    base = rng.random((T, K, S))
    y_tr, s_tr = rng.integers(0, T, 3000), rng.integers(0, S, 3000)
    a_tr = np.clip(base[y_tr, :, s_tr] + rng.normal(0, 0.1, (3000, K)), 0, 1)
    ref = SCGReference.from_training(y_tr, s_tr, a_tr, list("ABCD"), ["d0", "d1", "d2"], ["u", "v"])
    y, s = rng.integers(0, T, n), rng.integers(0, S, n)
    a = np.clip(base[y, :, s] + rng.normal(0, 0.1, (n, K)), 0, 1)
    return ref, y, s, a, rng


def probs_for(y, wrong, rng):
    """Probabilities whose argmax is y except where ``wrong`` (then the next class)."""
    pred = np.where(wrong, (y + 1) % T, y)
    p = rng.dirichlet(np.ones(T), size=len(y)) * 0.3
    p[np.arange(len(y)), pred] += 1
    return p / p.sum(1, keepdims=True)


def test_identical_predictions_give_zero_delta():
    ref, y, s, a, rng = world()
    pairs = []
    for _ in range(3):
        p = probs_for(y, rng.random(len(y)) < 0.3, rng)
        pairs.append(SeedPair(y, s, a, p, p.copy()))
    table = paired_bootstrap(pairs, ref, FAST_METRICS, n_boot=300, seed=0)
    assert (table["delta"] == 0).all() and (table["ci_low"] <= 0).all() and (table["ci_high"] >= 0).all()
    assert (table["p"] == 1).all() and not table["significant"].any()


def test_large_difference_is_significant_and_originals_match_evaluate():
    ref, y, s, a, rng = world(seed=1)
    # A errs where coverage is low (a strong CDI); B errs rarely and at random
    mean_score = a.mean(axis=1)
    pairs = []
    for _ in range(3):
        wrong_a = rng.random(len(y)) < np.clip(0.9 - 1.2 * mean_score, 0.02, 0.9)
        wrong_b = rng.random(len(y)) < 0.05
        pairs.append(SeedPair(y, s, a, probs_for(y, wrong_a, rng), probs_for(y, wrong_b, rng)))
    table = paired_bootstrap(pairs, ref, FAST_METRICS, n_boot=500, seed=0).set_index("metric")
    for metric in ("macro_f1", "balanced_accuracy", "accuracy"):
        assert table.loc[metric, "ci_low"] > 0 and table.loc[metric, "significant"]
        assert table.loc[metric, "p"] <= 2 / 500
    assert table.loc["cdi", "ci_high"] < 0 and table.loc["cdi", "rel_ci_low"] > 0
    assert table.loc["cdi", "rel_reduction"] == pytest.approx(
        (table.loc["cdi", "a"] - table.loc["cdi", "b"]) / table.loc["cdi", "a"])
    assert np.isnan(table.loc["macro_f1", "rel_reduction"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev_a = [evaluate(y, p.probs_a, s, a, ref, Resampling(n_boot=0, n_perm=0)) for p in pairs]
        ev_b = [evaluate(y, p.probs_b, s, a, ref, Resampling(n_boot=0, n_perm=0)) for p in pairs]
    for metric in FAST_METRICS:
        assert table.loc[metric, "a"] == pytest.approx(np.mean([e[metric] for e in ev_a]), abs=1e-12), metric
        assert table.loc[metric, "b"] == pytest.approx(np.mean([e[metric] for e in ev_b]), abs=1e-12), metric


def test_seed_level_is_resampled():
    """A metric that only sees the seed: Delta* is the mean of resampled per-seed deltas (0, 0, 1)."""
    ref, y, s, a, rng = world(n=60, seed=2)
    p = probs_for(y, rng.random(len(y)) < 0.3, rng)
    pairs = [SeedPair(y, s, a, p, p + (1.0 if r == 2 else 0.0)) for r in range(3)]

    def seed_only(y_, probs, s_, a_, reference):
        return {"level": float(probs.max() > 1.5)}

    table = paired_bootstrap(pairs, ref, seed_only, n_boot=2000, seed=0).set_index("metric")
    assert table.loc["level", "delta"] == pytest.approx(1 / 3)
    # P(Delta* = 0) = P(seed 2 never drawn) = (2/3)^3; Delta* >= 0 always
    assert table.loc["level", "p"] == pytest.approx(2 * (2 / 3) ** 3, abs=0.05)
    assert table.loc["level", "ci_low"] == 0 and table.loc["level", "ci_high"] == 1


def test_fast_and_generic_paths_agree_in_distribution():
    ref, y, s, a, rng = world(n=800, seed=3)
    pairs = [SeedPair(y, s, a, probs_for(y, rng.random(len(y)) < 0.3, rng),
                      probs_for(y, rng.random(len(y)) < 0.25, rng)) for _ in range(2)]

    def acc(y_, probs, s_, a_, reference):
        return {"accuracy": float(np.mean(probs.argmax(1) == y_))}

    fast = paired_bootstrap(pairs, ref, ["accuracy"], n_boot=1000, seed=0).iloc[0]
    slow = paired_bootstrap(pairs, ref, acc, n_boot=1000, seed=1).iloc[0]
    assert fast["delta"] == pytest.approx(slow["delta"], abs=1e-12)
    assert fast["ci_low"] == pytest.approx(slow["ci_low"], abs=0.01)
    assert fast["ci_high"] == pytest.approx(slow["ci_high"], abs=0.01)


def test_levelling_down_flag():
    table = pd.DataFrame({"metric": ["cdi", "head_error", "middle_error", "tail_error"],
                          "ci_low": [0.1, 0.01, -0.02, 0.05], "ci_high": [0.2, 0.05, 0.01, 0.09]})
    flagged = flag_levelling_down(table)
    assert flagged["levelling_down"].tolist() == [False, True, False, False]
    assert levels_down(table) and not levels_down(table.iloc[[0, 2, 3]])


def write_run(folder, seed, ref, y, s, a, probs, order=None):
    folder.mkdir(parents=True)
    order = np.arange(len(y)) if order is None else order
    frame = pd.DataFrame({"sample_id": [f"x{i}" for i in order], "label": y[order], "pred": probs[order].argmax(1),
                          "subgroup": np.asarray(ref.subgroups)[s[order]]})
    frame = pd.concat([frame, pd.DataFrame(probs[order], columns=[f"prob_{c}" for c in ref.classes]),
                       pd.DataFrame(a[order], columns=[f"score_{d}" for d in ref.descriptors])], axis=1)
    frame.to_csv(folder / "predictions_stress.csv", index=False)
    (folder / "reference.json").write_text(json.dumps(ref.to_dict()))
    (folder / "metrics.json").write_text(json.dumps({"seed": seed}))


def test_paired_from_runs_reads_files_and_pairs_by_seed(tmp_path):
    ref, y, s, a, rng = world(n=500, seed=4)
    a[rng.random(a.shape) < 0.05] = np.nan  # missing descriptor scores survive the CSV round trip
    pa = [probs_for(y, rng.random(len(y)) < 0.3, rng) for _ in range(2)]
    pb = [probs_for(y, rng.random(len(y)) < 0.2, rng) for _ in range(2)]
    for seed in range(2):
        write_run(tmp_path / f"a-s{seed}", seed, ref, y, s, a, pa[seed])
        write_run(tmp_path / f"b-s{seed}", seed, ref, y, s, a, pb[seed], order=rng.permutation(len(y)))
    from_files = paired_from_runs([tmp_path / "a-s0", tmp_path / "a-s1"], [tmp_path / "b-s1", tmp_path / "b-s0"],
                                  "stress", n_boot=200, seed=0)
    direct = paired_bootstrap([SeedPair(y, s, a, pa[r], pb[r]) for r in range(2)], ref, n_boot=200, seed=0)
    pd.testing.assert_frame_equal(from_files, direct, rtol=1e-9)
    with pytest.raises(CoverageError, match="do not pair"):
        paired_from_runs([tmp_path / "a-s0"], [tmp_path / "b-s1"], "stress", n_boot=10)
    with pytest.raises(FileNotFoundError, match="predictions_test.csv"):
        paired_from_runs([tmp_path / "a-s0"], [tmp_path / "b-s0"], "test", n_boot=10)
    with pytest.raises(CoverageError, match="unknown metric"):
        paired_bootstrap([SeedPair(y, s, a, pa[0], pb[0])], ref, ["auroc"], n_boot=10)
