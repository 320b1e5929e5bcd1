"""Reliability: no silent stale or lost runs, one validator for every config value, one-line CLI
errors, caches that rebuild themselves, a normal install that writes nowhere inside itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semcov_lib.config import ConfigError, parse_overrides
from semcov_lib.experiment.runs import RunFolderError, folder_lock
from semcov_lib.experiment.protocol import COMPLETE_MARKER, dataset_fingerprint, train_config
from semcov_lib.experiment.train import train

FAST = {"epochs": 2, "n_boot": 20, "max_steps": 4}
REPO = Path(__file__).resolve().parents[1]


def _cli(*args, env_extra=None, timeout=600):
    env = {**os.environ, "TQDM_DISABLE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "semcov_lib", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _main(capsys, *args):
    """The command line in this process (same error boundary, no interpreter start-up)."""
    from semcov_lib.cli import main

    capsys.readouterr()
    code = main(list(args))
    return subprocess.CompletedProcess(args, code, *capsys.readouterr())


def _one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


# --------------------------------------------------------------------------- configuration values
def test_numbers_are_parsed_as_numbers_whatever_the_spelling():
    values = parse_overrides(["lr=1e-4", "a=.5", "b=1E3", "c=+.5", "d=-2.5e-3", "e=abc", "f=3"])
    assert values == {"lr": 1e-4, "a": 0.5, "b": 1000.0, "c": 0.5, "d": -2.5e-3, "e": "abc", "f": 3}
    assert train_config("erm", "smoke", 0, {"lr": parse_overrides(["lr=1e-4"])["lr"]}).lr == 1e-4
    assert train_config("erm", "smoke", 0, {"epochs": 1e0}).epochs == 1  # integral float -> int


@pytest.mark.parametrize("overrides, needle", [
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"epochs": -3}, "epochs must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"selection_metric": "f2"}, "selection_metric must be one of"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": float("inf")}, "lr must be a finite number"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"dropout": float("nan")}, "dropout must be a finite number"),
    ({"cnn_widths": [8, float("nan")]}, "cnn_widths must be a finite number"),
    ({"device": "tpu"}, "device must be auto, cpu or cuda"),
])
def test_bad_values_are_refused_naming_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        train_config("erm", "smoke", 0, overrides)


def test_method_hyper_parameters_are_type_checked():
    with pytest.raises(ConfigError, match="focal_gamma must be a number, got 'abc'"):
        train_config("focal", "smoke", 0, {"focal_gamma": "abc"})
    assert train_config("focal", "smoke", 0, {"focal_gamma": "1e0"}).hp["focal_gamma"] == 1.0
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        train_config("erm", "smoke", -1)


def test_benchmark_config_refuses_non_finite_values():
    from semcov_lib.data.benchmark import benchmark_config

    with pytest.raises(ConfigError, match="score_gain must be a finite number"):
        benchmark_config("smoke", overrides={"score_gain": float("nan")})
    with pytest.raises(ConfigError, match="imbalance_ratio must be a finite number"):
        benchmark_config("smoke", overrides=parse_overrides(["imbalance_ratio=.nan"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu_is_refused_before_any_work(tmp_path):
    config = train_config("erm", "smoke", 0, {**FAST, "device": "cuda"})
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- run folders
def test_dataset_fingerprint_sees_a_replaced_image_deep_in_the_tree(tmp_path):
    from semcov_lib.data.datasets.fixtures import write_fixture

    root = write_fixture("milk10k", tmp_path / "milk", nested=True, lesions_per_class=1)
    config = train_config("erm", "smoke", 0, {"data": str(root)})
    before = dataset_fingerprint(config)
    image = sorted(root.rglob("*.jpg"))[0]
    assert image.parent != root
    assert dataset_fingerprint(config) == before  # stable
    data = image.read_bytes()
    image.write_bytes(data[:-1] + b"\x00")  # same size, new content and mtime
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert dataset_fingerprint(config) != before


def test_kill_between_final_writes_is_finished_by_the_rerun(tmp_path):
    args = ["train", "--method", "erm", "--profile", "smoke", "--no-progress", "--out", str(tmp_path / "run"),
            "--set", "epochs=1", "--set", "n_boot=10", "--set", "max_steps=3"]
    killed = _cli(*args, env_extra={"SEMCOV_STOP_AT": "metrics"})
    assert killed.returncode == 17, killed.stderr[-2000:]
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and not (run / "model.pt").exists()
    assert not (run / COMPLETE_MARKER).exists()
    again = _cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "model.pt").is_file() and (run / COMPLETE_MARKER).is_file()
    assert not (run / "checkpoint.pt").exists()
    marker = json.loads((run / COMPLETE_MARKER).read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert marker["config_hash"] == manifest["config_hash"]


def test_a_folder_in_use_is_refused_not_overwritten(tmp_path):
    config = train_config("erm", "smoke", 0, FAST)
    with folder_lock(tmp_path / "run", "test"):
        with pytest.raises(RunFolderError, match="in use by another semcov process"):
            train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    metrics = train(config, tmp_path / "run", progress=False)  # free again: trains
    assert (tmp_path / "run" / COMPLETE_MARKER).is_file() and "accuracy" in metrics
    # a finished folder of the trainer before the marker existed (no checkpoint left) is reused
    (tmp_path / "run" / COMPLETE_MARKER).unlink()
    mtime = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    assert train(config, tmp_path / "run", progress=False) == metrics
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == mtime
    assert (tmp_path / "run" / COMPLETE_MARKER).is_file()


def test_two_processes_on_one_out_never_both_succeed(tmp_path):
    """The second of two concurrent runs on one --out fails in one line (or reuses the first)."""
    common = ["train", "--method", "erm", "--profile", "smoke", "--no-progress", "--out", str(tmp_path / "run"),
              "--set", "epochs=1", "--set", "n_boot=10", "--set", "max_steps=3"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "semcov_lib", *common, "--seed", str(s)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    failed = next(err for rc, err in results if rc == 2)
    assert ("in use" in failed or "another configuration" in failed) and "Traceback" not in failed


# --------------------------------------------------------------------------- CLI errors
def test_cli_bad_values_are_one_line_naming_the_key(tmp_path, capsys):
    train_args = ("train", "--method", "erm", "--profile", "smoke")
    _one_line_error(_main(capsys, "train", "--method", "focal", "--profile", "smoke", "--set", "focal_gamma=abc"),
                    "focal_gamma")
    _one_line_error(_main(capsys, *train_args, "--set", "batch_size=0"), "batch_size")
    _one_line_error(_main(capsys, *train_args, "--seed", "-1"), "seed")
    _one_line_error(_main(capsys, "generate", "--profile", "smoke", "--set", "score_gain=.nan"), "score_gain")
    (tmp_path / "file").write_text("x")
    _one_line_error(_main(capsys, *train_args, "--out", str(tmp_path / "file")), "is a file")
    with pytest.raises(ConfigError):  # --debug: the exception and its traceback
        _main(capsys, "--debug", *train_args, "--set", "batch_size=0")


def test_truncated_checkpoint_and_metrics_name_the_file(tmp_path, capsys):
    args = ["train", "--method", "erm", "--profile", "smoke", "--no-progress", "--out", str(tmp_path / "run"),
            "--set", "epochs=2", "--set", "n_boot=10", "--set", "max_steps=3"]
    killed = _cli(*args, env_extra={"SEMCOV_STOP_AFTER_EPOCH": "0"})
    assert killed.returncode == 17, killed.stderr[-2000:]
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    err = _one_line_error(_main(capsys, *args), str(ckpt), "--force")
    assert "weights_only" not in err
    assert _main(capsys, *args, "--force").returncode == 0
    metrics = tmp_path / "run" / "metrics.json"
    metrics.write_text(metrics.read_text()[:20])
    _one_line_error(_main(capsys, *args), str(metrics), "--force")
    other = _one_line_error(_main(capsys, *args[:-1], "max_steps=2"), "another configuration")
    assert "--force" in other


def test_truncated_feature_cache_is_rebuilt(tmp_path, monkeypatch):
    from semcov_lib.experiment import batches

    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path))
    calls = []

    def fake_extract(images, name, input_size, progress):
        calls.append(1)
        return torch.ones(len(images), 2, 1, 1)

    monkeypatch.setattr(batches, "extract_features", fake_extract)
    config = train_config("erm", "default", 0)
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    first = batches.cached_features(images, config, False)
    (path,) = [p for p in (tmp_path / "features").rglob("*.npy") if not p.name.endswith(".keys.npy")]
    path.write_bytes(path.read_bytes()[:60])  # truncated
    with pytest.warns(UserWarning, match=str(path.name)):
        again = batches.cached_features(images, config, False)
    assert len(calls) == 2 and torch.equal(first, again)
    np.load(path)  # rewritten whole


def test_feature_cache_reuses_shared_images(tmp_path, monkeypatch):
    """An image set sharing images with a cached one extracts only its new images (oracle benchmarks)."""
    from semcov_lib.experiment import batches

    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path))
    extracted = []

    def fake_extract(images, name, input_size, progress):
        extracted.append(len(images))
        return images.float().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).to(torch.float16)

    monkeypatch.setattr(batches, "extract_features", fake_extract)
    config = train_config("erm", "default", 0)
    images = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).reshape(5, 3, 2, 2)
    first = batches.cached_features(images, config, False)
    mixed = torch.cat([images[[3, 1]], torch.full((2, 3, 2, 2), 200, dtype=torch.uint8)])
    second = batches.cached_features(mixed, config, False)
    assert extracted == [5, 2]  # only the two new images
    assert torch.equal(second[:2], first[[3, 1]]) and torch.all(second[2:] == 200)


def test_truncated_image_bundle_falls_back_to_decoding(tmp_path):
    from semcov_lib.data.images import _bundle_files, _from_bundle, write_bundle
    from semcov_lib.data.datasets.fixtures import jpeg_bytes

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes((10 * i, 0, 0)))
    write_bundle(tmp_path, [p.name for p in paths], np.zeros((2, 3, 4, 4), dtype=np.uint8))
    npy, _ = _bundle_files(tmp_path, 4)
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.warns(UserWarning, match="image bundle"):
        assert _from_bundle(tmp_path, paths, 4) is None


def test_usage_names_the_console_script(monkeypatch):
    from semcov_lib.cli import build_parser

    monkeypatch.setattr(sys, "argv", ["/home/me/.venv/bin/semcov", "--help"])
    assert build_parser([]).prog == "semcov"
    monkeypatch.setattr(sys, "argv", ["/x/semcov_lib/__main__.py", "--help"])
    assert build_parser([]).prog == "python -m semcov_lib"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _one_line_error(_main(capsys, "train", "--method", "erm", "--profile", "smoke", "--out", str(locked / "run")),
                        str(locked))
    finally:
        locked.chmod(0o700)


def test_help_and_version(capsys):
    def output(*args):
        with pytest.raises(SystemExit) as exit_info:
            _main(capsys, *args)
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    top = output("--help")
    assert "``" not in top and "COMMAND" in top and "--debug" in top
    assert output("--version").startswith("semcov ")
    train_help = output("train", "--help")
    for needle in ("semcovnet", "--profile", "--seed", "--no-progress", "nus_wide", "--missing-images"):
        assert needle in train_help, needle


# --------------------------------------------------------------------------- installed package
def test_non_editable_install_verifies_and_writes_nowhere_inside(tmp_path):
    target, home, source = tmp_path / "site", tmp_path / "home", tmp_path / "source"
    source.mkdir()  # build from a copy, so the build writes nothing into the checkout
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "semcov_lib", source / "semcov_lib", ignore=shutil.ignore_patterns("__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-compile",
                          "--quiet", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert (target / "semcov_lib" / "data" / "manifests" / "celeba.yaml").is_file()  # package data
    assert (target / "semcov_lib" / "models" / "text_embeddings.npz").is_file()
    before = sorted(p.relative_to(target) for p in target.rglob("*") if "__pycache__" not in p.parts)
    env = {k: v for k, v in os.environ.items() if k not in ("SEMCOV_CACHE", "SEMCOV_RUNS")}
    env.update(PYTHONPATH=str(target), HOME=str(home), XDG_CACHE_HOME=str(home / "cache"),
               XDG_DATA_HOME=str(home / "data"), PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1")
    run = lambda *a: subprocess.run([sys.executable, "-m", "semcov_lib", *a], capture_output=True, text=True,  # noqa: E731
                                    env=env, timeout=600, cwd=tmp_path)
    assert run("verify", "--help").returncode == 0
    missing = run("verify", "celeba", "--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no manifest" not in missing.stderr and "MISSING" in missing.stdout, missing
    gen = run("generate", "--profile", "smoke", "--out", str(tmp_path / "bench"))
    assert gen.returncode == 0, gen.stderr[-3000:]
    code = "from semcov_lib import paths; print(paths.cache_dir()); print(paths.RUNS_DIR); print(paths.__file__)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           cwd=tmp_path).stdout.split()
    assert str(home) in where[0] and str(home) in where[1] and where[2].startswith(str(target)), where
    after = sorted(p.relative_to(target) for p in target.rglob("*") if "__pycache__" not in p.parts)
    assert after == before


# --------------------------------------------------------------------------- same numbers on every machine
def test_benchmark_descriptor_embeddings_are_shipped_not_computed(monkeypatch, tmp_path):
    """SemCovNet/CMLTNet differed across machines because each computed these embeddings itself."""
    from semcov_lib.models import text_embed as te
    from semcov_lib.data.benchmark import load_benchmark

    def no_model():
        raise AssertionError("the sentence model must not run for shipped texts")

    monkeypatch.setattr(te, "_load_model", no_model)
    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path))
    texts = te.descriptor_text(list(load_benchmark("smoke", seed=0).descriptors))
    emb = te.embed_texts(texts)
    with np.load(te.SHIPPED_FILE) as data:
        shipped = dict(zip(data["texts"].tolist(), data["embeddings"]))
    np.testing.assert_array_equal(emb, np.stack([shipped[t] for t in texts]))  # bitwise
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


class _PaddingSensitiveModel:
    """Like the real model: a text's output moves by ~1e-7 with the longest text in its batch."""

    def encode(self, texts, **kwargs):
        from semcov_lib.models.text_embed import random_unit_vectors

        longest = max(len(t) for t in texts)
        return random_unit_vectors(list(texts)) + 1e-7 * longest


def test_embedding_of_a_text_does_not_depend_on_its_companions(monkeypatch, tmp_path):
    from semcov_lib.models import text_embed as te

    monkeypatch.setattr(te, "_load_model", lambda: _PaddingSensitiveModel())
    alone = te.embed_texts(["wing colour"], cache_file=tmp_path / "a.npz")
    together = te.embed_texts(["wing colour", "a much longer descriptor text"], cache_file=tmp_path / "b.npz")
    np.testing.assert_array_equal(alone[0], together[0])
    # the quantisation grid absorbs output noise far below its step (except at a boundary)
    base = te.random_unit_vectors(["wing colour"])
    assert np.mean(te.quantise(base) == te.quantise(base + 1e-7)) > 0.99
    assert np.abs(te.quantise(base) - base).max() < te.GRID


def test_missing_images_dropped_from_the_command_line_with_a_count(tmp_path, capsys):
    """Real NUS-WIDE re-downloads miss images: --missing-images drop, no YAML file, count reported."""
    from semcov_lib.data.datasets.fixtures import write_fixture

    root = write_fixture("nus_wide", tmp_path / "data")
    (root / "Flickr" / "cat" / "0001_100020.jpg").unlink()
    args = ["train", "--method", "erm", "--profile", "smoke", "--data", str(root), "--dataset", "nus_wide",
            "--no-progress", "--out", str(tmp_path / "run"), "--set", "max_steps=2", "--set", "n_boot=10"]
    with pytest.warns(UserWarning):
        err = _one_line_error(_main(capsys, *args), "1 of 14 listed images are absent", "--missing-images drop")
    assert "cat/0001_100020.jpg" in err
    with pytest.warns(UserWarning, match="dropped those rows"):
        done = _main(capsys, *args, "--missing-images", "drop")
    assert done.returncode == 0, done.stderr
    assert "1 listed image(s) absent on disk: dropped" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["dataset_counts"]["missing_images"] == 1
