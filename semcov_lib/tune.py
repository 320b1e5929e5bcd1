"""Choose SemCovNet's coverage-correction settings on the validation split only.

``python -m semcov_lib tune --profile default [--seeds 0 1 2]`` trains ERM and a small grid of
SemCovNet settings (``cdi_mode`` × λ_CDI) with every seed, scores each run on validation, picks
one setting by the rule below and writes

``reports/tables/tuning_semcovnet.csv``  one row per (setting, seed), then one summary row per
                                         setting (``seed`` = "mean", with ``*_sd`` columns)
``reports/tables/tuning_choice.json``    the chosen hyper-parameters, the rule and the numbers

Scores come from the run folder's ``metrics.json`` sub-object ``val_stress`` (the
coverage-balanced validation part), else ``val``; when neither carries the CDI keys they are
recomputed from ``predictions_val.csv`` (see :func:`scores_from_predictions`). Test and stress
splits choose nothing.

Rule (:class:`TuneRule`): a setting is eligible when, averaged over seeds and paired with ERM by
seed, its validation macro-F1 is at most ``max_f1_drop`` below ERM's and its Head- and
Middle-stratum errors are at most ``max_error_rise`` above ERM's (no levelling down). Among the
eligible settings the one with the lowest mean ``cdi_within`` wins (``cdi`` where ``cdi_within``
is undefined). When none is eligible, the setting with the highest mean macro-F1 is chosen and
the choice says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semcov_lib.paths import TABLES_DIR
from semcov_lib.runs import write_csv_atomic, write_json_atomic

#: name -> SemCovNet hyper-parameters; the default grid of the ``tune`` command.
DEFAULT_GRID: dict[str, dict[str, Any]] = {
    "no_correction": {"use_cdi_reg": False},
    "squared_0.1": {"cdi_mode": "squared", "lambda_cdi": 0.1},
    "relu_neg_50": {"cdi_mode": "relu_neg", "lambda_cdi": 50.0},
    "rare_reweight_1": {"cdi_mode": "rare_reweight", "lambda_cdi": 1.0},
    "closed_loop_1": {"cdi_mode": "closed_loop", "lambda_cdi": 1.0},
    "closed_loop_3": {"cdi_mode": "closed_loop", "lambda_cdi": 3.0},
}
SCORE_KEYS = ("macro_f1", "balanced_accuracy", "cdi", "cdi_within", "head_error", "middle_error", "tail_error")
MIN_TRAIN_N = 10  # an SCG whose (class, subgroup) has fewer training images has no usable coverage
MIN_CLASS_SCGS = 4  # a class enters cdi_within with at least this many valid SCGs


@dataclass(frozen=True)
class TuneRule:
    """The selection rule (fractions, 0.005 = half a point)."""

    max_f1_drop: float = 0.005
    max_error_rise: float = 0.005
    objective: str = "cdi_within"


# --------------------------------------------------------------------------- scoring
def within_class_rho(per_scg: pd.DataFrame, min_scgs: int = MIN_CLASS_SCGS) -> float:
    """ρ_within = Σ_c n_c·ρ_c / Σ_c n_c over classes with ≥ ``min_scgs`` valid SCGs (NaN if none).

    ρ_c = Spearman(cov_g, e_g) over the valid SCGs of class c, n_c their number.
    """
    from semcov_lib.cdi import spearman

    rhos, counts = [], []
    for _, rows in per_scg[per_scg["valid"].astype(bool)].groupby("class_idx"):
        if len(rows) >= min_scgs:
            rho = spearman(rows["coverage"].to_numpy(float), rows["error"].to_numpy(float))
            if np.isfinite(rho):
                rhos.append(rho)
                counts.append(len(rows))
    return float(np.average(rhos, weights=counts)) if rhos else float("nan")


def scores_from_predictions(pred_csv: Path, split, info, min_weight: float) -> dict[str, float]:
    """Validation scores recomputed from a run's predictions of ``split`` (a ``SplitTensors``).

    SCGs are valid with evaluation weight ≥ ``min_weight``, finite training coverage and at
    least ``MIN_TRAIN_N`` training images in their (class, subgroup).
    """
    import warnings

    from semcov_lib.cdi import compute_cdi, spearman
    from semcov_lib.coverage import assign_strata
    from semcov_lib.metrics import balanced_accuracy, macro_f1, stratum_errors

    frame = pd.read_csv(pred_csv)
    if list(frame["sample_id"].astype(str)) != [str(s) for s in split.sample_ids]:
        raise ValueError(f"{pred_csv}: sample_id order differs from the {split.name} split; retrain the run")
    y, pred = split.y.numpy(), frame["pred"].to_numpy(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = compute_cdi(info.coverage, y, pred, split.subgroup.numpy(), split.scores, min_weight=min_weight,
                          n_boot=0)
    per = res.per_scg.copy()
    enough = np.asarray(info.group_counts)[per["class_idx"], per["subgroup_idx"]] >= MIN_TRAIN_N
    per["valid"] = per["valid"].astype(bool) & enough
    valid = per[per["valid"]]
    per["stratum"] = assign_strata(per["coverage"].to_numpy(float), reference=valid["coverage"].to_numpy(float))
    n_classes = len(info.classes)
    out = {"macro_f1": macro_f1(y, pred, n_classes), "balanced_accuracy": balanced_accuracy(y, pred, n_classes),
           "cdi": abs(spearman(valid["coverage"].to_numpy(float), valid["error"].to_numpy(float)))
           if len(valid) >= 3 else float("nan"),
           "cdi_within": abs(within_class_rho(per)), "n_valid_scgs": int(len(valid))}
    out.update(stratum_errors(per))
    return out


def run_scores(run_dir: Path, config) -> dict[str, float]:
    """A finished run's validation scores: ``val_stress`` > ``val`` in metrics.json > predictions."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    for key in ("val_stress", "val"):
        sub = metrics.get(key)
        if isinstance(sub, dict) and all(k in sub for k in SCORE_KEYS):
            return {**{k: float(sub[k]) if sub[k] is not None else float("nan") for k in SCORE_KEYS},
                    "source": key}
    from semcov_lib.train import prepare_data

    data = prepare_data(config)
    name = "val_stress" if "val_stress" in data.splits and (Path(run_dir) / "predictions_val_stress.csv").is_file() \
        else "val"
    scores = scores_from_predictions(Path(run_dir) / f"predictions_{name}.csv", data.splits[name], data.info,
                                     config.min_weight)
    return {**scores, "source": f"predictions_{name}"}


# --------------------------------------------------------------------------- grid and choice
def _configs(profile: str, seeds: list[int], grid: dict[str, dict], overrides: dict) -> list[tuple[str, Any]]:
    from semcov_lib.train import train_config

    pairs = [("erm", train_config("erm", profile, s, overrides)) for s in seeds]
    for name, hp in grid.items():
        pairs += [(name, train_config("semcovnet", profile, s, {**overrides, "hp": dict(hp)})) for s in seeds]
    return pairs


def tune_configs(profile: str, seeds, grid: dict | None = None, overrides: dict | None = None) -> list:
    """Every run :func:`tune` trains (ERM, then each grid setting), for the ``grid`` command."""
    grid = dict(DEFAULT_GRID if grid is None else grid)
    return [c for _, c in _configs(profile, list(seeds), grid, dict(overrides or {}))]


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean and sd over seeds, and the mean paired difference to ERM (``d_*``)."""
    erm = rows[rows["setting"] == "erm"].set_index("seed")
    out = []
    for name, group in rows.groupby("setting", sort=False):
        g = group.set_index("seed")
        rec: dict[str, Any] = {"setting": name, "seed": "mean", "n_seeds": len(g)}
        for key in SCORE_KEYS:
            rec[key] = float(g[key].mean())
            rec[f"{key}_sd"] = float(g[key].std(ddof=1)) if len(g) > 1 else float("nan")
            paired = (g[key] - erm[key]).dropna()  # paired by seed
            rec[f"d_{key}"] = float(paired.mean()) if len(paired) else float("nan")
        out.append(rec)
    return pd.DataFrame(out)


def choose(summary: pd.DataFrame, rule: TuneRule = TuneRule()) -> dict[str, Any]:
    """Apply ``rule`` to the summary; returns the chosen setting's name and why."""
    cand = summary[summary["setting"] != "erm"].copy()
    ok = (cand["d_macro_f1"] >= -rule.max_f1_drop) & (cand["d_head_error"].fillna(0) <= rule.max_error_rise) \
        & (cand["d_middle_error"].fillna(0) <= rule.max_error_rise)
    cand["eligible"] = ok
    objective = rule.objective if cand[rule.objective].notna().any() else "cdi"
    if ok.any():
        best = cand[ok].sort_values(objective, na_position="last").iloc[0]
        reason = f"lowest mean validation {objective} among the eligible settings"
    else:
        best = cand.sort_values("macro_f1", ascending=False).iloc[0]
        reason = "no setting met the rule; highest mean validation macro_f1"
    return {"setting": str(best["setting"]), "objective": objective, "reason": reason,
            "eligible": sorted(cand.loc[ok, "setting"].astype(str))}


def tune(profile: str = "default", seeds: list[int] | tuple[int, ...] = (0, 1, 2), grid: dict | None = None,
         overrides: dict | None = None, jobs: int = 2, runs_root: str | Path | None = None,
         out_dir: str | Path | None = None, rule: TuneRule = TuneRule(), progress: bool = True) -> dict[str, Any]:
    """Train ERM and every grid setting with every seed, score on validation, choose, write tables."""
    from semcov_lib.train import run_dir_for, train_many

    grid = dict(DEFAULT_GRID if grid is None else grid)
    if "erm" in grid:
        raise ValueError("tune grid: 'erm' is the reference and cannot be a setting name")
    pairs = _configs(profile, list(seeds), grid, dict(overrides or {}))
    train_many([c for _, c in pairs], jobs=jobs, root=runs_root, progress=progress)
    rows = pd.DataFrame([{"setting": name, "seed": c.seed, **run_scores(run_dir_for(c, runs_root), c)}
                         for name, c in pairs])
    summary = summarise(rows)
    choice = choose(summary, rule)
    hp = grid[choice["setting"]]
    out_dir = Path(out_dir) if out_dir else TABLES_DIR
    table = pd.concat([rows.assign(seed=rows["seed"].astype(str)), summary], ignore_index=True)
    write_csv_atomic(out_dir / "tuning_semcovnet.csv", table)
    record = {**choice, "hp": hp, "rule": asdict(rule), "profile": profile, "seeds": list(seeds),
              "overrides": dict(overrides or {}), "grid": grid, "score_source": sorted(set(rows["source"])),
              "summary": summary.set_index("setting")[[*SCORE_KEYS, "d_macro_f1", "d_head_error",
                                                       "d_middle_error"]].to_dict(orient="index")}
    write_json_atomic(out_dir / "tuning_choice.json", record)
    return record


# --------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    from semcov_lib.train import TRAIN_PROFILES

    parser.add_argument("--profile", default="default", choices=sorted(TRAIN_PROFILES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training key applied to every run, e.g. max_steps=5 (repeatable)")
    parser.add_argument("--runs-root", help="folder of the run folders (default: reports/runs)")
    parser.add_argument("--out", help="folder for the two tables (default: reports/tables)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import dataclasses

    from semcov_lib.config import parse_overrides
    from semcov_lib.train import TrainConfig

    overrides = parse_overrides(args.set)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "seed", "profile", "hp"}
    unknown = sorted(set(overrides) - train_keys)
    if unknown:
        raise ValueError(f"tune --set: {unknown} are not training keys; valid: {sorted(train_keys)}")
    record = tune(args.profile, args.seeds, overrides=overrides, jobs=args.jobs, runs_root=args.runs_root,
                  out_dir=args.out, progress=not args.no_progress)
    print(f"chosen: {record['setting']} {record['hp']} ({record['reason']})")
    return 0


__all__ = ["DEFAULT_GRID", "TuneRule", "add_arguments", "choose", "run", "run_scores", "scores_from_predictions",
           "summarise", "tune", "within_class_rho"]
