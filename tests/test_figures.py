"""Every figure function runs on tiny inputs and returns a Figure with the expected axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from semcov_lib import figures  # noqa: E402
from semcov_lib.cdi import Resampling, SCGReference, compute_cdi  # noqa: E402
from semcov_lib.coverage import coverage_array, coverage_table, permutation_test  # noqa: E402
from semcov_lib.metrics import reliability_data  # noqa: E402


@pytest.fixture(autouse=True)
def close_all():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    n, T, K, S = 300, 3, 4, 2
    y, s, a = rng.integers(0, T, n), rng.integers(0, S, n), rng.random((n, K))
    a[0, 0] = np.nan
    cov = coverage_array(y, s, a, T, S)
    table = coverage_table(y, s, a, ["A", "B", "C"], ["d0", "d1", "d2", "d3"], ["u", "v"])
    pred = np.where(rng.random(n) < 0.7, y, (y + 1) % T)
    res = compute_cdi(SCGReference(cov, min_train_n=0), y, pred, s, a, resampling=Resampling(n_boot=0, n_perm=0))
    return dict(cov=cov, table=table, res=res, y=y, s=s, a=a, T=T, S=S)


def n_axes(fig: Figure) -> int:
    assert isinstance(fig, Figure)
    return len(fig.axes)


def test_coverage_figures(tiny):
    assert n_axes(figures.coverage_long_tail(tiny["table"], title="t")) == 1
    assert n_axes(figures.coverage_heatmaps(tiny["cov"], ["A", "B", "C"], list("abcd"), ["u", "v"])) == 3
    three = np.concatenate([tiny["cov"], tiny["cov"][:, :, :2]], axis=2)  # 4 subgroups -> 2 rows of 3
    assert n_axes(figures.coverage_heatmaps(three, ["A", "B", "C"], list("abcd"))) == 5
    assert n_axes(figures.prevalence_vs_coverage(tiny["table"])) == 1
    perm = permutation_test(tiny["y"], tiny["s"], tiny["a"], tiny["T"], tiny["S"], n_perm=20)
    assert n_axes(figures.permutation_null_hist(perm)) == 1
    assert n_axes(figures.permutation_null_hist(np.random.default_rng(0).random(50), 0.5, 0.1)) == 1


def test_cdi_figures(tiny):
    res = tiny["res"]
    assert n_axes(figures.coverage_error_scatter(res)) == 1
    assert n_axes(figures.coverage_error_scatter({"ERM": res, "SemCovNet": res.per_scg}, trend="binned")) == 1
    assert n_axes(figures.coverage_error_scatter(res, trend=None)) == 1
    frame = pd.DataFrame({"method": ["ERM", "ERM", "Ours"], "cdi": [0.4, 0.5, 0.2],
                          "cdi_ci_low": [0.3, 0.4, 0.1], "cdi_ci_high": [0.5, 0.6, 0.3],
                          "tail_error": [0.4, 0.5, 0.3], "middle_error": [0.3, 0.3, 0.2],
                          "head_error": [0.2, 0.2, 0.2], "macro_f1": [0.6, 0.62, 0.65]})
    assert n_axes(figures.cdi_bar_chart(frame)) == 1
    assert n_axes(figures.cdi_bar_chart({"ERM": res, "Ours": res})) == 1
    assert n_axes(figures.stratum_error_bars(frame)) == 1
    assert n_axes(figures.ablation_chart(frame.rename(columns={"method": "configuration"}))) == 2


def test_reliability_and_attention(tiny):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), 100)
    rel = reliability_data(rng.integers(0, 3, 100), p)
    assert n_axes(figures.reliability_diagrams(rel)) == 1
    assert n_axes(figures.reliability_diagrams({"a": rel, "b": rel, "c": rel, "d": rel})) == 4
    att = pd.DataFrame({"descriptor": ["x", "y"] * 4, "gate": rng.random(8),
                        "method": ["m1"] * 4 + ["m2"] * 4, "seed": [0, 0, 1, 1] * 2})
    assert n_axes(figures.descriptor_attention(att)) == 1
    share = att.rename(columns={"gate": "descriptor_share_present"}).drop(columns="method")
    assert n_axes(figures.descriptor_attention(share)) == 1
