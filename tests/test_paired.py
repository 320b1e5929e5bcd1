"""Hierarchical paired bootstrap: exact nulls, clear differences, the seed level, tail-class and
worst-group accuracy, run-folder loading."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from semcov_lib.sci.cdi import Resampling, SCGReference
from semcov_lib.sci.coverage import CoverageError
from semcov_lib.report.tables import paired_sentences
from semcov_lib.sci.metrics import evaluate, shot_accuracy, shot_groups, worst_group
from semcov_lib.sci.paired import (
    FAST_METRICS,
    SeedPair,
    flag_levelling_down,
    levels_down,
    paired_bootstrap,
    paired_from_runs,
)

T, K, S = 4, 3, 2
# world()'s classes hold 713-800 training samples; at shot scale 37.5 the tail threshold is 20 x 37.5
# = 750, so some of them are tail classes and tail_accuracy is defined
SHOT_SCALE = 37.5
LONG_TAIL = [0.75, 0.17, 0.05, 0.03]  # class shares of long_tailed_world()
LONG_TAIL_SCALE = 10.0  # thresholds 1000 / 200: class 0 head, class 1 medium, classes 2 and 3 tail


def world(n=2000, seed=0, class_p=None):
    """A training reference and an evaluation split whose descriptors depend on class and subgroup
    (classes uniform, or drawn with the shares ``class_p``)."""
    rng = np.random.default_rng(seed)
    draw = (lambda m: rng.integers(0, T, m)) if class_p is None else (lambda m: rng.choice(T, m, p=class_p))
    base = rng.random((T, K, S))
    y_tr, s_tr = draw(3000), rng.integers(0, S, 3000)
    a_tr = np.clip(base[y_tr, :, s_tr] + rng.normal(0, 0.1, (3000, K)), 0, 1)
    ref = SCGReference.from_training(y_tr, s_tr, a_tr, list("ABCD"), ["d0", "d1", "d2"], ["u", "v"])
    y, s = draw(n), rng.integers(0, S, n)
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
    table = paired_bootstrap(pairs, ref, FAST_METRICS, n_boot=300, seed=0, shot_scale=SHOT_SCALE)
    assert (table["delta"] == 0).all() and (table["ci_low"] <= 0).all() and (table["ci_high"] >= 0).all()
    assert (table["p"] == 1).all() and not table["significant"].any()
    # every draw computes A and B from the same sums: Delta* is exactly 0
    new = table.set_index("metric").loc[["tail_accuracy", "worst_group_accuracy"]]
    assert (new["ci_low"] == 0).all() and (new["ci_high"] == 0).all() and new["a"].notna().all()


def test_large_difference_is_significant_and_originals_match_evaluate():
    ref, y, s, a, rng = world(seed=1)
    # A errs where coverage is low (a strong CDI); B errs rarely and at random
    mean_score = a.mean(axis=1)
    pairs = []
    for _ in range(3):
        wrong_a = rng.random(len(y)) < np.clip(0.9 - 1.2 * mean_score, 0.02, 0.9)
        wrong_b = rng.random(len(y)) < 0.05
        pairs.append(SeedPair(y, s, a, probs_for(y, wrong_a, rng), probs_for(y, wrong_b, rng)))
    table = paired_bootstrap(pairs, ref, FAST_METRICS, n_boot=500, seed=0, shot_scale=SHOT_SCALE).set_index("metric")
    for metric in ("macro_f1", "balanced_accuracy", "accuracy", "tail_accuracy", "worst_group_accuracy"):
        assert table.loc[metric, "ci_low"] > 0 and table.loc[metric, "significant"]
        assert table.loc[metric, "p"] <= 2 / 500
    assert table.loc["cdi", "ci_high"] < 0 and table.loc["cdi", "rel_ci_low"] > 0
    assert table.loc["cdi", "rel_reduction"] == pytest.approx(
        (table.loc["cdi", "a"] - table.loc["cdi", "b"]) / table.loc["cdi", "a"])
    assert np.isnan(table.loc["macro_f1", "rel_reduction"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev_a = [evaluate(y, p.probs_a, s, a, ref, Resampling(n_boot=0, n_perm=0), SHOT_SCALE) for p in pairs]
        ev_b = [evaluate(y, p.probs_b, s, a, ref, Resampling(n_boot=0, n_perm=0), SHOT_SCALE) for p in pairs]
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
        pred = probs.argmax(1)
        # worst group by bincount (metrics.worst_group's pandas groupby is too slow for 4000 calls);
        # ~100 samples per (class, subgroup): no resample takes a group below min_group_n = 30, so
        # eligibility per resample is the fast path's fixed one
        n = np.bincount(y_ * S + s_, minlength=T * S)
        right = np.bincount(y_ * S + s_, weights=pred == y_, minlength=T * S)
        large = n >= reference.min_group_n
        return {"accuracy": float(np.mean(pred == y_)),
                "tail_accuracy": shot_accuracy(y_, pred, reference.class_counts, scale=SHOT_SCALE)["tail_accuracy"],
                "worst_group_accuracy": float(np.min(right[large] / n[large]))}

    names = ["accuracy", "tail_accuracy", "worst_group_accuracy"]
    fast = paired_bootstrap(pairs, ref, names, n_boot=1000, seed=0, shot_scale=SHOT_SCALE).set_index("metric")
    slow = paired_bootstrap(pairs, ref, acc, n_boot=1000, seed=1).set_index("metric")
    # CI ends from two independent sets of 1000 draws: Monte Carlo error grows with the CI's width
    for metric, tol in (("accuracy", 0.01), ("tail_accuracy", 0.015), ("worst_group_accuracy", 0.025)):
        assert fast.loc[metric, "delta"] == pytest.approx(slow.loc[metric, "delta"], abs=1e-12), metric
        assert fast.loc[metric, "ci_low"] == pytest.approx(slow.loc[metric, "ci_low"], abs=tol), metric
        assert fast.loc[metric, "ci_high"] == pytest.approx(slow.loc[metric, "ci_high"], abs=tol), metric


def test_tail_and_worst_group_accuracy_match_metrics_on_original_data():
    ref, y, s, a, rng = world(n=800, seed=5, class_p=LONG_TAIL)
    assert set(shot_groups(ref.class_counts, scale=LONG_TAIL_SCALE)) == {"head", "medium", "tail"}
    n_group = np.bincount(y * S + s, minlength=T * S)
    assert (n_group < ref.min_group_n).any() and (n_group >= ref.min_group_n).sum() >= 2
    error = np.array([0.1, 0.2, 0.5, 0.6])  # the rare classes, whose groups are small, err most
    pairs = [SeedPair(y, s, a, probs_for(y, rng.random(len(y)) < error[y], rng),
                      probs_for(y, rng.random(len(y)) < error[y] / 2, rng)) for _ in range(3)]
    names = ["tail_accuracy", "worst_group_accuracy"]
    table = paired_bootstrap(pairs, ref, names, n_boot=50, seed=0, shot_scale=LONG_TAIL_SCALE).set_index("metric")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for column, probs in (("a", [p.probs_a for p in pairs]), ("b", [p.probs_b for p in pairs])):
            pred = [p.argmax(1) for p in probs]
            tail = [shot_accuracy(y, q, ref.class_counts, scale=LONG_TAIL_SCALE)["tail_accuracy"] for q in pred]
            worst = [worst_group(y, q, s, ref.min_group_n)["worst_group_accuracy"] for q in pred]
            everyone = [worst_group(y, q, s, 1)["worst_group_accuracy"] for q in pred]
            assert table.loc["tail_accuracy", column] == pytest.approx(np.mean(tail), abs=1e-12)
            assert table.loc["worst_group_accuracy", column] == pytest.approx(np.mean(worst), abs=1e-12)
            assert np.mean(everyone) < np.mean(worst)  # the small groups are worse: min_group_n matters


def test_worst_group_skips_small_groups_by_hand():
    """3 classes (training counts 100, 10, 5: the last two are tail at shot scale 1), 2 subgroups,
    min_group_n = 3; class 2 is absent from the evaluation split."""
    ref = SCGReference(coverage=np.full((3, 1, 2), 0.5), class_counts=[100, 10, 5], classes=list("abc"),
                       descriptors=["d"], subgroups=["u", "v"], min_group_n=3)
    # group (class, subgroup): n, correct of A, correct of B
    groups = {(0, 0): (4, 3, 2), (0, 1): (3, 2, 3), (1, 0): (2, 0, 2), (1, 1): (3, 3, 3)}
    y, s, right_a, right_b = [], [], [], []
    for (c, g), (n, ka, kb) in groups.items():
        y += [c] * n
        s += [g] * n
        right_a += [True] * ka + [False] * (n - ka)
        right_b += [True] * kb + [False] * (n - kb)
    y, s = np.array(y), np.array(s)
    probs = [np.eye(3)[np.where(right, y, (y + 1) % 3)] for right in (right_a, right_b)]
    pair = SeedPair(y, s, np.full((len(y), 1), 0.5), probs[0], probs[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = paired_bootstrap([pair], ref, ["tail_accuracy", "worst_group_accuracy"], n_boot=20).set_index("metric")
    # A: group (1, 0) is at 0/2 but has 2 < 3 samples; the worst of the others is (0, 1) at 2/3
    # B: every group of >= 3 samples is right except (0, 0) at 2/4
    assert table.loc["worst_group_accuracy", "a"] == pytest.approx(2 / 3)
    assert table.loc["worst_group_accuracy", "b"] == pytest.approx(1 / 2)
    # tail accuracy: class 1 only (class 2 is absent): A 3/5, B 5/5
    assert table.loc["tail_accuracy", "a"] == pytest.approx(3 / 5)
    assert table.loc["tail_accuracy", "b"] == pytest.approx(1.0)
    assert table.loc["tail_accuracy", "delta"] == pytest.approx(2 / 5)
    # without class counts no class is a tail class: NaN, and a warning says why
    blind = SCGReference(coverage=np.full((3, 1, 2), 0.5), classes=list("abc"), descriptors=["d"],
                         subgroups=["u", "v"], min_group_n=3)
    with pytest.warns(UserWarning, match="no class counts"):
        table = paired_bootstrap([pair], blind, ["tail_accuracy"], n_boot=20).set_index("metric")
    assert np.isnan(table.loc["tail_accuracy", "a"])


def test_levelling_down_flag():
    table = pd.DataFrame({"metric": ["cdi", "head_error", "middle_error", "tail_error"],
                          "ci_low": [0.1, 0.01, -0.02, 0.05], "ci_high": [0.2, 0.05, 0.01, 0.09]})
    flagged = flag_levelling_down(table)
    assert flagged["levelling_down"].tolist() == [False, True, False, False]
    assert levels_down(table) and not levels_down(table.iloc[[0, 2, 3]])


def test_sentences_count_higher_accuracies_as_better():
    table = pd.DataFrame({"method": "m", "metric": ["tail_accuracy", "worst_group_accuracy", "tail_error"],
                          "delta": [0.1, -0.1, -0.1], "significant": True, "rel_reduction": np.nan})
    assert paired_sentences(table, "erm") == [
        "m vs erm: significantly better on tail_accuracy, tail_error; significantly worse on worst_group_accuracy."]


def write_run(folder, seed, ref, y, s, a, probs, order=None, shot_scale=SHOT_SCALE):
    folder.mkdir(parents=True)
    order = np.arange(len(y)) if order is None else order
    frame = pd.DataFrame({"sample_id": [f"x{i}" for i in order], "label": y[order], "pred": probs[order].argmax(1),
                          "subgroup": np.asarray(ref.subgroups)[s[order]]})
    frame = pd.concat([frame, pd.DataFrame(probs[order], columns=[f"prob_{c}" for c in ref.classes]),
                       pd.DataFrame(a[order], columns=[f"score_{d}" for d in ref.descriptors])], axis=1)
    frame.to_csv(folder / "predictions_stress.csv", index=False)
    (folder / "reference.json").write_text(json.dumps(ref.to_dict()))
    (folder / "metrics.json").write_text(json.dumps({"seed": seed}))
    (folder / "config.json").write_text(json.dumps({"seed": seed, "shot_scale": shot_scale}))


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
    direct = paired_bootstrap([SeedPair(y, s, a, pa[r], pb[r]) for r in range(2)], ref, n_boot=200, seed=0,
                              shot_scale=SHOT_SCALE)
    assert np.isfinite(direct.set_index("metric").loc["tail_accuracy", "a"])  # the shot scale was read
    pd.testing.assert_frame_equal(from_files, direct, rtol=1e-9)
    with pytest.raises(CoverageError, match="do not pair"):
        paired_from_runs([tmp_path / "a-s0"], [tmp_path / "b-s1"], "stress", n_boot=10)
    write_run(tmp_path / "c-s0", 0, ref, y, s, a, pb[0], shot_scale=1.0)  # another profile's tail classes
    with pytest.raises(CoverageError, match="c-s0/config.json has shot_scale 1.0"):
        paired_from_runs([tmp_path / "a-s0"], [tmp_path / "c-s0"], "stress", n_boot=10)
    with pytest.raises(FileNotFoundError, match="predictions_test.csv"):
        paired_from_runs([tmp_path / "a-s0"], [tmp_path / "b-s0"], "test", n_boot=10)
    with pytest.raises(CoverageError, match="unknown metric"):
        paired_bootstrap([SeedPair(y, s, a, pa[0], pb[0])], ref, ["auroc"], n_boot=10)
