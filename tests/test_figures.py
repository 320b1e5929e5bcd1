"""Every figure function runs on tiny inputs and returns a Figure with the expected axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from semcov_lib.report import figures  # noqa: E402
from semcov_lib.sci.cdi import Resampling, SCGReference, compute_cdi  # noqa: E402
from semcov_lib.sci.coverage import coverage_array, coverage_table, permutation_test  # noqa: E402
from semcov_lib.sci.metrics import ece as _ece, reliability_data  # noqa: E402
from semcov_lib.report.outputs import descriptor_label, format_p, method_colour, method_label  # noqa: E402


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


def metrics_ece(rel: pd.DataFrame) -> float:
    used = rel[rel["count"] > 0]
    return float((used["count"] * (used["accuracy"] - used["confidence"]).abs()).sum() / used["count"].sum())


def notes(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.texts)


def n_axes(fig: Figure) -> int:
    assert isinstance(fig, Figure)
    return len(fig.axes)


def test_coverage_figures(tiny):
    assert n_axes(figures.coverage_long_tail(tiny["table"], title="t")) == 1
    assert n_axes(figures.coverage_heatmaps(tiny["cov"], ["A", "B", "C"], list("abcd"), ["u", "v"])) == 3
    three = np.concatenate([tiny["cov"], tiny["cov"][:, :, :2]], axis=2)  # 4 subgroups -> 2 rows of 3
    assert n_axes(figures.coverage_heatmaps(three, ["A", "B", "C"], list("abcd"))) == 5
    assert n_axes(figures.prevalence_vs_coverage(tiny["table"])) == 1
    perm = permutation_test(tiny["y"], tiny["s"], tiny["a"], tiny["T"], tiny["S"], Resampling(n_perm=20))
    assert n_axes(figures.permutation_null_hist(perm)) == 1
    assert n_axes(figures.permutation_null_hist(np.random.default_rng(0).random(50), 0.5, 0.1)) == 1


def test_cdi_figures(tiny):
    res = tiny["res"]
    assert n_axes(figures.coverage_error_scatter(res)) == 1
    facets = figures.coverage_error_scatter({"erm": res, "semcovnet": res.per_scg}, trend="binned")
    assert n_axes(facets) == 2  # one facet per method
    assert [ax.get_title().split("  ")[0] for ax in facets.axes] == ["ERM", "SemCovNet"]
    assert len(facets.axes[1].lines) == 2  # its own trend plus ERM's dashed reference
    assert n_axes(figures.coverage_error_scatter(res, trend=None)) == 1
    frame = pd.DataFrame({"method": ["erm", "erm", "semcovnet"], "cdi": [0.4, 0.5, 0.2],
                          "cdi_ci_low": [0.3, 0.4, 0.1], "cdi_ci_high": [0.5, 0.6, 0.3],
                          "tail_error": [0.4, 0.5, 0.3], "middle_error": [0.3, 0.3, 0.2],
                          "head_error": [0.2, 0.2, 0.2], "macro_f1": [0.6, 0.62, 0.65]})
    assert n_axes(figures.cdi_bar_chart(frame)) == 1
    assert n_axes(figures.cdi_bar_chart({"erm": res, "semcovnet": res})) == 1
    labels = [t.get_text() for t in figures.cdi_bar_chart(frame).axes[0].get_yticklabels()]
    assert labels == ["ERM", "SemCovNet"]  # display names, never raw keys
    assert n_axes(figures.stratum_error_bars(frame)) == 1
    assert n_axes(figures.ablation_chart(frame.rename(columns={"method": "configuration"}))) == 2


def test_reliability_and_attention(tiny):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), 100)
    rel = reliability_data(rng.integers(0, 3, 100), p)
    assert n_axes(figures.reliability_diagrams(rel)) == 2  # diagram + bin-count strip
    four = figures.reliability_diagrams({"erm": rel, "b": rel, "c": rel, "d": rel})
    assert n_axes(four) == 8  # 2 x 2 methods, no empty panel
    ece = metrics_ece(rel)
    assert any(t.get_text() == f"ECE = {ece:.3f}" for t in four.axes[0].texts)
    att = pd.DataFrame({"descriptor": ["x", "y"] * 4, "gate": rng.random(8),
                        "method": ["m1"] * 4 + ["m2"] * 4, "seed": [0, 0, 1, 1] * 2})
    assert n_axes(figures.descriptor_attention(att)) == 1
    share = att.rename(columns={"gate": "descriptor_share_present"}).drop(columns="method")
    assert n_axes(figures.descriptor_attention(share)) == 1


def test_reliability_ece_matches_metrics():
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 3, 400), rng.dirichlet(np.ones(3), 400)
    assert metrics_ece(reliability_data(y, p)) == pytest.approx(_ece(y, p))


def test_display_names_and_p_values():
    assert method_label("balanced_softmax") == "Balanced softmax"
    assert method_label("my_new_method") == "my_new_method"
    assert method_colour("semcovnet") != method_colour("erm")
    assert len({method_colour(k) for k in ("erm", "semcovnet", "sadcl", "cmltnet", "cb", "focal", "ldam_drw",
                                           "balanced_softmax", "logit_adjustment", "crt", "groupdro")}) == 11
    assert descriptor_label("MONET_ulceration_crust") == "ulceration/crust"
    assert descriptor_label("gt_MONET_skin_markings_pen_ink_purple_pen") == "pen marking"
    assert descriptor_label("Wearing_Hat") == "Wearing Hat"
    assert format_p(0.000999) == "p < 0.001"
    assert format_p(0.0123) == "p = 0.012"
    assert format_p(float("nan")) == "p n/a"


def test_permutation_null_log_axis_when_far():
    null = np.random.default_rng(0).gamma(2.0, 1e-4, 999)
    fig = figures.permutation_null_hist(null, observed=0.05, p_value=0.001)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "p = 0.001" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    near = figures.permutation_null_hist(null, observed=float(np.median(null)), p_value=0.0004)
    assert near.axes[0].get_xscale() == "linear"
    assert "p < 0.001" in " ".join(t.get_text() for t in near.axes[0].get_legend().get_texts())


def seed_frame() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = [{"method": m, "seed": s, "cdi": rng.random(), "macro_f1": 0.7 + 0.01 * rng.random(),
             "tail_error": 0.4, "middle_error": 0.3, "head_error": np.nan if m == "cb" else 0.2}
            for m in ("erm", "semcovnet", "cb") for s in range(3)]
    return pd.DataFrame(rows)


def test_error_bars_are_explained():
    frame = seed_frame()
    assert "SD over seeds" in notes(figures.cdi_bar_chart(frame, errorbar="sd"))
    assert "SD over seeds" in notes(figures.stratum_error_bars(frame))
    ablation = frame.rename(columns={"method": "variant"})
    fig = figures.ablation_chart(ablation, by="variant")
    assert "SD over seeds" in notes(fig) and fig.axes[0].get_xlabel() == "CDI (↓)"
    sweep = frame.assign(param="lambda_cdi", value=np.tile([0.1, 1.0, 10.0], 3))
    fig = figures.sensitivity_chart(sweep, defaults={"lambda_cdi": 1.0})
    assert "SD over seeds" in notes(fig)
    assert any(line.get_linestyle() == ":" for line in fig.axes[0].lines)  # default marked
    tail = frame.assign(tail_exponent=np.tile([1.0, 2.0, 3.0], 3))
    assert "SD over seeds" in notes(figures.tail_sweep_chart(tail, default_x=2.0))
    with pytest.raises(ValueError, match="errorbar"):
        figures.cdi_bar_chart(frame, errorbar="iqr")


def forest_frame(with_config: bool) -> pd.DataFrame:
    rows = []
    for config in (["default", "steep"] if with_config else [None]):
        for metric in ("cdi", "macro_f1"):
            for method, delta in (("semcovnet", -0.1), ("groupdro", 0.01), ("cb", np.nan)):
                row = {"method": method, "metric": metric, "delta": delta, "ci_low": delta - 0.05,
                       "ci_high": delta + 0.05, "significant": abs(delta) > 0.05 if np.isfinite(delta) else np.nan}
                rows.append(row | ({"config": config} if with_config else {}))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("with_config", [False, True])
def test_paired_difference_forest(with_config):
    fig = figures.paired_difference_forest(forest_frame(with_config))
    assert n_axes(fig) == 2
    assert [ax.get_title() for ax in fig.axes] == ["CDI (↓)", "macro-F1 (↑)"]
    assert all(ax.get_xlabel() == "Δ vs ERM" for ax in fig.axes)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["SemCovNet", "GroupDRO", "Class-balanced"]
    assert "CI excludes 0" in notes(fig)
    with pytest.raises(ValueError, match="missing columns"):
        figures.paired_difference_forest(pd.DataFrame({"method": ["a"]}))


def test_cdi_by_configuration():
    rows = [{"config": c, "method": m, "seed": s, "cdi": v + 0.01 * s, "ci_low": v - 0.05, "ci_high": v + 0.05}
            for c in ("default", "steep", "hard")
            for m, v in (("erm", 0.5), ("oracle", 0.2), ("semcovnet", 0.35), ("groupdro", np.nan))
            for s in range(2)]
    fig = figures.cdi_by_configuration(pd.DataFrame(rows))
    assert n_axes(fig) == 3
    assert [ax.get_title() for ax in fig.axes] == ["default", "steep", "hard"]
    assert all(ax.get_xlabel() == "CDI (↓)" for ax in fig.axes)
    assert "reducible SCI" in notes(fig)
    no_ci = figures.cdi_by_configuration(pd.DataFrame(rows).drop(columns=["ci_low", "ci_high"]))
    assert n_axes(no_ci) == 3


def test_image_figures_use_display_names():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    presence = rng.random((20, 2)) < 0.3
    fig = figures.concept_grid(images, presence, ["MONET_ulceration_crust", "MONET_hair"], n_per=3)
    assert fig.axes[0].get_ylabel().startswith("ulceration/crust (n=")
    examples = {"images": images[:3], "scores": rng.random((3, 2)), "labels": ["A", "B", "C"],
                "descriptors": ["MONET_ulceration_crust", "MONET_hair"], "preds": ["A", "A", "C"],
                "preds_erm": ["B", "A", "C"]}
    fig = figures.example_predictions(examples)
    assert "ERM: B" in fig.axes[0].get_title()


def test_notebook_setup_gives_the_report_folders_and_sets_the_theme_once():
    from semcov_lib.paths import REPORTS_DIR
    from semcov_lib.report.outputs import notebook_setup, set_theme

    with pd.option_context("display.max_columns", 20, "display.width", 80):
        assert notebook_setup("") == (REPORTS_DIR / "figures", REPORTS_DIR / "tables")
        assert pd.get_option("display.max_columns") == 20  # only the results notebooks widen tables
        fig_dir, table_dir = notebook_setup("smoke", wide_display=True)
        assert (fig_dir, table_dir) == (REPORTS_DIR / "smoke" / "figures", REPORTS_DIR / "smoke" / "tables")
        assert (pd.get_option("display.max_columns"), pd.get_option("display.width")) == (40, 200)
    assert matplotlib.rcParams["pdf.fonttype"] == 42 and matplotlib.rcParams["svg.hashsalt"] == "semcov"
    with matplotlib.rc_context({"savefig.dpi": 50}):
        set_theme()  # already applied: a caller's later change stays
        assert matplotlib.rcParams["savefig.dpi"] == 50


def test_look_tables_are_read_only():
    from semcov_lib.report.outputs import METHOD_STYLE

    with pytest.raises(TypeError):
        METHOD_STYLE["erm"] = ("x", "#000000")


def test_percent_and_run_facts():
    from semcov_lib.report.tables import insert_run_facts, percent

    assert (percent(0.123), percent(0.123, signed=True), percent(-0.5, signed=True)) == ("12%", "+12%", "-50%")
    runs = pd.DataFrame({"method": ["b", "b", "a", "a"], "seed": [0, 1, 0, 1],
                         "sees_descriptors_at_test": [True, True, False, False],
                         "selection_metric": ["val_macro_f1"] * 4, "best_epoch": [3, 4.0, 7, 7]})
    table = pd.DataFrame({"method": ["b", "a"], "cdi": ["0.1", "0.2"]})
    insert_run_facts(table, runs, ["sees descriptors", "selection", "epochs chosen"])
    assert list(table.columns) == ["method", "sees descriptors", "selection", "epochs chosen", "cdi"]
    assert list(table["sees descriptors"]) == [True, False] and list(table["epochs chosen"]) == ["3/4", "7/7"]
    only = pd.DataFrame({"method": ["b", "a"]})
    insert_run_facts(only, runs)
    assert list(only.columns) == ["method", "sees descriptors"]
