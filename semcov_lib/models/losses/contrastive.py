"""Contrastive and multi-label losses used by SADCL and CMLTNet (docs/METHODS.md, sections "SADCL" and "CMLTNet").

* :func:`sscl_loss` -- SADCL's sample-to-sample supervised contrastive loss over activated
  label features (SupCon with the *label index* as the class of each feature).
* :func:`pscl_loss` -- SADCL's prototype-to-sample contrastive loss (cosine, per label).
* :func:`asymmetric_loss` / :func:`multilabel_bce` -- multi-label classification losses with
  an optional observation mask and ``"sum"`` / ``"mean"`` reduction.
* :func:`class_aware_infonce` / :func:`cosine_alignment` -- CMLTNet's cross-modal alignment.

Conventions shared by every function here:

* Features are L2-normalised with ``F.normalize(eps=1e-12)``, so a zero vector stays zero and
  has similarity 0 with everything (never NaN). Half-precision inputs (autocast) are upcast to
  float32 first, since temperatures of 0.07-0.2 amplify bf16 rounding.
* When a loss has nothing to average (no anchor with a positive, no label present, an empty
  mask) it returns ``0`` *connected to the graph* (``x.sum() * 0``), so ``backward()`` works and
  yields zero gradients.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_LOG_EPS = 1e-8


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that still depends on ``tensors`` (grad-safe "no terms" value)."""
    total = None
    for t in tensors:
        if t is None:
            continue
        term = t.sum() * 0.0
        total = term if total is None else total + term
    if total is None:  # pragma: no cover - defensive
        return torch.zeros(())
    return total


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dim; half precision (autocast) is computed in float32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=-1, eps=1e-12)


# --------------------------------------------------------------------------------------------
# SADCL: SSCL and PSCL
# --------------------------------------------------------------------------------------------


def sscl_loss(features: torch.Tensor, label_ids: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Sample-to-sample supervised contrastive loss over activated label features.

    ``features`` (M, d): every *activated* label feature (label k of sample b with y_bk = 1),
    from the batch and from the memory bank (the second view), stacked. ``label_ids`` (M,): the
    label index k of each row. For anchor i, positives P(i) = {p != i : label_p = label_i}
    (same label, another sample or the other view) and the contrast set A(i) = {a != i}:

        L_i = -(1/|P(i)|) sum_{p in P(i)} log( exp(x_i.x_p / tau) / sum_{a in A(i)} exp(x_i.x_a / tau) )

    with x L2-normalised. Returns the mean of L_i over anchors with at least one positive, or a
    grad-safe 0 when there is none (including M < 2).
    """
    if features.ndim != 2:
        raise ValueError(f"sscl_loss: features must be (M, d); got shape {tuple(features.shape)}")
    if label_ids.shape != features.shape[:1]:
        raise ValueError(
            f"sscl_loss: label_ids must be ({features.shape[0]},); got shape {tuple(label_ids.shape)}"
        )
    m = features.shape[0]
    if m < 2:
        return _zero_like_graph(features)
    x = _normalize(features)
    sim = x @ x.t() / temperature
    self_mask = torch.eye(m, dtype=torch.bool, device=x.device)
    pos = (label_ids[:, None] == label_ids[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return _zero_like_graph(features)
    # log-softmax over the contrast set A(i) = everything but self
    log_denom = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = sim - log_denom
    pos_sum = (log_prob * pos).sum(1)  # masked entries contribute 0 (self entries are finite)
    per_anchor = -pos_sum[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


def sscl_from_label_features(
    feats: torch.Tensor,
    targets: torch.Tensor,
    bank_feats: torch.Tensor | None = None,
    temperature: float = 0.2,
) -> torch.Tensor:
    """SSCL from label-level features ``feats`` (B, K, d) and binary ``targets`` (B, K).

    ``bank_feats`` (B, K, d) is the memory-bank view of the same samples (optional); its
    activated entries (same ``targets``) join the anchors and the contrast set.
    """
    active = targets > 0.5
    k_idx = torch.arange(feats.shape[1], device=feats.device).expand(feats.shape[0], -1)
    rows = [feats[active]]
    ids = [k_idx[active]]
    if bank_feats is not None:
        rows.append(bank_feats[active])
        ids.append(k_idx[active])
    feats_all = torch.cat(rows, 0)
    if feats_all.shape[0] == 0:
        return _zero_like_graph(feats)
    return sscl_loss(feats_all, torch.cat(ids, 0), temperature) + _zero_like_graph(feats)


def pscl_loss(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Prototype-to-sample contrastive loss (cosine similarity).

    ``features`` (B, K, d) label-level features x_ij, ``prototypes`` (K, d) c_j, ``targets``
    (B, K) binary y_ij, ``mask`` (B, K) optional (0 = unobserved: the entry is neither a
    positive nor in the denominator). For each label j with at least one positive:

        l_j = -log( sum_{i: y_ij=1} exp(cos(c_j, x_ij)/tau) / sum_i exp(cos(c_j, x_ij)/tau) )

    and L = sum_j l_j / (total number of positives). Labels absent from the batch are skipped;
    no positive at all gives a grad-safe 0. Zero vectors have cosine 0 (no NaN).
    """
    if features.ndim != 3:
        raise ValueError(f"pscl_loss: features must be (B, K, d); got shape {tuple(features.shape)}")
    b, k, _ = features.shape
    if prototypes.shape[0] != k or targets.shape != (b, k):
        raise ValueError(
            f"pscl_loss: prototypes {tuple(prototypes.shape)} / targets {tuple(targets.shape)} "
            f"do not match features {tuple(features.shape)}"
        )
    valid = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask > 0.5
    pos = (targets > 0.5) & valid
    n_pos_label = pos.sum(0)  # (K,)
    present = n_pos_label > 0
    if not bool(present.any()):
        return _zero_like_graph(features, prototypes)
    # only labels present in the batch enter the computation (no all -inf columns, no NaN grads)
    feats, protos = features[:, present], prototypes[present]
    pos, valid = pos[:, present], valid[:, present]
    cos = (_normalize(feats) * _normalize(protos)[None]).sum(-1) / temperature  # (B, K_present)
    neg_inf = torch.tensor(float("-inf"), dtype=cos.dtype, device=cos.device)
    log_num = torch.logsumexp(torch.where(pos, cos, neg_inf), dim=0)
    log_den = torch.logsumexp(torch.where(valid, cos, neg_inf), dim=0)
    per_label = -(log_num - log_den)
    return per_label.sum() / n_pos_label.sum() + _zero_like_graph(features, prototypes)


# --------------------------------------------------------------------------------------------
# Multi-label classification losses
# --------------------------------------------------------------------------------------------


def _reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    loss = loss * valid
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp_min(1.0)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none'; got {reduction!r}")


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    reduction: str = "sum",
) -> torch.Tensor:
    """Asymmetric loss (ASL) for multi-label classification.

    With p = sigmoid(s) and the shifted negative probability p_m = max(p - clip, 0):

        L = -[ y (1-p)^gamma_pos log p + (1-y) p_m^gamma_neg log(1 - p_m) ]

    (logs clamped at 1e-8). ``mask`` (same shape, optional) drops unobserved entries.
    ``reduction="sum"`` (the original ASL: a sum over batch and labels, hence the large
    contrastive weights 100/50 in SADCL) or ``"mean"`` (average over observed entries; use the
    small weights 0.1/0.05), or ``"none"``. The focusing weights keep their gradient.
    """
    p = torch.sigmoid(logits)
    y = targets.to(p.dtype)
    p_m = (p - clip).clamp(min=0) if clip and clip > 0 else p
    loss_pos = y * torch.log(p.clamp(min=_LOG_EPS))
    loss_neg = (1 - y) * torch.log((1 - p_m).clamp(min=_LOG_EPS))
    if gamma_pos:
        loss_pos = loss_pos * (1 - p).pow(gamma_pos)
    if gamma_neg:
        loss_neg = loss_neg * p_m.pow(gamma_neg)
    loss = -(loss_pos + loss_neg)
    valid = torch.ones_like(p) if mask is None else mask.to(p.dtype)
    return _reduce(loss, valid, reduction)


def multilabel_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy with logits over observed entries (``mask``), ``"mean"`` by default."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    valid = torch.ones_like(loss) if mask is None else mask.to(loss.dtype)
    return _reduce(loss, valid, reduction)


class AsymmetricLoss(nn.Module):
    """Module wrapper of :func:`asymmetric_loss`."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 reduction: str = "sum"):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.reduction = gamma_neg, gamma_pos, clip, reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return asymmetric_loss(logits, targets, mask, self.gamma_neg, self.gamma_pos, self.clip,
                               self.reduction)


# --------------------------------------------------------------------------------------------
# CMLTNet: cross-modal alignment
# --------------------------------------------------------------------------------------------


def class_aware_infonce(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    valid: torch.Tensor | None = None,
    symmetric: bool = True,
) -> torch.Tensor:
    """Class-aware (supervised) cross-modal InfoNCE.

    Similarities s_ij = cos(v_i, t_j) / tau between image i and text j of the batch. For image i
    the positives are the texts of the same class, P(i) = {j : y_j = y_i} (always containing its
    own text j = i), and

        L_i^{v->t} = -(1/|P(i)|) sum_{p in P(i)} log( exp(s_ip) / sum_j exp(s_ij) ).

    ``symmetric=True`` averages it with the text->image direction (columns). ``valid`` (B,) bool
    drops samples without privileged text (e.g. no observed descriptor) from both roles.
    Fewer than one valid sample gives a grad-safe 0.
    """
    if image_feats.shape[0] != text_feats.shape[0] or labels.shape[0] != image_feats.shape[0]:
        raise ValueError(
            f"class_aware_infonce: batch sizes differ: image {tuple(image_feats.shape)}, "
            f"text {tuple(text_feats.shape)}, labels {tuple(labels.shape)}"
        )
    zero = _zero_like_graph(image_feats, text_feats)
    if valid is not None:
        valid = valid.bool()
        image_feats, text_feats, labels = image_feats[valid], text_feats[valid], labels[valid]
    if image_feats.shape[0] == 0:
        return zero
    sim = _normalize(image_feats) @ _normalize(text_feats).t() / temperature
    pos = (labels[:, None] == labels[None, :]).to(sim.dtype)

    def one_way(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        log_prob = s - torch.logsumexp(s, dim=1, keepdim=True)
        return (-(log_prob * p).sum(1) / p.sum(1)).mean()

    loss = one_way(sim, pos)
    if symmetric:
        loss = 0.5 * (loss + one_way(sim.t(), pos.t()))
    return loss + zero


def cosine_alignment(
    image_feats: torch.Tensor, text_feats: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Paired cosine alignment: mean_i (1 - cos(v_i, t_i)) over ``valid`` samples."""
    zero = _zero_like_graph(image_feats, text_feats)
    if valid is not None:
        valid = valid.bool()
        image_feats, text_feats = image_feats[valid], text_feats[valid]
    if image_feats.shape[0] == 0:
        return zero
    cos = (_normalize(image_feats) * _normalize(text_feats)).sum(-1)
    return (1.0 - cos).mean() + zero


__all__ = [
    "AsymmetricLoss",
    "asymmetric_loss",
    "class_aware_infonce",
    "cosine_alignment",
    "multilabel_bce",
    "pscl_loss",
    "sscl_from_label_features",
    "sscl_loss",
]
