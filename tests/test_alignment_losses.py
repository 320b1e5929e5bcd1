"""DVA loss, coverage-aware DVA weights, the CDI regulariser and the coverage-balancing corrections on tiny
hand-computed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semcov_lib.models.losses.alignment import (
    CDIRegularizer,
    ConceptLogitAdjustment,
    CoverageBalancingWeights,
    RareSCGWeights,
    dva_loss,
    dva_sample_weights,
    dva_weight_table,
    pearson,
    scg_minibatch_loss,
)

NAN = float("nan")


# --------------------------------------------------------------------------- DVA loss
def test_dva_cosine_hand_computed():
    z_v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_d = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    # cos = [1, 0] -> 1 - cos = [0, 1]
    assert dva_loss(z_v, z_d).item() == pytest.approx(0.5)
    assert dva_loss(z_v, z_d, weights=torch.tensor([1.5, 0.5])).item() == pytest.approx(0.25)
    # only the second sample included: mean over n = 1
    assert dva_loss(z_v, z_d, include=torch.tensor([False, True])).item() == pytest.approx(1.0)


def test_dva_zero_vectors_and_empty_batch_are_finite():
    z_v = torch.zeros(3, 4, requires_grad=True)
    z_d = torch.randn(3, 4, requires_grad=True)
    loss = dva_loss(z_v, z_d)
    assert loss.item() == pytest.approx(1.0)  # cos(0, z) = 0
    loss.backward()
    assert torch.isfinite(z_v.grad).all() and torch.isfinite(z_d.grad).all()

    z_v2 = torch.randn(3, 4, requires_grad=True)
    for mode in ("cosine", "infonce"):
        empty = dva_loss(z_v2, z_d, mode=mode, include=torch.zeros(3, dtype=torch.bool))
        assert empty.item() == 0.0
        empty.backward()
        assert torch.isfinite(z_v2.grad).all()


def test_dva_infonce_hand_computed():
    z = torch.eye(2)
    tau = 0.1
    # logits = I / tau; each row's CE = log(1 + exp(-1/tau)); symmetric -> same
    expected = math.log(1 + math.exp(-1 / tau))
    assert dva_loss(z, z, mode="infonce", tau=tau).item() == pytest.approx(expected, abs=1e-7)
    # swapped pairs: positives have cos 0, negatives cos 1
    swapped = dva_loss(z, z.flip(0), mode="infonce", tau=tau).item()
    assert swapped == pytest.approx(math.log(1 + math.exp(1 / tau)), rel=1e-5)
    # weights scale per sample
    w = torch.tensor([2.0, 0.0])
    assert dva_loss(z, z, weights=w, mode="infonce", tau=tau).item() == pytest.approx(expected, abs=1e-7)
    # a single included sample has no negatives: 0
    assert dva_loss(z, z, mode="infonce", include=torch.tensor([True, False])).item() == 0.0


def test_dva_unknown_mode():
    with pytest.raises(ValueError, match="dva mode"):
        dva_loss(torch.ones(2, 2), torch.ones(2, 2), mode="mse")


# --------------------------------------------------------------------------- DVA weights
def _weight_inputs():
    coverage = torch.tensor([[[0.0], [0.75]]])  # (T=1, K=2, S=1)
    desc = torch.tensor([[0.9, 0.6], [0.1, 0.8], [0.2, 0.3], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # last: all NaN
    y = torch.zeros(4, dtype=torch.long)
    s = torch.zeros(4, dtype=torch.long)
    return desc, mask, y, s, coverage


def test_dva_weights_hand_computed():
    desc, mask, y, s, coverage = _weight_inputs()
    w = dva_sample_weights(desc, mask, y, s, dva_weight_table(coverage, beta=1.0, eps=0.25))
    # per-descriptor (cov + 0.25)^-1 = [4, 1]; sample 0 active {0,1} -> 2.5; sample 1 {1} -> 1;
    # sample 2 none active -> 1; sample 3 nothing observed -> 1; normalised to mean 1
    raw = np.array([2.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(w.numpy(), raw / raw.mean(), rtol=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    assert not w.requires_grad
    # a precomputed per-SCG table gives the same weights
    table = dva_weight_table(coverage, beta=1.0, eps=0.25)
    np.testing.assert_allclose(table[0, :, 0].numpy(), [4.0, 1.0])
    torch.testing.assert_close(dva_sample_weights(desc, mask, y, s, table), w)


def test_dva_weights_beta_zero_nan_and_include():
    desc, mask, y, s, coverage = _weight_inputs()
    np.testing.assert_allclose(dva_sample_weights(desc, mask, y, s, dva_weight_table(coverage, beta=0.0)).numpy(), np.ones(4))
    # NaN coverage counts as 0 (maximally rare)
    nan_cov = torch.tensor([[[NAN], [0.75]]])
    w_nan = dva_sample_weights(desc, mask, y, s, dva_weight_table(nan_cov, beta=1.0, eps=0.25))
    w_zero = dva_sample_weights(desc, mask, y, s, dva_weight_table(coverage, beta=1.0, eps=0.25))
    torch.testing.assert_close(w_nan, w_zero)
    # NaN inside desc is unobserved even when the mask says 1
    desc_nan = desc.clone()
    desc_nan[0, 0] = NAN
    w = dva_sample_weights(desc_nan, mask, y, s, dva_weight_table(coverage, beta=1.0, eps=0.25))
    assert torch.isfinite(w).all()
    # include: excluded samples get 0, the included ones average 1
    inc = torch.tensor([True, True, False, False])
    w = dva_sample_weights(desc, mask, y, s, dva_weight_table(coverage, beta=1.0, eps=0.25), include=inc)
    np.testing.assert_allclose(w.numpy(), np.array([2.5, 1.0, 0, 0]) / 1.75, rtol=1e-6)
    w = dva_sample_weights(desc, mask, y, s, dva_weight_table(coverage, beta=1.0), include=torch.zeros(4, dtype=torch.bool))
    assert (w == 0).all()


# --------------------------------------------------------------------------- CDI regulariser
def test_scg_minibatch_loss_hand_computed():
    per = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor([0, 0, 1])
    s = torch.tensor([0, 0, 1])
    desc = torch.tensor([[1.0, 0.0], [0.5, 1.0], [1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    loss, den = scg_minibatch_loss(per, y, s, desc, mask, n_classes=2, n_subgroups=2)
    assert loss.shape == (2, 2, 2)
    assert loss[0, 0, 0].item() == pytest.approx((1 * 1 + 0.5 * 2) / 1.5)
    assert loss[0, 1, 0].item() == pytest.approx(2.0)
    assert loss[1, 0, 1].item() == pytest.approx(3.0)
    assert den[1, 1, 1].item() == 0.0  # masked score
    assert den[0, :, 1].sum().item() == 0.0  # empty SCGs
    assert den[0, 0, 0].item() == pytest.approx(1.5)


def test_pearson_constant_is_zero():
    x = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor([2.0, 2.0, 2.0], requires_grad=True)
    r = pearson(x, y)
    assert r.item() == 0.0
    r.backward()
    assert torch.isfinite(y.grad).all()
    assert pearson(x, torch.tensor([3.0, 2.0, 1.0])).item() == pytest.approx(-1.0)
    # masked entries are ignored, whatever their values
    xm = torch.tensor([1.0, 2.0, 99.0, 3.0])
    ym = torch.tensor([1.0, 3.0, -50.0, 2.0])
    mask = torch.tensor([True, True, False, True])
    expected = np.corrcoef([1, 2, 3], [1, 3, 2])[0, 1]
    assert pearson(xm, ym, mask).item() == pytest.approx(expected, rel=1e-6)


def _cdi_inputs():
    # T=3 classes, K=1 descriptor, S=1 subgroup: three SCGs with coverage 0.1, 0.4, 0.9
    coverage = np.array([[[0.1]], [[0.4]], [[0.9]]], dtype=np.float32)
    y = torch.tensor([0, 1, 2, 0])
    s = torch.zeros(4, dtype=torch.long)
    desc = torch.tensor([[1.0], [1.0], [1.0], [0.5]])
    mask = torch.ones(4, 1)
    return coverage, y, s, desc, mask


def test_cdi_regulariser_hand_computed_and_ema():
    coverage, y, s, desc, mask = _cdi_inputs()
    reg = CDIRegularizer(coverage, beta=0.9, eps=1e-3, mode="squared")
    ce = torch.tensor([3.0, 2.0, 0.5, 1.5], requires_grad=True)
    pen = reg(ce, y, s, desc, mask)
    l_g = np.array([(3.0 + 0.5 * 1.5) / 1.5, 2.0, 0.5])  # first observation: L~ = l
    x = np.log(np.array([0.1, 0.4, 0.9]) + 1e-3)
    r = np.corrcoef(x, l_g)[0, 1]
    assert pen.item() == pytest.approx(r**2, rel=1e-5)
    assert reg.last_r == pytest.approx(r, rel=1e-5) and reg.last_n == 3
    np.testing.assert_allclose(reg.ema[:, 0, 0].numpy(), l_g, rtol=1e-6)
    pen.backward()
    assert torch.isfinite(ce.grad).all() and ce.grad.abs().sum() > 0

    # second step: L~ = 0.9 EMA + 0.1 l
    ce2 = torch.tensor([1.0, 1.0, 2.0, 1.0])
    pen2 = reg(ce2, y, s, desc, mask)
    l2 = np.array([1.0, 1.0, 2.0])
    smoothed = 0.9 * l_g + 0.1 * l2
    r2 = np.corrcoef(x, smoothed)[0, 1]
    assert pen2.item() == pytest.approx(r2**2, rel=1e-5)
    np.testing.assert_allclose(reg.ema[:, 0, 0].numpy(), smoothed, rtol=1e-6)

    relu = CDIRegularizer(coverage, mode="relu_neg")
    assert relu(ce.detach(), y, s, desc, mask).item() == pytest.approx(max(-r, 0.0), rel=1e-5)
    # update=False leaves the EMA alone
    before = reg.ema.clone()
    reg(ce2 * 5, y, s, desc, mask, update=False)
    torch.testing.assert_close(reg.ema, before)


def test_cdi_regulariser_degenerate_batches():
    coverage, y, s, desc, mask = _cdi_inputs()
    reg = CDIRegularizer(coverage)
    ce = torch.tensor([3.0, 2.0, 0.5, 1.5], requires_grad=True)
    # all descriptors unobserved (all-NaN): no SCG present -> 0, safe backward, EMA untouched
    pen = reg(ce, y, s, torch.zeros_like(desc), torch.zeros_like(mask))
    assert pen.item() == 0.0 and reg.last_n == 0 and math.isnan(reg.last_r)
    pen.backward()
    assert torch.isfinite(ce.grad).all()
    assert not reg.seen.any()
    # NaN scores are unobserved too
    pen = reg(ce, y, s, torch.full_like(desc, NAN), mask)
    assert pen.item() == 0.0
    # only two SCGs present (< 3): 0
    pen = reg(ce[:2], y[:2], s[:2], desc[:2], mask[:2])
    assert pen.item() == 0.0 and reg.last_n == 2
    # SCG with NaN training coverage is skipped
    cov_nan = coverage.copy()
    cov_nan[2] = np.nan
    reg2 = CDIRegularizer(cov_nan)
    assert reg2(ce.detach(), y, s, desc, mask).item() == 0.0 and reg2.last_n == 2
    # equal losses everywhere: zero variance -> 0, finite gradient
    flat = torch.ones(4, requires_grad=True)
    pen = CDIRegularizer(coverage)(flat, y, s, desc, mask)
    assert pen.item() == 0.0
    pen.backward()
    assert torch.isfinite(flat.grad).all()


def test_cdi_regulariser_bad_arguments():
    with pytest.raises(ValueError, match="cdi mode"):
        CDIRegularizer(np.zeros((1, 1, 1)), mode="abs")
    with pytest.raises(ValueError, match="coverage"):
        CDIRegularizer(np.zeros((2, 2)))


# --------------------------------------------------------------------------- rare-side reweighting
def _rare_inputs():
    # six SCGs (T=6, K=1, S=1); lower median of the coverages is 0.15 -> R = {0.05, 0.1}
    coverage = np.array([0.05, 0.1, 0.15, 0.6, 0.8, 0.9], dtype=np.float32).reshape(6, 1, 1)
    y = torch.tensor([0, 1, 3, 0])
    s = torch.zeros(4, dtype=torch.long)
    desc = torch.tensor([[0.9], [0.8], [1.0], [0.2]])  # the last sample has no active descriptor
    mask = torch.ones(4, 1)
    return coverage, y, s, desc, mask


def test_rare_reweight_hand_computed():
    coverage, y, s, desc, mask = _rare_inputs()
    rw = RareSCGWeights(coverage, "rare_reweight", beta=1.0, eps=0.05)
    gain = np.array([0.2 / 0.1, 0.2 / 0.15])  # (median + eps) / (cov + eps), beta = 1
    expected = gain * 2 / gain.sum()  # mean 1 over R
    np.testing.assert_allclose(rw.table[:2, 0, 0].numpy(), expected, rtol=1e-6)
    assert (rw.table[2:] == 0).all()  # at or above the median: no extra weight
    w = rw.weights(desc, mask, y, s, lam=2.0)
    np.testing.assert_allclose(w.numpy(), [1 + 2 * expected[0], 1 + 2 * expected[1], 1.0, 1.0], rtol=1e-6)
    assert (rw.weights(desc, mask, y, s, lam=0.0) == 1).all()
    # unobserved descriptors give weight 1
    assert (rw.weights(desc, torch.zeros_like(mask), y, s, lam=2.0) == 1).all()
    # static: end_epoch changes nothing
    before = rw.table.clone()
    rw.accumulate(torch.ones(4), y, s, desc, mask)
    rw.end_epoch()
    torch.testing.assert_close(rw.table, before)


def test_closed_loop_follows_the_rare_groups_losses():
    coverage, y, s, desc, mask = _rare_inputs()
    # two more SCGs (0.01 rare, 0.95 covered): the lower median stays 0.15, R = {0.05, 0.1, 0.01}
    coverage = np.concatenate([coverage, np.array([0.01, 0.95], dtype=np.float32).reshape(2, 1, 1)])
    rw = RareSCGWeights(coverage, "closed_loop", eta=1.0)
    rare = rw.rare[:, 0, 0].numpy()
    np.testing.assert_array_equal(rare, [True, True, False, False, False, False, True, False])
    np.testing.assert_allclose(rw.table[:, 0, 0].numpy(), rare.astype(float))  # uniform at start
    # one epoch: SCG 0 loss 1 (the last sample joins it with soft weight 0.2 and the same loss),
    # SCG 1 loss 2, SCG 3 (well covered) loss 5; SCG 6 unseen
    ce = torch.tensor([1.0, 2.0, 5.0, 1.0])
    rw.accumulate(ce, y, s, desc, mask)
    rw.end_epoch()
    q = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(rw.table[[0, 1, 6], 0, 0].numpy(), [2 * q[0], 2 * q[1], 1.0], rtol=1e-5)
    assert rw.table[~rw.rare].sum() == 0 and rw.table[rw.rare].sum().item() == pytest.approx(3.0)
    assert rw.weight_sum.sum() == 0  # accumulators reset for the next epoch
    w = rw.weights(desc, mask, y, s, lam=1.0)
    assert w[1] > w[0] > 1.0 and w[2] == 1.0  # the higher-loss rare SCG gets more; covered keeps 1


def test_rare_weights_bad_arguments():
    with pytest.raises(ValueError, match="reweighting mode"):
        RareSCGWeights(np.zeros((1, 1, 1)), "squared")
    with pytest.raises(ValueError, match="cdi mode"):
        CDIRegularizer(np.zeros((1, 1, 1)), mode="closed_loop")


# --------------------------------------------------------------------------- balancing to flat coverage
def _two_concepts() -> np.ndarray:
    """Class 0: concept rates (0.8, 0.2), class 1: (0.2, 0.8); one subgroup; balanced rate 0.5."""
    return np.array([[[0.8], [0.2]], [[0.2], [0.8]]], dtype=np.float32)


def test_balancing_weights_hand_computed():
    bw = CoverageBalancingWeights(_two_concepts(), max_ratio=100.0, hard=True)
    y, s = torch.tensor([0, 0]), torch.zeros(2, dtype=torch.long)
    desc = torch.tensor([[0.9, 0.1], [0.1, 0.9]])  # hard: (1, 0) common concept only, (0, 1) rare only
    ratio = np.array([(0.5 / 0.8) * (0.5 / 0.8), (0.5 / 0.2) * (0.5 / 0.2)])  # r/p present, (1-r)/(1-p) absent
    w = bw.weights(desc, torch.ones(2, 2), y, s, alpha=1.0)
    np.testing.assert_allclose(w.numpy(), ratio / ratio.mean(), rtol=1e-5)
    np.testing.assert_allclose(bw.weights(desc, torch.ones(2, 2), y, s, alpha=0.0).numpy(), [1.0, 1.0])
    # the cap keeps the ratio in [1/2, 2]: 0.39 -> 0.5, 6.25 -> 2
    capped = CoverageBalancingWeights(_two_concepts(), max_ratio=2.0, hard=True).weights(
        desc, torch.ones(2, 2), y, s, alpha=1.0)
    np.testing.assert_allclose(capped.numpy(), np.array([0.5, 2.0]) / np.mean([0.5, 2.0]), rtol=1e-5)
    # min_ratio = 1 (rare side only): 0.39 -> 1, 6.25 kept
    rare_side = CoverageBalancingWeights(_two_concepts(), max_ratio=100.0, hard=True, min_ratio=1.0)
    np.testing.assert_allclose(rare_side.ratio(desc, torch.ones(2, 2), y, s, alpha=1.0).numpy(), [1.0, 6.25],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="min_ratio"):
        CoverageBalancingWeights(_two_concepts(), max_ratio=2.0, min_ratio=3.0)
    # an unobserved descriptor contributes no factor
    w_masked = bw.weights(desc, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), y, s, alpha=1.0)
    r = np.array([0.5 / 0.8, 0.5 / 0.2])
    np.testing.assert_allclose(w_masked.numpy(), r / r.mean(), rtol=1e-5)


def test_balancing_weights_give_the_balanced_concept_rates():
    """Weighted by the importance weights, samples drawn at the natural rates show the balanced ones."""
    rng = np.random.default_rng(0)
    n = 200_000
    y = rng.integers(0, 2, n)
    z = rng.random((n, 2)) < _two_concepts()[y, :, 0]
    bw = CoverageBalancingWeights(_two_concepts(), max_ratio=1e6, hard=True)
    w = bw.weights(torch.from_numpy(z.astype(np.float32)), None, torch.from_numpy(y), torch.zeros(n, dtype=torch.long),
                   alpha=1.0).numpy()
    for c in (0, 1):
        rates = np.average(z[y == c], axis=0, weights=w[y == c])
        np.testing.assert_allclose(rates, [0.5, 0.5], atol=0.01)
        np.testing.assert_allclose(z[y == c].mean(axis=0), _two_concepts()[c, :, 0], atol=0.01)  # unweighted: natural


def test_balancing_weights_soft_scores_and_empty_cells():
    cov = _two_concepts().copy()
    cov[1, :, 0] = np.nan  # class 1 has no training samples: every factor 1
    bw = CoverageBalancingWeights(cov, max_ratio=100.0)
    desc = torch.tensor([[0.5, 0.5], [0.3, 0.7]])
    w = bw.weights(desc, None, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long), alpha=1.0)
    # soft: factor = z r/p + (1 - z)(1 - r)/(1 - p); z = 0.5 gives 0.5 (0.625 + 2.5) per concept
    first = (0.5 * 0.625 + 0.5 * 2.5) ** 2
    np.testing.assert_allclose(w.numpy(), np.array([first, 1.0]) / np.mean([first, 1.0]), rtol=1e-5)


def test_concept_logit_adjustment_matches_bernoulli_likelihood_ratios():
    """exp(a_t) = p_natural(z | t) / p_balanced(z | t), the product of Bernoulli pmfs (SciPy)."""
    from scipy.stats import bernoulli

    cov = np.array([[[0.8], [0.2], [0.6]], [[0.2], [0.7], [0.1]]], dtype=np.float32)  # (T=2, K=3, S=1)
    adj = ConceptLogitAdjustment(cov)
    z = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]])
    a = adj.offsets(torch.tensor(z, dtype=torch.float32), None, torch.zeros(3, dtype=torch.long)).numpy()
    for i in range(3):
        for t in range(2):
            p = cov[t, :, 0]
            r = p.mean()
            expected = np.prod(bernoulli.pmf(z[i], p)) / np.prod(bernoulli.pmf(z[i], r))
            assert a[i, t] == pytest.approx(math.log(expected), rel=1e-5)
    # concepts at the balanced rate carry no adjustment
    flat = ConceptLogitAdjustment(np.full((2, 3, 1), 0.3, dtype=np.float32))
    assert flat.offsets(torch.tensor(z, dtype=torch.float32), None, torch.zeros(3, dtype=torch.long)).abs().max() < 1e-6


def test_balancing_weights_normalise_over_the_whole_ddp_batch(tmp_path):
    """Under torch.distributed the mean weight comes from every process's share (one gloo process here:
    the same weights as without a process group)."""
    import torch.distributed as dist

    bw = CoverageBalancingWeights(_two_concepts(), max_ratio=100.0)
    desc = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    args = (desc, None, torch.tensor([0, 0, 1]), torch.zeros(3, dtype=torch.long), 1.0)
    alone = bw.weights(*args)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.testing.assert_close(bw.weights(*args), alone)
    finally:
        dist.destroy_process_group()
