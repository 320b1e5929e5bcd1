"""Post-hoc analysis of finished runs: reload a model, per-SCG errors, attention, calibration.

Everything here reads run folders written by :func:`semcov_lib.train.train`, so figures can
be redrawn without retraining.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from semcov_lib.methods import build_method
from semcov_lib.methods.base import Method
from semcov_lib.train import TrainConfig, make_batch, prepare_data, run_dir_for


def load_predictions(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """The ``predictions_<split>.csv`` of a finished run."""
    path = run_dir_for(config, root) / f"predictions_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train {config.method} seed {config.seed} first")
    return pd.read_csv(path)


def load_model(config: TrainConfig, root: str | Path | None = None) -> Method:
    """Rebuild a finished run's model from its ``model.pt`` (safe ``weights_only`` load)."""
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
    return model.eval()


def per_scg_table(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """The ``per_scg_<split>.csv`` of a finished run: coverage, weight, error, stratum, valid per SCG."""
    path = run_dir_for(config, root) / f"per_scg_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train {config.method} seed {config.seed} first")
    return pd.read_csv(path)


def calibration(config: TrainConfig, split: str = "test", root: str | Path | None = None) -> pd.DataFrame:
    """Reliability-diagram data (per confidence bin) of a finished run."""
    from semcov_lib.metrics import reliability_data

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
    model = load_model(config, root)
    data = prepare_data(config)
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
    from semcov_lib.images import load_images

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
    from semcov_lib.methods.sadcl import evaluate_multilabel

    if config.method != "sadcl" or config.resolved_hp().get("sadcl_task") != "descriptors":
        raise ValueError("descriptor_learning_metrics needs a sadcl run with sadcl_task='descriptors'")
    model = load_model(config, root)
    part = prepare_data(config).splits[split]
    batches = (make_batch(part, torch.arange(s, min(s + 512, len(part))), torch.device("cpu"))
               for s in range(0, len(part), 512))
    return {"seed": config.seed, **evaluate_multilabel(model, batches)}
