"""SSCL, PSCL, ASL/BCE and the cross-modal InfoNCE against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from semcov_lib.models.losses.contrastive import (
    AsymmetricLoss,
    asymmetric_loss,
    class_aware_infonce,
    cosine_alignment,
    multilabel_bce,
    pscl_loss,
    sscl_from_label_features,
    sscl_loss,
)

E = math.exp
LOG = math.log


def val(x) -> float:
    """Python float of a (possibly grad-requiring) scalar tensor."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def t(rows, grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


# ------------------------------------------------------------------------------------- SSCL


def test_sscl_hand_computed_four_features():
    tau = 0.2
    # f1=(1,0) L0, f2=(0,1) L0, f3=(1,0) L1, f4=(3,4)->(0.6,0.8) L1
    feats = t([[1, 0], [0, 1], [1, 0], [3, 4]])
    ids = torch.tensor([0, 0, 1, 1])
    # dot products after normalisation: s12=0 s13=1 s14=.6 s23=0 s24=.8 s34=.6
    l1 = -(0 / tau - LOG(E(0 / tau) + E(1 / tau) + E(0.6 / tau)))
    l2 = -(0 / tau - LOG(E(0 / tau) + E(0 / tau) + E(0.8 / tau)))
    l3 = -(0.6 / tau - LOG(E(1 / tau) + E(0 / tau) + E(0.6 / tau)))
    l4 = -(0.6 / tau - LOG(E(0.6 / tau) + E(0.8 / tau) + E(0.6 / tau)))
    expected = (l1 + l2 + l3 + l4) / 4
    assert val(sscl_loss(feats, ids, tau)) == pytest.approx(expected, rel=1e-9)


def test_sscl_multiple_positives_and_anchor_without_positive():
    tau = 0.2
    # three L0 features, one lone L1 feature (in the contrast set, but not an anchor)
    feats = t([[1, 0], [0, 1], [1, 1], [-1, 0]])
    ids = torch.tensor([0, 0, 0, 1])
    r = 1 / math.sqrt(2)
    s = {(0, 1): 0.0, (0, 2): r, (0, 3): -1.0, (1, 2): r, (1, 3): 0.0, (2, 3): -r}
    sim = lambda i, j: s[(min(i, j), max(i, j))] / tau  # noqa: E731
    losses = []
    for i in range(3):
        others = [a for a in range(4) if a != i]
        log_den = LOG(sum(E(sim(i, a)) for a in others))
        pos = [p for p in range(3) if p != i]
        losses.append(-sum(sim(i, p) - log_den for p in pos) / len(pos))
    expected = sum(losses) / 3
    assert val(sscl_loss(feats, ids, tau)) == pytest.approx(expected, rel=1e-9)


def test_sscl_no_positives_is_grad_safe_zero():
    feats = t([[1, 0], [0, 1], [1, 1]], grad=True)
    loss = sscl_loss(feats, torch.tensor([0, 1, 2]))
    assert val(loss) == 0.0
    loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats))
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = sscl_loss(empty, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert val(loss) == 0.0


def test_sscl_zero_vectors_no_nan():
    tau = 0.2
    feats = t([[1, 0], [0, 0], [0, 1]], grad=True)  # zero vector has similarity 0 with all
    loss = sscl_loss(feats, torch.tensor([0, 0, 1]), tau)
    # anchors 1 and 2 (label 0): positive sim 0, contrast {0, 0} -> -(0 - log 2) each
    assert val(loss) == pytest.approx(LOG(2.0), rel=1e-9)
    loss.backward()
    assert torch.isfinite(feats.grad).all()


def test_sscl_from_label_features_matches_flattened():
    torch.manual_seed(0)
    feats = torch.randn(3, 2, 4, dtype=torch.float64)
    bank = torch.randn(3, 2, 4, dtype=torch.float64)
    y = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.float64)
    rows, ids = [], []
    for src in (feats, bank):
        for b in range(3):
            for k in range(2):
                if y[b, k] > 0:
                    rows.append(src[b, k])
                    ids.append(k)
    expected = sscl_loss(torch.stack(rows), torch.tensor(ids), 0.2)
    got = sscl_from_label_features(feats, y, bank, 0.2)
    assert val(got) == pytest.approx(val(expected), rel=1e-12)
    # no activated label at all -> 0, grad-safe
    f = feats.clone().requires_grad_(True)
    loss = sscl_from_label_features(f, torch.zeros(3, 2), bank)
    loss.backward()
    assert val(loss) == 0.0 and torch.equal(f.grad, torch.zeros_like(f))


# ------------------------------------------------------------------------------------- PSCL


def _pscl_inputs():
    protos = t([[1, 0], [0, 1]])
    feats = t([
        [[1, 0], [1, 0]],    # cos(c0, .) = 1,  cos(c1, .) = 0
        [[0, 1], [0, 2]],    # cos = 0, 1
        [[-1, 0], [1, 1]],   # cos = -1, 1/sqrt2
    ])
    return feats, protos


def test_pscl_hand_computed():
    tau = 0.07
    feats, protos = _pscl_inputs()
    y = t([[1, 0], [0, 1], [1, 0]])
    r = 1 / math.sqrt(2)
    l0 = -LOG((E(1 / tau) + E(-1 / tau)) / (E(1 / tau) + E(0) + E(-1 / tau)))
    l1 = -LOG(E(1 / tau) / (E(0) + E(1 / tau) + E(r / tau)))
    expected = (l0 + l1) / 3  # three positives in total
    assert val(pscl_loss(feats, protos, y, temperature=tau)) == pytest.approx(expected, rel=1e-9)


def test_pscl_label_absent_is_skipped():
    tau = 0.07
    feats, protos = _pscl_inputs()
    feats = feats.clone().requires_grad_(True)
    y = t([[1, 0], [0, 0], [1, 0]])  # label 1 absent
    l0 = -LOG((E(1 / tau) + E(-1 / tau)) / (E(1 / tau) + E(0) + E(-1 / tau)))
    loss = pscl_loss(feats, protos, y, temperature=tau)
    assert val(loss) == pytest.approx(l0 / 2, rel=1e-9)
    loss.backward()
    assert torch.equal(feats.grad[:, 1], torch.zeros(3, 2, dtype=torch.float64))
    assert torch.isfinite(feats.grad).all()


def test_pscl_mask_removes_entries_from_denominator():
    tau = 0.07
    feats, protos = _pscl_inputs()
    y = t([[1, 0], [0, 1], [1, 0]])
    mask = t([[1, 1], [0, 1], [1, 1]])  # sample 1 unobserved for label 0
    r = 1 / math.sqrt(2)
    l0 = -LOG((E(1 / tau) + E(-1 / tau)) / (E(1 / tau) + E(-1 / tau)))  # = 0
    l1 = -LOG(E(1 / tau) / (E(0) + E(1 / tau) + E(r / tau)))
    got = pscl_loss(feats, protos, y, mask, temperature=tau)
    assert val(got) == pytest.approx((l0 + l1) / 3, rel=1e-9)


def test_pscl_no_positives_and_zero_vectors():
    feats, protos = _pscl_inputs()
    f = feats.clone().requires_grad_(True)
    loss = pscl_loss(f, protos, torch.zeros(3, 2))
    loss.backward()
    assert val(loss) == 0.0 and torch.equal(f.grad, torch.zeros_like(f))
    # a zero prototype: every cosine is 0 -> l_j = -log(|P_j| / B)
    zero_protos = t([[0, 0], [0, 1]], grad=True)
    y = t([[1, 0], [0, 0], [0, 0]])
    loss = pscl_loss(feats, zero_protos, y)
    assert val(loss) == pytest.approx(-LOG(1 / 3), rel=1e-9)
    loss.backward()
    assert torch.isfinite(zero_protos.grad).all()
    # a zero feature vector
    f2 = feats.clone()
    f2[0, 0] = 0.0
    f2.requires_grad_(True)
    loss = pscl_loss(f2, protos, t([[1, 0], [0, 1], [1, 0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f2.grad).all()


# ------------------------------------------------------------------------------------- ASL / BCE


def _sig(x: float) -> float:
    return 1 / (1 + E(-x))


def test_asl_matches_formula():
    logits = [[2.0, -1.0], [0.1, 3.0]]
    y = [[1, 0], [0, 1]]
    gn, gp, clip = 4.0, 0.0, 0.05
    terms = []
    for i in range(2):
        for j in range(2):
            p = _sig(logits[i][j])
            if y[i][j]:
                terms.append(-((1 - p) ** gp) * LOG(p))
            else:
                pm = max(p - clip, 0.0)
                terms.append(-(pm ** gn) * LOG(1 - pm))
    s, yt = t(logits), t(y)
    assert val(asymmetric_loss(s, yt)) == pytest.approx(sum(terms), rel=1e-9)
    assert val(asymmetric_loss(s, yt, reduction="mean")) == pytest.approx(sum(terms) / 4, rel=1e-9)
    mask = t([[1, 0], [1, 1]])
    masked = terms[0] + terms[2] + terms[3]
    assert val(asymmetric_loss(s, yt, mask, reduction="sum")) == pytest.approx(masked, rel=1e-9)
    assert val(asymmetric_loss(s, yt, mask, reduction="mean")) == pytest.approx(masked / 3, rel=1e-9)
    assert val(AsymmetricLoss()(s, yt)) == pytest.approx(sum(terms), rel=1e-9)
    # a clipped easy negative (p < clip) contributes exactly 0
    assert val(asymmetric_loss(t([[-5.0]]), t([[0.0]]))) == 0.0
    with pytest.raises(ValueError):
        asymmetric_loss(s, yt, reduction="avg")


def test_bce_matches_torch():
    torch.manual_seed(1)
    s, y = torch.randn(4, 3), (torch.rand(4, 3) > 0.5).float()
    assert val(multilabel_bce(s, y)) == pytest.approx(val(F.binary_cross_entropy_with_logits(s, y)), rel=1e-6)
    mask = torch.ones(4, 3)
    mask[0] = 0
    ref = F.binary_cross_entropy_with_logits(s[1:], y[1:], reduction="sum")
    assert val(multilabel_bce(s, y, mask, reduction="sum")) == pytest.approx(val(ref), rel=1e-6)
    assert val(multilabel_bce(s, y, mask)) == pytest.approx(val(ref) / 9, rel=1e-6)


# ------------------------------------------------------------------------------------- InfoNCE


def test_infonce_two_samples_hand_computed():
    tau = 0.1
    v, txt = t([[1, 0], [0, 1]]), t([[1, 0], [0, 1]])
    # different classes: plain InfoNCE, s = [[10, 0], [0, 10]]
    expected = -LOG(E(10) / (E(10) + E(0)))
    assert val(class_aware_infonce(v, txt, torch.tensor([0, 1]), tau)) == pytest.approx(expected, rel=1e-9)
    # same class: both texts are positives
    expected_same = -0.5 * (LOG(E(10) / (E(10) + 1)) + LOG(1 / (E(10) + 1)))
    got = class_aware_infonce(v, txt, torch.tensor([0, 0]), tau)
    assert val(got) == pytest.approx(expected_same, rel=1e-9)


def test_infonce_three_samples_explicit():
    tau = 0.1
    v = t([[1, 0], [0, 1], [1, 1]])
    txt = t([[1, 0], [1, 0], [0, 2]])
    y = [0, 1, 0]
    r = 1 / math.sqrt(2)
    cos = [[1, 1, 0], [0, 0, 1], [r, r, r]]  # cos(v_i, t_j)
    s = [[c / tau for c in row] for row in cos]

    def direction(mat):
        out = []
        for i in range(3):
            lse = LOG(sum(E(x) for x in mat[i]))
            pos = [j for j in range(3) if y[j] == y[i]]
            out.append(-sum(mat[i][p] - lse for p in pos) / len(pos))
        return sum(out) / 3

    v2t = direction(s)
    t2v = direction([[s[j][i] for j in range(3)] for i in range(3)])
    yt = torch.tensor(y)
    assert val(class_aware_infonce(v, txt, yt, tau, symmetric=False)) == pytest.approx(v2t, rel=1e-9)
    assert val(class_aware_infonce(v, txt, yt, tau)) == pytest.approx(0.5 * (v2t + t2v), rel=1e-9)
    # valid mask drops sample 2 -> the two-sample, different-class case
    valid = torch.tensor([True, True, False])
    got = class_aware_infonce(v, txt, yt, tau, valid=valid, symmetric=False)
    exp = 0.5 * (-LOG(E(10) / (E(10) + E(10))) - LOG(E(0) / (E(0) + E(0))))
    assert val(got) == pytest.approx(exp, rel=1e-9)


def test_infonce_empty_and_zero_vectors():
    v = t([[1, 0], [0, 0]], grad=True)
    txt = t([[0, 0], [0, 1]], grad=True)
    loss = class_aware_infonce(v, txt, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v.grad).all() and torch.isfinite(txt.grad).all()
    v.grad = None
    loss = class_aware_infonce(v, txt, torch.tensor([0, 1]), valid=torch.tensor([False, False]))
    loss.backward()
    assert val(loss) == 0.0 and torch.equal(v.grad, torch.zeros_like(v))


def test_cosine_alignment():
    v, txt = t([[1, 0], [0, 1], [1, 0]]), t([[1, 0], [1, 0], [0, 0]])
    assert val(cosine_alignment(v, txt)) == pytest.approx((0 + 1 + 1) / 3)
    assert val(cosine_alignment(v, txt, valid=torch.tensor([True, True, False]))) == pytest.approx(0.5)
