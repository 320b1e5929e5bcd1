"""What is read back from finished runs: metrics tables, paired differences, per-SCG errors,
calibration, descriptor attention and example images.

Everything here reads run folders written by :func:`semcov_lib.experiment.train.train` (only the
attention and example figures reload a model and prepare the run's data), so tables and figures are
redrawn without retraining.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from semcov_lib.data.images import load_images
from semcov_lib.experiment.batches import PreparedData, make_batch, prepare_data
from semcov_lib.experiment.protocol import TrainConfig, is_finished, run_dir_for
from semcov_lib.models.methods import build_method
from semcov_lib.models.methods.base import Method
from semcov_lib.models.methods.sadcl import evaluate_multilabel
from semcov_lib.sci.cdi import spearman
from semcov_lib.sci.metrics import reliability_data
from semcov_lib.sci.paired import flag_levelling_down, paired_from_runs

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


def paired_table(baseline: list[TrainConfig], others: dict[str, list[TrainConfig]], split: str = "stress",
                 n_boot: int = 2000, root: str | Path | None = None) -> pd.DataFrame:
    """Paired hierarchical-bootstrap differences (method - baseline) of the default metrics on one
    split, one block per method, with the levelling-down flag (Head/Middle error up, CI excluding 0)."""
    base_dirs = [run_dir_for(c, root) for c in baseline]
    frames = [flag_levelling_down(paired_from_runs(base_dirs, [run_dir_for(c, root) for c in configs], split=split,
                                                   n_boot=n_boot)).assign(method=name, split=split)
              for name, configs in others.items()]
    return pd.concat(frames, ignore_index=True)


def configuration_paired(grid: dict[tuple[str, str], list[TrainConfig]], configurations: Iterable[str],
                         methods: Iterable[str], n_boot: int = 2000, root: str | Path | None = None,
                         split: str = "stress") -> pd.DataFrame:
    """Per benchmark configuration, on ``split``: every method and the oracle against ERM, and
    SemCovNet against ``erm_desc`` when both were trained; with the reducible gap CDI(ERM) - CDI(oracle) and each
    method's CDI reduction as a share of it (``grid`` as from :func:`configuration_configs`).
    On the iid ``test`` split the same table shows what balancing costs where the natural
    coverage holds."""
    frames = []
    for name in configurations:
        others = {m: grid[(name, m)] for m in methods if m != "erm"} | {"oracle": grid[(name, "oracle")]}
        table = paired_table(grid[(name, "erm")], others, split, n_boot, root).assign(configuration=name,
                                                                                      baseline="erm")
        oracle = table[(table["metric"] == "cdi") & (table["method"] == "oracle")]
        gap = -float(oracle["delta"].iloc[0])  # CDI(ERM) - CDI(oracle) on the same samples
        table["share_of_reducible_gap"] = reducible_share(table, gap).where(table["metric"] == "cdi")
        table["reducible_gap"] = gap
        free = levelling_free_gap([per_scg_table(c, split, root) for c in grid[(name, "erm")]],
                                  [per_scg_table(c, split, root) for c in grid[(name, "oracle")]])
        table["share_of_levelling_free_gap"] = reducible_share(table, free).where(table["metric"] == "cdi")
        table["levelling_free_gap"] = free
        frames.append(table)
        if (name, "erm_desc") in grid and (name, "semcovnet") in grid:  # same descriptor inputs
            frames.append(paired_table(grid[(name, "erm_desc")], {"semcovnet": grid[(name, "semcovnet")]}, split,
                                       n_boot, root).assign(configuration=name, baseline="erm_desc"))
    return pd.concat(frames, ignore_index=True)


def reducible_share(paired: pd.DataFrame, gap: float) -> pd.Series:
    """A method's CDI reduction as a share of the reducible gap CDI(ERM) - CDI(oracle)."""
    return -paired["delta"] / gap if np.isfinite(gap) and gap > 0 else pd.Series(np.nan, index=paired.index)


def levelling_free_gap(erm: list[pd.DataFrame], oracle: list[pd.DataFrame]) -> float:
    """CDI(ERM) - CDI(levelling-free oracle): the part of the reducible gap the oracle reaches
    without raising any SCG's error.

    Why: the balanced-coverage oracle also lowers the CDI by erring *more* on well-covered SCGs
    (it sees fewer of them), which the no-levelling-down rule forbids a method. The levelling-free
    oracle keeps the oracle's per-SCG error where, averaged over the seeds, it is lower than ERM's
    and ERM's elsewhere; its CDI is the mean over seeds of |Spearman(cov, e)| on the valid SCGs.
    Choosing the lower of two noisy errors also keeps the oracle's chance wins, so this gap is, if
    anything, generous. ``erm``/``oracle``: the runs' per-SCG frames (:func:`per_scg_table`), seed
    by seed, evaluated against the same training coverage on the same samples.
    """
    if len(erm) != len(oracle) or not erm:
        raise ValueError(f"levelling-free gap: {len(erm)} ERM and {len(oracle)} oracle runs; pair them seed by seed")
    for a, b in zip(erm, oracle):
        if len(a) != len(b) or not (np.allclose(a["coverage"], b["coverage"], equal_nan=True)
                                    and (a["valid"].to_numpy() == b["valid"].to_numpy()).all()):
            raise ValueError("levelling-free gap: ERM and oracle per-SCG tables differ in coverage or validity; "
                             "evaluate both against the natural training coverage on the same split")
    # lower_g: mean_s e_oracle(g, s) < mean_s e_erm(g, s) over the seeds where g is valid (sign of the sum)
    lower = sum(np.where(b["valid"], b["error"] - a["error"], 0.0) for a, b in zip(erm, oracle)) < 0
    cdi = {"erm": [], "free": []}
    for a, b in zip(erm, oracle):
        v = a["valid"].to_numpy(bool)
        free = np.where(lower, b["error"], a["error"])
        cdi["erm"].append(abs(spearman(a["coverage"].to_numpy()[v], a["error"].to_numpy()[v])))
        cdi["free"].append(abs(spearman(a["coverage"].to_numpy()[v], free[v])))
    return float(np.mean(cdi["erm"]) - np.mean(cdi["free"]))


def load_predictions(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """The ``predictions_<split>.csv`` of a finished run."""
    path = run_dir_for(config, root) / f"predictions_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train {config.method} seed {config.seed} first")
    return pd.read_csv(path)


def load_model(config: TrainConfig, root: str | Path | None = None) -> Method:
    """Rebuild a finished run's model from its ``model.pt`` (safe ``weights_only`` load)."""
    return _model_and_data(config, root)[0]


def _model_and_data(config: TrainConfig, root: str | Path | None = None) -> tuple[Method, PreparedData]:
    """A finished run's model (evaluation mode) and its prepared data, which rebuilding it needs."""
    path = run_dir_for(config, root) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train {config.method} seed {config.seed} first")
    data = prepare_data(config)
    model = build_method(config.method, data.info, config.resolved_hp())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a loadable model state: {exc}") from exc
    model.load_state_dict(state)
    return model.eval(), data


def per_scg_table(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """The ``per_scg_<split>.csv`` of a finished run: coverage, weight, error, stratum, valid per SCG."""
    path = run_dir_for(config, root) / f"per_scg_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train {config.method} seed {config.seed} first")
    return pd.read_csv(path)


def calibration(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """Reliability-diagram data (per confidence bin) of a finished run."""
    preds = load_predictions(config, split, root)
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy()
    return pd.DataFrame(reliability_data(preds["label"].to_numpy(), probs))


@torch.no_grad()
def descriptor_attention(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """How much SemCovNet's DAM leans on the descriptor branch, per descriptor.

    For the gated DAM, h = γ⊙f_v + (1−γ)⊙f_d, so the mean of (1−γ) over a sample's feature
    dimensions is the share of the descriptor branch. We average it over the samples in which
    each descriptor is present (score ≥ 0.5) and absent. With the coverage-aware DAM the model
    also returns per-descriptor token weights, which are reported directly.
    """
    model, data = _model_and_data(config, root)
    part = data.splits[split]
    shares, tokens = [], []
    for start in range(0, len(part), 512):
        idx = torch.arange(start, min(start + 512, len(part)))
        out = model(make_batch(part, idx, torch.device("cpu")))
        if "gate" in out and out["gate"] is not None:
            shares.append((1.0 - out["gate"].float()).mean(dim=1).numpy())
        if "token_weights" in out and out["token_weights"] is not None:
            tokens.append(out["token_weights"].float().numpy())
    if not shares:
        raise ValueError(f"{config.method} with these switches has no DAM gate to analyse")
    share = np.concatenate(shares)
    token_weights = np.concatenate(tokens) if tokens else None
    present = np.nan_to_num(part.scores, nan=0.0) >= 0.5
    rows = []
    for k, name in enumerate(data.info.descriptors):
        rows.append({
            "descriptor": name,
            "descriptor_share_present": float(share[present[:, k]].mean()) if present[:, k].any() else np.nan,
            "descriptor_share_absent": float(share[~present[:, k]].mean()) if (~present[:, k]).any() else np.nan,
            "token_weight": float(token_weights[:, k].mean()) if token_weights is not None else np.nan,
            "train_prevalence": float(data.info.prevalence[k]),
            "seed": config.seed,
        })
    return pd.DataFrame(rows)


def example_images(config: TrainConfig, n: int = 8, split: str = "test", seed: int = 0,
                   root: str | Path | None = None) -> dict:
    """A few evaluation images with their descriptor scores, labels and a run's predictions."""
    data = prepare_data(config)
    table = data.table
    rows = np.flatnonzero(table.frame["split"].to_numpy() == split)
    pick = np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)
    preds = load_predictions(config, split, root)
    images = load_images(table, max(config.image_size, 64))[torch.from_numpy(rows[pick])]
    return {
        "images": images.permute(0, 2, 3, 1).numpy(),
        "scores": data.splits[split].scores[pick],
        "labels": [data.info.classes[i] for i in data.splits[split].y.numpy()[pick]],
        "preds": [data.info.classes[i] for i in preds["pred"].to_numpy()[pick]],
        "descriptors": data.info.descriptors,
    }


def descriptor_learning_metrics(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> dict:
    """Multi-label metrics (mAP, CP/CR/CF1, OP/OR/OF1, top-3) of a SADCL run trained with
    ``sadcl_task="descriptors"``: how well it predicts the descriptors (score ≥ 0.5) from pixels."""
    if config.method != "sadcl" or config.resolved_hp().get("sadcl_task") != "descriptors":
        raise ValueError("descriptor_learning_metrics needs a sadcl run with sadcl_task='descriptors'")
    model, data = _model_and_data(config, root)
    part = data.splits[split]
    batches = (make_batch(part, torch.arange(s, min(s + 512, len(part))), torch.device("cpu"))
               for s in range(0, len(part), 512))
    return {"seed": config.seed, **evaluate_multilabel(model, batches)}
