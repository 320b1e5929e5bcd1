"""Dihedral views of rare-side training images (semcov_lib.data.views) and SemCovNet's rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare

from semcov_lib.data.views import N_VIEWS, ViewBank, dihedral_view, dihedral_views, view_bank
from semcov_lib.models.methods import build_method
from semcov_lib.models.methods.base import DataInfo

T, K, S = 2, 3, 1


def _images(n: int = 2) -> torch.Tensor:
    return torch.arange(n * 3 * 4 * 4, dtype=torch.uint8).view(n, 3, 4, 4)  # no symmetry: 8 distinct views


def test_dihedral_views_are_the_seven_other_symmetries_of_the_square_as_numpy_gives_them():
    images = _images()
    views = dihedral_views(images)
    assert views.shape == (2, N_VIEWS, 3, 4, 4) and views.dtype == torch.uint8
    a = images.numpy()
    expected = [np.rot90(a, k, axes=(-2, -1)) for k in (1, 2, 3)]
    expected += [np.rot90(a[..., ::-1], k, axes=(-2, -1)) for k in (0, 1, 2, 3)]
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(views[:, i].numpy(), e)
    distinct = {bytes(v.numpy().tobytes()) for v in [images[0], *views[0]]}
    assert len(distinct) == N_VIEWS + 1
    torch.testing.assert_close(dihedral_views(images, 3), views[:, :3])  # the rotations
    for n in (0, 8):
        with pytest.raises(ValueError, match="1 to 7 views"):
            dihedral_views(images, n)


def test_dihedral_view_applies_each_rows_own_transform():
    images = _images(3)
    which = torch.tensor([0, 3, 7])
    out = dihedral_view(images, which)
    torch.testing.assert_close(out[0], images[0])
    torch.testing.assert_close(out[1], torch.rot90(images[1], 3, (-2, -1)))
    torch.testing.assert_close(out[2], dihedral_views(images[2:])[0, 6])


def test_view_bank_replaces_only_its_rows_by_uniformly_drawn_views():
    """Feature mode: 'features' of a view = its image as floats, so every replacement is checkable;
    over 4000 draws each of the 8 choices (original included) comes up about equally often."""
    images = _images(2)
    bank = view_bank(torch.tensor([3]), 5, N_VIEWS, images[1:], lambda v: v.float())
    assert bank.features.shape == (1, N_VIEWS, 3, 4, 4)
    originals = torch.zeros(5, 3, 4, 4)
    originals[3] = images[1].float()
    candidates = torch.cat([images[1:].float(), dihedral_views(images[1:])[0].float()])
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(N_VIEWS + 1, int)
    for _ in range(4000):
        batch = {"x": originals.clone()}
        bank.apply(batch, torch.arange(5), generator)
        torch.testing.assert_close(batch["x"][[0, 1, 2, 4]], originals[[0, 1, 2, 4]])
        match = [bool(torch.equal(batch["x"][3], c)) for c in candidates]
        assert sum(match) == 1
        counts[match.index(True)] += 1
    assert chisquare(counts).pvalue > 1e-3


def test_view_bank_in_image_mode_transforms_the_batch_itself():
    images = _images(4).float()
    bank = view_bank(torch.tensor([0, 2]), 4, 3, None)
    assert bank.features is None
    seen = set()
    for seed in range(40):
        batch = {"x": images[[2, 1]].clone()}  # batch rows = split rows 2, 1
        bank.apply(batch, torch.tensor([2, 1]), torch.Generator().manual_seed(seed))
        torch.testing.assert_close(batch["x"][1], images[1])  # split row 1 is not a view row
        # n = 3: the original or one of its rotations, never a mirror image
        match = [torch.equal(batch["x"][0], v) for v in [images[2], *dihedral_views(images[2:3])[0]]]
        assert sum(match) == 1 and match.index(True) <= 3
        seen.add(match.index(True))
    assert seen == {0, 1, 2, 3}


def test_view_bank_rejects_rows_outside_the_split_or_repeated():
    with pytest.raises(ValueError, match="distinct rows of the 4-row training split"):
        view_bank(torch.tensor([1, 4]), 4, 3, None)
    with pytest.raises(ValueError, match="distinct rows"):
        view_bank(torch.tensor([1, 1]), 4, 3, None)
    with pytest.raises(ValueError, match="n=9"):
        view_bank(torch.tensor([1]), 4, 9, None)
    assert isinstance(view_bank(torch.tensor([], dtype=torch.long), 4, 3, _images(1)[:0]), ViewBank)


def _info(coverage: np.ndarray) -> DataInfo:
    return DataInfo(classes=["NV", "BCC"], descriptors=[f"MONET_d{k}" for k in range(K)],
                    descriptor_text=[f"d{k}" for k in range(K)], subgroups=["all"], class_counts=np.array([4, 4]),
                    coverage=coverage, group_counts=np.array([[4], [4]]), prevalence=np.full(K, 0.5),
                    input_shape=(3, 8, 8))


def test_semcovnet_views_the_rare_side_rows_only_when_asked():
    """Class 0 has concept rates (0.1, 0.5, 0.9), balanced rate 0.5: a sample showing the rare
    concept 0 and lacking the common concept 2 is rarer than balanced (ratio > 1); the opposite
    sample and class 1's (rates 0.5 = balanced, ratio 1) are not."""
    coverage = np.full((T, K, S), 0.5)
    coverage[0, :, 0] = [0.1, 0.5, 0.9]
    split = type("Split", (), {"y": torch.tensor([0, 0, 1, 1]), "subgroup": torch.zeros(4, dtype=torch.long),
                               "desc": torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
                               "desc_mask": torch.ones(4, K)})()
    hp = {"dim": 8, "cnn_widths": (4, 4, 4, 4), "text_init": False, "cdi_mode": "resample"}
    request = build_method("semcovnet", _info(coverage), {**hp, "cdi_views": 3}).view_rows(split)
    assert request.rows.tolist() == [0] and request.n == 3
    assert build_method("semcovnet", _info(coverage), {**hp, "cdi_views": 0}).view_rows(split) is None
    assert build_method("semcovnet", _info(coverage), {**hp, "cdi_mode": "squared", "cdi_views": 3}).view_rows(split) is None
    with pytest.raises(ValueError, match="cdi_views=8"):
        build_method("semcovnet", _info(coverage), {**hp, "cdi_views": 8})
    assert build_method("erm", _info(coverage), {"cnn_widths": (4, 4, 4, 4)}).view_rows(split) is None


def test_trainer_shows_the_methods_rows_as_views_of_their_own_images(monkeypatch):
    """Cached-feature path: the bank holds, for each rare-side row, the 'features' (here the image
    itself as floats) of that row's own image under each view, so split rows map to table rows."""
    from semcov_lib.experiment import batches, train as trainer
    from semcov_lib.experiment.protocol import train_config

    config = train_config("semcovnet", "smoke", 0, {"hp": {"cdi_mode": "resample", "cdi_views": 3}})
    data = batches.prepare_data(config)
    model = build_method("semcovnet", data.info, config.resolved_hp())
    request = model.view_rows(data.splits["train"])
    assert request.n == 3 and 0 < len(request.rows) < len(data.splits["train"])
    monkeypatch.setattr(trainer, "cached_features", lambda images, config, progress: images.float())
    bank = trainer.method_views(model, data, dataclasses.replace(config, feature_cache=True))
    images = batches.split_images(data, config, "train")
    assert torch.equal(images.float(), data.splits["train"].x.float())  # the smoke split holds these images
    for i in (0, len(request.rows) - 1):
        row = int(request.rows[i])
        assert bank.lookup[row] == i
        torch.testing.assert_close(bank.features[i], dihedral_views(images[row:row + 1], 3)[0].float())
    assert trainer.method_views(build_method("erm", data.info, train_config("erm", "smoke", 0).resolved_hp()),
                                data, config) is None


def test_views_change_a_smoke_training_run(tmp_path):
    from semcov_lib.experiment.protocol import train_config
    from semcov_lib.experiment.train import train

    losses = []
    for views in (0, 7):
        config = train_config("semcovnet", "smoke", 0, {"epochs": 1, "max_steps": 4, "n_boot": 10, "augment": False,
                                                        "hp": {"cdi_mode": "resample", "cdi_views": views}})
        train(config, tmp_path / str(views), progress=False)
        losses.append(pd.read_csv(tmp_path / str(views) / "log.csv")["train_ce"].iloc[0])
    assert losses[0] != losses[1]  # the same seed, batches and initial weights: only the views differ


def test_erm_views_shows_every_training_row_as_its_rotations_and_stays_out_of_the_pipeline():
    from semcov_lib.experiment import plan

    split = type("Split", (), {"y": torch.tensor([0, 1, 1, 0, 1])})()
    request = build_method("erm_views", _info(np.full((T, K, S), 0.5)), {"cnn_widths": (4, 4, 4, 4)}).view_rows(split)
    assert request.rows.tolist() == [0, 1, 2, 3, 4] and request.n == 3
    assert "erm_views" not in plan.MAIN_METHODS and {"erm", "semcovnet", "erm_desc"} <= set(plan.MAIN_METHODS)
