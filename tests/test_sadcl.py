"""SADCL: shapes (both tasks), gradient flow, memory-bank rule, prototype initialisation,
training on tiny random data, multi-label evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from semcov_lib.models.methods import build_method, method_defaults
from semcov_lib.models.methods.base import DataInfo, TrainContext
from semcov_lib.models.methods.sadcl import (
    DEFAULTS,
    SADCL,
    SADCLConfigError,
    _masked_multilabel_metrics,
    evaluate_multilabel,
    sine_positional_encoding,
)

T, K, S = 3, 4, 2
SMALL = {"d_model": 32, "ffn_dim": 64, "proj_dim": 16, "bank_size": 16, "cnn_widths": (8, 16, 16, 16)}


def tiny_info() -> DataInfo:
    return DataInfo(
        classes=[f"c{i}" for i in range(T)],
        descriptors=[f"MONET_d{i}" for i in range(K)],
        descriptor_text=[f"d{i}" for i in range(K)],
        subgroups=["a", "b"],
        class_counts=np.array([10, 5, 2]),
        coverage=np.full((T, K, S), 0.5),
        group_counts=np.ones((T, S)),
        prevalence=np.full(K, 0.5),
        input_shape=(3, 32, 32),
    )


def tiny_batch(b: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    desc = torch.rand(b, K, generator=g)
    mask = torch.ones(b, K)
    mask[0, 1] = 0.0
    return {
        "x": torch.randn(b, 3, 32, 32, generator=g),
        "y": torch.arange(b) % T,
        "desc": desc * mask,
        "desc_mask": mask,
        "subgroup": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
    }


def make(task: str = "class", **hp) -> SADCL:
    torch.manual_seed(0)
    return build_method("sadcl", tiny_info(), {**SMALL, "sadcl_task": task, **hp})


def test_registry_and_defaults():
    assert method_defaults("sadcl") == DEFAULTS
    assert DEFAULTS["sadcl_task"] == "class" and DEFAULTS["d_model"] == 128
    m = build_method("sadcl", tiny_info(), SMALL)
    assert isinstance(m, SADCL) and m.task == "class"
    with pytest.raises(SADCLConfigError):
        make("bogus")
    with pytest.raises(SADCLConfigError):
        make(class_loss="hinge")


def test_sine_positional_encoding():
    pos = sine_positional_encoding(3, 4, 16)
    assert pos.shape == (12, 16) and torch.isfinite(pos).all()
    assert not torch.allclose(pos[0], pos[1])
    with pytest.raises(SADCLConfigError):
        sine_positional_encoding(2, 2, 10)


@pytest.mark.parametrize("task,n_labels", [("class", T), ("descriptors", K)])
def test_forward_shapes(task, n_labels):
    m = make(task)
    out = m(tiny_batch())
    assert out["logits"].shape == (8, T)
    assert out["label_logits"].shape == (8, n_labels)
    assert out["h"].shape == (8, n_labels, SMALL["d_model"])
    if task == "class":
        assert torch.equal(out["logits"], out["label_logits"])
    m.eval()
    assert m.predict_logits(tiny_batch()).shape == (8, T)


@pytest.mark.parametrize("task", ["class", "descriptors"])
def test_gradient_flow(task):
    m = make(task, warmup_epochs=0, warmup_frac=0.0)
    ctx = TrainContext(epoch=0, n_epochs=2)
    m.on_epoch_start(ctx)  # warm-up of 0 epochs: prototypes ready at once
    assert m.contrastive_active(ctx)
    batch = tiny_batch()
    loss, parts = m.loss(batch, m(batch), ctx)
    assert {"sscl", "pscl", "total"} <= set(parts)
    loss.backward()
    for name in ("decoder.query", "label_head.weight", "projector.0.weight", "prototypes",
                 "decoder.input_proj.weight"):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    bb = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert bb and all(torch.isfinite(g).all() for g in bb)


def test_warmup_uses_classification_loss_only():
    m = make("descriptors", warmup_epochs=1, warmup_frac=0.0)
    ctx = TrainContext(epoch=0, n_epochs=3)
    assert m.warmup_epochs(3) == 1 and m.warmup_epochs(10) == 1
    assert make(warmup_epochs=1, warmup_frac=0.2).warmup_epochs(10) == 2
    batch = tiny_batch()
    loss, parts = m.loss(batch, m(batch), ctx)
    assert set(parts) == {"ce", "ml", "total"}
    assert loss.item() == pytest.approx(parts["ce"] + parts["ml"], rel=1e-5)


def _crafted_out(m: SADCL, logits: torch.Tensor) -> dict:
    b, n = logits.shape
    h = torch.arange(b * n * m.decoder.d, dtype=torch.float32).reshape(b, n, m.decoder.d)
    return {"h": h, "label_logits": logits, "logits": logits}


def test_memory_bank_updates_only_confident_positives():
    m = make("descriptors")
    bank_before = m.bank.clone()
    batch = tiny_batch(4)
    batch["desc"] = torch.tensor([[0.9, 0.9, 0.1, 0.6], [0.2, 0.7, 0.8, 0.0],
                                  [0.9, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    batch["desc_mask"] = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1.0]])
    batch["index"] = torch.tensor([3, 17, 5, 6])  # 17 % bank_size(16) = slot 1
    big, small = 5.0, -5.0  # sigmoid 0.993 / 0.007
    logits = torch.tensor([[big, big, big, 0.5],    # (0,0) yes; (0,1) masked; (0,2) neg; (0,3) p=.62
                           [big, big, small, big],  # (1,1) yes; (1,2) positive but not confident
                           [big, big, big, big],    # (2,0) yes
                           [big, big, big, big]])   # no positives
    out = _crafted_out(m, logits)
    n = m.update_bank(batch, out)
    assert n == 3
    expected = bank_before.clone()
    expected[3, 0] = out["h"][0, 0]
    expected[1, 1] = out["h"][1, 1]
    expected[5, 0] = out["h"][2, 0]
    assert torch.equal(m.bank, expected)


def test_memory_bank_class_task_uses_softmax_confidence():
    m = make("class")
    batch = tiny_batch(2)
    batch["y"] = torch.tensor([0, 1])
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.2, 0.0]])  # softmax p_y: .96 / .44
    out = _crafted_out(m, logits)
    before = m.bank.clone()
    assert m.update_bank(batch, out) == 1
    assert torch.equal(m.bank[0, 0], out["h"][0, 0])
    assert torch.equal(m.bank[1], before[1])


def test_prototypes_initialised_after_warmup():
    m = make("descriptors", warmup_epochs=1, warmup_frac=0.0)
    initial = m.prototypes.detach().clone()
    batch = tiny_batch(3)
    batch["desc"] = torch.tensor([[0.9, 0.9, 0.0, 0.0], [0.9, 0.0, 0.0, 0.0], [0.9, 0.9, 0.0, 0.0]])
    batch["desc_mask"] = torch.ones(3, K)
    # label 0: confident in samples 0, 2 (p > .85), not in sample 1; label 1: positives, none
    # confident (p = .62 < .85); labels 2, 3: no positive at all
    logits = torch.tensor([[5.0, 0.5, 5.0, 5.0], [0.0, 5.0, 5.0, 5.0], [5.0, 0.5, 5.0, 5.0]])
    out = _crafted_out(m, logits)
    ctx0 = TrainContext(epoch=0, n_epochs=3)
    assert not m.contrastive_active(ctx0)
    m.after_step(batch, out, ctx0)
    assert not bool(m.proto_ready)
    m.on_epoch_end(ctx0)
    assert bool(m.proto_ready)
    h = out["h"]
    torch.testing.assert_close(m.prototypes.detach()[0], (h[0, 0] + h[2, 0]) / 2)  # confident mean
    torch.testing.assert_close(m.prototypes.detach()[1], (h[0, 1] + h[2, 1]) / 2)  # fallback: all positives
    torch.testing.assert_close(m.prototypes.detach()[2:], initial[2:])  # unchanged
    assert torch.equal(m.bank, m.prototypes.detach()[None].expand_as(m.bank))
    assert m.contrastive_active(TrainContext(epoch=1, n_epochs=3))
    # a later epoch does not re-initialise them
    m.on_epoch_end(TrainContext(epoch=1, n_epochs=3))
    torch.testing.assert_close(m.prototypes.detach()[0], (h[0, 0] + h[2, 0]) / 2)


def _train(m: SADCL, steps_per_epoch: int, n_epochs: int) -> list[float]:
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    batches = [tiny_batch(12, seed=s) for s in range(steps_per_epoch)]
    for i, b in enumerate(batches):
        b["index"] = torch.arange(12) + 12 * i
    losses, step = [], 0
    m.train()
    for epoch in range(n_epochs):
        ctx = TrainContext(epoch=epoch, n_epochs=n_epochs, step=step)
        m.on_epoch_start(ctx)
        for b in batches:
            out = m(b)
            loss, _ = m.loss(b, out, ctx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            m.after_step(b, out, ctx)
            losses.append(loss.item())
            step += 1
        m.on_epoch_end(ctx)
    return losses


@pytest.mark.parametrize("task", ["class", "descriptors"])
def test_training_decreases_loss(task):
    m = make(task, warmup_epochs=0, warmup_frac=0.0, dropout=0.0)
    losses = _train(m, steps_per_epoch=2, n_epochs=8)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])


def test_training_through_warmup_sets_prototypes():
    m = make("class", warmup_epochs=1, warmup_frac=0.0, dropout=0.0)
    losses = _train(m, steps_per_epoch=2, n_epochs=3)
    assert bool(m.proto_ready) and all(np.isfinite(losses))


def test_masked_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random((30, 5)) > 0.6).astype(int)
    y[:, 4] = 0  # a label without positives is left out of mAP
    p = np.clip(y * 0.3 + rng.random((30, 5)) * 0.7, 0, 1)
    res = _masked_multilabel_metrics(y, p, np.ones_like(p))
    aps = [average_precision_score(y[:, j], p[:, j]) for j in range(4)]
    assert res["mAP"] == pytest.approx(np.mean(aps))
    pred = p >= 0.5
    tp = (pred & (y == 1)).sum()
    assert res["OP"] == pytest.approx(tp / pred.sum()) and res["OR"] == pytest.approx(tp / y.sum())
    mask = np.ones_like(p)
    mask[:10, 0] = 0
    res_m = _masked_multilabel_metrics(y, p, mask)
    ap0 = average_precision_score(y[10:, 0], p[10:, 0])
    assert res_m["mAP"] == pytest.approx(np.mean([ap0] + aps[1:]))
    assert {"CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3"} <= set(res)


def test_evaluate_multilabel_runs():
    m = make("descriptors")
    res = evaluate_multilabel(m, [tiny_batch(6, seed=1), tiny_batch(6, seed=2)])
    assert 0.0 <= res["mAP"] <= 1.0
    assert m.training  # mode restored


def test_masked_metrics_agree_with_library_metrics():
    metrics = pytest.importorskip("semcov_lib.sci.metrics")
    if not hasattr(metrics, "multilabel_metrics"):
        pytest.skip("semcov_lib.sci.metrics.multilabel_metrics not available")
    rng = np.random.default_rng(3)
    y = (rng.random((25, 4)) > 0.5).astype(int)
    p = rng.random((25, 4))
    ours = _masked_multilabel_metrics(y, p, np.ones_like(p))
    ref = metrics.multilabel_metrics(y, p)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value), key


def test_evaluate_multilabel_class_task_fully_observed():
    m = make("class")
    res = evaluate_multilabel(m, [tiny_batch(6, seed=1), tiny_batch(6, seed=2)])
    assert 0.0 <= res["mAP"] <= 1.0 and "OF1_top3" in res


def test_state_dict_round_trip_keeps_bank_and_prototypes():
    m = make("descriptors", warmup_epochs=1, warmup_frac=0.0)
    _train(m, steps_per_epoch=1, n_epochs=2)
    m2 = make("descriptors", warmup_epochs=1, warmup_frac=0.0)
    m2.load_state_dict(m.state_dict())
    assert bool(m2.proto_ready)
    assert torch.equal(m2.bank, m.bank) and torch.equal(m2.prototypes, m.prototypes)
