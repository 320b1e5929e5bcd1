"""Trainer: run folders, determinism, reuse, resume after a kill, safe checkpoints, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from semcov_lib.config import ConfigError
from semcov_lib.experiment.protocol import run_dir_for, train_config
from semcov_lib.experiment.train import CheckpointError, load_checkpoint, train

FAST = {"epochs": 2, "n_boot": 50}
METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "sens_at_95spec", "ece",
               "worst_group_accuracy", "cdi", "cdi_ci_low", "cdi_ci_high", "cdi_signed_rho", "n_valid_scgs")


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("timings",)}


def test_run_folder_names_are_pinned():
    """Run folders are named by ``TrainConfig.identity()``: the same configuration finds its cached
    run folder again. Pinned again when the generator gained ``concept_variant_scope`` (a new
    benchmark field changes every dataset fingerprint), and for SemCovNet when its defaults gained
    ``cdi_balance_min`` (the floored, rare-side-only balancing), ``cdi_jitter`` (rare-side feature
    jitter) and ``cdi_views`` (rare-side dihedral views); a change here means every cached run is retrained."""
    assert run_dir_for(train_config("erm", "default", 0)).name == "8ae2679b6a-s0"
    assert run_dir_for(train_config("semcovnet", "smoke", 1)).name == "a75daf4c8c-s1"
    assert run_dir_for(train_config("erm", "paper", 2)).name == "44059f84fc-s2"
    config = train_config("semcovnet", "smoke", 3, {"hp": {"lambda_cdi": 0.5},
                                                    "benchmark_overrides": {"coverage_tail_exponent": 1.5}})
    assert run_dir_for(config).name == "a7484f7ecd-s3"


def test_run_folder_contents(tmp_path):
    config = train_config("erm", "smoke", 0, FAST)
    metrics = train(config, tmp_path / "run", progress=False)
    for key in METRIC_KEYS:
        assert key in metrics, key
        assert key in metrics["stress"], key
    assert 0.0 <= metrics["accuracy"] <= 1.0
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"metrics.json", "manifest.json", "config.json", "log.csv", "predictions_test.csv",
            "predictions_stress.csv", "model.pt"} <= names
    assert "checkpoint.pt" not in names
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["versions"]["torch"].startswith("2.14")
    assert "commit" in manifest["git"] and manifest["timings_s"]["train"] > 0


def test_same_seed_same_metrics_and_reuse(tmp_path):
    config = train_config("semcovnet", "smoke", 1, FAST)
    first = train(config, tmp_path / "a", progress=False)
    second = train(config, tmp_path / "b", progress=False)
    assert _strip(first) == _strip(second)
    mtime = (tmp_path / "a" / "metrics.json").stat().st_mtime_ns
    again = train(config, tmp_path / "a", progress=False)  # reused, not retrained
    assert again == first and (tmp_path / "a" / "metrics.json").stat().st_mtime_ns == mtime
    other = train_config("semcovnet", "smoke", 1, {**FAST, "lr": 0.01})
    with pytest.raises(ValueError, match="another configuration"):
        train(other, tmp_path / "a", progress=False)


def _cli(args, env_extra=None):
    env = {**os.environ, "TQDM_DISABLE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "semcov_lib", "train", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    args = ["--method", "semcovnet", "--profile", "smoke", "--seed", "0", "--no-progress",
            "--set", "epochs=3", "--set", "n_boot=50"]
    killed = _cli([*args, "--out", str(tmp_path / "killed")], {"SEMCOV_STOP_AFTER_EPOCH": "1"})
    assert killed.returncode == 17, killed.stderr
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = _cli([*args, "--out", str(tmp_path / "killed")])
    assert resumed.returncode == 0, resumed.stderr
    whole = _cli([*args, "--out", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr
    a = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    b = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert a == b


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not a semcov checkpoint"):
        load_checkpoint(bad)
    torch.save({"model": {}, "config_hash": "abc"}, bad)
    with pytest.raises(CheckpointError, match="another|not abc|written by"):
        load_checkpoint(bad, expected_hash="def")


def test_bad_configuration_errors():
    with pytest.raises(ConfigError, match="no_such_knob"):
        train_config("erm", "smoke", 0, {"no_such_knob": 1})
    with pytest.raises(ConfigError, match="epochs must be an integer"):
        train_config("erm", "smoke", 0, {"epochs": "many"})
    with pytest.raises(KeyError, match="unknown method"):
        train_config("nope", "smoke", 0)
    with pytest.raises(ConfigError, match="unknown profile"):
        train_config("erm", "huge", 0)


def test_cli_error_is_one_line(tmp_path):
    result = _cli(["--method", "erm", "--profile", "smoke", "--set", "bogus=1", "--out", str(tmp_path / "x")])
    assert result.returncode == 2
    assert "bogus" in result.stderr and "Traceback" not in result.stderr


def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    """2 gloo processes, each with half of every batch, take the same first steps as one process."""
    sets = ["epochs=1", "max_steps=3", "augment=false", "backbone_norm=group", "dropout=0.0", "n_boot=10"]
    common = ["--method", "erm", "--profile", "smoke", "--seed", "0", "--no-progress"]
    for s in sets:
        common += ["--set", s]
    single = _cli([*common, "--out", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "semcov_lib", "train", *common, "--out", str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = torch.load(tmp_path / "single" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            # 3 Adam steps at lr 2e-3 move a weight by up to 6e-3; reduction order (gloo vs one
            # process) leaves about 1e-5, which Adam's g / sqrt(v) can amplify on tiny gradients
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4, msg=key)
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2


@pytest.mark.parametrize("method", sorted(__import__("semcov_lib.models.methods", fromlist=["METHODS"]).METHODS))
def test_every_registered_method_trains_in_smoke_profile(method, tmp_path):
    """Each method takes a few optimisation steps through the real trainer and is evaluated."""
    config = train_config(method, "smoke", 0, {"epochs": 2, "max_steps": 6, "n_boot": 10})
    metrics = train(config, tmp_path / method, progress=False)
    assert metrics["method"] == method
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0
    assert isinstance(metrics["sees_descriptors_at_test"], bool)
    if method in ("erm", "erm_desc"):
        assert metrics["sees_descriptors_at_test"] == (method == "erm_desc")
    log = (tmp_path / method / "log.csv").read_text().splitlines()
    assert len(log) >= 2 and "train_loss" in log[0]


# --------------------------------------------------------------------------- model selection
def _probs(folder: Path) -> np.ndarray:
    frame = pd.read_csv(folder / "predictions_test.csv")
    return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()


@pytest.fixture(scope="module")
def phase_runs(tmp_path_factory):
    """ERM, cRT and LDAM-DRW trained for the smoke profile's 2 epochs (same seed)."""
    root = tmp_path_factory.mktemp("phases")
    return {m: (train(train_config(m, "smoke", 0, {"n_boot": 10}), root / m, progress=False), root / m)
            for m in ("erm", "crt", "ldam_drw")}


@pytest.mark.parametrize("method,phase_column,final_value", [("crt", "train_crt_stage", 2.0),
                                                             ("ldam_drw", "train_drw", 1.0)])
def test_two_phase_methods_select_in_their_final_phase(phase_runs, method, phase_column, final_value):
    metrics, folder = phase_runs[method]
    log = pd.read_csv(folder / "log.csv")
    assert metrics["selection_start_epoch"] == 1 and metrics["best_epoch"] >= 1
    assert log.loc[log["epoch"] == metrics["best_epoch"], phase_column].item() == final_value
    assert log.loc[log["epoch"] == 0, phase_column].item() != final_value  # phase 1 happened too
    assert not np.allclose(_probs(folder), _probs(phase_runs["erm"][1]), atol=1e-4)
    assert phase_runs["erm"][0]["selection_start_epoch"] == 0


def test_selection_rules(tmp_path):
    last = train(train_config("erm", "smoke", 0, {"n_boot": 10, "selection_metric": "last"}), tmp_path / "last",
                 progress=False)
    assert last["best_epoch"] == 1 and last["selection_metric"] == "last"
    worst = train(train_config("erm", "smoke", 0, {"n_boot": 10, "selection_metric": "worst_class_accuracy"}),
                  tmp_path / "worst", progress=False)
    log = pd.read_csv(tmp_path / "worst" / "log.csv")
    assert worst["best_epoch"] == int(log["epoch"][log["val_worst_class_accuracy"].to_numpy().argmax()])
    assert worst["selection_metric"] == "worst_class_accuracy"


def test_selection_metric_is_validated_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"selection_metric must be one of .*macro_f1.*worst_class_accuracy.*last.*'auroc'"):
        train_config("erm", "smoke", 0, {"selection_metric": "auroc"})
    with pytest.raises(ConfigError, match="selection_metric"):  # a config is validated when it is built
        dataclasses.replace(train_config("erm", "smoke", 0), selection_metric="auroc")
    assert not (tmp_path / "run").exists()


def test_worst_class_accuracy_matches_sklearn():
    from sklearn.metrics import recall_score

    from semcov_lib.experiment.train import _quick_scores

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    y[y == 3] = 2  # class 3 absent from y: not a class of the validation split
    probs = rng.dirichlet(np.ones(4), 200)
    expected = recall_score(y, probs.argmax(1), labels=[0, 1, 2], average=None).min()
    assert _quick_scores(y, probs)["worst_class_accuracy"] == pytest.approx(expected)


def test_rank_shards_are_distributed_sampler_slices():
    """Rank r's i-th batch of B/W holds the rank-r positions of one process's i-th batch of B."""
    from semcov_lib.experiment.train import _local_batch_size, _rank_shard

    order = torch.randperm(13, generator=torch.Generator().manual_seed(0))
    shards = [_rank_shard(order, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 7  # padded with the first position
    assert sorted(torch.cat(shards).tolist()) == sorted(order.tolist() + [order[0].item()])
    for i in range(0, 12, 4):
        together = torch.stack([shards[0][i // 2:i // 2 + 2], shards[1][i // 2:i // 2 + 2]], 1).reshape(-1)
        assert together.tolist() == order[i:i + 4].tolist()
    with pytest.raises(ConfigError, match="batch_size=63"):
        _local_batch_size(63, 2)


# --------------------------------------------------------------------------- evaluation reference
def test_coverage_reference_split_sets_the_evaluation_coverage(monkeypatch):
    """A ``coverage_reference`` split feeds evaluation's coverage; training statistics stay on ``train``."""
    from semcov_lib.data import table as table_mod
    from semcov_lib.experiment import batches
    from semcov_lib.sci.coverage import coverage_array, group_counts

    config = train_config("erm", "smoke", 0)
    natural = batches.load_table(config)
    default = batches.prepare_data(config)
    assert default.eval_reference.split == "train" and default.eval_reference.coverage is default.info.coverage
    frame = natural.frame.copy()
    train_rows = np.flatnonzero(frame["split"].to_numpy() == "train")
    val_rows = np.flatnonzero(frame["split"].to_numpy() == "val")
    frame.loc[frame.index[train_rows[::2]], "split"] = "coverage_reference"
    n_val_stress = int((frame["split"] == "val_stress").sum())
    frame.loc[frame.index[val_rows[::3]], "split"] = "val_stress"
    monkeypatch.setattr(table_mod, "SPLITS", (*table_mod.SPLITS, "val_stress", "coverage_reference"), raising=True)
    monkeypatch.setattr(batches, "load_table", lambda c: dataclasses.replace(natural, frame=frame))
    data = batches.prepare_data(config)  # prepares again: nothing is kept between calls
    assert set(data.splits) == {"train", "val", "test", "stress", "val_stress"}
    assert len(data.splits["train"]) == len(train_rows) - len(train_rows[::2])
    assert len(data.splits["val_stress"]) == n_val_stress + len(val_rows[::3])
    levels = natural.subgroup_levels()
    ref = frame["split"].to_numpy() == "coverage_reference"
    y, g, a = natural.labels()[ref], natural.subgroup_codes(levels)[ref], natural.scores()[ref]
    T, S = natural.n_classes, len(levels)
    np.testing.assert_allclose(data.eval_reference.coverage, coverage_array(y, g, a, T, S), equal_nan=True)
    np.testing.assert_array_equal(data.eval_reference.group_counts, group_counts(y, g, T, S))
    np.testing.assert_array_equal(data.eval_reference.class_counts, np.bincount(y, minlength=T))
    assert data.eval_reference.split == "coverage_reference"
    assert data.info.class_counts.sum() == len(data.splits["train"])  # methods see the training split only


def test_train_many_prepares_each_dataset_once(tmp_path, monkeypatch):
    """Serial runs of one dataset share one preparation (a DataCache owned by train_many)."""
    from semcov_lib.experiment import batches
    from semcov_lib.experiment.train import train_many

    calls, real = [], batches.prepare_data
    monkeypatch.setattr(batches, "prepare_data", lambda c, progress=False: calls.append(c.method) or real(c, progress))
    fast = {"epochs": 1, "max_steps": 2, "n_boot": 10}
    configs = [train_config(m, "smoke", 0, fast) for m in ("erm", "erm_desc")]
    assert batches.data_key(configs[0]) == batches.data_key(configs[1])
    assert batches.data_key(train_config("erm", "smoke", 0, {"image_size": 16})) != batches.data_key(configs[0])
    metrics = train_many(configs, root=tmp_path, progress=False)
    assert [m["method"] for m in metrics] == ["erm", "erm_desc"] and len(calls) == 1
    cache = batches.DataCache()
    assert cache.get(configs[0]) is cache.get(configs[1]) and calls[1:] == ["erm"]


def test_parallel_workers_get_one_gpu_each(monkeypatch):
    """Worker i of ``train_many`` sees GPU i mod n of the GPUs this process may use."""
    import multiprocessing as mp

    from semcov_lib.experiment.workers import init_worker, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    gpus, counter, seen = visible_gpus(), mp.get_context("spawn").Value("i", 0), []
    for _ in range(3):  # three workers start
        init_worker(counter, gpus)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["2", "3", "2"]
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert visible_gpus() == []


def test_weighted_epoch_order_follows_the_weights():
    """Draw frequencies match the weights (chi-square), zero weights are never drawn, the order is a
    pure function of (seed, epoch), and unusable weights raise."""
    from scipy.stats import chisquare

    from semcov_lib.experiment.batches import epoch_order

    n = 4000
    weights = torch.tensor([0.0, 1.0, 2.0, 5.0]).repeat(n // 4)
    labels = torch.zeros(n, dtype=torch.long)
    order = epoch_order(n, labels, "weighted", 3, 1, weights)
    assert order.shape == (n,)
    counts = np.bincount((order % 4).numpy(), minlength=4)
    assert counts[0] == 0
    assert chisquare(counts[1:], n * np.array([1, 2, 5]) / 8).pvalue > 1e-3
    assert torch.equal(order, epoch_order(n, labels, "weighted", 3, 1, weights))
    assert not torch.equal(order, epoch_order(n, labels, "weighted", 3, 2, weights))
    for bad in (None, torch.ones(n - 1), -weights, torch.zeros(n)):
        with pytest.raises(ValueError, match="weighted sampling"):
            epoch_order(n, labels, "weighted", 3, 1, bad)
