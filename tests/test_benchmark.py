"""The embedded procedural benchmark: layout, determinism, designed long tail, SCI mechanism, CLI."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from semcov_lib import benchmark as bm
from semcov_lib.cli import main as cli_main
from semcov_lib.config import ConfigError
from semcov_lib.images import decode_images, load_images
from semcov_lib.loaders.milk10k import MONET_COLUMNS, load_milk10k

SMALL = {"n_train": 120, "n_val": 30, "n_test": 30, "n_stress": 252}
META_COLUMNS = ["lesion_id", "image_type", "isic_id", "attribution", "copyright_license", "image_manipulation",
                "age_approx", "sex", "skin_tone_class", "site", *MONET_COLUMNS, "split",
                *[f"gt_{c}" for c in MONET_COLUMNS]]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    cfg = bm.benchmark_config("smoke")
    return bm.generate_benchmark(cfg, tmp_path_factory.mktemp("bench") / "smoke", seed=0)


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every data file (the bundle index holds mtimes and is left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".json")}


# ------------------------------------------------------------------------------ layout
def test_files_follow_the_milk10k_layout(smoke):
    cfg = bm.benchmark_config("smoke")
    meta = pd.read_csv(smoke / "MILK10k_Training_Metadata.csv")
    assert list(meta.columns) == META_COLUMNS
    assert len(meta) == cfg.n_images == 612
    assert meta["lesion_id"].str.fullmatch(r"IL_\d{7}").all() and meta["isic_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert set(meta["image_type"]) == {"dermoscopic"}
    assert set(meta["site"]) <= set(bm.SITES) and set(meta["sex"].dropna()) <= {"male", "female"}
    ages = meta["age_approx"].dropna()
    assert (ages % 5 == 0).all() and ages.between(5, 85).all()
    assert set(meta["skin_tone_class"]) == set(range(6))
    assert meta["split"].value_counts().to_dict() == {"train": 240, "stress": 252, "val": 60, "test": 60}

    text = (smoke / "MILK10k_Training_GroundTruth.csv").read_text().splitlines()
    assert text[0] == "lesion_id,NV,BKL,BCC,MEL,SCCKA,VASC"
    assert re.fullmatch(r"IL_\d{7}(,(0\.0|1\.0)){6}", text[1])
    gt = pd.read_csv(smoke / "MILK10k_Training_GroundTruth.csv")
    assert len(gt) == meta["lesion_id"].nunique() and (gt.iloc[:, 1:].sum(axis=1) == 1.0).all()

    first = meta.iloc[0]
    path = smoke / "MILK10k_Training_Input" / first["lesion_id"] / f"{first['isic_id']}.jpg"
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
    assert (smoke / "benchmark_config.yaml").is_file()


def test_scores_are_noisy_probabilities_not_the_truth(smoke):
    meta = pd.read_csv(smoke / "MILK10k_Training_Metadata.csv")
    for column in MONET_COLUMNS:
        score, truth = meta[column].to_numpy(), meta[f"gt_{column}"].to_numpy()
        assert ((score >= 0) & (score <= 1)).all()
        assert set(np.unique(truth)) <= {0, 1}
        assert not np.array_equal(score, truth) and not np.isin(score, [0.0, 1.0]).all()
        if 0 < truth.sum() < len(truth):  # informative but imperfect
            assert score[truth == 1].mean() > score[truth == 0].mean() + 0.3


def test_loader_reads_the_benchmark(smoke):
    table = load_milk10k(smoke)
    assert len(table) == 612 and table.classes == ["NV", "BKL", "BCC", "MEL", "SCCKA", "VASC"]
    assert table.subgroup_levels() == ["0", "1", "2", "3", "4", "5"]
    assert all(table.has_split(s) for s in ("train", "val", "test", "stress"))
    design = bm.sample_benchmark_metadata(bm.benchmark_config("smoke"), 0)
    assert (np.array(table.classes)[table.labels()] == design["class_name"].to_numpy()).all()
    # the uint8 bundle written at generation equals decoding the JPEG files
    sub = table.split("test")
    assert torch.equal(load_images(sub, 32), torch.from_numpy(decode_images(sub.image_paths(), 32)))


# ------------------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_other_seed_other_data(tmp_path, smoke):
    cfg = bm.benchmark_config("smoke")
    again = bm.generate_benchmark(cfg, tmp_path / "again", seed=0, workers=1)  # thread count must not matter
    assert file_hashes(again) == file_hashes(smoke)
    other = file_hashes(bm.generate_benchmark(cfg, tmp_path / "other", seed=1))
    same = file_hashes(smoke)
    assert other["MILK10k_Training_Metadata.csv"] != same["MILK10k_Training_Metadata.csv"]
    jpegs = [k for k in same if k.endswith(".jpg")]
    assert sum(other[k] != same[k] for k in jpegs) > 0.95 * len(jpegs)


def test_rendered_images_match_written_ones(smoke):
    cfg = bm.benchmark_config("smoke")
    rendered = bm.render_images(cfg, 0, 0, 8)
    meta = pd.read_csv(smoke / "MILK10k_Training_Metadata.csv").iloc[:8]
    for i, row in enumerate(meta.itertuples()):
        with Image.open(smoke / "MILK10k_Training_Input" / row.lesion_id / f"{row.isic_id}.jpg") as im:
            written = np.asarray(im.convert("RGB")).astype(int)
        assert np.abs(written - rendered[i]).mean() < 4  # JPEG quality 95


def test_overwrite_rules(tmp_path):
    cfg = bm.benchmark_config("smoke", overrides={"n_train": 20, "n_stress": 0})
    out = bm.generate_benchmark(cfg, tmp_path / "b", seed=0)
    bm.generate_benchmark(cfg, out, seed=1)  # a previous benchmark is replaced
    assert "seed: 1" in (out / "benchmark_config.yaml").read_text()
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("keep me")
    with pytest.raises(bm.BenchmarkError, match="refusing"):
        bm.generate_benchmark(cfg, tmp_path / "user", seed=0)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


# ------------------------------------------------------------------------------ designed statistics
def test_long_tail_by_construction():
    cfg = bm.benchmark_config("default", overrides={"n_train": 30000, "n_stress": 0})
    meta = bm.sample_benchmark_metadata(cfg, seed=0)
    train = meta[meta["split"] == "train"]
    counts = train["label"].value_counts().sort_index().to_numpy()
    assert (np.diff(counts) < 0).all()
    assert 14 < counts[0] / counts[-1] < 28  # imbalance_ratio = 20
    gt = train.groupby(["label", "skin_tone_class"])[[f"gt_{c}" for c in MONET_COLUMNS]].mean().to_numpy()
    assert (gt < 0.05).mean() > 0.35 and 0.05 < (gt > 0.5).mean() < 0.3
    soft = train.groupby(["label", "skin_tone_class"])[list(MONET_COLUMNS)].mean().to_numpy()
    assert (soft < 0.05).mean() > 0.3 and (soft > 0.5).mean() > 0.05
    # every concept is frequent in some class and rare in another
    per_class = train.groupby("label")[[f"gt_{c}" for c in MONET_COLUMNS]].mean()
    assert (per_class.max() > 3 * per_class.min()).all()


def test_stress_split_is_balanced_over_scgs():
    cfg = bm.benchmark_config("default")
    meta = bm.sample_benchmark_metadata(cfg, seed=0)
    stress = meta[meta["split"] == "stress"]
    assert stress["label"].value_counts().nunique() == 1
    gt = stress[[f"gt_{c}" for c in MONET_COLUMNS]].to_numpy()
    assert (gt.sum(axis=1) == 1).all()  # stress_background = 0: only the forced concept
    groups = stress.assign(k=gt.argmax(axis=1)).groupby(["label", "k", "skin_tone_class"]).size()
    assert len(groups) == 6 * 7 * 6 and groups.min() == groups.max() == cfg.n_stress // (6 * 7 * 6)


def test_concept_profile_shape_and_tail_exponent():
    flat = bm.base_concept_profile(bm.benchmark_config("smoke", overrides={"coverage_tail_exponent": 0.0}))
    steep = bm.base_concept_profile(bm.benchmark_config("smoke", overrides={"coverage_tail_exponent": 3.0}))
    assert np.allclose(flat, flat.max()) and steep.min() < 0.05 < steep.max()
    profile = bm.concept_profile(bm.benchmark_config("smoke"), seed=0)
    assert profile.shape == (6, 7, 6) and ((profile > 0) & (profile < 1)).all()


# ------------------------------------------------------------------------------ configuration
def test_profiles_and_overrides(tmp_path):
    assert set(bm.BENCHMARK_PROFILES) == {"smoke", "default", "paper"}
    assert bm.benchmark_config("smoke").image_size == 32
    default = bm.benchmark_config("default")
    assert default.image_size == 64 and 9000 <= default.n_images <= 11000
    assert bm.benchmark_config("paper").n_images > 2 * default.n_images
    cfg = bm.benchmark_config("smoke", overrides={"n_train": 50, "imbalance_ratio": 5})
    assert cfg.n_train == 50 and cfg.imbalance_ratio == 5.0
    yaml_file = tmp_path / "b.yaml"
    yaml_file.write_text("n_classes: 4\nconcept_mimicry: 0.2\n")
    cfg = bm.benchmark_config("smoke", config_file=yaml_file, overrides={"n_classes": 5})
    assert cfg.n_classes == 5 and cfg.concept_mimicry == 0.2
    with pytest.raises(ConfigError, match="unknown key.*n_trian"):
        bm.benchmark_config("smoke", overrides={"n_trian": 3})
    with pytest.raises(ConfigError, match="profile"):
        bm.benchmark_config("huge")
    with pytest.raises(ValueError, match="n_classes"):
        bm.benchmark_config("smoke", overrides={"n_classes": 12})
    with pytest.raises(ValueError, match="class_names"):
        bm.benchmark_config("smoke", overrides={"n_classes": 2, "class_names": ["NV", "XYZ"]})
    assert bm.config_hash(cfg, 0) != bm.config_hash(cfg, 1)


def test_eleven_classes_and_clinical_variant(tmp_path):
    cfg = bm.benchmark_config("smoke", overrides={**SMALL, "n_stress": 0, "n_classes": 11, "clinical_variant": True})
    root = bm.generate_benchmark(cfg, tmp_path / "b11", seed=0)
    assert (root / "MILK10k_Training_GroundTruth.csv").read_text().splitlines()[0] == \
        "lesion_id,AKIEC,BCC,BEN_OTH,BKL,DF,INF,MAL_OTH,MEL,NV,SCCKA,VASC"
    meta = pd.read_csv(root / "MILK10k_Training_Metadata.csv")
    assert len(meta) == 2 * 180 and (meta.groupby("lesion_id").size() == 2).all()
    assert meta["image_type"].value_counts().to_dict() == {"clinical: close-up": 180, "dermoscopic": 180}
    clinical = meta[meta["image_type"] == "clinical: close-up"]
    assert clinical["gt_MONET_gel_water_drop_fluid_dermoscopy_liquid"].sum() == 0
    both = load_milk10k(root, image_type="both")
    assert both.classes == list(bm.MILK10K_CLASSES) and len(both) == 360
    assert (both.frame.groupby("lesion_id")["split"].nunique() == 1).all()
    assert len(load_milk10k(root, image_type="clinical")) == 180


# ------------------------------------------------------------------------------ caching and CLI
def test_ensure_and_load_benchmark_cache(tmp_path):
    first = bm.ensure_benchmark("smoke", seed=0, overrides={"n_train": 60})
    assert first.parent == tmp_path / "cache" / "benchmarks" and first.name.startswith("smoke-s0-")
    stamp = (first / "MILK10k_Training_Metadata.csv").stat().st_mtime_ns
    assert bm.ensure_benchmark("smoke", seed=0, overrides={"n_train": 60}) == first
    assert (first / "MILK10k_Training_Metadata.csv").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert bm.ensure_benchmark("smoke", seed=1, overrides={"n_train": 60}) != first
    table = bm.load_benchmark("smoke", seed=0, overrides={"n_train": 60})
    assert table.name == "benchmark-smoke-s0" and table.has_split("stress") and len(table) == 432
    x = load_images(table.split("train"), 32)
    assert x.shape == (60, 3, 32, 32) and x.dtype == torch.uint8


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["generate", "--profile", "smoke", "--seed", "3", "--out", str(out), "--set", "n_train=40"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("benchmark smoke seed 3: 412 images (train 40, val 60, test 60, stress 252)") and str(out) in line
    assert len(pd.read_csv(out / "MILK10k_Training_Metadata.csv")) == 412
    assert cli_main(["generate", "--profile", "smoke", "--out", str(out), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_cli_module_entry_point(tmp_path):
    out = tmp_path / "m"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("n_train: 30\nn_stress: 0\nn_val: 10\nn_test: 10\n")
    result = subprocess.run([sys.executable, "-m", "semcov_lib", "generate", "--profile", "smoke", "--out", str(out),
                             "--config", str(cfg_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "50 images" in result.stdout and (out / "MILK10k_Training_GroundTruth.csv").is_file()


# ------------------------------------------------------------------------------ the SCI mechanism
def scg_coverage_and_error(meta: pd.DataFrame, wrong: np.ndarray, n_classes: int, eval_split: str,
                           min_weight: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Soft training coverage and soft-weighted evaluation error of every (class, concept, tone) SCG."""
    cols = list(MONET_COLUMNS)
    cov, err = [], []
    train, test = meta["split"] == "train", meta["split"] == eval_split
    for c in range(n_classes):
        for s in range(6):
            cell_tr = train & (meta["label"] == c) & (meta["skin_tone_class"] == s)
            cell_te = (test & (meta["label"] == c) & (meta["skin_tone_class"] == s)).to_numpy()
            if not cell_tr.any():
                continue
            w = meta.loc[cell_te, cols].to_numpy()
            ok = w.sum(axis=0) >= min_weight
            cov.extend(meta.loc[cell_tr, cols].to_numpy().mean(axis=0)[ok])
            err.extend(((w * wrong[cell_te, None]).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-9))[ok])
    return np.asarray(cov), np.asarray(err)


@pytest.mark.slow
def test_erm_errs_more_on_rare_scgs():
    """A plain ERM classifier (logistic regression on 16x16 pixels) shows a clearly negative
    coverage-error Spearman correlation over (class, concept, skin tone) groups."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = bm.benchmark_config("smoke", overrides={"n_train": 3000, "n_val": 0, "n_test": 0, "n_stress": 2520})
    meta = bm.sample_benchmark_metadata(cfg, seed=0)
    pixels = bm.render_images(cfg, seed=0).astype(np.float32) / 255.0  # (N, 32, 32, 3)
    x = pixels.reshape(len(pixels), 16, 2, 16, 2, 3).mean(axis=(2, 4)).reshape(len(pixels), -1)
    train = (meta["split"] == "train").to_numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500))
    clf.fit(x[train], meta["label"][train])
    wrong = (clf.predict(x) != meta["label"].to_numpy()).astype(float)
    assert 0.6 < 1 - wrong[train].mean() < 0.99  # learnable, not trivially perfect
    cov, err = scg_coverage_and_error(meta, wrong, cfg.n_classes, "stress")
    assert len(cov) > 200
    rho = spearmanr(cov, err).statistic
    assert rho < -0.25, rho
    # the least-covered quarter of the SCGs errs clearly more than the best-covered quarter
    order = np.argsort(cov)
    assert err[order[: len(order) // 4]].mean() > err[order[-len(order) // 4:]].mean() + 0.15
