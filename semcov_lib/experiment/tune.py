"""Choose SemCovNet's coverage-correction settings on the validation split only.

``python -m semcov_lib tune --profile default [--seeds 0 1 2]`` trains ERM and a small grid of
SemCovNet settings (``cdi_mode`` × λ_CDI) with every seed, scores each run on validation, picks
one setting by the rule below and writes

``reports/tables/tuning_semcovnet.csv``  one row per (setting, seed), then one summary row per
                                         setting (``seed`` = "mean", with ``*_sd`` columns)
``reports/tables/tuning_choice.json``    the chosen hyper-parameters, the rule and the numbers

Scores come from the run folder's ``metrics.json`` sub-object ``val_stress`` (the
coverage-balanced validation part), else ``val``. Test and stress splits choose nothing.

Rule (:class:`TuneRule`): a setting is eligible when, averaged over seeds and paired with ERM by
seed, its validation macro-F1 is at most ``max_f1_drop`` below ERM's and its Head- and
Middle-stratum errors are at most ``max_error_rise`` above ERM's (no levelling down). Among the
eligible settings the one with the lowest mean ``cdi_within`` wins (``cdi`` where ``cdi_within``
is undefined). When none is eligible, the setting with the highest mean macro-F1 is chosen and
the choice says so.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from semcov_lib.config import parse_overrides
from semcov_lib.experiment.protocol import TRAIN_PROFILES, TrainConfig, run_dir_for, train_config
from semcov_lib.experiment.train import train_many
from semcov_lib.files import write_csv_atomic, write_json_atomic
from semcov_lib.paths import TABLES_DIR

#: SemCovNet's descriptor pathway on (the paper's architecture); the grid names the architecture of
#: every setting, so the grid means the same runs whatever SemCovNet's defaults are.
FULL_ARCHITECTURE: dict[str, Any] = {"use_sdm": True, "use_dam": True, "use_dva": True}
BACKBONE_ONLY: dict[str, Any] = {"use_sdm": False, "use_dam": False, "use_dva": False}

#: name -> SemCovNet hyper-parameters; the default grid of the ``tune`` command.
DEFAULT_GRID: dict[str, dict[str, Any]] = {
    "no_correction": {"use_cdi_reg": False, **FULL_ARCHITECTURE},
    "squared_0.1": {"cdi_mode": "squared", "lambda_cdi": 0.1, **FULL_ARCHITECTURE},
    "relu_neg_50": {"cdi_mode": "relu_neg", "lambda_cdi": 50.0, **FULL_ARCHITECTURE},
    "closed_loop_3": {"cdi_mode": "closed_loop", "lambda_cdi": 3.0, **FULL_ARCHITECTURE},
    "balance_1": {"cdi_mode": "balance", "lambda_cdi": 1.0, **FULL_ARCHITECTURE},
    "balance_hard_1": {"cdi_mode": "balance", "lambda_cdi": 1.0, "cdi_balance_membership": "hard",
                       **FULL_ARCHITECTURE},
    "adjust_1": {"cdi_mode": "adjust", "lambda_cdi": 1.0, **FULL_ARCHITECTURE},
    # the same correction without the descriptor pathway (SDM, and with it DAM and DVA), which
    # alone raised the Middle-stratum error in the ablations
    "balance_1_backbone": {"cdi_mode": "balance", "lambda_cdi": 1.0, **BACKBONE_ONLY},
}
SCORE_KEYS = ("macro_f1", "balanced_accuracy", "cdi", "cdi_within", "head_error", "middle_error", "tail_error")


@dataclass(frozen=True)
class TuneRule:
    """The selection rule (fractions, 0.005 = half a point)."""

    max_f1_drop: float = 0.005
    max_error_rise: float = 0.005
    objective: str = "cdi_within"


@dataclass(frozen=True)
class TuneSearch:
    """What is trained besides ERM: the SemCovNet settings by name (None: :data:`DEFAULT_GRID`)
    and training keys applied to every run (e.g. ``{"max_steps": 5}``)."""

    grid: dict[str, dict[str, Any]] | None = None
    overrides: dict[str, Any] | None = None


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
def _configs(profile: str, seeds: list[int], grid: dict[str, dict], overrides: dict) -> list[tuple[str, TrainConfig]]:
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


def tune(profile: str = "default", seeds: list[int] | tuple[int, ...] = (0, 1, 2), search: TuneSearch = TuneSearch(),
         jobs: int = 2, runs_root: str | Path | None = None, out_dir: str | Path | None = None,
         rule: TuneRule = TuneRule(), progress: bool = True) -> dict[str, Any]:
    """Train ERM and every grid setting with every seed, score on validation, choose, write tables."""
    grid = dict(DEFAULT_GRID if search.grid is None else search.grid)
    overrides = dict(search.overrides or {})
    if "erm" in grid:
        raise ValueError("tune grid: 'erm' is the reference and cannot be a setting name")
    pairs = _configs(profile, list(seeds), grid, overrides)
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
              "overrides": overrides, "grid": grid, "score_source": sorted(set(rows["source"])),
              "summary": summary.set_index("setting")[[*SCORE_KEYS, "d_macro_f1", "d_head_error",
                                                       "d_middle_error"]].to_dict(orient="index")}
    write_json_atomic(out_dir / "tuning_choice.json", record)
    return record


# --------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="default", choices=sorted(TRAIN_PROFILES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
    record = tune(args.profile, args.seeds, TuneSearch(overrides=overrides), jobs=args.jobs, runs_root=args.runs_root,
                  out_dir=args.out, progress=not args.no_progress)
    print(f"chosen: {record['setting']} {record['hp']} ({record['reason']})")
    return 0


__all__ = ["DEFAULT_GRID", "TuneRule", "TuneSearch", "add_arguments", "choose", "run", "run_scores", "summarise",
           "tune", "tune_configs"]
