"""Choose SemCovNet's coverage-correction settings on the validation split only.

``python -m semcov_lib tune --profile default [--seeds 0 1 2] [--configurations ...]`` trains ERM
and a small grid of SemCovNet settings with every seed on each benchmark configuration, scores each
run on validation, picks one setting by the rule below and writes

``reports/tables/tuning_semcovnet.csv``  one row per (configuration, setting, seed); one summary
                                         row per (configuration, setting) (``seed`` = "mean", with
                                         ``*_sd`` and paired ``d_*`` columns); one row per setting
                                         averaged over the configurations (``configuration`` =
                                         "all", with ``eligible``)
``reports/tables/tuning_choice.json``    the chosen hyper-parameters, the rule and the numbers
``reports/tables/tuning_paired.csv``     every setting against ERM per configuration, paired
                                         bootstrap CIs (:func:`validation_paired`; reporting only)

Scores come from the run folder's ``metrics.json`` sub-object ``val_stress`` (the
coverage-balanced validation part), else ``val``. Test and stress splits choose nothing.

Rule (:class:`TuneRule`): a setting is eligible when, on *every* configuration, averaged over
seeds and paired with ERM by seed, its validation macro-F1 is at most ``max_f1_drop`` below ERM's
and its Head- and Middle-stratum errors are at most ``max_error_rise`` above ERM's (no levelling
down anywhere). Among the eligible settings the one with the lowest ``cdi_within`` averaged over
the configurations wins (``cdi`` where ``cdi_within`` is undefined). When none is eligible, the
setting with the highest mean macro-F1 is chosen and the choice says so. Choosing over several
configurations is what makes the default general: a setting tuned on one benchmark levelled down
on another (the balance weighting on 0/1 descriptors).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from semcov_lib.config import parse_overrides
from semcov_lib.data.benchmark import configuration_overrides
from semcov_lib.experiment.protocol import TRAIN_PROFILES, TrainConfig, run_dir_for, train_config
from semcov_lib.experiment.results import paired_table
from semcov_lib.experiment.train import train_many
from semcov_lib.files import write_csv_atomic, write_json_atomic
from semcov_lib.paths import TABLES_DIR

#: SemCovNet's descriptor pathway off; the grid names the architecture and every correction key of
#: each setting, so the grid means the same runs whatever SemCovNet's defaults are.
BACKBONE_ONLY: dict[str, Any] = {"use_sdm": False, "use_dam": False, "use_dva": False}

#: name -> SemCovNet hyper-parameters; the default grid of the ``tune`` command.
DEFAULT_GRID: dict[str, dict[str, Any]] = {
    # importance ratios to balanced coverage, floored at 1 (only samples whose concepts are rarer than
    # balanced gain), spent on which samples are drawn; each drawn rare-side sample's feature is
    # jittered by a within-class residual of the batch (the previous default)
    "resample_rare_jitter_1_backbone": {"cdi_mode": "resample", "lambda_cdi": 1.0, "cdi_balance_min": 1.0,
                                        "cdi_jitter": 1.0, "cdi_views": 0, **BACKBONE_ONLY},
    # the same, each rare-side training image also shown as itself or one of its three rotations
    "resample_rare_jitter_1_views3_backbone": {"cdi_mode": "resample", "lambda_cdi": 1.0, "cdi_balance_min": 1.0,
                                               "cdi_jitter": 1.0, "cdi_views": 3, **BACKBONE_ONLY},
}

#: Benchmark configurations the ``tune`` command chooses on unless told otherwise.
DEFAULT_CONFIGURATIONS = ("default", "many_classes", "hard_descriptors")
SCORE_KEYS = ("macro_f1", "balanced_accuracy", "cdi", "cdi_within", "head_error", "middle_error", "tail_error")
ACROSS = "all"  # the ``configuration`` of the rows averaged over configurations
PAIRED_TABLE = "tuning_paired.csv"  # validation_paired's table, beside tuning_semcovnet.csv


@dataclass(frozen=True)
class TuneRule:
    """The selection rule (fractions, 0.005 = half a point)."""

    max_f1_drop: float = 0.005
    max_error_rise: float = 0.005
    objective: str = "cdi_within"


@dataclass(frozen=True)
class TuneSearch:
    """What is trained besides ERM: the SemCovNet settings by name (None: :data:`DEFAULT_GRID`),
    training keys applied to every run (e.g. ``{"max_steps": 5}``) and the named benchmark
    configurations (``semcov_lib/data/benchmark/config.py``) every setting is tried on."""

    grid: dict[str, dict[str, Any]] | None = None
    overrides: dict[str, Any] | None = None
    configurations: tuple[str, ...] = DEFAULT_CONFIGURATIONS


# --------------------------------------------------------------------------- scoring
def run_scores(run_dir: Path, config=None) -> dict[str, float]:
    """A finished run's validation scores from its metrics.json: ``val_stress`` (the
    coverage-balanced validation part), else ``val``. The trainer computes both with the same
    evaluation as every other split, so nothing is recomputed here."""
    path = Path(run_dir) / "metrics.json"
    metrics = json.loads(path.read_text())
    for key in ("val_stress", "val"):
        sub = metrics.get(key)
        if isinstance(sub, dict) and all(k in sub for k in SCORE_KEYS):
            return {**{k: float(sub[k]) if sub[k] is not None else float("nan") for k in SCORE_KEYS},
                    "source": key}
    raise ValueError(f"{path} has no validation metrics ({', '.join(SCORE_KEYS)} under 'val_stress' or 'val'); "
                     "the run predates the evaluation protocol: retrain it with --force")


# --------------------------------------------------------------------------- grid and choice
def _configs(profile: str, seeds: list[int], search: TuneSearch) -> list[tuple[str, str, TrainConfig]]:
    """(configuration, setting, run) for ERM and every grid setting on every configuration; the
    runs are the configuration table's own (``plan.configuration_configs``), so ERM is shared."""
    grid = DEFAULT_GRID if search.grid is None else search.grid
    overrides = dict(search.overrides or {})
    out = []
    for name in search.configurations:
        keys = {**overrides, "benchmark_overrides": {**configuration_overrides(name, profile),
                                                     **overrides.get("benchmark_overrides", {})}}
        out += [(name, "erm", train_config("erm", profile, s, keys)) for s in seeds]
        for setting, hp in grid.items():
            out += [(name, setting, train_config("semcovnet", profile, s, {**keys, "hp": dict(hp)})) for s in seeds]
    return out


def tune_configs(profile: str, seeds, search: TuneSearch = TuneSearch()) -> list:
    """Every run :func:`tune` trains (ERM, then each grid setting, per configuration), for the ``grid`` command."""
    return [c for _, _, c in _configs(profile, list(seeds), search)]


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (configuration, setting): mean and sd over seeds, and the mean paired difference to the
    same configuration's ERM (``d_*``)."""
    out = []
    for (config, name), group in rows.groupby(["configuration", "setting"], sort=False):
        erm = rows[(rows["configuration"] == config) & (rows["setting"] == "erm")].set_index("seed")
        g = group.set_index("seed")
        rec: dict[str, Any] = {"configuration": config, "setting": name, "seed": "mean", "n_seeds": len(g)}
        for key in SCORE_KEYS:
            rec[key] = float(g[key].mean())
            rec[f"{key}_sd"] = float(g[key].std(ddof=1)) if len(g) > 1 else float("nan")
            paired = (g[key] - erm[key]).dropna()  # paired by seed
            rec[f"d_{key}"] = float(paired.mean()) if len(paired) else float("nan")
        out.append(rec)
    return pd.DataFrame(out)


def _eligible(summary: pd.DataFrame, rule: TuneRule) -> pd.Series:
    """Per (configuration, setting) row: no macro-F1 loss and no Head/Middle error rise beyond the rule."""
    return (summary["d_macro_f1"] >= -rule.max_f1_drop) & (summary["d_head_error"].fillna(0) <= rule.max_error_rise) \
        & (summary["d_middle_error"].fillna(0) <= rule.max_error_rise)


def across_configurations(summary: pd.DataFrame, rule: TuneRule = TuneRule()) -> pd.DataFrame:
    """Per setting: every score and ``d_*`` averaged over the configurations, and ``eligible``
    (the rule holds on every configuration)."""
    summary = summary if "configuration" in summary else summary.assign(configuration="default")
    ok = _eligible(summary, rule).groupby(summary["setting"], sort=False).all()
    numeric = summary.drop(columns=["configuration", "seed"], errors="ignore")
    means = numeric.groupby("setting", sort=False).mean(numeric_only=True).reset_index()
    n_configs = summary.groupby("setting", sort=False)["configuration"].nunique()
    return means.assign(configuration=ACROSS, seed="mean", n_configurations=means["setting"].map(n_configs),
                        eligible=means["setting"].map(ok).where(means["setting"] != "erm"))


def choose(summary: pd.DataFrame, rule: TuneRule = TuneRule()) -> dict[str, Any]:
    """Apply ``rule`` to the per-configuration summary; returns the chosen setting's name and why."""
    cand = across_configurations(summary, rule)
    cand = cand[cand["setting"] != "erm"]
    ok = cand["eligible"].astype(bool)
    objective = rule.objective if cand[rule.objective].notna().any() else "cdi"
    if ok.any():
        best = cand[ok].sort_values(objective, na_position="last").iloc[0]
        reason = f"lowest validation {objective} (mean over configurations) among the eligible settings"
    else:
        best = cand.sort_values("macro_f1", ascending=False).iloc[0]
        reason = "no setting met the rule on every configuration; highest mean validation macro_f1"
    return {"setting": str(best["setting"]), "objective": objective, "reason": reason,
            "eligible": sorted(cand.loc[ok, "setting"].astype(str))}


def tune(profile: str = "default", seeds: list[int] | tuple[int, ...] = (0, 1, 2), search: TuneSearch = TuneSearch(),
         jobs: int = 2, runs_root: str | Path | None = None, out_dir: str | Path | None = None,
         rule: TuneRule = TuneRule(), progress: bool = True) -> dict[str, Any]:
    """Train ERM and every grid setting with every seed on every configuration, score on
    validation, choose, write tables."""
    grid = dict(DEFAULT_GRID if search.grid is None else search.grid)
    if "erm" in grid:
        raise ValueError("tune grid: 'erm' is the reference and cannot be a setting name")
    if not search.configurations:
        raise ValueError("tune: no benchmark configuration to choose on; name at least one")
    triples = _configs(profile, list(seeds), search)
    train_many([c for _, _, c in triples], jobs=jobs, root=runs_root, progress=progress)
    rows = pd.DataFrame([{"configuration": config, "setting": name, "seed": c.seed,
                          **run_scores(run_dir_for(c, runs_root), c)} for config, name, c in triples])
    summary = summarise(rows)
    choice = choose(summary, rule)
    across = across_configurations(summary, rule)
    out_dir = Path(out_dir) if out_dir else TABLES_DIR
    table = pd.concat([rows.assign(seed=rows["seed"].astype(str)), summary, across], ignore_index=True)
    write_csv_atomic(out_dir / "tuning_semcovnet.csv", table)
    columns = [*SCORE_KEYS, "d_macro_f1", "d_cdi_within", "d_head_error", "d_middle_error"]
    record = {**choice, "hp": grid[choice["setting"]], "rule": asdict(rule), "profile": profile,
              "seeds": list(seeds), "configurations": list(search.configurations),
              "overrides": dict(search.overrides or {}), "grid": grid, "score_source": sorted(set(rows["source"])),
              "summary": across.set_index("setting")[columns].to_dict(orient="index"),
              "by_configuration": {config: part.set_index("setting")[columns].to_dict(orient="index")
                                   for config, part in summary.groupby("configuration", sort=False)}}
    write_json_atomic(out_dir / "tuning_choice.json", record)
    return record


def validation_paired(profile: str, seeds, search: TuneSearch = TuneSearch(), n_boot: int = 1000,
                      runs_root: str | Path | None = None) -> pd.DataFrame:
    """Every grid setting against ERM on the validation part the rule scored, per configuration:
    paired bootstrap differences with CIs (``paired_table``; ``method`` is the setting).

    Why: the rule compares 3-seed point estimates against ±0.5-point limits, while a Head-error
    difference on validation has a CI about ±2 points wide; this table shows how much of a choice
    is noise. It reports only: the rule stays as it was fixed before the grid was run.
    """
    by_config: dict[str, dict[str, list[TrainConfig]]] = {}
    for config, setting, c in _configs(profile, list(seeds), search):
        by_config.setdefault(config, {}).setdefault(setting, []).append(c)
    frames = []
    for config, runs in by_config.items():
        erm = runs.pop("erm")
        split = run_scores(run_dir_for(erm[0], runs_root))["source"]  # the split the rule scored
        frames.append(paired_table(erm, runs, split, n_boot, runs_root).assign(configuration=config))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="default", choices=sorted(TRAIN_PROFILES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configurations", nargs="+", default=list(DEFAULT_CONFIGURATIONS),
                        help="named benchmark configurations the setting must hold on")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training key applied to every run, e.g. max_steps=5 (repeatable)")
    parser.add_argument("--runs-root", help="folder of the run folders (default: reports/runs)")
    parser.add_argument("--out", help="folder for the two tables (default: reports/tables)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    overrides = parse_overrides(args.set)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "seed", "profile", "hp"}
    unknown = sorted(set(overrides) - train_keys)
    if unknown:
        raise ValueError(f"tune --set: {unknown} are not training keys; valid: {sorted(train_keys)}")
    search = TuneSearch(overrides=overrides, configurations=tuple(args.configurations))
    record = tune(args.profile, args.seeds, search, jobs=args.jobs, runs_root=args.runs_root,
                  out_dir=args.out, progress=not args.no_progress)
    paired = validation_paired(args.profile, args.seeds, search, runs_root=args.runs_root)
    write_csv_atomic((Path(args.out) if args.out else TABLES_DIR) / PAIRED_TABLE, paired)
    print(f"chosen: {record['setting']} {record['hp']} ({record['reason']})")
    return 0


__all__ = ["DEFAULT_CONFIGURATIONS", "DEFAULT_GRID", "TuneRule", "TuneSearch", "across_configurations", "add_arguments", "choose", "run", "run_scores", "summarise",
           "tune", "tune_configs", "validation_paired"]
