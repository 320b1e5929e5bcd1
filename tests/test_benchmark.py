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

from semcov_lib.data import benchmark as bm
from semcov_lib.cli import main as cli_main
from semcov_lib.config import ConfigError
from semcov_lib.data.images import decode_images, load_images
from semcov_lib.data.datasets.milk10k import MONET_COLUMNS, load_milk10k

SMALL = {"n_train": 120, "n_val": 30, "n_test": 30, "n_stress": 252, "n_val_stress": 0}
META_COLUMNS = ["lesion_id", "image_type", "isic_id", "attribution", "copyright_license", "image_manipulation",
                "age_approx", "sex", "skin_tone_class", "site", *MONET_COLUMNS, "split",
                *[f"gt_{c}" for c in MONET_COLUMNS]]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path / "cache"))


#: The generator's tests pin the outputs of this small six-tone configuration (the smoke profile
#: before it was enlarged for the notebooks); the module runs with it as the "smoke" profile.
TEST_SMOKE = bm.BenchmarkConfig(image_size=32, n_train=240, n_val=60, n_test=60, n_stress=252, n_val_stress=252)


@pytest.fixture(autouse=True, scope="module")
def _test_profile():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(bm.BENCHMARK_PROFILES, "smoke", TEST_SMOKE)
        yield


@pytest.fixture(scope="module")
def smoke(_test_profile, tmp_path_factory) -> Path:
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
    assert len(meta) == cfg.n_images == 864
    assert meta["lesion_id"].str.fullmatch(r"IL_\d{7}").all() and meta["isic_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert set(meta["image_type"]) == {"dermoscopic"}
    assert set(meta["site"]) <= set(bm.SITES) and set(meta["sex"].dropna()) <= {"male", "female"}
    ages = meta["age_approx"].dropna()
    assert (ages % 5 == 0).all() and ages.between(5, 85).all()
    assert set(meta["skin_tone_class"]) == set(range(6))
    assert meta["split"].value_counts().to_dict() == {"train": 240, "stress": 252, "val_stress": 252, "val": 60,
                                                      "test": 60}

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
    assert len(table) == 864 and table.classes == ["NV", "BKL", "BCC", "MEL", "SCCKA", "VASC"]
    assert table.descriptor_kind == "soft"
    assert table.subgroup_levels() == ["0", "1", "2", "3", "4", "5"]
    assert all(table.has_split(s) for s in ("train", "val", "test", "stress", "val_stress"))
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


# Pinned outputs of the smoke profile, seed 0: a change means the drawn data changed (bump
# GENERATOR_VERSION, then update these two values).
PINNED_METADATA_SHA256 = "cfa981c4e596e67f52c7f8e611abb9ec33a65ff673a94798b7815e099081e580"
PINNED_PIXEL_MEAN = 129.79933


def test_pinned_output_for_a_fixed_seed(smoke):
    assert bm.GENERATOR_VERSION == 3
    digest = hashlib.sha256((smoke / "MILK10k_Training_Metadata.csv").read_bytes()).hexdigest()
    assert digest == PINNED_METADATA_SHA256
    pixels = bm.render_images(bm.benchmark_config("smoke"), 0, 0, 64)
    assert pixels.mean() == pytest.approx(PINNED_PIXEL_MEAN, abs=1e-3)


def test_every_concept_and_pattern_has_one_painter():
    from semcov_lib.data.benchmark import render

    skin, over = set(render.SKIN_CONCEPT_PAINTERS), set(render.CONCEPT_PAINTERS)
    assert skin | over == set(bm.CONCEPTS) and not skin & over  # each concept painted once
    assert tuple(render.PATTERN_PAINTERS) == render.PATTERN_FIELDS == bm.APPEARANCE_FIELDS[7:]


def test_balanced_oracle_changes_only_the_training_split(tmp_path, smoke):
    cfg = bm.benchmark_config("smoke", overrides={"train_coverage": "balanced"})
    oracle = bm.generate_benchmark(cfg, tmp_path / "oracle", seed=0)
    nat, orc = (pd.read_csv(r / "MILK10k_Training_Metadata.csv") for r in (smoke, oracle))
    assert len(orc) == cfg.n_images == len(nat) + 240
    same = ["val", "test", "stress", "val_stress"]
    assert nat[nat["split"].isin(same)].reset_index(drop=True).equals(orc[orc["split"].isin(same)].reset_index(drop=True))
    # the reference rows are the natural training split (new ids), images byte for byte
    ref, train = orc[orc["split"] == "coverage_reference"], nat[nat["split"] == "train"]
    values = [c for c in nat.columns if c not in ("lesion_id", "isic_id", "split")]
    assert ref[values].reset_index(drop=True).equals(train[values].reset_index(drop=True))
    assert not set(ref["lesion_id"]) & set(nat["lesion_id"])
    h_nat, h_orc = file_hashes(smoke), file_hashes(oracle)

    def image(row):
        return f"MILK10k_Training_Input/{row.lesion_id}/{row.isic_id}.jpg"

    assert all(h_nat[image(r)] == h_orc[image(r)] for r in nat[nat["split"].isin(same)].itertuples())
    assert [h_orc[image(r)] for r in ref.itertuples()] == [h_nat[image(r)] for r in train.itertuples()]
    table = load_milk10k(oracle)
    assert table.has_split("coverage_reference") and len(table.split("train")) == 240


def test_balanced_oracle_training_coverage_is_flat_and_same_size():
    gt = [f"gt_{c}" for c in MONET_COLUMNS]
    rates = {}
    for coverage in ("natural", "balanced"):
        cfg = bm.benchmark_config("default", overrides={"n_train": 30000, "train_coverage": coverage, "n_stress": 0,
                                                        "n_val_stress": 0})
        meta = bm.sample_benchmark_metadata(cfg, 0)
        train = meta[meta["split"] == "train"]
        assert len(train) == 30000
        rates[coverage] = train.groupby("label")[gt].mean().to_numpy()  # (C, K) concept rates per class
        concepts_per_image = train[gt].sum(axis=1).mean()
        rates[coverage + "_load"] = concepts_per_image
    flat, natural = rates["balanced"], rates["natural"]
    assert (flat.max(axis=1) / flat.min(axis=1) < 1.3).all()  # every concept about equally likely per class
    assert (natural.max(axis=1) / natural.min(axis=1) > 10).all()
    assert rates["balanced_load"] == pytest.approx(rates["natural_load"], rel=0.05)


def test_hard_descriptors_are_zero_one_annotations(tmp_path):
    cfg = bm.benchmark_config("smoke", overrides={**SMALL, "descriptor_kind": "hard"})
    root = bm.generate_benchmark(cfg, tmp_path / "hard", seed=0)
    meta = pd.read_csv(root / "MILK10k_Training_Metadata.csv")
    soft = bm.sample_benchmark_metadata(bm.benchmark_config("smoke", overrides=SMALL), 0)
    cols, gts = list(MONET_COLUMNS), [f"gt_{c}" for c in MONET_COLUMNS]
    assert set(np.unique(meta[cols].to_numpy())) == {0.0, 1.0}
    agree = meta[cols].to_numpy() == meta[gts].to_numpy()
    assert (agree.mean(axis=0) > 0.85).all() and 0.9 < agree.mean() < 0.999  # noisy annotations, mostly right
    for column in MONET_COLUMNS:
        # the same detector as the soft scores, thresholded: a hard 1 has a higher soft score
        assert soft[column][meta[column] == 1].mean() > soft[column][meta[column] == 0].mean() + 0.3
    assert load_milk10k(root).descriptor_kind == "hard"
    assert bm.load_benchmark("smoke", overrides={**SMALL, "descriptor_kind": "hard"}).descriptor_kind == "hard"


def test_named_configurations_validate_and_generate(tmp_path):
    assert set(bm.BENCHMARK_CONFIGS) >= {"default", "many_classes", "hard_descriptors", "strong_mimicry"}
    for name, entry in bm.BENCHMARK_CONFIGS.items():
        assert entry.purpose
        overrides = bm.configuration_overrides(name, "smoke")
        cfg = bm.benchmark_config("smoke", overrides={**overrides, "n_train": 60})
        root = bm.generate_benchmark(cfg, tmp_path / name, seed=0)
        table = load_milk10k(root)
        assert table.n_classes == cfg.n_classes and len(table) == cfg.n_images
        per_scg = len(table.split("stress")) / (cfg.n_classes * 7 * 6)
        assert per_scg == 252 / (6 * 7 * 6)  # same count per SCG whatever the number of classes
    assert bm.configuration_overrides("many_classes", "default")["n_stress"] == 16 * 9 * 7 * 6
    assert bm.configuration_overrides("strong_mimicry")["concept_mimicry"] == 0.6
    with pytest.raises(ConfigError, match="unknown benchmark configuration 'nope'"):
        bm.configuration_overrides("nope")
    with pytest.raises(ValueError, match="descriptor_kind"):
        bm.benchmark_config("smoke", overrides={"descriptor_kind": "fuzzy"})
    with pytest.raises(ValueError, match="train_coverage"):
        bm.benchmark_config("smoke", overrides={"train_coverage": "flat"})


def test_rendered_images_match_written_ones(smoke):
    cfg = bm.benchmark_config("smoke")
    rendered = bm.render_images(cfg, 0, 0, 8)
    meta = pd.read_csv(smoke / "MILK10k_Training_Metadata.csv").iloc[:8]
    for i, row in enumerate(meta.itertuples()):
        with Image.open(smoke / "MILK10k_Training_Input" / row.lesion_id / f"{row.isic_id}.jpg") as im:
            written = np.asarray(im.convert("RGB")).astype(int)
        assert np.abs(written - rendered[i]).mean() < 4  # JPEG quality 95


def test_overwrite_rules(tmp_path):
    cfg = bm.benchmark_config("smoke", overrides={"n_train": 20, "n_stress": 0, "n_val_stress": 0})
    out = bm.generate_benchmark(cfg, tmp_path / "b", seed=0)
    (out / "notes.txt").write_text("keep me")  # the user's file beside a benchmark
    (out / "results").mkdir()
    (out / "results" / "r.csv").write_text("1")
    bm.generate_benchmark(cfg, out, seed=1)  # a previous benchmark is replaced ...
    assert "seed: 1" in (out / "benchmark_config.yaml").read_text()
    assert (out / "notes.txt").read_text() == "keep me" and (out / "results" / "r.csv").is_file()  # ... the user's files kept
    fresh = file_hashes(bm.generate_benchmark(cfg, tmp_path / "fresh", seed=1))
    assert {k: v for k, v in file_hashes(out).items() if k in fresh} == fresh  # nothing of seed 0 left over
    assert set(file_hashes(out)) - set(fresh) == {"notes.txt", "results/r.csv"}
    stray = out / "MILK10k_Training_Input" / "my_photo.jpg"
    stray.write_bytes(b"x")
    with pytest.raises(bm.BenchmarkError, match="my_photo.jpg, not a generated file"):
        bm.generate_benchmark(cfg, out, seed=2)
    assert stray.is_file() and "seed: 1" in (out / "benchmark_config.yaml").read_text()
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("keep me")
    with pytest.raises(bm.BenchmarkError, match="refusing"):
        bm.generate_benchmark(cfg, tmp_path / "user", seed=0)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(bm.BenchmarkError, match="is a file"):
        bm.generate_benchmark(cfg, tmp_path / "afile", seed=0)
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob(".*old*"))  # no temporary folder left


def test_generation_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, monkeypatch, capsys):
    cfg = bm.benchmark_config("paper")
    need = bm.estimated_memory(cfg, 2)
    assert cfg.n_images * 3 * 96 * 96 < need < 3 * cfg.n_images * 3 * 96 * 96  # the image cache dominates
    monkeypatch.setattr(bm.generate, "available_memory", lambda: need - 1)
    with pytest.raises(bm.BenchmarkError, match=r"needs about \d+\.\d GiB of memory, \d+\.\d GiB available"):
        bm.generate_benchmark(cfg, tmp_path / "big", seed=0, workers=2)
    assert not (tmp_path / "big").exists() and not list(tmp_path.iterdir())
    assert cli_main(["generate", "--profile", "paper", "--out", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err.strip()
    first, *rest = err.splitlines()  # one error line, at most one hint line
    assert first.startswith("error:") and "GiB available" in first and len(rest) <= 1
    monkeypatch.setattr(bm.generate, "available_memory", lambda: None)  # unknown: no refusal
    bm.check_memory(cfg, 2)


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


@pytest.mark.parametrize("split", ["stress", "val_stress"])
def test_stress_splits_are_balanced_over_scgs(split):
    cfg = bm.benchmark_config("default")
    meta = bm.sample_benchmark_metadata(cfg, seed=0)
    stress = meta[meta["split"] == split]
    assert stress["label"].value_counts().nunique() == 1
    gt = stress[[f"gt_{c}" for c in MONET_COLUMNS]].to_numpy()
    assert (gt.sum(axis=1) == 1).all()  # stress_background = 0: only the forced concept
    groups = stress.assign(k=gt.argmax(axis=1)).groupby(["label", "k", "skin_tone_class"]).size()
    assert len(groups) == 6 * 7 * 6 and groups.min() == groups.max() == getattr(cfg, f"n_{split}") // (6 * 7 * 6)


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
    assert default.image_size == 64 and 13000 <= default.n_images <= 15000
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
    assert cfg.n_images == 360
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
    assert table.name == "benchmark-smoke-s0" and table.has_split("stress") and len(table) == 684
    x = load_images(table.split("train"), 32)
    assert x.shape == (60, 3, 32, 32) and x.dtype == torch.uint8


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["generate", "--profile", "smoke", "--seed", "3", "--out", str(out), "--set", "n_train=40"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("benchmark smoke seed 3: 664 images (train 40, val 60, test 60, stress 252, val_stress 252)")
    assert str(out) in line and len(pd.read_csv(out / "MILK10k_Training_Metadata.csv")) == 664
    assert cli_main(["generate", "--profile", "smoke", "--out", str(out), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_cli_module_entry_point(tmp_path):
    out = tmp_path / "m"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("n_train: 30\nn_stress: 0\nn_val_stress: 0\nn_val: 10\nn_test: 10\n")
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

    cfg = bm.benchmark_config("smoke", overrides={"n_train": 3000, "n_val": 0, "n_test": 0, "n_stress": 2520,
                                                  "n_val_stress": 0})
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


def test_variant_scope_concept_shares_one_look_per_concept():
    from semcov_lib.data.benchmark.design import _variant_shifts

    scg = bm.benchmark_config("smoke")
    shared = bm.benchmark_config("smoke", overrides={"concept_variant_scope": "concept"})
    per_scg, per_concept = _variant_shifts(scg, 0), _variant_shifts(shared, 0)
    assert per_scg.shape == per_concept.shape == (6, 7, len(bm.APPEARANCE_FIELDS))
    radius = np.array([bm.CLASS_APPEARANCE[n][0] for n in scg.resolved_class_names()])
    for k in range(7):
        # colour and pattern identical in every class, size +-20% of each class's own radius
        assert (per_concept[:, k, 4:] == per_concept[0, k, 4:]).all()
        np.testing.assert_allclose(np.abs(per_concept[:, k, 0]), 0.2 * radius)
        assert len({np.sign(v) for v in per_concept[:, k, 0]}) == 1
    assert not all((per_scg[:, k, 4:] == per_scg[0, k, 4:]).all() for k in range(7))  # "scg": own look per class
    assert (per_concept[:, :, 4:] != per_concept[0, 0, 4:]).any()  # concepts differ from each other
    # only the variant looks change: classes, concepts and splits are drawn identically
    a = bm.sample_benchmark_metadata(scg, 0)
    b = bm.sample_benchmark_metadata(shared, 0)
    pd.testing.assert_series_equal(a["label"], b["label"])
    pd.testing.assert_frame_equal(a.filter(like="gt_"), b.filter(like="gt_"))
    with pytest.raises(ValueError, match="concept_variant_scope"):
        bm.benchmark_config("smoke", overrides={"concept_variant_scope": "class"})
