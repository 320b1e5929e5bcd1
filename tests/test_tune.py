"""The ``tune`` command: the selection rule, score sources, a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from semcov_lib.experiment import tune as tu


def _summary(rows: dict[str, tuple]) -> pd.DataFrame:
    """rows: setting -> (macro_f1, cdi_within, head_error, middle_error), ERM first."""
    erm = rows["erm"]
    recs = []
    for name, (f1, cw, he, me) in rows.items():
        recs.append({"setting": name, "macro_f1": f1, "cdi_within": cw, "cdi": cw, "head_error": he,
                     "middle_error": me, "d_macro_f1": f1 - erm[0], "d_head_error": he - erm[2],
                     "d_middle_error": me - erm[3]})
    return pd.DataFrame(recs)


def test_choose_applies_the_rule():
    summary = _summary({
        "erm": (0.80, 0.40, 0.05, 0.10),
        "f1_drop": (0.79, 0.05, 0.05, 0.10),  # lowest CDI but 1 point of macro-F1 lost
        "levels_down": (0.81, 0.10, 0.07, 0.10),  # Head error up 2 points
        "good": (0.798, 0.20, 0.05, 0.10),  # 0.2 points below ERM: within the tolerance
        "also_ok": (0.803, 0.30, 0.04, 0.09),
    })
    choice = tu.choose(summary)
    assert choice["setting"] == "good" and choice["eligible"] == ["also_ok", "good"]
    strict = tu.choose(summary, tu.TuneRule(max_f1_drop=0.0, max_error_rise=0.0))
    assert strict["setting"] == "also_ok"
    none = tu.choose(summary[summary["setting"].isin(["erm", "f1_drop", "levels_down"])])
    assert none["setting"] == "levels_down" and none["eligible"] == [] and "no setting" in none["reason"]


def test_choose_needs_the_rule_on_every_configuration():
    """A setting that is best on average but levels down on one configuration is not eligible; the
    objective is averaged over configurations."""
    a = _summary({"erm": (0.80, 0.40, 0.05, 0.10), "strong": (0.80, 0.10, 0.05, 0.10),
                  "mild": (0.80, 0.35, 0.05, 0.10), "none": (0.80, 0.38, 0.05, 0.10)})
    b = _summary({"erm": (0.70, 0.50, 0.05, 0.10), "strong": (0.70, 0.20, 0.08, 0.10),  # Head error +3 points
                  "mild": (0.70, 0.45, 0.05, 0.10), "none": (0.70, 0.30, 0.05, 0.10)})
    summary = pd.concat([a.assign(configuration="a"), b.assign(configuration="b")], ignore_index=True)
    choice = tu.choose(summary)
    assert choice["eligible"] == ["mild", "none"]
    assert choice["setting"] == "none"  # mean cdi_within 0.34 < mild's 0.40, though mild is better on "a"
    across = tu.across_configurations(summary).set_index("setting")
    assert across.loc["strong", "cdi_within"] == pytest.approx(0.15) and not across.loc["strong", "eligible"]
    assert (across["configuration"] == tu.ACROSS).all() and (across["n_configurations"] == 2).all()
    assert tu.choose(a)["setting"] == "strong"  # on "a" alone the strong setting would have won


def test_run_scores_prefers_val_stress(tmp_path):
    val = {k: 0.5 for k in tu.SCORE_KEYS}
    (tmp_path / "metrics.json").write_text(json.dumps({"val": val, "val_stress": {**val, "cdi_within": 0.1}}))
    scores = tu.run_scores(tmp_path, config=None)
    assert scores["source"] == "val_stress" and scores["cdi_within"] == 0.1
    (tmp_path / "metrics.json").write_text(json.dumps({"val": val, "val_stress": {"macro_f1": 0.3}}))
    assert tu.run_scores(tmp_path, config=None)["source"] == "val"
    (tmp_path / "metrics.json").write_text(json.dumps({"val": {"macro_f1": 0.3}}))
    with pytest.raises(ValueError, match="no validation metrics"):
        tu.run_scores(tmp_path)


def test_tune_end_to_end_on_smoke(tmp_path):
    grid = {"closed": {"cdi_mode": "closed_loop", "lambda_cdi": 1.0}, "off": {"use_cdi_reg": False}}
    search = tu.TuneSearch(grid=grid, overrides={"max_steps": 1, "n_boot": 0},
                           configurations=("default", "hard_descriptors"))
    record = tu.tune("smoke", [0], search, jobs=1, runs_root=tmp_path / "runs", out_dir=tmp_path / "tables",
                     progress=False)
    table = pd.read_csv(tmp_path / "tables" / "tuning_semcovnet.csv")
    assert list(table["setting"]) == ["erm", "closed", "off"] * 5  # 2 configurations x (runs, means), then "all"
    assert list(table["configuration"]) == ["default"] * 3 + ["hard_descriptors"] * 3 + ["default"] * 3 \
        + ["hard_descriptors"] * 3 + ["all"] * 3
    assert list(table["seed"].astype(str)) == ["0"] * 6 + ["mean"] * 9
    assert table["macro_f1"].between(0, 1).all()
    saved = json.loads((tmp_path / "tables" / "tuning_choice.json").read_text())
    assert saved["setting"] == record["setting"] in grid and saved["hp"] == grid[saved["setting"]]
    assert saved["rule"] == {"max_f1_drop": 0.005, "max_error_rise": 0.005, "objective": "cdi_within"}
    assert set(saved["summary"]) == {"erm", "closed", "off"}
    assert set(saved["by_configuration"]) == {"default", "hard_descriptors"}
    # the two configurations are different benchmarks: their ERM runs differ
    erm = table[(table["setting"] == "erm") & (table["seed"].astype(str) == "0")]
    assert erm["macro_f1"].nunique() == 2 or erm["cdi"].nunique() == 2
    # the paired CIs recompute each difference from the prediction files: they must give the
    # summary's d_* (from the trainer's metrics.json) and hold it inside their interval
    paired = tu.validation_paired("smoke", [0], search, n_boot=50, runs_root=tmp_path / "runs")
    assert sorted(set(paired["method"])) == ["closed", "off"]
    assert sorted(set(paired["configuration"])) == ["default", "hard_descriptors"]
    means = table[table["seed"].astype(str) == "mean"].set_index(["configuration", "setting"])
    checked = 0
    for metric in ("macro_f1", "head_error", "cdi"):
        rows = paired[paired["metric"] == metric].set_index(["configuration", "method"])
        for key, row in rows.iterrows():
            summary = means.loc[key, f"d_{metric}"]
            if np.isfinite(summary):
                assert row["delta"] == pytest.approx(summary, abs=1e-9)
                assert row["ci_low"] - 1e-9 <= row["delta"] <= row["ci_high"] + 1e-9
                checked += 1
    assert checked >= 8  # macro_f1 and head_error at least, for 2 settings x 2 configurations


def test_cli_rejects_method_keys():
    parser = argparse.ArgumentParser()
    tu.add_arguments(parser)
    args = parser.parse_args(["--profile", "smoke", "--set", "lambda_cdi=3"])
    with pytest.raises(ValueError, match="not training keys"):
        tu.run(args)
    with pytest.raises(ValueError, match="'erm' is the reference"):
        tu.tune("smoke", [0], tu.TuneSearch(grid={"erm": {}}))
    with pytest.raises(ValueError, match="no benchmark configuration"):
        tu.tune("smoke", [0], tu.TuneSearch(configurations=()))
    from semcov_lib.config import ConfigError

    with pytest.raises(ConfigError, match="unknown benchmark configuration"):
        tu.tune_configs("smoke", [0], tu.TuneSearch(configurations=("nonsense",)))


def test_grid_settings_do_not_depend_on_semcovnet_defaults(monkeypatch):
    """Every setting names its architecture and correction, so changing SemCovNet's defaults to the
    chosen setting leaves the grid's runs (and the chosen run's folder) unchanged."""
    from semcov_lib.experiment.protocol import run_dir_for, train_config
    from semcov_lib.models.methods import semcovnet as sc

    before = [run_dir_for(c) for c in tu.tune_configs("smoke", [0])]
    for name, hp in tu.DEFAULT_GRID.items():
        assert {"use_sdm", "use_dam", "use_dva"} <= set(hp), name
    patched = {**sc.DEFAULTS, "use_sdm": True, "use_dam": True, "use_dva": True, "cdi_mode": "closed_loop",
               "lambda_cdi": 3.0}
    monkeypatch.setattr(sc, "DEFAULTS", patched)
    after = [run_dir_for(c) for c in tu.tune_configs("smoke", [0])]
    changed = [a for a, b in zip(before, after) if a != b]
    assert changed == []
    # the registered defaults are the committed choice: the default run is the chosen setting's run
    monkeypatch.undo()
    chosen = json.loads((tu.TABLES_DIR / "tuning_choice.json").read_text())
    assert run_dir_for(train_config("semcovnet", "smoke", 0)) == run_dir_for(
        train_config("semcovnet", "smoke", 0, {"hp": tu.DEFAULT_GRID[chosen["setting"]]}))
