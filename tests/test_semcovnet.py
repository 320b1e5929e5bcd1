"""SemCovNet (all switch combinations, modes, missing descriptors) and descriptor text embeddings."""

from __future__ import annotations

import itertools
import socket
import warnings

import numpy as np
import pytest
import torch

from semcov_lib.models import text_embed as te
from semcov_lib.models.methods import TrainContext, build_method, method_defaults
from semcov_lib.models.methods import semcovnet as sc
from semcov_lib.models.methods.base import DataInfo

# the full architecture (the tuned default switches the descriptor pathway off)
TINY = {"dim": 16, "cnn_widths": (8, 8, 8, 8), "dva_proj_dim": 8, "text_init": False, "use_sdm": True,
        "use_dam": True, "use_dva": True}
T, K, S = 3, 4, 2


def _info(**kw) -> DataInfo:
    rng = np.random.default_rng(0)
    coverage = rng.uniform(0.0, 1.0, (T, K, S))
    coverage[2, :, 1] = np.nan  # an empty (class, subgroup) cell
    args = dict(
        classes=["NV", "BCC", "MEL"],
        descriptors=[f"MONET_d{k}" for k in range(K)],
        descriptor_text=[f"descriptor {k}" for k in range(K)],
        subgroups=["light", "dark"],
        class_counts=np.array([10, 6, 3]),
        coverage=coverage,
        group_counts=np.array([[5, 5], [3, 3], [3, 0]]),
        prevalence=np.full(K, 0.4),
        input_shape=(3, 32, 32),
    )
    args.update(kw)
    return DataInfo(**args)


def _batch(b: int = 12, seed: int = 0, missing: float = 0.25) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, K, generator=g) > missing).float()
    return {
        "x": torch.randn(b, 3, 32, 32, generator=g),
        "y": torch.arange(b) % T,
        "desc": torch.rand(b, K, generator=g) * mask,
        "desc_mask": mask,
        "subgroup": torch.arange(b) % S,
        "index": torch.arange(b),
    }


def _build(**hp) -> sc.SemCovNet:
    torch.manual_seed(0)
    return build_method("semcovnet", _info(), {**TINY, **hp})


def _check_all_grads(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"


SWITCHES = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("sdm,dam,dva,cdi", SWITCHES)
def test_every_switch_combination_trains(sdm, dam, dva, cdi):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a loss-weighting correction, which logs its part ("cdi"); resample (the default) weighs nothing
        model = _build(use_sdm=sdm, use_dam=dam, use_dva=dva, use_cdi_reg=cdi, cdi_mode="balance", cdi_jitter=0.0)
    batch = _batch()
    out = model(batch)
    assert out["logits"].shape == (12, T) and out["f_v"].shape == (12, 16)
    assert ("desc_logits" in out) == sdm
    assert ("gate" in out) == (sdm and dam)
    assert ("z_v" in out) == (sdm and dva)
    if sdm and dam:
        assert out["gate"].shape == (12, 16) and ((out["gate"] > 0) & (out["gate"] < 1)).all()
    if sdm and dva:
        assert out["z_v"].shape == out["z_d"].shape == (12, 8)
        torch.testing.assert_close(out["z_v"].norm(dim=1), torch.ones(12))
    loss, parts = model.loss(batch, out, TrainContext(epoch=5, n_epochs=6))
    assert torch.isfinite(loss)
    assert set(parts) == {"ce"} | ({"desc"} if sdm else set()) | ({"dva"} if sdm and dva else set()) | (
        {"cdi"} if cdi else set())
    assert all(np.isfinite(v) for v in parts.values())
    loss.backward()
    _check_all_grads(model)


@pytest.mark.parametrize("dam_mode", sc.DAM_MODES)
@pytest.mark.parametrize("dva_mode", ["cosine", "infonce"])
def test_dam_and_dva_modes(dam_mode, dva_mode):
    model = _build(dam_mode=dam_mode, dva_mode=dva_mode)
    batch = _batch()
    out = model(batch)
    if dam_mode == "gate":
        assert "token_weights" not in out
    else:
        w = out["token_weights"]
        assert w.shape == (12, K) and (w >= 0).all()
        torch.testing.assert_close(w.sum(1), torch.ones(12))
    loss, parts = model.loss(batch, out, TrainContext(epoch=2, n_epochs=3))
    assert "cdi" in parts and "dva" in parts
    loss.backward()
    _check_all_grads(model)


def test_coverage_mode_prefers_rare_descriptors():
    """With coverage-aware tokens, a descriptor rare for the sample's subgroup weighs more."""
    info = _info()
    cov = np.full((T, K, S), 0.9)
    cov[:, 0, :] = 0.01  # descriptor 0 rare everywhere
    info.coverage = cov
    torch.manual_seed(0)
    model = build_method("semcovnet", info, {**TINY, "dam_mode": "coverage"}).eval()
    w = model(_batch())["token_weights"]
    assert (w[:, 0] > w[:, 1:].max(dim=1).values).all()


def test_no_sdm_is_the_erm_architecture():
    with pytest.warns(UserWarning, match="need SDM"):
        model = _build(use_sdm=False, use_cdi_reg=False)
    erm_hp = {k: v for k, v in TINY.items() if k in method_defaults("erm") or k == "cnn_widths"}
    erm = build_method("erm", _info(), erm_hp)
    mine = {n: p.shape for n, p in model.named_parameters()}
    theirs = {n: p.shape for n, p in erm.named_parameters()}
    assert mine == theirs


def test_missing_descriptors_use_the_predicted_scores():
    model = _build().eval()
    batch = _batch()
    missing = {**batch, "desc": torch.zeros_like(batch["desc"]), "desc_mask": torch.zeros_like(batch["desc_mask"])}
    out = model(missing)
    filled = {**batch, "desc": torch.sigmoid(out["desc_logits"]), "desc_mask": torch.ones_like(batch["desc_mask"])}
    torch.testing.assert_close(model(filled)["logits"], out["logits"])
    # the training loss is finite with nothing observed (desc / dva terms vanish)
    model.train()
    out = model(missing)
    loss, parts = model.loss(missing, out, TrainContext(epoch=3, n_epochs=4))
    assert torch.isfinite(loss) and parts["desc"] == 0.0 and parts["dva"] == 0.0 and parts["cdi"] == 0.0
    loss.backward()


def test_desc_source_options():
    batch = _batch()
    other = {**batch, "desc": 1.0 - batch["desc"], "desc_mask": torch.ones_like(batch["desc_mask"])}
    model = _build(desc_source="predicted_test").eval()
    torch.testing.assert_close(model(batch)["logits"], model(other)["logits"])  # test time: always â
    model.train()
    torch.manual_seed(1)
    a = model(batch)["logits"]
    torch.manual_seed(1)
    assert not torch.allclose(a, model(other)["logits"])  # training: observed scores
    model = _build(desc_source="predicted").eval()
    torch.testing.assert_close(model(batch)["logits"], model(other)["logits"])
    with pytest.raises(ValueError, match="desc_source"):
        _build(desc_source="oracle")
    with pytest.raises(ValueError, match="dam_mode"):
        _build(dam_mode="film")


def test_cdi_warmup_and_ema_state():
    model = _build(cdi_warmup_epochs=2, cdi_mode="relu_neg")
    batch = _batch()
    for epoch, active in [(0, False), (1, False), (2, True)]:
        out = model(batch)
        _, parts = model.loss(batch, out, TrainContext(epoch=epoch, n_epochs=3))
        assert ("cdi" in parts) == active
    assert model.cdi_reg.seen.any()
    # EMA buffers travel with the state dict; eval-mode losses do not update them
    fresh = _build(cdi_mode="relu_neg")
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.cdi_reg.ema, model.cdi_reg.ema)
    model.eval()
    before = model.cdi_reg.ema.clone()
    model.loss(batch, model(batch), TrainContext(epoch=2, n_epochs=3))
    torch.testing.assert_close(model.cdi_reg.ema, before)


def test_training_reduces_the_loss():
    model = _build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = _batch(b=16)
    ctx = TrainContext(epoch=3, n_epochs=4)
    losses = []
    for _ in range(25):
        out = model(batch)
        loss, _ = model.loss(batch, out, ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_defaults_registry_and_cached_features():
    assert method_defaults("semcovnet") == sc.DEFAULTS
    d = sc.DEFAULTS
    assert (d["lambda_dva"], d["lambda_desc"], d["cdi_warmup_epochs"], d["dim"], d["dropout"]) == (
        0.1, 1.0, 2, 256, 0.1)
    assert d["dva_mode"] == "infonce"  # the cosine form collapses (see test_dva_aligns_without_collapse)
    # reports/tables/tuning_choice.json: jittered rare-side resampling without the descriptor pathway
    assert (d["cdi_mode"], d["lambda_cdi"], d["cdi_balance_min"], d["cdi_jitter"]) == ("resample", 1.0, 1.0, 1.0)
    assert (d["use_sdm"], d["use_dam"], d["use_dva"]) == (False, False, False)
    info = _info(input_shape=(20, 2, 2), features_cached=True)
    model = build_method("semcovnet", info, {**TINY, "backbone": "cached", "adapter_channels": 8})
    batch = {**_batch(), "x": torch.randn(12, 20, 2, 2).half()}
    assert model(batch)["logits"].shape == (12, T)
    no_desc = _info(descriptors=[], descriptor_text=[], coverage=np.zeros((T, 0, S)), prevalence=np.zeros(0))
    with pytest.warns(UserWarning, match="no descriptors"):
        model = build_method("semcovnet", no_desc, TINY)
    b = {**_batch(), "desc": torch.zeros(12, 0), "desc_mask": torch.zeros(12, 0)}
    loss, parts = model.loss(b, model(b), TrainContext(epoch=3, n_epochs=4))
    assert set(parts) == {"ce"}


def test_text_initialised_embeddings(monkeypatch):
    calls = []

    def fake_embed(texts, **kwargs):
        calls.append(list(texts))
        vecs = {"hair": [1.0, 0.0, 0.0], "hair strands": [1.0, 0.0, 0.0], "ink": [0.0, 1.0, 0.0]}
        return np.array([vecs[t] for t in texts], dtype=np.float32)

    monkeypatch.setattr(te, "embed_texts", fake_embed)
    info = _info(descriptors=["MONET_hair", "MONET_hair_strands", "MONET_ink"],
                 descriptor_text=["hair", "hair strands", "ink"], coverage=np.full((T, 3, S), 0.5),
                 prevalence=np.full(3, 0.5))
    e1 = sc.init_descriptor_embeddings(info, 32, text_init=True)
    e2 = sc.init_descriptor_embeddings(info, 32, text_init=True)
    assert calls == [["hair", "hair strands", "ink"]] * 2
    torch.testing.assert_close(e1, e2)  # fixed projection seed
    torch.testing.assert_close(e1[0], e1[1])  # same text vector -> same row
    assert abs(torch.nn.functional.cosine_similarity(e1[0], e1[2], dim=0)) < 0.6
    model = build_method("semcovnet", info, {**TINY, "text_init": True, "dim": 32})
    torch.testing.assert_close(model.sdm.embed.detach(), e1)


# --------------------------------------------------------------------------- text embeddings
def test_descriptor_text():
    assert te.descriptor_text(["MONET_gel_water_drop_fluid_dermoscopy_liquid", "MONET_hair", "Wearing_Hat",
                               "has_bill_shape::dagger", "5_o_Clock_Shadow", "skinTone"]) == [
        "gel water drop fluid dermoscopy liquid", "hair", "wearing hat", "has bill shape dagger",
        "5 o clock shadow", "skin tone"]


class _FakeModel:
    def __init__(self):
        self.calls = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        return te.random_unit_vectors([t + "!" for t in texts])


def test_embed_texts_cache_hit(tmp_path, monkeypatch):
    fake = _FakeModel()
    loads = []
    monkeypatch.setattr(te, "_load_model", lambda: loads.append(1) or fake)
    path = tmp_path / "emb.npz"
    first = te.embed_texts(["hair", "ink", "hair"], cache_file=path)
    assert first.shape == (3, 384) and first.dtype == np.float32 and path.exists()
    np.testing.assert_array_equal(first[0], first[2])
    assert len(loads) == 1

    def fail():
        raise AssertionError("the model must not be loaded on a cache hit")

    monkeypatch.setattr(te, "_load_model", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = te.embed_texts(["ink", "hair"], cache_file=path)
    np.testing.assert_array_equal(second, first[[1, 0]])
    # a new text loads the model only for that text and keeps the old entries
    monkeypatch.setattr(te, "_load_model", lambda: fake)
    te.embed_texts(["pen"], cache_file=path)
    with np.load(path) as data:
        assert sorted(data["texts"].tolist()) == ["hair", "ink", "pen"]


def test_embed_texts_fallback_is_deterministic_and_not_cached(tmp_path, monkeypatch):
    def broken():
        raise ImportError("no sentence_transformers")

    monkeypatch.setattr(te, "_load_model", broken)
    path = tmp_path / "emb.npz"
    with pytest.warns(te.TextEmbeddingFallbackWarning, match="random unit vectors"):
        a = te.embed_texts(["hair", "ink"], cache_file=path)
    with pytest.warns(te.TextEmbeddingFallbackWarning):
        b = te.embed_texts(["ink", "hair"], cache_file=path)
    np.testing.assert_array_equal(a, b[[1, 0]])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert not path.exists()
    assert te.embed_texts([], cache_file=path).shape == (0, 384)


def test_embed_texts_real_model_offline(tmp_path, monkeypatch):
    """The bundled model loads and embeds with every network connection refused."""

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", te.TextEmbeddingFallbackWarning)
        emb = te.embed_texts(["hair", "hair strands", "purple pen ink"], cache_file=tmp_path / "e.npz")
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


@pytest.mark.parametrize("token_bias", [False, True])
def test_sdm_feature_equals_mlp_of_pooled_tokens(token_bias):
    torch.manual_seed(0)
    sdm = sc.SemanticDescriptorMap(_info(), 16, text_init=False, token_bias=token_bias)
    if token_bias:
        torch.nn.init.normal_(sdm.bias)
    scores = torch.rand(5, K)
    weights = torch.softmax(torch.randn(5, K), dim=1)
    for w in (None, weights):
        alpha = torch.full((5, K), 1.0 / K) if w is None else w
        tokens = sdm.tokens(scores)  # (B, K, D)
        expected = sdm.mlp((alpha.unsqueeze(-1) * tokens).sum(1))
        torch.testing.assert_close(sdm.feature(scores, w), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sdm.mlp(sdm.pooled(scores, w)), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- DVA and coverage correction
def _aligned_data(n: int = 48, seed: int = 0) -> tuple[DataInfo, dict]:
    """Cached-feature inputs whose descriptor scores are a function of the features."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, 2, 2, generator=g)
    desc = torch.sigmoid(3.0 * x.flatten(1)[:, :K])
    info = _info(input_shape=(20, 2, 2), features_cached=True)
    batch = {"x": x, "y": torch.arange(n) % T, "desc": desc, "desc_mask": torch.ones(n, K),
             "subgroup": torch.arange(n) % S, "index": torch.arange(n)}
    return info, batch


def _train_dva(dva_mode: str, steps: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    info, batch = _aligned_data()
    torch.manual_seed(0)
    hp = {**TINY, "backbone": "cached", "adapter_channels": 8, "dva_mode": dva_mode, "lambda_dva": 1.0,
          "use_cdi_reg": False}
    model = build_method("semcovnet", info, hp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ctx = TrainContext(epoch=0, n_epochs=1)
    for _ in range(steps):
        loss, _ = model.loss(batch, model(batch), ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model.eval()(batch)
    return out["z_v"], out["z_d"]


def test_dva_aligns_without_collapse():
    """InfoNCE (default): z_v stay spread out and each z_v is closest to its own z_d."""
    z_v, z_d = _train_dva("infonce")
    n = len(z_v)
    off = ~torch.eye(n, dtype=torch.bool)
    assert (z_v @ z_v.t())[off].mean() < 0.9  # no collapse onto one vector
    cross = z_v @ z_d.t()
    assert cross.diag().mean() > cross[off].mean() + 0.2  # matched pairs beat mismatched ones


def test_dva_cosine_form_collapses_more_than_infonce():
    """The cosine form can be minimised by a constant; InfoNCE's negatives forbid that."""
    z_cos, _ = _train_dva("cosine")
    z_nce, _ = _train_dva("infonce")
    off = ~torch.eye(len(z_cos), dtype=torch.bool)
    assert (z_cos @ z_cos.t())[off].mean() > (z_nce @ z_nce.t())[off].mean() + 0.2


def _warm_and_corrected_losses(model: sc.SemCovNet, batch: dict):
    """Per-sample CE, the warm-up loss (epoch 0: plain CE, checked) and the corrected loss (epoch 1),
    with dropout off so the CE terms are comparable."""
    model.eval()
    out = model(batch)
    per_ce = torch.nn.functional.cross_entropy(out["logits"], batch["y"], reduction="none")
    loss_warm, parts = model.loss(batch, out, TrainContext(epoch=0, n_epochs=3))
    assert "cdi" not in parts  # warm-up: plain CE
    loss, parts = model.loss(batch, out, TrainContext(epoch=1, n_epochs=3))
    return per_ce, loss_warm, loss, parts


@pytest.mark.parametrize("mode", ["closed_loop", "rare_reweight"])
def test_reweighting_modes_weight_rare_samples_only(mode):
    model = _build(cdi_mode=mode, lambda_cdi=2.0, cdi_warmup_epochs=1)
    batch = {**_batch(), "desc": torch.ones(12, K), "desc_mask": torch.ones(12, K)}
    rare = model.rare_weights.rare[batch["y"], :, batch["subgroup"]].any(dim=1)
    assert rare.any() and (~rare).any()
    per_ce, loss_warm, loss, parts = _warm_and_corrected_losses(model, batch)
    w = model.rare_weights.weights(batch["desc"], batch["desc_mask"], batch["y"], batch["subgroup"], 2.0)
    assert (w[~rare] == 1).all() and (w[rare] > 1).all()
    torch.testing.assert_close(loss - loss_warm, (w * per_ce).mean() - per_ce.mean())
    assert parts["cdi"] == pytest.approx(float((w - 1).mean()), rel=1e-5)


def test_closed_loop_table_moves_at_epoch_end_and_is_saved():
    model = _build(cdi_mode="closed_loop")
    batch = {**_batch(), "desc": torch.ones(12, K), "desc_mask": torch.ones(12, K)}
    before = model.rare_weights.table.clone()
    model.loss(batch, model(batch), TrainContext(epoch=0, n_epochs=3))  # training mode: accumulates
    model.on_epoch_end(TrainContext(epoch=0, n_epochs=3))
    after = model.rare_weights.table
    assert not torch.allclose(before, after)
    assert after[~model.rare_weights.rare].sum() == 0
    fresh = _build(cdi_mode="closed_loop")
    fresh.load_state_dict(model.state_dict())  # resuming keeps the closed-loop weights
    torch.testing.assert_close(fresh.rare_weights.table, after)
    with pytest.raises(ValueError, match="cdi_mode"):
        _build(cdi_mode="levelling")


def test_balance_mode_weights_the_ce_by_the_importance_weights():
    model = _build(cdi_mode="balance", lambda_cdi=1.0, cdi_warmup_epochs=1)
    batch = _batch()
    per_ce, warm, loss, _ = _warm_and_corrected_losses(model, batch)
    w = model.balance_weights.weights(batch["desc"], batch["desc_mask"], batch["y"], batch["subgroup"], 1.0)
    assert w.std() > 0.05 and w.mean().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(loss - warm, (w * per_ce).mean() - per_ce.mean())


def test_adjust_mode_trains_on_adjusted_logits_and_predicts_raw():
    model = _build(cdi_mode="adjust", lambda_cdi=1.0, cdi_warmup_epochs=0)
    batch = _batch()
    model.eval()
    out = model(batch)
    a = model.concept_adjust.offsets(batch["desc"], batch["desc_mask"], batch["subgroup"])
    assert a.shape == (12, T) and a.abs().max() > 0.1
    loss, _ = model.loss(batch, out, TrainContext(epoch=0, n_epochs=3))
    ce_part = torch.nn.functional.cross_entropy(out["logits"] + a, batch["y"])
    no_corr = _build(use_cdi_reg=False)
    no_corr.load_state_dict(model.state_dict(), strict=False)
    base, _ = no_corr.loss(batch, out, TrainContext(epoch=0, n_epochs=3))
    plain_ce = torch.nn.functional.cross_entropy(out["logits"], batch["y"])
    torch.testing.assert_close(loss - ce_part, base - plain_ce)  # only the CE term changed
    torch.testing.assert_close(model(batch)["logits"], out["logits"])  # prediction: the raw logits


def test_balance_hard_membership_needs_presence_rates():
    with pytest.raises(ValueError, match="presence"):
        _build(cdi_mode="balance", cdi_balance_membership="hard")
    with pytest.raises(ValueError, match="cdi_balance_membership"):
        _build(cdi_mode="balance", cdi_balance_membership="fuzzy")
    torch.manual_seed(0)
    info = _info(presence=np.full((T, K, S), 0.3))
    model = build_method("semcovnet", info, {**TINY, "cdi_mode": "balance", "cdi_balance_membership": "hard"})
    assert model.balance_weights.hard


def test_resample_mode_draws_by_the_balance_ratio_and_keeps_the_plain_ce():
    """Hand-computed: class 0, subgroup 0 with p = (0.1, 0.5, 0.9, 0.5), so r = mean p = 0.5; scores
    z = (1, 0, 1, 0.5) give Π_k [z r/p + (1−z)(1−r)/(1−p)] = 5 · 1 · (5/9) · 1 = 25/9."""
    from types import SimpleNamespace

    coverage = np.full((T, K, S), 0.5)
    coverage[0, :, 0] = [0.1, 0.5, 0.9, 0.5]
    torch.manual_seed(0)
    model = build_method("semcovnet", _info(coverage=coverage),
                         {**TINY, "cdi_mode": "resample", "lambda_cdi": 1.0, "cdi_warmup_epochs": 1})
    split = SimpleNamespace(y=torch.tensor([0, 1]), subgroup=torch.tensor([0, 0]),
                            desc=torch.tensor([[1.0, 0.0, 1.0, 0.5], [1.0, 0.0, 1.0, 0.5]]),
                            desc_mask=torch.ones(2, K))
    assert model.sampling(TrainContext(epoch=0, n_epochs=3)) == "instance"  # warm-up: plain draws
    assert model.sampling(TrainContext(epoch=1, n_epochs=3)) == "weighted"
    torch.testing.assert_close(model.sample_weights(split), torch.tensor([25 / 9, 1.0]))
    backbone = _build(cdi_mode="resample", cdi_warmup_epochs=1, use_sdm=False, use_dam=False, use_dva=False)
    per_ce, warm, loss, _ = _warm_and_corrected_losses(backbone, _batch())
    torch.testing.assert_close(loss, per_ce.mean())  # the draws do the balancing: the loss is the plain CE


def test_jitter_moves_only_rare_samples_by_a_within_class_residual():
    """Hand-computed: class 0 (rows 0, 1) has batch mean (2, 0), so its residuals are (−1, 0) and
    (+1, 0); class 1 (rows 2, 3) has mean (0, 3) and residuals (0, −1), (0, +1). Only row 0 is rarer
    than balanced (ratio 25/9 > 1, as in the resample test); row 1's concepts are commoner than
    balanced (ratio 0.31, floored to 1) and class 1's scores equal their rates (ratio 1). So only row 0
    moves, by α times one of those four residuals; the other rows are returned unchanged."""
    coverage = np.full((T, K, S), 0.5)
    coverage[0, :, 0] = [0.1, 0.5, 0.9, 0.5]
    torch.manual_seed(0)
    model = build_method("semcovnet", _info(coverage=coverage),
                         {**TINY, "cdi_mode": "resample", "cdi_jitter": 0.5, "cdi_warmup_epochs": 1})
    common = [0.5, 0.5, 0.5, 0.5]
    batch = {"y": torch.tensor([0, 0, 1, 1]), "subgroup": torch.zeros(4, dtype=torch.long),
             "desc": torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 0.5, 1.0, 0.5], common, common]), "desc_mask": torch.ones(4, K)}
    pooled = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    residuals = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    moves = set()
    for _ in range(40):
        shift = model._jitter(pooled, batch) - pooled
        assert torch.equal(shift[1:], torch.zeros(3, 2))
        match = (residuals * 0.5 - shift[0]).abs().sum(1) < 1e-6
        assert match.sum() == 1
        moves.add(int(match.nonzero()))
    assert moves == {0, 1, 2, 3}  # the donor is drawn from every class with >= 2 samples
    lone = {**batch, "y": torch.tensor([0, 1, 2, 2])}  # only class 2 has two samples: rows 2, 3 donate
    shift = model._jitter(pooled, lone)[0] - pooled[0]
    assert any(torch.allclose(shift, r) for r in (torch.tensor([0.0, -0.5]), torch.tensor([0.0, 0.5])))


def test_jitter_acts_only_in_training_after_the_warm_up():
    jit = _build(cdi_mode="resample", cdi_jitter=1.0, cdi_warmup_epochs=1, use_sdm=False, use_dam=False,
                 use_dva=False, dropout=0.0)
    plain = _build(cdi_mode="resample", cdi_jitter=0.0, cdi_warmup_epochs=1, use_sdm=False, use_dam=False,
                   use_dva=False, dropout=0.0)
    plain.load_state_dict(jit.state_dict())
    batch = _batch()
    for model in (jit, plain):
        model.eval()  # BatchNorm's running statistics, so only the jitter can differ
    jit.on_epoch_start(TrainContext(epoch=0, n_epochs=3))  # warm-up: no jitter
    torch.testing.assert_close(jit(batch)["logits"], plain(batch)["logits"])
    jit.on_epoch_start(TrainContext(epoch=1, n_epochs=3))
    torch.testing.assert_close(jit(batch)["logits"], plain(batch)["logits"])  # evaluation: no jitter
    jit.train()
    jit.encoder.backbone.eval()  # only the jitter differs from the plain model's forward
    plain.train()
    plain.encoder.backbone.eval()
    assert not torch.allclose(jit(batch)["logits"], plain(batch)["logits"])
    no_scores = {k: v for k, v in batch.items() if k not in ("desc", "desc_mask")}
    torch.testing.assert_close(jit(no_scores)["logits"], plain(no_scores)["logits"])  # no scores, no rare side


def test_jitter_acts_only_with_a_balancing_mode_and_a_non_negative_size():
    assert _build(cdi_mode="squared", cdi_jitter=1.0).jitter == 0.0  # no balancing ratio, no rare side
    assert _build(cdi_mode="balance", cdi_jitter=1.0).jitter == 1.0
    with pytest.raises(ValueError, match="cdi_jitter"):
        _build(cdi_mode="resample", cdi_jitter=-0.5)
