"""Statistical power of the CDI per evaluation split, and the reducible SCI of a configuration.

    .venv/bin/python bench/bench_power.py [--config default] [--set KEY=VALUE ...] [--oracle] [--seed 0]

Trains ERM (default training profile, frozen lite0 features) on the benchmark of the named
configuration, into a temporary run folder, and prints for each evaluation split (test, stress,
val_stress): the number of valid SCGs, the CDI, its bootstrap standard error (std of the 1000
bootstrap replicates: the power target is SE <= 0.03 on stress), the class-stratified effect
``rho_within`` (mean of per-class Spearman rho over classes with >= 4 valid SCGs, weighted by
their number of valid SCGs) and what the split costs: generation + feature extraction (measured
rates per image, times the split's size) + evaluation (measured).

Validity as in the evaluation protocol: finite training coverage, evaluation weight >= 5 and at
least ``--min-train-n`` (10) training images in the SCG's (class, subgroup).

``--oracle`` also trains the same ERM on the configuration's balanced-coverage training split
(``train_coverage=balanced``: every concept equally likely for every (class, subgroup), same
size and appearance rules) and evaluates it against the natural training coverage (the
``coverage_reference`` rows): CDI(ERM) - CDI(oracle) is the SCI that more coverage removes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from semcov_lib.data import benchmark as bm
from semcov_lib.sci.cdi import compute_cdi, spearman
from semcov_lib.config import parse_overrides
from semcov_lib.data.images import load_images
from semcov_lib.experiment.batches import DataCache, SplitTensors, cached_features
from semcov_lib.experiment.protocol import train_config
from semcov_lib.experiment.train import predict_probs, train
from semcov_lib.models.backbones import extract_features
from semcov_lib.models.methods import build_method
from semcov_lib.sci.coverage import coverage_array, group_counts

EVAL_SPLITS = ("test", "stress", "val_stress")


def _split_inputs(table, features: torch.Tensor, name: str):
    rows = np.flatnonzero(table.frame["split"].to_numpy() == name)
    levels = table.subgroup_levels()
    scores = table.scores()[rows]
    return SplitTensors(name=name, x=features[torch.from_numpy(rows)], y=torch.from_numpy(table.labels()[rows]),
                        desc=torch.from_numpy(np.nan_to_num(scores, nan=0.0)),
                        desc_mask=torch.from_numpy(np.isfinite(scores).astype(np.float32)),
                        subgroup=torch.from_numpy(table.subgroup_codes(levels)[rows]), scores=scores,
                        sample_ids=table.frame["sample_id"].to_numpy()[rows].tolist())


def reference_coverage(table, min_train_n: int) -> np.ndarray:
    """(T, K, S) training coverage from the natural training rows; NaN where N_cs < min_train_n."""
    name = "coverage_reference" if table.has_split("coverage_reference") else "train"
    ref = table.split(name)
    levels = table.subgroup_levels()
    y, g = ref.labels(), ref.subgroup_codes(levels)
    cov = coverage_array(y, g, ref.scores(), table.n_classes, len(levels))
    n_cs = group_counts(y, g, table.n_classes, len(levels))
    cov[np.broadcast_to((n_cs < min_train_n)[:, None, :], cov.shape)] = np.nan
    return cov


def rho_within(per_scg) -> float:
    """Weighted mean of per-class Spearman(coverage, error) over classes with >= 4 valid SCGs."""
    total, weight = 0.0, 0
    for _, rows in per_scg[per_scg["valid"]].groupby("class_idx"):
        if len(rows) < 4 or np.ptp(rows["coverage"]) == 0 or np.ptp(rows["error"]) == 0:
            continue
        total += len(rows) * spearman(rows["coverage"].to_numpy(), rows["error"].to_numpy())
        weight += len(rows)
    return total / weight if weight else float("nan")


def feature_rate(table, n: int = 1000) -> float:
    """Seconds per image of lite0 feature extraction (default profile input size), on n images."""
    sub = table.split("test")
    images = load_images(sub, 64)[:n]
    t0 = time.perf_counter()
    extract_features(images, name="lite0", input_size=96, progress=False)
    return (time.perf_counter() - t0) / len(images)




def train_and_score(overrides: dict, seed: int, min_train_n: int, run_root: Path) -> dict:
    """Train ERM (default profile) on the benchmark with ``overrides``; CDI per evaluation split."""
    config = train_config("erm", "default", seed=seed, overrides={"benchmark_overrides": overrides})
    run_dir = run_root / f"erm-{bm.config_hash(bm.benchmark_config('default', overrides=overrides), seed)}"
    t0 = time.perf_counter()
    cache = DataCache()  # the run's data, prepared once for training and scoring
    train(config, run_dir=run_dir, progress=False, cache=cache)
    t_train = time.perf_counter() - t0
    data = cache.get(config)
    table = data.table
    features = cached_features(load_images(table, config.image_size), config, False)
    model = build_method("erm", data.info, config.resolved_hp())
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    model.eval()
    cov = reference_coverage(table, min_train_n)
    out = {"train_s": t_train, "table": table}
    for name in EVAL_SPLITS:
        if not table.has_split(name):
            continue
        split = _split_inputs(table, features, name)
        t0 = time.perf_counter()
        pred = predict_probs(model, split, torch.device("cpu")).argmax(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = compute_cdi(cov, split.y.numpy(), pred, split.subgroup.numpy(), split.scores, n_boot=1000, seed=seed)
        out[name] = {"n": len(split), "n_valid": res.n_valid, "cdi": res.cdi, "signed": res.signed_rho,
                     "se": float(np.nanstd(res.boot)), "within": rho_within(res.per_scg),
                     "acc": float((pred == split.y.numpy()).mean()), "eval_s": time.perf_counter() - t0}
    return out


def generation_rate(overrides: dict, seed: int) -> tuple[float, int]:
    """Seconds per image of generating the benchmark (into a temporary folder), and its image count."""
    cfg = bm.benchmark_config("default", overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="semcov-power-") as tmp:
        t0 = time.perf_counter()
        bm.generate_benchmark(cfg, Path(tmp) / "b", seed)
        return (time.perf_counter() - t0) / cfg.n_images, cfg.n_images


def report(variant: str, res: dict, gen: float, feat: float) -> None:
    """Print one variant's per-split numbers (split cost = size x (generation + features) + evaluation)."""
    print(f"[{variant}] training (data + fit + eval) {res['train_s']:.1f} s")
    for name in EVAL_SPLITS:
        if name not in res:
            continue
        r = res[name]
        cost = r["n"] * (gen + feat) + r["eval_s"]
        print(f"  {name:10s} n={r['n']:5d} valid SCGs={r['n_valid']:3d} cdi={r['cdi']:.3f} (signed {r['signed']:+.3f}) "
              f"boot SE={r['se']:.3f} rho_within={r['within']:+.3f} acc={r['acc']:.3f} split cost {cost:.1f} s",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="named benchmark configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-train-n", type=int, default=10)
    parser.add_argument("--oracle", action="store_true", help="also train the balanced-coverage oracle")
    parser.add_argument("--no-timing", action="store_true", help="skip the generation/feature timing")
    args = parser.parse_args()

    named = bm.configuration_overrides(args.config, "default")
    overrides = {**named, **parse_overrides(args.overrides)}
    variants = {"erm": overrides}
    if args.oracle:
        variants["oracle"] = {**overrides, "train_coverage": "balanced"}
    print(f"configuration {args.config} {overrides}, seed {args.seed}, min_train_n {args.min_train_n}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="semcov-power-runs-") as tmp:
        results["erm"] = train_and_score(overrides, args.seed, args.min_train_n, Path(tmp))
        report("erm", results["erm"], 0.0, 0.0)
        if args.oracle:
            results["oracle"] = train_and_score(variants["oracle"], args.seed, args.min_train_n, Path(tmp))
            report("oracle", results["oracle"], 0.0, 0.0)
    if not args.no_timing:
        gen, n_img = generation_rate(overrides, args.seed)
        feat = feature_rate(results["erm"]["table"])
        print(f"generation {gen * 1000:.2f} s per 1k images ({n_img} images: {gen * n_img:.1f} s); "
              f"lite0 feature extraction {feat * 1000:.1f} s per 1k images")
        report("erm, with split costs", results["erm"], gen, feat)
    if args.oracle:
        for name in EVAL_SPLITS:
            if name in results["erm"] and name in results["oracle"]:
                e, o = results["erm"][name], results["oracle"][name]
                print(f"reducible gap on {name}: cdi {e['cdi']:.3f} - {o['cdi']:.3f} = {e['cdi'] - o['cdi']:+.3f}; "
                      f"rho_within {e['within']:+.3f} vs {o['within']:+.3f}")


if __name__ == "__main__":
    main()
