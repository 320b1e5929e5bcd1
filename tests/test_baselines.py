"""Baseline methods: construction, forward/backward, schedules (cRT, DRW), registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from semcov_lib.models.methods import DataInfo, TrainContext, build_method, method_defaults
from semcov_lib.models.methods import baselines as bl

NAMES = ["erm", "erm_desc", "cb", "focal", "ldam_drw", "balanced_softmax", "logit_adjustment", "crt", "groupdro"]
HP = {"dim": 16, "cnn_widths": (8, 8, 8, 8)}  # tiny and fast


def _info(features_cached: bool = False, input_shape=(3, 32, 32)) -> DataInfo:
    group_counts = np.array([[60, 20], [12, 4], [0, 0]], dtype=float)  # class 2 never seen
    coverage = np.full((3, 2, 2), 0.5)
    coverage[2] = np.nan
    coverage[np.broadcast_to((group_counts == 0)[:, None, :], coverage.shape)] = np.nan
    return DataInfo(
        classes=["head", "mid", "empty"],
        descriptors=["MONET_a", "MONET_b"],
        descriptor_text=["a", "b"],
        subgroups=["light", "dark"],
        class_counts=group_counts.sum(1),
        coverage=coverage,
        group_counts=group_counts,
        prevalence=np.array([0.5, 0.5]),
        input_shape=input_shape,
        features_cached=features_cached,
    )


def _batch(info: DataInfo, b: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(b, *info.input_shape, generator=g),
        "y": torch.tensor([0, 0, 1, 1, 0, 1][:b]),
        "desc": torch.rand(b, 2, generator=g),
        "desc_mask": torch.ones(b, 2),
        "subgroup": torch.tensor([0, 1, 0, 1, 0, 0][:b]),
        "index": torch.arange(b),
    }


def _ctx(epoch: int = 0, n_epochs: int = 10) -> TrainContext:
    return TrainContext(epoch=epoch, n_epochs=n_epochs)


@pytest.fixture(scope="module")
def info() -> DataInfo:
    return _info()


@pytest.mark.parametrize("name", NAMES)
def test_build_forward_backward(name, info):
    torch.manual_seed(0)
    model = build_method(name, info, HP)
    assert isinstance(model, bl.BaselineMethod) and model.name == name
    model.train()
    batch = _batch(info)
    out = model(batch)
    assert out["logits"].shape == (6, 3)
    loss, parts = model.loss(batch, out, _ctx(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert parts and all(isinstance(v, float) and math.isfinite(v) for v in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    logits = model.predict_logits(batch)
    assert logits.shape == (6, 3) and torch.isfinite(logits).all() and not logits.requires_grad
    assert model.sampling(_ctx(0)) == "instance"


def test_registry_defaults_and_overrides(info):
    for name in NAMES:
        defaults = method_defaults(name)
        assert defaults == bl.DEFAULTS
    d = bl.DEFAULTS
    assert (d["backbone"], d["dim"], d["dropout"]) == ("cnn", 256, 0.1)
    assert d["cb_beta"] == 0.9999 and d["focal_gamma"] == 2 and d["ldam_max_margin"] == 0.5
    assert d["ldam_scale"] == 30 and d["drw_fraction"] == 0.2 and d["la_tau"] == 1
    assert d["groupdro_eta"] == 0.01 and 0 < d["crt_fraction"] < 1
    model = build_method("cb", info, {**HP, "cb_beta": 0.9})
    assert model.hp["cb_beta"] == 0.9 and model.encoder.dim == 16
    # direct construction with a partial hp falls back to DEFAULTS
    assert bl.ERM(info, HP).hp["dropout"] == 0.1


def test_cached_features_path():
    info = _info(features_cached=True, input_shape=(12, 3, 3))
    model = build_method("erm", info, {**HP, "adapter_channels": 8})
    out = model(_batch(info))
    assert out["logits"].shape == (6, 3)


def test_cb_loss_matches_formula(info):
    torch.manual_seed(0)
    model = build_method("cb", info, {**HP, "cb_beta": 0.99})
    batch = _batch(info)
    out = model(batch)
    loss, _ = model.loss(batch, out, _ctx())
    n = np.array([80.0, 16.0, 0.0])
    raw = np.where(n > 0, (1 - 0.99) / (1 - 0.99 ** np.maximum(n, 1)), 0.0)
    w = raw / raw.sum() * 3
    ce = F.cross_entropy(out["logits"].double(), batch["y"], reduction="none").detach().numpy()
    expected = (w[batch["y"].numpy()] * ce).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_alpha_options(info):
    m = build_method("focal", info, {**HP, "focal_alpha": "cb"})
    assert m.criterion.alpha.shape == (3,) and float(m.criterion.alpha[2]) == 0.0
    m = build_method("focal", info, {**HP, "focal_alpha": [1.0, 2.0, 3.0]})
    assert m.criterion.alpha.tolist() == [1.0, 2.0, 3.0]
    assert build_method("focal", info, {**HP, "focal_alpha": "none"}).criterion.alpha is None
    with pytest.raises(ValueError):
        build_method("focal", info, {**HP, "focal_alpha": "bogus"})
    with pytest.raises(ValueError):
        build_method("focal", info, {**HP, "focal_alpha": [1.0, 2.0]})


def test_ldam_drw_schedule_and_head(info):
    torch.manual_seed(0)
    model = build_method("ldam_drw", info, HP)
    assert isinstance(model.classifier, bl.CosineClassifier)
    margins = model.criterion.margins.numpy()
    assert margins.max() == pytest.approx(0.5)
    assert margins[0] / margins[1] == pytest.approx((80 / 16) ** -0.25, rel=1e-5)
    active = [model.drw_active(_ctx(e, 10)) for e in range(10)]
    assert active == [False] * 8 + [True] * 2
    model.eval()  # deterministic outputs (no dropout) for comparing losses
    batch = _batch(info)
    out = model(batch)
    cos = out["cosine"]
    assert cos.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(out["logits"], 30.0 * cos)
    # by hand: CE(s (z - Δ_y e_y)), then DRW with class-balanced weights (weighted mean)
    y = batch["y"].numpy()
    z = cos.detach().double().numpy().copy()
    z[np.arange(6), y] -= margins[y]
    logp = 30 * z - np.log(np.exp(30 * z).sum(1, keepdims=True))
    ce = -logp[np.arange(6), y]
    loss_plain, parts_plain = model.loss(batch, out, _ctx(7, 10))
    assert parts_plain["drw"] == 0.0
    assert loss_plain.item() == pytest.approx(ce.mean(), rel=1e-4)
    n = np.array([80.0, 16.0])
    raw = (1 - 0.9999) / (1 - 0.9999**n)
    w = np.append(raw, 0.0) / raw.sum() * 3
    loss_drw, parts_drw = model.loss(batch, out, _ctx(8, 10))
    assert parts_drw["drw"] == 1.0
    assert loss_drw.item() == pytest.approx((w[y] * ce).sum() / w[y].sum(), rel=1e-4)
    off = build_method("ldam_drw", info, {**HP, "drw_fraction": 0.0})
    assert not any(off.drw_active(_ctx(e, 10)) for e in range(10))
    with pytest.raises(ValueError):
        build_method("ldam_drw", info, {**HP, "drw_fraction": 1.5})


def test_balanced_softmax_train_vs_test(info):
    torch.manual_seed(0)
    model = build_method("balanced_softmax", info, HP).eval()
    batch = _batch(info)
    out = model(batch)
    torch.testing.assert_close(model.predict_logits(batch), out["logits"])  # raw z at test
    loss, _ = model.loss(batch, out, _ctx())
    shifted = out["logits"].double() + torch.log(torch.tensor([80.0, 16.0, 1e-8], dtype=torch.float64))
    assert loss.item() == pytest.approx(F.cross_entropy(shifted, batch["y"]).item(), rel=1e-5)


def test_logit_adjustment_predict(info):
    torch.manual_seed(0)
    model = build_method("logit_adjustment", info, {**HP, "la_tau": 1.0}).eval()
    batch = _batch(info)
    raw = model(batch)["logits"]
    log_pi = torch.tensor([math.log(80 / 96), math.log(16 / 96), 0.0])
    torch.testing.assert_close(model.predict_logits(batch), raw - log_pi)
    loss, parts = model.loss(batch, model(batch), _ctx())  # trains like ERM
    assert loss.item() == pytest.approx(F.cross_entropy(raw, batch["y"]).item(), rel=1e-6)


def test_crt_two_stages(info):
    torch.manual_seed(0)
    model = build_method("crt", info, {**HP, "crt_fraction": 0.7})
    model.train()
    for epoch in range(7):
        ctx = _ctx(epoch, 10)
        model.on_epoch_start(ctx)
        assert model.sampling(ctx) == "instance" and not model.encoder_frozen
    assert all(p.requires_grad for p in model.encoder.parameters())
    # stage-1 gradients exist on the encoder, then stage 2 clears and freezes them
    batch = _batch(info)
    model.loss(batch, model(batch), _ctx(6, 10))[0].backward()
    w_before = model.classifier.weight.detach().clone()
    enc_before = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    ctx = _ctx(7, 10)
    model.on_epoch_start(ctx)
    assert model.encoder_frozen and model.sampling(ctx) == "class_balanced"
    assert model.sampling(_ctx(9, 10)) == "class_balanced"
    assert all(not p.requires_grad and p.grad is None for p in model.encoder.parameters())
    assert not torch.equal(w_before, model.classifier.weight)  # classifier re-initialised
    model.train()
    assert not model.encoder.training and model.classifier.training  # BN stays in eval mode
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    out = model(_batch(info, seed=1))
    loss, parts = model.loss(_batch(info, seed=1), out, ctx)
    assert parts["crt_stage"] == 2.0
    loss.backward()
    assert all(p.grad is not None for p in model.classifier.parameters())
    opt.step()
    for k, v in model.encoder.state_dict().items():  # weights and BN running stats unchanged
        torch.testing.assert_close(v, enc_before[k])
    # a second stage-2 epoch does not re-initialise the classifier again
    w_stage2 = model.classifier.weight.detach().clone()
    model.on_epoch_start(_ctx(8, 10))
    assert torch.equal(w_stage2, model.classifier.weight)
    # the stage survives a checkpoint round trip
    fresh = build_method("crt", info, {**HP, "crt_fraction": 0.7})
    fresh.load_state_dict(model.state_dict())
    fresh.train()
    assert fresh.encoder_frozen and not fresh.encoder.training
    with pytest.raises(ValueError):
        build_method("crt", info, {**HP, "crt_fraction": -0.1})


def test_groupdro_updates_q(info):
    torch.manual_seed(0)
    model = build_method("groupdro", info, {**HP, "groupdro_eta": 0.5}).train()
    q0 = model.dro.q.clone()
    # groups: (0,0)=0 (0,1)=1 (1,0)=2 (1,1)=3; class 2 groups 4, 5 have no training images
    np.testing.assert_allclose(q0.numpy(), [0.25, 0.25, 0.25, 0.25, 0, 0])
    batch = _batch(info)
    out = model(batch)
    loss, parts = model.loss(batch, out, _ctx())
    q = model.dro.q
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(q[4]) == 0.0 and float(q[5]) == 0.0
    ce = F.cross_entropy(out["logits"], batch["y"], reduction="none").detach()
    groups = batch["y"] * 2 + batch["subgroup"]
    g_loss = torch.stack([ce[groups == g].mean() for g in range(4)])
    expected_q = q0[:4] * torch.exp(0.5 * g_loss)
    expected_q = expected_q / expected_q.sum()
    torch.testing.assert_close(q[:4], expected_q)
    assert int(q[:4].argmax()) == int(g_loss.argmax())  # moves toward the worst group
    assert loss.item() == pytest.approx((expected_q * g_loss).sum().item(), rel=1e-5)
    # evaluation mode does not move q
    model.eval()
    before = model.dro.q.clone()
    with torch.no_grad():
        model.loss(batch, model(batch), _ctx())
    assert torch.equal(before, model.dro.q)


def test_bad_data_info():
    info = _info()
    info.class_counts = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="class_counts"):
        build_method("erm", info, HP)
    info = _info()
    info.group_counts = np.ones((3, 3))
    with pytest.raises(ValueError, match="group_counts"):
        build_method("groupdro", info, HP)


def test_two_phase_schedules_reach_their_final_phase(info):
    """cRT and LDAM-DRW get both phases with 2 epochs (smoke) and 12 (default); selection starts there."""
    crt, ldam = build_method("crt", info, HP), build_method("ldam_drw", info, HP)
    for n, crt_start, drw_start in ((2, 1, 1), (12, 8, 10), (30, 21, 24)):
        assert crt.stage2_start(n) == crt_start and crt.selection_start_epoch(n) == crt_start
        assert ldam.drw_start(n) == drw_start and ldam.selection_start_epoch(n) == drw_start
        assert [crt.in_stage2(_ctx(e, n)) for e in range(n)] == [e >= crt_start for e in range(n)]
        assert [ldam.drw_active(_ctx(e, n)) for e in range(n)] == [e >= drw_start for e in range(n)]
    # no final phase: selection may choose any epoch
    never = build_method("crt", info, {**HP, "crt_fraction": 1.0})
    assert never.stage2_start(12) == 12 and never.selection_start_epoch(12) == 0
    assert build_method("erm", info, HP).selection_start_epoch(12) == 0
    with pytest.warns(UserWarning, match="1 epoch"):
        assert crt.stage2_start(1) == 1


def test_final_phase_start_rounding():
    from semcov_lib.models.methods.base import final_phase_start

    assert [final_phase_start(n, 0.25) for n in (2, 4, 6, 10)] == [1, 3, 4, 7]  # 1.5 rounds up to 2
    assert final_phase_start(10, 0.0) == 10 and final_phase_start(10, 1.0) == 0
    assert final_phase_start(10, 0.99) == 1  # stage 1 keeps one epoch


def test_erm_desc_reads_scores_and_mask(info):
    torch.manual_seed(0)
    model = build_method("erm_desc", info, HP).eval()
    assert model.classifier.in_features == 16 + 2 * 2  # [f_v; a; m]
    batch = _batch(info)
    base = model.predict_logits(batch)
    changed = dict(batch, desc=1.0 - batch["desc"])
    assert not torch.allclose(model.predict_logits(changed), base)
    missing = dict(batch, desc_mask=torch.zeros_like(batch["desc_mask"]))
    assert not torch.allclose(model.predict_logits(missing), base)
    # the part of the logits from [a; m] is exactly the classifier's weights on those inputs
    w = model.classifier.weight[:, 16:]
    delta = torch.cat([changed["desc"] - batch["desc"], torch.zeros(6, 2)], dim=1) @ w.t()
    torch.testing.assert_close(model.predict_logits(changed) - base, delta)
    # ERM ignores the scores
    erm = build_method("erm", info, HP).eval()
    torch.testing.assert_close(erm.predict_logits(changed), erm.predict_logits(batch))


def test_sees_descriptors_at_test(info):
    assert build_method("erm_desc", info, HP).sees_descriptors_at_test
    for name in [n for n in NAMES if n != "erm_desc"] + ["cmltnet"]:
        assert not build_method(name, info, HP).sees_descriptors_at_test, name
    # the tuned default has no descriptor pathway; the full architecture reads the scores
    assert not build_method("semcovnet", info, {"cnn_widths": (8, 8, 8, 8), "dim": 16}).sees_descriptors_at_test
    sem = {"cnn_widths": (8, 8, 8, 8), "dim": 16, "use_sdm": True, "use_dam": True, "use_dva": True}
    assert build_method("semcovnet", info, sem).sees_descriptors_at_test
    for source in ("predicted", "predicted_test"):
        assert not build_method("semcovnet", info, {**sem, "desc_source": source}).sees_descriptors_at_test
    assert not build_method("semcovnet", info, {**sem, "use_sdm": False, "use_dam": False, "use_dva": False}).sees_descriptors_at_test


def test_registry_names_method_classes():
    import importlib

    from semcov_lib.models.methods import METHODS, Method

    for name, target in METHODS.items():
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert isinstance(cls, type) and issubclass(cls, Method), name
