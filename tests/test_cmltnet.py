"""CMLTNet: shapes, gradient flow, privileged text (weighted embeddings / MLP), eval-mode
independence from ``desc``, fallback, training on tiny random data."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import semcov_lib.models
from semcov_lib.models.methods import build_method, method_defaults
from semcov_lib.models.methods.base import DataInfo, TrainContext
from semcov_lib.models.methods.cmltnet import DEFAULTS, CMLTNet, CMLTNetConfigError

T, K, S, E = 3, 4, 2, 6
SMALL = {"dim": 32, "align_dim": 16, "text_dim": 16, "cnn_widths": (8, 16, 16, 16)}


def tiny_info(with_embeddings: bool = True) -> DataInfo:
    extra = {}
    if with_embeddings:
        emb = np.random.default_rng(0).normal(size=(K, E)).astype(np.float32)
        extra["descriptor_embeddings"] = emb / np.linalg.norm(emb, axis=1, keepdims=True)
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
        extra=extra,
    )


def tiny_batch(b: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(b) % T
    desc = torch.rand(b, K, generator=g) * 0.3
    desc[torch.arange(b), y] += 0.7  # descriptor k ~ class k (learnable privileged text)
    mask = torch.ones(b, K)
    mask[0, 3] = 0.0
    return {"x": torch.randn(b, 3, 32, 32, generator=g), "y": y, "desc": desc * mask,
            "desc_mask": mask, "subgroup": torch.zeros(b, dtype=torch.long), "index": torch.arange(b)}


def make(text_encoder: str = "sentence", **hp) -> CMLTNet:
    torch.manual_seed(0)
    return build_method("cmltnet", tiny_info(), {**SMALL, "text_encoder": text_encoder, **hp})


class NoDescBatch(dict):
    """A batch that fails loudly if ``desc`` or ``desc_mask`` is read."""

    def __getitem__(self, key):
        if key in ("desc", "desc_mask"):
            raise AssertionError(f"forward read privileged key {key!r}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in ("desc", "desc_mask"):
            raise AssertionError(f"forward read privileged key {key!r}")
        return super().get(key, default)


def test_registry_defaults_and_docstring():
    assert method_defaults("cmltnet") == DEFAULTS
    assert (DEFAULTS["lambda_align"], DEFAULTS["lambda_inf"], DEFAULTS["lambda_sem"]) == (1.0, 1.0, 0.5)
    assert DEFAULTS["backbone"] == "cnn" and DEFAULTS["tau_align"] == 0.1
    import semcov_lib.models.methods.cmltnet as mod

    assert "reconstruction from the paper's abstract" in mod.__doc__
    m = build_method("cmltnet", tiny_info(), {**SMALL, "text_encoder": "mlp"})
    assert isinstance(m, CMLTNet)
    with pytest.raises(CMLTNetConfigError):
        make(align="dot")


@pytest.mark.parametrize("text_encoder,d_t", [("sentence", E), ("mlp", SMALL["text_dim"])])
def test_forward_shapes(text_encoder, d_t):
    m = make(text_encoder)
    out = m(tiny_batch())
    assert out["logits"].shape == (8, T) and out["sem_logits"].shape == (8, T)
    assert out["t_hat"].shape == (8, d_t) and out["f_v"].shape == (8, SMALL["dim"])


def test_sentence_text_is_weighted_mean_of_embeddings():
    m = make("sentence")
    emb = torch.as_tensor(tiny_info().extra["descriptor_embeddings"])
    desc = torch.tensor([[0.5, 0.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0.0]])
    t, valid = m.encode_text(desc, mask)
    emb = emb / emb.norm(dim=1, keepdim=True) * E ** 0.5  # rows rescaled to norm sqrt(E)
    expected0 = (0.5 * emb[0] + 1.0 * emb[2]) / 1.5  # masked descriptor 3 ignored
    torch.testing.assert_close(t[0], expected0)
    assert valid.tolist() == [True, False, False]
    assert torch.isfinite(t).all()


@pytest.mark.parametrize("text_encoder", ["sentence", "mlp"])
@pytest.mark.parametrize("align", ["infonce", "cosine"])
def test_gradient_flow(text_encoder, align):
    m = make(text_encoder, align=align)
    batch = tiny_batch()
    loss, parts = m.loss(batch, m(batch), TrainContext(0, 1))
    assert {"ce", "align", "inf", "sem", "total"} <= set(parts)
    loss.backward()
    names = ["mapper.0.weight", "proj_v.0.weight", "proj_t.0.weight", "sem_classifier.weight",
             "classifier.1.weight", "phi_v.0.weight", "encoder.proj.0.weight"]
    if text_encoder == "mlp":
        names.append("text_mlp.0.weight")
    params = dict(m.named_parameters())
    for name in names:
        g = params[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert all(torch.isfinite(p.grad).all() for p in m.encoder.backbone.parameters() if p.grad is not None)


def test_mapper_target_is_detached():
    m = make("mlp", lambda_align=0.0, lambda_sem=0.0)
    batch = tiny_batch()
    out = m(batch)
    loss, _ = m.loss(batch, {**out, "logits": out["logits"].detach()}, TrainContext(0, 1))
    loss.backward()  # only L_inf left: the text encoder must not move toward t_hat
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.text_mlp.parameters())
    assert m.mapper[0].weight.grad.abs().sum() > 0


def test_eval_forward_does_not_read_desc():
    m = make("sentence")
    batch = tiny_batch()
    m.eval()
    ref = m(batch)["logits"]
    guarded = NoDescBatch({k: v for k, v in batch.items() if k not in ("desc", "desc_mask")})
    torch.testing.assert_close(m(guarded)["logits"], ref)
    torch.testing.assert_close(m.predict_logits(NoDescBatch({"x": batch["x"]})), ref)
    other = dict(batch, desc=torch.rand(8, K), desc_mask=torch.zeros(8, K))
    torch.testing.assert_close(m(other)["logits"], ref)  # changing desc changes nothing
    m.train()
    out = m(NoDescBatch({"x": batch["x"]}))  # training forward without privileged text works
    assert "t" not in out
    other = dict(batch, desc=torch.rand(8, K))
    torch.manual_seed(1)
    with_desc = m(batch)["logits"]
    torch.manual_seed(1)
    other_desc = m(other)["logits"]
    torch.testing.assert_close(with_desc, other_desc)  # text never feeds the class logits


def test_batch_without_text_is_safe():
    m = make("sentence")
    batch = tiny_batch()
    batch["desc"] = torch.zeros_like(batch["desc"])  # no privileged text at all
    loss, parts = m.loss(batch, m(batch), TrainContext(0, 1))
    loss.backward()
    assert torch.isfinite(loss) and parts["align"] == 0.0 and parts["inf"] == 0.0


def test_fallback_to_mlp_when_embeddings_unavailable(monkeypatch):
    fake = types.ModuleType("semcov_lib.models.text_embed")

    def boom(*args, **kwargs):
        raise RuntimeError("model unavailable")

    fake.embed_texts = boom
    fake.descriptor_text = lambda cols: list(cols)
    monkeypatch.setitem(sys.modules, "semcov_lib.models.text_embed", fake)
    monkeypatch.setattr(semcov_lib.models, "text_embed", fake, raising=False)
    info = tiny_info(with_embeddings=False)
    with pytest.warns(RuntimeWarning, match="MLP text encoder"):
        m = build_method("cmltnet", info, {**SMALL, "text_encoder": "sentence"})
    assert m.text_mode == "mlp" and m.text_mlp is not None
    with pytest.raises(RuntimeError):
        build_method("cmltnet", info, {**SMALL, "text_encoder": "sentence", "text_fallback": False})


@pytest.mark.skipif(importlib.util.find_spec("semcov_lib.models.text_embed") is None,
                    reason="semcov_lib.models.text_embed not available")
def test_real_sentence_embeddings():
    m = build_method("cmltnet", tiny_info(with_embeddings=False), {**SMALL, "text_encoder": "sentence"})
    if m.text_mode != "sentence":
        pytest.skip("sentence model unavailable here (fell back to the MLP encoder)")
    assert m.text_table.shape == (K, 384)
    out = m(tiny_batch())
    assert out["t_hat"].shape == (8, 384)


@pytest.mark.parametrize("text_encoder", ["sentence", "mlp"])
def test_training_decreases_loss(text_encoder):
    m = make(text_encoder, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    batches = [tiny_batch(12, seed=s) for s in range(2)]
    losses = []
    m.train()
    for epoch in range(8):
        ctx = TrainContext(epoch=epoch, n_epochs=8)
        for b in batches:
            out = m(b)
            loss, _ = m.loss(b, out, ctx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            m.after_step(b, out, ctx)
            losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4])
