"""Result tables of the experiment grid: summaries, honest verdicts, README section updates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semcov_lib.report import outputs, tables
from semcov_lib.experiment import plan, results
from semcov_lib.experiment.protocol import run_dir_for


def _runs() -> pd.DataFrame:
    return pd.DataFrame({
        "method": ["erm", "erm", "semcovnet", "semcovnet", "cb", "cb"],
        "seed": [0, 1, 0, 1, 0, 1],
        "cdi": [0.40, 0.20, 0.10, 0.20, 0.50, 0.70],
        "stress_cdi": [0.5, 0.5, 0.4, 0.4, 0.6, 0.6],
        "macro_f1": [0.80, 0.82, 0.79, 0.79, 0.85, 0.83],
    })


def test_summarise_mean_std_and_reduction():
    summary = results.summarise(_runs(), metrics=["cdi", "macro_f1"]).set_index("method")
    assert summary.loc["erm", "cdi_mean"] == pytest.approx(0.30)
    assert summary.loc["erm", "cdi_std"] == pytest.approx(np.std([0.4, 0.2], ddof=1))
    assert summary.loc["semcovnet", "cdi_reduction_vs_erm"] == pytest.approx((0.30 - 0.15) / 0.30)
    assert summary.loc["cb", "cdi_reduction_vs_erm"] == pytest.approx((0.30 - 0.60) / 0.30)
    assert summary.loc["erm", "n_seeds"] == 2


def test_format_mean_std_and_markdown():
    summary = results.summarise(_runs(), metrics=["cdi"])
    shown = tables.format_mean_std(summary, ["cdi"])
    assert shown.loc[0, "cdi"] == "0.300 ± 0.141"
    md = outputs.markdown_table(shown)
    assert md.splitlines()[0] == "| method | cdi |" and "| erm | 0.300 ± 0.141 |" in md


def test_grids_share_runs_and_missing_runs_fail_loudly(tmp_path):
    ablations = plan.ablation_configs("smoke", [0])
    main = plan.main_configs("smoke", [0], methods=["semcovnet"])
    # the 'backbone + correction' rung is the default SemCovNet (tuned): same run folder, trained once
    assert run_dir_for(ablations["backbone + correction"][0]) == run_dir_for(main[0])
    assert run_dir_for(ablations["full"][0]) != run_dir_for(main[0])
    assert run_dir_for(ablations["full - CDI-reg"][0]) == run_dir_for(ablations["+SDM+DAM+DVA"][0])
    assert len(plan.flatten(ablations)) == len(ablations) - 1
    with pytest.raises(FileNotFoundError, match="has not been trained"):
        results.results_frame(main, root=tmp_path)


def test_pipeline_configs_cover_every_notebook_grid_once():
    params = {"profile": "smoke", "seeds": [0, 1], "ablation_seeds": [0], "configurations": ["default", "hard_descriptors"],
              "tune_configurations": ["default", "hard_descriptors"]}
    configs = plan.pipeline_configs(params)
    folders = [run_dir_for(c) for c in configs]
    assert len(set(folders)) == len(folders)
    from semcov_lib.experiment import tune
    from semcov_lib.experiment.tune import tune_configs

    methods = plan.CONFIGURATION_METHODS  # no rebalancing run has finished: it is not chosen yet
    expected = [
        *plan.main_configs("smoke", [0, 1]),
        *plan.descriptor_learner_configs("smoke", [0, 1]),
        *plan.ablation_configs("smoke", [0, 1], leave_one_out=False)["full"],  # notebook 02, every seed
        *plan.flatten(plan.ablation_configs("smoke", [0])),
        *tune_configs("smoke", [0, 1], tune.TuneSearch(configurations=("default", "hard_descriptors"))),
        *plan.flatten(plan.configuration_configs("smoke", [0, 1], ["default", "hard_descriptors"], methods)),
    ]
    assert set(folders) == {run_dir_for(c) for c in expected}
    assert {c.method for c in configs} >= set(plan.MAIN_METHODS) and "erm_desc" in plan.MAIN_METHODS
    oracle = [c for c in configs if c.benchmark_overrides.get("train_coverage") == "balanced"]
    assert len(oracle) == 2 * 2 and {c.method for c in oracle} == {"erm"}
    with pytest.raises(ValueError, match="configurations"):
        plan.pipeline_configs({k: v for k, v in params.items() if k != "configurations"})


def test_configuration_summary_formats_deltas_share_and_gap():
    rows = []
    for config, gap in (("b_conf", 0.4), ("a_conf", 0.5)):
        for method, delta in (("semcovnet", -0.1), ("oracle", -gap)):
            for metric in ("cdi", "cdi_within", "macro_f1"):
                rows.append({"configuration": config, "baseline": "erm", "method": method, "metric": metric,
                             "delta": delta, "ci_low": delta - 0.01, "ci_high": delta + 0.01, "significant": True,
                             "share_of_reducible_gap": -delta / gap if metric == "cdi" else np.nan,
                             "reducible_gap": gap,
                             "share_of_levelling_free_gap": -delta / (gap / 2) if metric == "cdi" else np.nan,
                             "levelling_free_gap": gap / 2})
    table = tables.configuration_summary(pd.DataFrame(rows), ["semcovnet", "oracle"])
    assert list(table.columns) == ["configuration", "baseline", "method", "cdi", "cdi_within",
                                   "share of reducible CDI gap", "reducible CDI gap",
                                   "share of levelling-free CDI gap", "levelling-free CDI gap"]
    assert list(table["configuration"]) == ["a_conf", "a_conf", "b_conf", "b_conf"]  # sorted, macro_f1 left out
    first = table.iloc[0]
    assert first["method"] == "oracle" and first["share of reducible CDI gap"] == "100%"
    assert first["cdi"] == "-0.500 [-0.510, -0.490] *" and first["reducible CDI gap"] == "0.500"
    assert table.iloc[3]["share of reducible CDI gap"] == "25%"  # 0.1 of a 0.4 gap
    assert table.iloc[3]["share of levelling-free CDI gap"] == "50%" and table.iloc[3]["levelling-free CDI gap"] == "0.200"


def _per_scg(coverage, error, valid=None):
    valid = np.ones(len(coverage), bool) if valid is None else np.asarray(valid)
    return pd.DataFrame({"coverage": coverage, "error": error, "valid": valid})


def test_levelling_free_gap_keeps_only_the_oracles_gains():
    """Hand-made per-SCG errors over two seeds, checked against scipy's Spearman."""
    from scipy.stats import spearmanr

    cov = np.array([0.01, 0.05, 0.2, 0.4, 0.8])
    erm = [_per_scg(cov, [0.9, 0.7, 0.5, 0.2, 0.1]), _per_scg(cov, [0.8, 0.8, 0.4, 0.3, 0.1])]
    # the oracle is better on the two rarest SCGs and worse on the two best covered ones
    oracle = [_per_scg(cov, [0.3, 0.4, 0.5, 0.45, 0.35]), _per_scg(cov, [0.5, 0.3, 0.4, 0.5, 0.4])]
    free = [[0.3, 0.4, 0.5, 0.2, 0.1], [0.5, 0.3, 0.4, 0.3, 0.1]]  # middle SCG: tied mean, ERM's kept
    cdi = lambda errors: np.mean([abs(spearmanr(cov, e).statistic) for e in errors])  # noqa: E731
    expected = cdi([f["error"] for f in erm]) - cdi(free)
    assert results.levelling_free_gap(erm, oracle) == pytest.approx(expected)
    assert 0 < expected < cdi([f["error"] for f in erm]) - cdi([f["error"] for f in oracle])
    assert results.levelling_free_gap(erm, erm) == 0.0  # no gain, no gap
    lower = [_per_scg(cov, f["error"] - 0.05) for f in erm]  # a uniform gain leaves the ranks alone
    assert results.levelling_free_gap(erm, lower) == pytest.approx(0.0)


def test_levelling_free_gap_uses_valid_scgs_and_rejects_unpaired_tables():
    cov = np.array([0.01, 0.05, 0.2, 0.4, 0.8, 0.9])
    valid = [True, True, True, True, True, False]
    erm = [_per_scg(cov, [0.9, 0.7, 0.5, 0.3, 0.1, np.nan], valid)]
    oracle = [_per_scg(cov, [0.1, 0.7, 0.5, 0.3, 0.1, np.nan], valid)]
    # the rarest SCG's error falls to the best one's: error ranks (1.5, 5, 4, 3, 1.5) against 1..5,
    # rho = sum(dx dy) / sqrt(sum dx^2 sum dy^2) = -2 / sqrt(10 * 9.5), from rho = -1 before
    assert results.levelling_free_gap(erm, oracle) == pytest.approx(1.0 - 2 / np.sqrt(95))
    with pytest.raises(ValueError, match="pair them seed by seed"):
        results.levelling_free_gap(erm, oracle * 2)
    with pytest.raises(ValueError, match="coverage or validity"):
        results.levelling_free_gap(erm, [_per_scg(cov * 2, oracle[0]["error"], valid)])


def test_configuration_paired_compares_with_erm_desc_only_when_it_was_trained(monkeypatch):
    """The SemCovNet-vs-erm_desc block needs both runs; a grid without erm_desc still gives the
    comparisons against ERM and the reducible gap (the diagnostic script trains such grids)."""
    def fake_paired(base, others, split, n_boot, root):
        deltas = {"oracle": -0.4, "semcovnet": -0.1, "erm_desc": 0.0}
        return pd.DataFrame([{"metric": "cdi", "method": m, "delta": deltas[m]} for m in others])

    monkeypatch.setattr(results, "paired_table", fake_paired)
    monkeypatch.setattr(results, "levelling_free_gap", lambda erm, oracle: 0.2)
    grid = {("c", m): [] for m in ("erm", "semcovnet", "oracle")}
    table = results.configuration_paired(grid, ["c"], ["erm", "semcovnet"])
    assert set(table["baseline"]) == {"erm"} and set(table["method"]) == {"semcovnet", "oracle"}
    assert table.set_index("method").loc["semcovnet", "share_of_reducible_gap"] == pytest.approx(0.25)
    assert table.set_index("method").loc["semcovnet", "share_of_levelling_free_gap"] == pytest.approx(0.5)
    grid[("c", "erm_desc")] = []
    table = results.configuration_paired(grid, ["c"], ["erm", "erm_desc", "semcovnet"])
    assert set(table["baseline"]) == {"erm", "erm_desc"}
    assert list(table.loc[table["baseline"] == "erm_desc", "method"]) == ["semcovnet"]
