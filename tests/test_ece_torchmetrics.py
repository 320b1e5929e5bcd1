"""ECE agrees with torchmetrics' top-label calibration error away from bin edges.

Edge convention (documented in docs/METHODS.md, section "Metrics"): a confidence c falls in the
equal-width bin (lo, hi], i.e. bin ceil(15 c) - 1 (c = 0 goes to the first bin), so a confidence
exactly on an edge k/15 belongs to the lower bin. torchmetrics bins [lo, hi), so the two can
differ only for confidences exactly on an edge.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchmetrics = pytest.importorskip("torchmetrics")

from semcov_lib.sci.metrics import ece, reliability_data  # noqa: E402

N_BINS = 15


def away_from_edges(probs: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """Rows whose top-label confidence is at least ``margin`` from every bin edge k/15."""
    conf = probs.max(axis=1) * N_BINS
    return np.abs(conf - np.round(conf)) > margin * N_BINS


@pytest.mark.parametrize("seed, n_classes, temperature", [(0, 3, 1.0), (1, 7, 0.3), (2, 11, 3.0), (3, 2, 0.5)])
def test_ece_matches_torchmetrics(seed, n_classes, temperature):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3000, n_classes)) / temperature
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    keep = away_from_edges(probs)
    probs = probs[keep]
    y = np.where(rng.random(len(probs)) < 0.7, probs.argmax(axis=1), rng.integers(0, n_classes, len(probs)))
    metric = torchmetrics.classification.MulticlassCalibrationError(num_classes=n_classes, n_bins=N_BINS, norm="l1")
    expected = float(metric(torch.tensor(probs, dtype=torch.float64), torch.tensor(y)))
    assert ece(y, probs, n_bins=N_BINS) == pytest.approx(expected, abs=1e-6)


def test_edge_confidence_goes_to_the_lower_bin():
    probs = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])  # 0.4 = 6/15 exactly on an edge
    rel = reliability_data(np.array([0, 0]), probs, n_bins=N_BINS)
    row = rel[rel["count"] > 0].iloc[0]
    assert row["upper"] == pytest.approx(0.4) and row["count"] == 1  # bin (1/3, 0.4], not [0.4, 7/15)
