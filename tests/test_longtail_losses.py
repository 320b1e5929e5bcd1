"""Long-tail baseline losses against their formulas, with expected values computed by hand
(NumPy / math) in the test, never by the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from semcov_lib.models.losses import longtail as lt


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ------------------------------------------------------------------ class-balanced


def test_cb_weights_by_hand():
    counts = [100, 10, 1]
    beta = 0.99
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    expected = raw / raw.sum() * 3
    w = lt.class_balanced_weights(counts, beta).numpy()
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w.sum() == pytest.approx(3.0, rel=1e-6)
    assert w[0] < w[1] < w[2]
    # the raw weights themselves: n=1 gives exactly 1, n=10 gives 0.01/(1-0.99^10)
    assert raw[2] == pytest.approx(1.0)
    assert raw[1] == pytest.approx(0.01 / (1 - 0.99**10))


def test_cb_weights_default_beta_and_limits():
    counts = np.array([5000, 50, 5])
    b = 0.9999
    raw = (1 - b) / (1 - b ** counts.astype(float))
    np.testing.assert_allclose(lt.class_balanced_weights(counts).numpy(), raw / raw.sum() * 3, rtol=1e-5)
    # beta = 0: uniform (plain CE); beta = 1: inverse frequency
    np.testing.assert_allclose(lt.class_balanced_weights(counts, 0.0).numpy(), [1, 1, 1], rtol=1e-6)
    inv = 1 / counts
    np.testing.assert_allclose(lt.class_balanced_weights(counts, 1.0).numpy(), inv / inv.sum() * 3, rtol=1e-5)


def test_cb_weights_zero_count_class():
    w = lt.class_balanced_weights([10, 0, 1], 0.9).numpy()
    assert w[1] == 0.0
    raw = np.array([0.1 / (1 - 0.9**10), 0.0, 1.0])
    np.testing.assert_allclose(w, raw / raw.sum() * 3, rtol=1e-6)
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("bad", [[], [[1, 2]], [1, -1], [0, 0], [1, float("nan")]])
def test_cb_weights_bad_counts(bad):
    with pytest.raises(ValueError):
        lt.class_balanced_weights(bad)


def test_cb_weights_bad_beta():
    with pytest.raises(ValueError):
        lt.class_balanced_weights([1, 2], 1.5)


def test_cb_cross_entropy_by_hand():
    z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = np.array([0, 2])
    w = np.array([0.5, 1.0, 1.5])
    ce = -_np_log_softmax(z)[np.arange(2), y]
    expected_mean = (w[y] * ce).sum() / 2
    expected_wmean = (w[y] * ce).sum() / w[y].sum()
    zt, yt, wt = torch.tensor(z), torch.tensor(y), torch.tensor(w)
    assert float(lt.weighted_cross_entropy(zt, yt, wt)) == pytest.approx(expected_mean, rel=1e-9)
    assert float(lt.weighted_cross_entropy(zt, yt, wt, "weighted_mean")) == pytest.approx(expected_wmean, rel=1e-9)
    # weighted_mean matches PyTorch's own weighted CE
    assert float(lt.weighted_cross_entropy(zt, yt, wt, "weighted_mean")) == pytest.approx(
        float(F.cross_entropy(zt, yt, weight=wt)), rel=1e-9
    )
    module = lt.ClassBalancedCE([100, 10, 1], beta=0.99)
    cbw = module.weights.double().numpy()
    assert float(module(zt.float(), yt)) == pytest.approx((cbw[y] * ce).sum() / 2, rel=1e-5)
    with pytest.raises(ValueError):
        lt.weighted_cross_entropy(zt, yt, wt, "median")


# ------------------------------------------------------------------ focal


def test_focal_gamma0_is_ce():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert float(lt.focal_loss(z, y, gamma=0.0)) == pytest.approx(float(F.cross_entropy(z, y)), rel=1e-6)


def test_focal_gamma2_by_hand():
    z = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    y = np.array([0, 2])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    py = p[np.arange(2), y]
    per = -((1 - py) ** 2) * np.log(py)
    got = lt.focal_loss(torch.tensor(z), torch.tensor(y), gamma=2.0, reduction="none").numpy()
    np.testing.assert_allclose(got, per, rtol=1e-9)
    # sample 0: p_y = e/(e+e^2+1)
    p0 = math.e / (math.e + math.e**2 + 1)
    assert got[0] == pytest.approx(-((1 - p0) ** 2) * math.log(p0), rel=1e-9)
    assert float(lt.FocalLoss(2.0)(torch.tensor(z), torch.tensor(y))) == pytest.approx(per.mean(), rel=1e-9)
    alpha = np.array([0.25, 1.0, 2.0])
    got_a = float(lt.FocalLoss(2.0, alpha=alpha)(torch.tensor(z), torch.tensor(y)))
    assert got_a == pytest.approx((alpha[y] * per).mean(), rel=1e-6)
    # focusing: an easy example is down-weighted more than a hard one relative to CE
    assert got[1] / -np.log(py[1]) < got[0] / -np.log(py[0])


def test_focal_negative_gamma():
    with pytest.raises(ValueError):
        lt.FocalLoss(-1.0)


# ------------------------------------------------------------------ LDAM


def test_ldam_margins_by_hand():
    counts = np.array([256.0, 16.0, 1.0])
    d = lt.ldam_margins(counts, 0.5).numpy()
    # n^(-1/4) = 1/4, 1/2, 1 -> scaled so the max is 0.5
    np.testing.assert_allclose(d, [0.125, 0.25, 0.5], rtol=1e-6)
    assert d.max() == pytest.approx(0.5)
    np.testing.assert_allclose(d * counts**0.25, np.full(3, 0.5), rtol=1e-6)


def test_ldam_margins_zero_count():
    d = lt.ldam_margins([81, 0, 16], 0.5).numpy()
    # present classes: 81^(-1/4)=1/3, 16^(-1/4)=1/2 -> 1/3, 1/2 scaled by 0.5/(1/2)
    np.testing.assert_allclose(d, [1 / 3, 0.5, 0.5], rtol=1e-6)


def test_ldam_loss_by_hand():
    z = np.array([[0.2, 0.5, -0.1], [0.9, -0.3, 0.0]])  # cosine-like logits
    y = np.array([1, 0])
    counts = [256, 16, 1]
    delta = np.array([0.125, 0.25, 0.5])
    s = 30.0
    adj = z.copy()
    adj[np.arange(2), y] -= delta[y]
    expected = -_np_log_softmax(s * adj)[np.arange(2), y]
    loss = lt.LDAMLoss(counts, max_margin=0.5, scale=s)
    got = float(loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y)))
    assert got == pytest.approx(expected.mean(), rel=1e-5)
    # with DRW class weights (weighted mean as in the LDAM-DRW code)
    w = np.array([0.2, 0.8, 2.0])
    loss_w = lt.LDAMLoss(counts, 0.5, s, reduction="weighted_mean")
    got_w = float(loss_w(torch.tensor(z, dtype=torch.float32), torch.tensor(y), torch.tensor(w)))
    assert got_w == pytest.approx((w[y] * expected).sum() / w[y].sum(), rel=1e-5)
    # zero margins reduce to scaled CE
    assert float(lt.ldam_loss(torch.tensor(z), torch.tensor(y), torch.zeros(3), 1.0)) == pytest.approx(
        float(F.cross_entropy(torch.tensor(z), torch.tensor(y))), rel=1e-9
    )


# ------------------------------------------------------------------ balanced softmax / LA


def test_balanced_softmax_is_ce_of_shifted_logits():
    z = np.array([[1.0, 0.0, 0.5], [-1.0, 2.0, 0.0]])
    y = np.array([2, 0])
    counts = np.array([100.0, 10.0, 1.0])
    expected = -_np_log_softmax(z + np.log(counts))[np.arange(2), y]
    got = float(lt.BalancedSoftmaxLoss(counts)(torch.tensor(z, dtype=torch.float32), torch.tensor(y)))
    assert got == pytest.approx(expected.mean(), rel=1e-5)


def test_balanced_softmax_zero_count_finite():
    counts = [50, 0, 5]
    z = torch.zeros(3, 3, requires_grad=True)
    y = torch.tensor([0, 2, 2])
    loss = lt.BalancedSoftmaxLoss(counts)(z, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    # the empty class has (almost) no training mass: same loss as a 2-class softmax
    z2 = np.zeros((3, 2)) + np.log([50.0, 5.0])
    expected = -_np_log_softmax(z2)[np.arange(3), [0, 1, 1]]
    assert float(loss.detach()) == pytest.approx(expected.mean(), rel=1e-6)


def test_logit_adjustment_changes_argmax():
    counts = np.array([900.0, 100.0])
    z = torch.tensor([[1.0, 0.0]])  # raw argmax: class 0 (head)
    log_pi = lt.log_class_prior(counts)
    np.testing.assert_allclose(log_pi.numpy(), np.log([0.9, 0.1]), rtol=1e-6)
    adj = lt.logit_adjusted(z, log_pi, tau=1.0)
    # 1 - log 0.9 = 1.105 vs 0 - log 0.1 = 2.303 -> tail class wins
    np.testing.assert_allclose(adj.numpy(), [[1 - math.log(0.9), -math.log(0.1)]], rtol=1e-6)
    assert int(z.argmax(1)) == 0 and int(adj.argmax(1)) == 1
    assert torch.equal(lt.logit_adjusted(z, log_pi, tau=0.0), z)


def test_logit_adjustment_zero_count():
    log_pi = lt.log_class_prior([10, 0, 30]).numpy()
    np.testing.assert_allclose(log_pi, [math.log(0.25), 0.0, math.log(0.75)], rtol=1e-6)
    adj = lt.logit_adjusted(torch.zeros(1, 3), torch.tensor(log_pi))
    assert torch.isfinite(adj).all() and int(adj.argmax()) == 0


# ------------------------------------------------------------------ GroupDRO


def test_groupdro_moves_toward_high_loss_group():
    dro = lt.GroupDRO(3, eta=0.01)
    per = torch.tensor([1.0, 3.0, 5.0, 5.0], requires_grad=True)  # groups 0: 1, 1: 3, 2: mean 5
    groups = torch.tensor([0, 1, 2, 2])
    robust = dro(per, groups)
    raw = np.array([1 / 3 * math.exp(0.01 * 1), 1 / 3 * math.exp(0.01 * 3), 1 / 3 * math.exp(0.01 * 5)])
    q = raw / raw.sum()
    np.testing.assert_allclose(dro.q.numpy(), q, rtol=1e-6)
    assert float(dro.q.sum()) == pytest.approx(1.0, abs=1e-6)
    assert dro.q[2] > dro.q[1] > dro.q[0]
    assert robust.item() == pytest.approx(q[0] * 1 + q[1] * 3 + q[2] * 5, rel=1e-6)
    robust.backward()
    # gradient flows through the per-sample losses with weight q_g / n_g, not through q
    np.testing.assert_allclose(per.grad.numpy(), [q[0], q[1], q[2] / 2, q[2] / 2], rtol=1e-6)


def test_groupdro_absent_groups():
    dro = lt.GroupDRO(4, eta=0.5, group_counts=[[3, 0], [2, 5]])  # (T=2, S=2) flattened
    np.testing.assert_allclose(dro.q.numpy(), [1 / 3, 0, 1 / 3, 1 / 3], rtol=1e-6)
    per = torch.tensor([2.0, 2.0])
    groups = torch.tensor([3, 3])  # only group 3 present
    robust = dro(per, groups)
    raw = np.array([1 / 3, 0, 1 / 3, 1 / 3 * math.exp(0.5 * 2)])
    q = raw / raw.sum()
    np.testing.assert_allclose(dro.q.numpy(), q, rtol=1e-6)
    assert float(robust) == pytest.approx(q[3] * 2.0, rel=1e-6)  # absent groups contribute 0
    assert dro.q[1] == 0.0
    # no update when asked, empty batch gives 0
    before = dro.q.clone()
    dro(torch.tensor([1.0]), torch.tensor([0]), update=False)
    assert torch.equal(before, dro.q)
    empty = dro(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert float(empty) == 0.0 and torch.equal(before, dro.q)
    with pytest.raises(ValueError):
        dro(torch.tensor([1.0]), torch.tensor([4]))


def test_group_index():
    y = torch.tensor([0, 1, 2])
    s = torch.tensor([1, 0, 1])
    assert lt.group_index(y, s, 2).tolist() == [1, 2, 5]
