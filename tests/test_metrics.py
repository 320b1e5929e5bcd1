"""Metrics (docs/METHODS.md, section "Metrics") against scikit-learn / explicit loops on the same inputs; edge cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
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

from semcov_lib.sci.cdi import Resampling, SCGReference, compute_cdi
from semcov_lib.sci.metrics import (
    MetricWarning,
    accuracy,
    auroc,
    balanced_accuracy,
    class_sens_at_spec,
    ece,
    evaluate,
    group_accuracy,
    macro_f1,
    multilabel_metrics,
    reliability_data,
    sens_at_95spec,
    sens_at_spec,
    shot_accuracy,
    shot_groups,
    shot_thresholds,
    stratum_errors,
    wilson_interval,
    worst_class,
    worst_group,
    worst_group_accuracy,
)


def data(n=600, T=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, T, n)
    logits = rng.normal(size=(n, T)) + 1.5 * np.eye(T)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_basic_metrics_match_sklearn():
    y, p = data()
    pred = p.argmax(1)
    assert accuracy(y, pred) == pytest.approx(accuracy_score(y, pred))
    assert balanced_accuracy(y, pred, 4) == pytest.approx(balanced_accuracy_score(y, pred))
    assert macro_f1(y, pred, 4) == pytest.approx(f1_score(y, pred, average="macro"))
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    yb, pb = data(T=2, seed=1)
    assert auroc(yb, pb) == pytest.approx(roc_auc_score(yb, pb[:, 1]))


def reference_sens(yb, score, spec=0.95):
    fpr, tpr, _ = roc_curve(yb, score, drop_intermediate=False)
    return max(t for f, t in zip(fpr, tpr) if f <= 1 - spec + 1e-12)


def test_sens_at_spec():
    y, p = data(T=2, seed=2)
    assert sens_at_95spec(y, p) == pytest.approx(reference_sens(y == 1, p[:, 1]))
    y, p = data(T=4, seed=3)
    expected = np.mean([reference_sens(y == c, p[:, c]) for c in range(4)])
    assert sens_at_95spec(y, p) == pytest.approx(expected)
    assert class_sens_at_spec(y, p, 2) == pytest.approx(reference_sens(y == 2, p[:, 2]))
    # explicit small case: negatives 0.1..0.5 (5), positives 0.3, 0.6, 0.7; FPR <= 0.05 -> no negative above
    yb = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    sc = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.6, 0.7])
    assert sens_at_spec(yb, sc) == pytest.approx(2 / 3)


def slow_ece(y, p, n_bins=15):
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        rows = [i for i in range(len(y)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        if rows:
            total += len(rows) / len(y) * abs(np.mean(pred[rows] == y[rows]) - np.mean(conf[rows]))
    return total


def test_ece_and_reliability_match_loops():
    y, p = data(seed=4)
    assert ece(y, p) == pytest.approx(slow_ece(y, p))
    rel = reliability_data(y, p)
    assert len(rel) == 15 and rel["count"].sum() == len(y)
    conf = p.max(1)
    b = 9  # (0.6, 0.6667]
    rows = (conf > 9 / 15) & (conf <= 10 / 15)
    assert rel.loc[b, "count"] == rows.sum()
    assert rel.loc[b, "confidence"] == pytest.approx(conf[rows].mean())
    assert rel.loc[b, "accuracy"] == pytest.approx((p.argmax(1)[rows] == y[rows]).mean())
    # perfectly calibrated toy: confidence 1 and always right
    assert ece(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.0)


def test_worst_group_and_group_accuracy():
    y, p = data(seed=5)
    pred = p.argmax(1)
    s = np.random.default_rng(0).integers(0, 3, len(y))
    accs = [np.mean(pred[(y == c) & (s == g)] == c) for c in range(4) for g in range(3) if np.any((y == c) & (s == g))]
    assert worst_group_accuracy(y, pred, s) == pytest.approx(min(accs))
    table = group_accuracy(y, pred, s)
    assert len(table) == len(accs) and table["n"].sum() == len(y)
    assert worst_group_accuracy(y, pred, None) == pytest.approx(min(np.mean(pred[y == c] == c) for c in range(4)))


def test_shot_accuracy():
    counts = np.array([500, 150, 60, 20, 5])
    assert shot_groups(counts).tolist() == ["head", "head", "medium", "medium", "tail"]
    many, few = shot_thresholds(np.array([64, 10]), scale="auto")
    assert many == pytest.approx(100 * 64 / 1280) and few == pytest.approx(20 * 64 / 1280)
    rng = np.random.default_rng(6)
    y = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.6, y, 0)
    out = shot_accuracy(y, pred, counts)
    recall = [np.mean(pred[y == c] == c) for c in range(5)]
    assert out["head_accuracy"] == pytest.approx(np.mean(recall[:2]))
    assert out["medium_accuracy"] == pytest.approx(np.mean(recall[2:4]))
    assert out["tail_accuracy"] == pytest.approx(recall[4])
    with pytest.warns(MetricWarning, match="absent"):
        out = shot_accuracy(y[y != 4], pred[y != 4], counts)
    assert np.isnan(out["tail_accuracy"])


def test_absent_class_gives_values_and_warnings():
    y, p = data(T=4, seed=7)
    keep = y != 3
    y, p = y[keep], p[keep]
    pred = p.argmax(1)
    with pytest.warns(MetricWarning, match="absent"):
        f1 = macro_f1(y, pred, 4)
    assert f1 == pytest.approx(f1_score(y, pred, labels=[0, 1, 2], average="macro"))
    with pytest.warns(MetricWarning):
        assert auroc(y, p) == pytest.approx(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(3)]))
    with pytest.warns(MetricWarning):
        assert np.isfinite(sens_at_95spec(y, p))
    with pytest.warns(MetricWarning):
        assert balanced_accuracy(y, pred, 4) == pytest.approx(np.mean([np.mean(pred[y == c] == c) for c in range(3)]))
    one = np.zeros(10, dtype=int)
    with pytest.warns(MetricWarning):
        assert np.isnan(auroc(one, np.full((10, 2), 0.5)))
    with pytest.warns(MetricWarning):
        assert np.isnan(sens_at_spec(one, np.linspace(0, 1, 10)))


def test_stratum_errors():
    frame = pd.DataFrame({
        "coverage": [0.1, 0.2, 0.5, 0.9, 0.95], "error": [0.5, 0.3, 0.2, 0.1, 0.9],
        "weight": [10.0, 30.0, 5.0, 20.0, 1.0], "valid": [True, True, True, True, False],
        "stratum": ["Tail", "Tail", "Middle", "Head", "Head"],
    })
    out = stratum_errors(frame)
    assert out["tail_error"] == pytest.approx((10 * 0.5 + 30 * 0.3) / 40)
    assert out["middle_error"] == pytest.approx(0.2)
    assert out["head_error"] == pytest.approx(0.1)


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(8)
    Y = (rng.random((80, 6)) < 0.3).astype(int)
    Y[:, 5] = 0  # a label without positives
    scores = np.clip(Y * 0.4 + rng.random((80, 6)) * 0.6, 0, 1)
    with pytest.warns(MetricWarning, match="no positive"):
        out = multilabel_metrics(Y, scores)
    assert out["mAP"] == pytest.approx(np.mean([average_precision_score(Y[:, j], scores[:, j]) for j in range(5)]))
    pred = (scores >= 0.5).astype(int)
    cp = precision_score(Y, pred, average="macro", zero_division=0)
    cr = recall_score(Y, pred, average="macro", zero_division=0)
    assert out["CP"] == pytest.approx(cp) and out["CR"] == pytest.approx(cr)
    assert out["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))
    assert out["OP"] == pytest.approx(precision_score(Y, pred, average="micro"))
    assert out["OR"] == pytest.approx(recall_score(Y, pred, average="micro"))
    top = np.zeros_like(Y)
    np.put_along_axis(top, np.argsort(-scores, axis=1, kind="stable")[:, :3], 1, axis=1)
    assert out["OP_top3"] == pytest.approx(precision_score(Y, top, average="micro"))
    assert out["CR_top3"] == pytest.approx(recall_score(Y, top, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        empty = multilabel_metrics(np.zeros((4, 3)), np.random.default_rng(0).random((4, 3)))
    assert np.isnan(empty["mAP"]) and empty["OR"] == 0.0


def test_wilson_interval_matches_scipy_binomtest():
    for k, n in [(0, 6), (1, 6), (6, 6), (17, 30), (290, 300), (3, 1000)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    low, high = wilson_interval(np.array([2, 0]), np.array([10, 0]))
    assert low[0] == pytest.approx(binomtest(2, 10).proportion_ci(method="wilson").low) and np.isnan(high[1])


def test_worst_group_needs_min_group_n_and_reports_name_n_ci():
    y = np.r_[np.zeros(40, int), np.ones(40, int), np.full(6, 2)]
    s = np.r_[np.zeros(20, int), np.ones(20, int), np.zeros(40, int), np.zeros(6, int)]
    pred = y.copy()
    pred[:5] = 1  # group (A, u): 15 / 20 right
    pred[40:55] = 0  # group (B, u): 25 / 40 right
    pred[80:86] = 0  # group (C, u): 0 / 6 right, but too small
    out = worst_group(y, pred, s, 30, ["A", "B", "C"], ["u", "v"])
    assert out["worst_group"] == "B / u" and out["worst_group_n"] == 40
    assert out["worst_group_accuracy"] == pytest.approx(25 / 40)
    ci = binomtest(25, 40).proportion_ci(method="wilson")
    assert (out["worst_group_ci_low"], out["worst_group_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert worst_group(y, pred, s, 5)["worst_group_accuracy"] == 0.0  # the 6-image group counts at n >= 5
    with pytest.warns(MetricWarning, match="no"):
        assert np.isnan(worst_group(y, pred, s, 100)["worst_group_accuracy"])
    wc = worst_class(y, pred, ["A", "B", "C"])
    assert wc == {"worst_class_accuracy": 0.0, "worst_class": "C"}


def reference_of(n=600, seed=9, classes=("MEL", "NV", "BCC")):
    rng = np.random.default_rng(seed)
    y_tr, s_tr, a_tr = rng.integers(0, 3, n), rng.integers(0, 2, n), rng.random((n, 4))
    return SCGReference.from_training(y_tr, s_tr, a_tr, list(classes), subgroup_levels=["u", "v"]), rng


def test_evaluate_keys_and_values():
    ref, rng = reference_of()
    n = 600
    y, p = data(n=n, T=3, seed=10)
    s, a = rng.integers(0, 2, n), rng.random((n, 4))
    rs = Resampling(n_boot=50, n_perm=100, seed=0)
    out = evaluate(y, p, s, a, ref, rs, shot_scale="auto")
    expected = {"n_samples", "accuracy", "balanced_accuracy", "macro_f1", "auroc", "sens_at_95spec", "ece",
                "worst_group_accuracy", "worst_group", "worst_group_n", "worst_group_ci_low", "worst_group_ci_high",
                "worst_group_candidates", "worst_class_accuracy", "worst_class",
                "cdi", "cdi_ci_low", "cdi_ci_high", "cdi_signed_rho", "cdi_pearson_log", "cdi_weighted",
                "cdi_within", "cdi_within_signed", "cdi_within_ci_low", "cdi_within_ci_high", "cdi_p", "cdi_within_p",
                "n_valid_scgs", "n_scgs", "n_removed_coverage", "n_removed_train_n", "n_removed_weight",
                "n_within_classes", "tail_error", "middle_error", "head_error", "head_accuracy",
                "medium_accuracy", "tail_accuracy", "sens_at_95spec_mel"}
    assert set(out) == expected
    json.dumps(out)  # plain floats / ints / names
    assert isinstance(out["n_valid_scgs"], int) and isinstance(out["worst_group"], str)
    assert out["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))
    res = compute_cdi(ref, y, p.argmax(1), s, a, resampling=rs)
    assert out["cdi"] == pytest.approx(res.cdi) and out["cdi_ci_high"] == pytest.approx(res.ci_high)
    assert out["cdi_within"] == pytest.approx(res.cdi_within) and out["cdi_p"] == pytest.approx(res.cdi_p)
    assert out["n_valid_scgs"] + out["n_removed_coverage"] + out["n_removed_train_n"] + out["n_removed_weight"] \
        == out["n_scgs"] == 3 * 4 * 2
    assert out["worst_group_n"] >= 30
    assert out["worst_group_accuracy"] == pytest.approx(worst_group_accuracy(y, p.argmax(1), s, 30))
    assert out["sens_at_95spec_mel"] == pytest.approx(reference_sens(y == 0, p[:, 0]))
    ref2, _ = reference_of(classes=("A", "B", "C"))
    out2 = evaluate(y, p, s, a, ref2, Resampling(n_boot=0, n_perm=0))
    assert "sens_at_95spec_mel" not in out2
