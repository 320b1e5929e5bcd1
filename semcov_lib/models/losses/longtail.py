"""Long-tail and group-robustness baseline losses (docs/METHODS.md, section "Baselines").

Every loss here is a small function plus, where it holds state (class counts, group
weights), an ``nn.Module`` wrapper whose per-class tensors are buffers, so they follow
``.to(device)`` and are saved in checkpoints. Notation: ``logits`` z is (B, T), ``targets`` y
is (B,) long, ``counts`` n is the (T,) number of training images per class.

Classes with no training image (n_y = 0) are allowed everywhere; each function documents
what it does with them. They never occur as training targets, so the choice only has to keep
the other classes' numbers right and every value finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

REDUCTIONS = ("mean", "weighted_mean", "sum", "none")


def _counts_array(counts: ArrayLike, what: str = "class counts") -> np.ndarray:
    """Validate counts as a 1-D float64 array of finite, non-negative numbers."""
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu().numpy()
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what}: counts must be finite and >= 0, got {arr.tolist()}")
    if not np.any(arr > 0):
        raise ValueError(f"{what}: every count is 0, got {arr.tolist()}")
    return arr


def _reduce(per_sample: torch.Tensor, weights: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Reduce per-sample losses ℓ_i with optional per-sample weights w_i.

    ``mean``: Σ w_i ℓ_i / B; ``weighted_mean``: Σ w_i ℓ_i / Σ w_i (what
    ``F.cross_entropy(weight=...)`` does); ``sum``: Σ w_i ℓ_i; ``none``: w_i ℓ_i.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    weighted = per_sample if weights is None else per_sample * weights
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    if reduction == "weighted_mean" and weights is not None:
        return weighted.sum() / weights.sum().clamp_min(torch.finfo(weighted.dtype).tiny)
    if per_sample.numel() == 0:
        return per_sample.sum()  # 0 with a grad_fn instead of NaN for an empty batch
    return weighted.mean()


# --------------------------------------------------------------------------- class-balanced


def class_balanced_weights(counts: ArrayLike, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights of Cui et al. (2019), from the "effective number" of samples; float32 (T,).

    Classes with n_y = 0 get weight 0: they never appear as targets, and an infinite weight would
    only break the normalisation.
    """
    n = _counts_array(counts)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"class-balanced beta must be in [0, 1], got {beta}")
    present = n > 0
    raw = np.zeros_like(n)
    if beta == 1.0:  # the limit of the formula: inverse class frequency 1/n_y
        raw[present] = 1.0 / n[present]
    elif beta == 0.0:  # w = 1 on present classes: plain CE
        raw[present] = 1.0
    else:
        # w_y = (1 − β) / (1 − β^{n_y}), with 1 − β^n = −expm1(n·log β) for precision
        effective = -np.expm1(n[present] * math.log(beta))
        raw[present] = (1.0 - beta) / effective
    w = raw * (len(n) / raw.sum())  # Σ_y w_y = T, absent classes included
    return torch.as_tensor(w, dtype=torch.float32)


def weighted_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy −w_y log softmax(z)_y with per-class weights w (None: plain CE).

    ``reduction="mean"`` divides Σ_i w_{y_i} ℓ_i by the batch size (the class-balanced loss
    paper, where Σ w = T sets the loss scale); ``"weighted_mean"`` divides by Σ_i w_{y_i}
    (PyTorch's ``F.cross_entropy(weight=...)``, used by the LDAM-DRW code).
    """
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    weights = None if class_weights is None else class_weights.to(per_sample.dtype)[targets]
    return _reduce(per_sample, weights, reduction)


class ClassBalancedCE(nn.Module):
    """Class-balanced cross-entropy: mean_i w_{y_i}·CE(z_i, y_i), w from
    :func:`class_balanced_weights` (β = 0.9999, Σ w = T)."""

    def __init__(self, counts: ArrayLike, beta: float = 0.9999, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.beta = float(beta)
        self.reduction = reduction
        self.register_buffer("weights", class_balanced_weights(counts, beta))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy(logits, targets, self.weights, self.reduction)


# --------------------------------------------------------------------------- focal


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss (Lin et al., 2017): −α_y (1 − p_y)^γ log p_y, p = softmax(z).

    γ = 0 and α = None give plain cross-entropy. ``alpha`` is an optional (T,) per-class
    weight; ``reduction`` as in :func:`weighted_cross_entropy`.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    log_p = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    p = log_p.exp()
    modulator = (1.0 - p).clamp_min(0.0).pow(gamma) if gamma != 0 else torch.ones_like(p)
    per_sample = -modulator * log_p
    weights = None if alpha is None else alpha.to(per_sample.dtype)[targets]
    return _reduce(per_sample, weights, reduction)


class FocalLoss(nn.Module):
    """:func:`focal_loss` as a module; ``alpha`` (T,) is kept as a buffer when given."""

    def __init__(self, gamma: float = 2.0, alpha: ArrayLike | None = None, reduction: str = "mean"):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.reduction = reduction
        alpha_t = None if alpha is None else torch.as_tensor(np.asarray(alpha, dtype=np.float32))
        self.register_buffer("alpha", alpha_t)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.gamma, self.alpha, self.reduction)


# --------------------------------------------------------------------------- LDAM


def ldam_margins(counts: ArrayLike, max_margin: float = 0.5) -> torch.Tensor:
    """Label-distribution-aware margins (Cao et al., 2019): Δ_j = C·n_j^(−1/4), C such that
    max_j Δ_j = ``max_margin`` over the classes with n_j > 0.

    A class with n_j = 0 gets ``max_margin`` (the margin of the rarest possible class); it
    never appears as a target, so the value only needs to be finite.
    """
    n = _counts_array(counts)
    if max_margin < 0:
        raise ValueError(f"LDAM max margin must be >= 0, got {max_margin}")
    present = n > 0
    delta = np.full_like(n, float(max_margin))
    raw = n[present] ** -0.25
    delta[present] = raw * (max_margin / raw.max())
    return torch.as_tensor(delta, dtype=torch.float32)


def ldam_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    margins: torch.Tensor,
    scale: float = 30.0,
    class_weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """LDAM loss CE(s·(z − Δ_y e_y), y): the target logit is lowered by its class margin
    before scaling by s. In the LDAM paper z are cosine similarities (normalised features and
    weights), which is why s = 30. ``class_weights`` gives deferred re-weighting (DRW).
    """
    shift = torch.zeros_like(logits).scatter(1, targets[:, None], margins.to(logits.dtype)[targets][:, None])
    return weighted_cross_entropy(scale * (logits - shift), targets, class_weights, reduction)


class LDAMLoss(nn.Module):
    """:func:`ldam_loss` with the margins of :func:`ldam_margins` stored as a buffer.

    Deferred re-weighting is a per-call choice: pass ``class_weights`` (e.g. class-balanced
    weights) in the last phase of training, ``None`` before it; the method decides when.
    """

    def __init__(self, counts: ArrayLike, max_margin: float = 0.5, scale: float = 30.0, reduction: str = "mean"):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"LDAM scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.reduction = reduction
        self.register_buffer("margins", ldam_margins(counts, max_margin))

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return ldam_loss(logits, targets, self.margins, self.scale, class_weights, self.reduction)


# --------------------------------------------------------------------------- prior-based


def log_class_counts(counts: ArrayLike, zero_count: float = 1e-8) -> torch.Tensor:
    """log n_j as a float32 (T,) tensor; a class with n_j = 0 gets log(``zero_count``).

    For the balanced softmax the faithful value is log 0 = −∞ (the class has no training
    mass); a large negative finite value keeps every logit and gradient finite.
    """
    n = _counts_array(counts)
    if zero_count <= 0:
        raise ValueError(f"zero_count must be > 0, got {zero_count}")
    return torch.as_tensor(np.log(np.where(n > 0, n, zero_count)), dtype=torch.float32)


def balanced_softmax_loss(
    logits: torch.Tensor, targets: torch.Tensor, log_counts: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Balanced softmax (Ren et al., 2020): CE(z + log n, y) during training; the raw z are
    used at test time. ``log_counts`` from :func:`log_class_counts`."""
    return weighted_cross_entropy(logits + log_counts.to(logits.dtype), targets, None, reduction)


class BalancedSoftmaxLoss(nn.Module):
    """:func:`balanced_softmax_loss` with log n stored as a buffer."""

    def __init__(self, counts: ArrayLike, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction
        self.register_buffer("log_counts", log_class_counts(counts))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return balanced_softmax_loss(logits, targets, self.log_counts, self.reduction)


def log_class_prior(counts: ArrayLike) -> torch.Tensor:
    """log π_j with π_j = n_j / Σ n for classes with n_j > 0, and 0 (i.e. π = 1, no
    adjustment) for classes with n_j = 0 (see :func:`logit_adjusted`). float32 (T,)."""
    n = _counts_array(counts)
    log_pi = np.zeros_like(n)
    present = n > 0
    log_pi[present] = np.log(n[present] / n.sum())
    return torch.as_tensor(log_pi, dtype=torch.float32)


def logit_adjusted(logits: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al., 2021): z − τ·log π; predict the argmax.

    ``log_prior`` from :func:`log_class_prior`. The faithful log π = −∞ for a class without
    training images would make it win every argmax, so such a class is left unadjusted
    (log π := 0), which ranks it below every observed class of equal raw logit.
    """
    return logits - tau * log_prior.to(logits.dtype)


# --------------------------------------------------------------------------- GroupDRO


def group_index(targets: torch.Tensor, subgroups: torch.Tensor, n_subgroups: int) -> torch.Tensor:
    """Group id g = y·S + s for groups defined as (class, subgroup)."""
    return targets.long() * int(n_subgroups) + subgroups.long()


class GroupDRO(nn.Module):
    """Online GroupDRO (Sagawa et al., 2020) with exponentiated-gradient group weights q (a buffer).

    q starts uniform over the groups with a non-zero training count (``group_counts``; all groups
    when it is None); groups with no training samples start at q = 0 and stay there.
    """

    def __init__(self, n_groups: int, eta: float = 0.01, group_counts: ArrayLike | None = None):
        super().__init__()
        if n_groups < 1:
            raise ValueError(f"GroupDRO needs at least one group, got {n_groups}")
        if eta < 0:
            raise ValueError(f"GroupDRO eta must be >= 0, got {eta}")
        self.n_groups = int(n_groups)
        self.eta = float(eta)
        if group_counts is None:
            active = np.ones(n_groups, dtype=np.float64)
        else:
            counts = _counts_array(np.asarray(group_counts, dtype=np.float64).reshape(-1), "group counts")
            if counts.size != n_groups:
                raise ValueError(f"group counts: expected {n_groups} values, got {counts.size}")
            active = (counts > 0).astype(np.float64)
        self.register_buffer("q", torch.as_tensor(active / active.sum(), dtype=torch.float32))

    def group_losses(
        self, per_sample: torch.Tensor, groups: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group mean losses (n_groups,) (0 where absent) and the boolean present mask."""
        if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= self.n_groups):
            raise ValueError(f"group ids must lie in [0, {self.n_groups}), got {groups.unique().tolist()}")
        sums = torch.zeros(self.n_groups, dtype=per_sample.dtype, device=per_sample.device)
        sums = sums.index_add(0, groups, per_sample)
        sizes = torch.bincount(groups, minlength=self.n_groups).to(per_sample.dtype)
        present = sizes > 0
        return sums / sizes.clamp_min(1.0), present

    def forward(self, per_sample: torch.Tensor, groups: torch.Tensor, update: bool = True) -> torch.Tensor:
        """Robust loss Σ_{g present} q_g·ℓ_g; with ``update`` the weights q move first."""
        losses, present = self.group_losses(per_sample, groups.long())  # ℓ_g (n_groups,)
        if update and bool(present.any()):
            # q_g ← q_g·exp(η ℓ_g) for the groups present (absent ones keep their q), then q ← q / Σ q
            with torch.no_grad():
                step = torch.where(present, self.eta * losses.detach().float(), torch.zeros_like(self.q))
                q = self.q * torch.exp(step - step.max())  # shift for overflow safety; cancels
                self.q.copy_(q / q.sum())
        q = self.q.detach().to(losses.dtype)  # the gradient flows through ℓ_g, never through q
        return (q * losses * present.to(losses.dtype)).sum()


__all__ = [
    "BalancedSoftmaxLoss",
    "ClassBalancedCE",
    "FocalLoss",
    "GroupDRO",
    "LDAMLoss",
    "balanced_softmax_loss",
    "class_balanced_weights",
    "focal_loss",
    "group_index",
    "ldam_loss",
    "ldam_margins",
    "log_class_counts",
    "log_class_prior",
    "logit_adjusted",
    "weighted_cross_entropy",
]
