"""The experiment grid of the paper pipeline: which runs exist, and their results as tables.

Notebooks call these so they hold no method code: the main comparison (every method x
seeds), the SemCovNet ablation ladder and leave-one-out, the λ sensitivity sweeps and the
benchmark tail-exponent sweep. Each returns :class:`~semcov_lib.train.TrainConfig` objects;
:func:`semcov_lib.train.train_many` trains or reuses them, :func:`results_frame` collects
their metrics. :func:`pipeline_configs` lists every run the notebooks need for one parameter
file, so ``python -m semcov_lib grid`` can train them first (on a cluster) and the notebooks
then only read run folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from semcov_lib.config import ConfigError
from semcov_lib.methods import METHODS
from semcov_lib.tables import markdown_table, write_table  # noqa: F401 - used by the notebooks
from semcov_lib.train import TrainConfig, is_finished, run_dir_for, train_config

MAIN_METHODS = tuple(METHODS)  # erm, semcovnet, sadcl, cmltnet, then the baselines
METRIC_COLUMNS = (
    "accuracy", "balanced_accuracy", "macro_f1", "auroc", "sens_at_95spec", "ece", "worst_group_accuracy",
    "worst_group_n", "worst_group_ci_low", "worst_group_ci_high", "worst_class_accuracy",
    "cdi", "cdi_ci_low", "cdi_ci_high", "cdi_signed_rho", "cdi_p", "cdi_within", "cdi_within_signed", "cdi_within_p",
    "n_valid_scgs", "tail_error", "middle_error", "head_error", "head_accuracy", "medium_accuracy", "tail_accuracy",
)
#: Metrics also read from the stress and val_stress sub-objects (columns ``stress_<key>``, ``val_stress_<key>``).
SPLIT_COLUMNS = (
    "cdi", "cdi_ci_low", "cdi_ci_high", "cdi_signed_rho", "cdi_p", "cdi_within", "cdi_within_signed", "cdi_within_p",
    "n_valid_scgs", "accuracy", "balanced_accuracy", "macro_f1", "worst_group_accuracy", "worst_class_accuracy",
    "tail_error", "middle_error", "head_error",
)
#: Text columns of a results frame (never coerced to numbers).
TEXT_COLUMNS = ("method", "variant", "run_dir", "selection_metric", "sees_descriptors_at_test", "worst_group",
                "worst_class", "configuration")
#: What each run says about how it was chosen and what it saw (not averaged; one value per method).
RUN_COLUMNS = ("selection_metric", "selection_start_epoch", "best_epoch", "sees_descriptors_at_test")
SEMCOVNET_SWITCHES = ("use_sdm", "use_dam", "use_dva", "use_cdi_reg")
ABLATION_LADDER = {
    "backbone": dict(use_sdm=False, use_dam=False, use_dva=False, use_cdi_reg=False),
    "+SDM": dict(use_sdm=True, use_dam=False, use_dva=False, use_cdi_reg=False),
    "+SDM+DAM": dict(use_sdm=True, use_dam=True, use_dva=False, use_cdi_reg=False),
    "+SDM+DAM+DVA": dict(use_sdm=True, use_dam=True, use_dva=True, use_cdi_reg=False),
    "full": dict(use_sdm=True, use_dam=True, use_dva=True, use_cdi_reg=True),
}
LEAVE_ONE_OUT = {
    "full - DAM": dict(use_sdm=True, use_dam=False, use_dva=True, use_cdi_reg=True),
    "full - DVA": dict(use_sdm=True, use_dam=True, use_dva=False, use_cdi_reg=True),
    "full - CDI-reg": dict(use_sdm=True, use_dam=True, use_dva=True, use_cdi_reg=False),
}


def main_configs(profile: str, seeds: Iterable[int], methods: Iterable[str] = MAIN_METHODS,
                 overrides: dict[str, Any] | None = None) -> list[TrainConfig]:
    """Every method x seed with the profile's protocol and each method's defaults."""
    return [train_config(m, profile, s, overrides) for m in methods for s in seeds]


def ablation_configs(profile: str, seeds: Iterable[int], leave_one_out: bool = True) -> dict[str, list[TrainConfig]]:
    """SemCovNet variants by name: the ladder, then (optionally) leave-one-out."""
    variants = dict(ABLATION_LADDER, **(LEAVE_ONE_OUT if leave_one_out else {}))
    return {name: [train_config("semcovnet", profile, s, {"hp": hp}) for s in seeds] for name, hp in variants.items()}


def sensitivity_configs(profile: str, seeds: Iterable[int], lambda_dva: Iterable[float],
                        lambda_cdi: Iterable[float]) -> dict[tuple[str, float], list[TrainConfig]]:
    """Full SemCovNet with one λ changed at a time (the other at its default)."""
    out: dict[tuple[str, float], list[TrainConfig]] = {}
    for key, values in (("lambda_dva", lambda_dva), ("lambda_cdi", lambda_cdi)):
        for value in values:
            out[(key, float(value))] = [train_config("semcovnet", profile, s, {"hp": {key: value}}) for s in seeds]
    return out


def descriptor_source_configs(profile: str, seeds: Iterable[int]) -> dict[str, list[TrainConfig]]:
    """SemCovNet reading the observed descriptor scores at test time vs predicting them
    (``desc_source="predicted_test"``: observed scores in training, its own predictions at test)."""
    return {f"semcovnet ({source})": [train_config("semcovnet", profile, s, {"hp": {"desc_source": source}})
                                      for s in seeds] for source in ("observed", "predicted_test")}


def tail_sweep_configs(profile: str, seeds: Iterable[int], exponents: Iterable[float],
                       methods: Iterable[str] = ("erm", "semcovnet"),
                       exponent_key: str = "coverage_tail_exponent") -> dict[tuple[str, float], list[TrainConfig]]:
    """ERM and SemCovNet on benchmarks generated with different coverage tail exponents."""
    return {
        (m, float(e)): [train_config(m, profile, s, {"benchmark_overrides": {exponent_key: e}}) for s in seeds]
        for m in methods for e in exponents
    }


def flatten(groups: dict[Any, list[TrainConfig]] | list[TrainConfig]) -> list[TrainConfig]:
    """All configurations of a grid, in order, without duplicates."""
    configs = groups if isinstance(groups, list) else [c for cs in groups.values() for c in cs]
    seen, out = set(), []
    for c in configs:
        key = run_dir_for(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def results_frame(configs: list[TrainConfig], label: str | None = None, root: str | Path | None = None) -> pd.DataFrame:
    """One row per run: method, seed, optional variant label, the metrics (stress ones prefixed)."""
    rows = []
    for config in configs:
        path = run_dir_for(config, root) / "metrics.json"
        if not is_finished(path.parent):
            raise FileNotFoundError(f"run {config.method} seed {config.seed} has not been trained ({path.parent})")
        metrics = json.loads(path.read_text())
        row = {"method": config.method, "seed": config.seed}
        if label is not None:
            row["variant"] = label
        row.update({k: metrics.get(k) for k in METRIC_COLUMNS})
        row.update({k: metrics.get(k) for k in RUN_COLUMNS})
        row.update({k: metrics.get(k) for k in ("worst_group", "worst_class")})
        for split in ("stress", "val_stress"):
            row.update({f"{split}_{k}": metrics.get(split, {}).get(k) for k in SPLIT_COLUMNS})
        row["run_dir"] = str(path.parent)
        rows.append(row)
    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if c not in TEXT_COLUMNS]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def grouped_results(groups: dict[Any, list[TrainConfig]], root: str | Path | None = None) -> pd.DataFrame:
    """``results_frame`` over a named grid; the grid key becomes the ``variant`` column."""
    frames = [results_frame(cs, label=str(k) if not isinstance(k, tuple) else None, root=root).assign(
        **({"param": k[0], "value": k[1]} if isinstance(k, tuple) else {})) for k, cs in groups.items()]
    return pd.concat(frames, ignore_index=True)


def summarise(frame: pd.DataFrame, by: str | list[str] = "method", metrics: Iterable[str] = METRIC_COLUMNS,
              baseline: str | None = "erm") -> pd.DataFrame:
    """Mean and std per group, plus the CDI reduction vs ``baseline`` (from mean CDIs).

    ``selection_metric`` and ``sees_descriptors_at_test`` are carried through (one value per group).
    """
    metrics = [m for m in metrics if m in frame.columns]
    by = [by] if isinstance(by, str) else list(by)
    agg = frame.groupby(by, sort=False)[metrics].agg(["mean", "std"])
    agg.columns = [f"{m}_{stat}" for m, stat in agg.columns]
    agg["n_seeds"] = frame.groupby(by, sort=False).size()
    for col in ("selection_metric", "sees_descriptors_at_test"):
        if col in frame.columns:
            agg[col] = frame.groupby(by, sort=False)[col].first()
    if baseline is not None and by == ["method"] and baseline in agg.index and "cdi_mean" in agg:
        base = agg.loc[baseline, "cdi_mean"]
        agg["cdi_reduction_vs_erm"] = (base - agg["cdi_mean"]) / base if base else np.nan
    return agg.reset_index()


def format_mean_std(summary: pd.DataFrame, metrics: Iterable[str], digits: int = 3, keys: Iterable[str] = ("method",)) -> pd.DataFrame:
    """A display table with 'mean ± std' strings."""
    out = summary[list(keys)].copy()
    for m in metrics:
        mean, std = summary[f"{m}_mean"], summary[f"{m}_std"].fillna(0.0)
        out[m] = [f"{a:.{digits}f} ± {b:.{digits}f}" if np.isfinite(a) else "n/a" for a, b in zip(mean, std)]
    return out


LOWER_IS_BETTER = {"cdi", "stress_cdi", "cdi_within", "stress_cdi_within", "ece", "tail_error", "middle_error",
                   "head_error", "cdi_ci_low", "cdi_ci_high"}


def descriptor_learner_configs(profile: str, seeds: Iterable[int]) -> list[TrainConfig]:
    """SADCL as a multi-label descriptor learner (the descriptors are its labels)."""
    return [train_config("sadcl", profile, s, {"hp": {"sadcl_task": "descriptors"}}) for s in seeds]


#: Methods compared on every benchmark configuration (plus the rebalancing baseline chosen on
#: validation and the balanced-coverage oracle).
CONFIGURATION_METHODS = ("erm", "erm_desc", "semcovnet", "groupdro")
#: The long-tail rebalancing baselines; the one compared across configurations is chosen on validation.
REBALANCING_METHODS = ("cb", "focal", "ldam_drw", "balanced_softmax", "logit_adjustment", "crt")


def configuration_configs(profile: str, seeds: Iterable[int], configurations: Iterable[str],
                          methods: Iterable[str]) -> dict[tuple[str, str], list[TrainConfig]]:
    """(configuration, method) -> runs on that named benchmark configuration; ``oracle`` is ERM
    trained on the same configuration drawn with balanced concept coverage (the SCI that no
    coverage fix removes), evaluated against the natural training coverage."""
    from semcov_lib.benchmark import configuration_overrides

    out: dict[tuple[str, str], list[TrainConfig]] = {}
    for name in configurations:
        overrides = configuration_overrides(name, profile)
        for method in methods:
            out[(name, method)] = [train_config(method, profile, s, {"benchmark_overrides": overrides}) for s in seeds]
        oracle = {**overrides, "train_coverage": "balanced"}
        out[(name, "oracle")] = [train_config("erm", profile, s, {"benchmark_overrides": oracle}) for s in seeds]
    return out


def best_rebalancing(profile: str, seeds: Iterable[int], root: str | Path | None = None) -> str | None:
    """The rebalancing baseline with the lowest mean validation ``cdi_within`` (the coverage-balanced
    validation part when present), or None while its runs are unfinished. Test splits choose nothing."""
    configs = main_configs(profile, seeds, methods=REBALANCING_METHODS)
    if any(not is_finished(run_dir_for(c, root)) for c in configs):
        return None
    frame = results_frame(configs, root=root)
    column = "val_stress_cdi_within" if frame["val_stress_cdi_within"].notna().any() else "cdi_within"
    return str(frame.groupby("method")[column].mean().idxmin())


def paired_table(baseline: list[TrainConfig], others: dict[str, list[TrainConfig]], split: str = "stress",
                 n_boot: int = 2000, root: str | Path | None = None) -> pd.DataFrame:
    """Paired hierarchical-bootstrap differences (method - baseline) of the default metrics on one
    split, one block per method, with the levelling-down flag (Head/Middle error up, CI excluding 0)."""
    from semcov_lib.paired import flag_levelling_down, paired_from_runs

    base_dirs = [run_dir_for(c, root) for c in baseline]
    frames = [flag_levelling_down(paired_from_runs(base_dirs, [run_dir_for(c, root) for c in configs], split=split,
                                                   n_boot=n_boot)).assign(method=name, split=split)
              for name, configs in others.items()]
    return pd.concat(frames, ignore_index=True)


def configuration_paired(grid: dict[tuple[str, str], list[TrainConfig]], configurations: Iterable[str],
                         methods: Iterable[str], n_boot: int = 2000, root: str | Path | None = None) -> pd.DataFrame:
    """Per benchmark configuration, on the stress split: every method and the oracle against ERM,
    and SemCovNet against ``erm_desc``; with the reducible gap CDI(ERM) - CDI(oracle) and each
    method's CDI reduction as a share of it (``grid`` as from :func:`configuration_configs`)."""
    frames = []
    for name in configurations:
        others = {m: grid[(name, m)] for m in methods if m != "erm"} | {"oracle": grid[(name, "oracle")]}
        table = paired_table(grid[(name, "erm")], others, "stress", n_boot, root).assign(configuration=name,
                                                                                         baseline="erm")
        oracle = table[(table["metric"] == "cdi") & (table["method"] == "oracle")]
        gap = -float(oracle["delta"].iloc[0])  # CDI(ERM) - CDI(oracle) on the same samples
        table["share_of_reducible_gap"] = reducible_share(table, gap).where(table["metric"] == "cdi")
        table["reducible_gap"] = gap
        desc = paired_table(grid[(name, "erm_desc")], {"semcovnet": grid[(name, "semcovnet")]}, "stress", n_boot,
                            root).assign(configuration=name, baseline="erm_desc")
        frames += [table, desc]
    return pd.concat(frames, ignore_index=True)


def configuration_summary(paired: pd.DataFrame, methods: Iterable[str]) -> pd.DataFrame:
    """The display table of :func:`configuration_paired` for ``methods``: Δ [CI] of ``cdi`` and
    ``cdi_within``, the share of the reducible gap and the gap, per (configuration, baseline, method)."""
    keys = ["configuration", "baseline", "method"]
    rows = paired[paired["metric"].isin(["cdi", "cdi_within"]) & paired["method"].isin(list(methods))]
    table = format_paired(rows, index=keys).sort_values(keys, ignore_index=True)
    share = rows[rows["metric"] == "cdi"].set_index(keys)["share_of_reducible_gap"]
    share = share.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy(float)
    table["share of reducible CDI gap"] = [f"{100 * v:.0f}%" if np.isfinite(v) else "n/a" for v in share]
    gap = paired.groupby("configuration")["reducible_gap"].first()
    table["reducible CDI gap"] = table["configuration"].map(gap).map(lambda v: f"{v:.3f}")
    return table


def reducible_share(paired: pd.DataFrame, gap: float) -> pd.Series:
    """A method's CDI reduction as a share of the reducible gap CDI(ERM) - CDI(oracle)."""
    return -paired["delta"] / gap if np.isfinite(gap) and gap > 0 else pd.Series(np.nan, index=paired.index)


#: Keys of a notebook parameter file that decide which runs exist.
PIPELINE_KEYS = ("profile", "seeds", "ablation_seeds", "configurations")


def pipeline_configs(params: dict[str, Any], root: str | Path | None = None) -> list[TrainConfig]:
    """Every run the notebooks train for one parameter file (``notebooks/params/<profile>.yaml``).

    The main comparison, the SADCL descriptor learner, SemCovNet with predicted test-time
    descriptors, the ablations, the validation tuning grid and the benchmark configurations, in
    that order, each run folder once. The configurations include the rebalancing baseline chosen
    on validation only once the main runs it is chosen from have finished (run the grid again).
    """
    from semcov_lib.tune import tune_configs

    missing = [k for k in PIPELINE_KEYS if k not in params]
    if missing:
        raise ConfigError(f"notebook parameters lack {missing}; a parameter file needs {list(PIPELINE_KEYS)}")
    profile, seeds = params["profile"], params["seeds"]
    rebalancing = best_rebalancing(profile, seeds, root)
    methods = CONFIGURATION_METHODS + ((rebalancing,) if rebalancing else ())
    grids = [
        main_configs(profile, seeds),
        descriptor_learner_configs(profile, seeds),
        flatten(descriptor_source_configs(profile, seeds)),
        flatten(ablation_configs(profile, params["ablation_seeds"])),
        tune_configs(profile, seeds),
        flatten(configuration_configs(profile, seeds, params["configurations"], methods)),
    ]
    return flatten([c for grid in grids for c in grid])


def format_paired(table: pd.DataFrame, digits: int = 3, index: Iterable[str] = ("method",)) -> pd.DataFrame:
    """Paired differences as a display table: one row per ``index`` value (method by default), one
    'Δ [CI]' column per metric (``*`` = the 95% CI excludes 0; ``(levelling down)`` where
    Head/Middle error rose)."""
    def cell(row) -> str:
        if not np.isfinite(row["delta"]):
            return "n/a"
        mark = " *" if row["significant"] else ""
        down = " (levelling down)" if row.get("levelling_down", False) else ""
        return f"{row['delta']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]{mark}{down}"

    shown = table.assign(cell=table.apply(cell, axis=1))
    wide = shown.pivot_table(index=list(index), columns="metric", values="cell", aggfunc="first", sort=False)
    order = [m for m in dict.fromkeys(table["metric"]) if m in wide.columns]
    return wide[order].reset_index()


def paired_sentences(table: pd.DataFrame, baseline: str) -> list[str]:
    """Plain sentences from a paired table: what each method changes significantly against ``baseline``
    (CI excluding 0), what it does not, and any levelling down; so prose follows the numbers."""
    sentences = []
    for method, rows in table.groupby("method", sort=False):
        rows = rows.set_index("metric")
        better = [m for m in rows.index if rows.loc[m, "significant"]
                  and (rows.loc[m, "delta"] < 0) == (m in LOWER_IS_BETTER)]
        worse = [m for m in rows.index if rows.loc[m, "significant"] and m not in better]
        text = f"{method} vs {baseline}: "
        text += (f"significantly better on {', '.join(better)}" if better else "no significant improvement")
        text += (f"; significantly worse on {', '.join(worse)}" if worse else "; nothing significantly worse")
        if "levelling_down" in rows and rows["levelling_down"].any():
            text += " (levelling down: Head/Middle error rose)"
        if "cdi" in rows.index and np.isfinite(rows.loc["cdi", "rel_reduction"]):
            r = rows.loc["cdi"]
            text += (f"; relative CDI reduction {100 * r['rel_reduction']:+.0f}% "
                     f"[{100 * r['rel_ci_low']:+.0f}%, {100 * r['rel_ci_high']:+.0f}%]")
        sentences.append(text + ".")
    return sentences
