"""SemCovNet's alignment losses (docs/METHODS.md, section "SemCovNet"): DVA loss, CDI regulariser, rare-side weights.

Conventions shared by all of them:

* ``desc`` (B, K) descriptor scores with NaN already replaced by 0 and ``desc_mask`` (B, K)
  1 where observed (the trainer's batch keys); NaN in ``desc`` is also treated as unobserved.
* ``coverage`` (T, K, S) soft training coverage cov_g, NaN where N_{c,s} = 0.
* A descriptor is *active* for a sample when it is observed and its score is >= 0.5
  (``active_threshold``).

Each formula is written at the lines that compute it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DVA_MODES = ("cosine", "infonce")
PENALTY_MODES = ("squared", "relu_neg")  # CDIRegularizer: a penalty on r
REWEIGHT_MODES = ("closed_loop", "rare_reweight")  # RareSCGWeights: per-sample CE weights
BALANCE_MODES = ("balance", "resample", "adjust")  # to balanced coverage: importance weights | draws | logit adjustment
CDI_MODES = PENALTY_MODES + REWEIGHT_MODES + BALANCE_MODES


def _clean_scores(desc: torch.Tensor, desc_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores with NaN → 0 and a float mask that is 0 wherever the score was NaN."""
    desc = desc.float()
    finite = torch.isfinite(desc)
    mask = finite.float() if desc_mask is None else desc_mask.float() * finite.float()
    return torch.where(finite, desc, torch.zeros_like(desc)), mask


def _coverage_tensor(coverage: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Coverage as a float32 (T, K, S) tensor (NaN kept); raise on any other shape."""
    cov = torch.as_tensor(np.asarray(coverage, dtype=np.float32))
    if cov.ndim != 3:
        raise ValueError(f"coverage must be (T, K, S); got shape {tuple(cov.shape)}")
    return cov


def dva_weight_table(coverage: torch.Tensor | np.ndarray, beta: float = 0.5, eps: float = 0.05) -> torch.Tensor:
    """Per-SCG DVA weight (cov + eps)^(-beta), shape (T, K, S); NaN coverage counts as 0 (maximally rare)."""
    cov = torch.as_tensor(np.asarray(coverage, dtype=np.float32)) if isinstance(coverage, np.ndarray) else coverage
    cov = torch.nan_to_num(cov.float(), nan=0.0).clamp_min(0.0)
    return (cov + eps).pow(-beta)  # beta = 0: all ones, i.e. unweighted DVA


def dva_sample_weights(
    desc: torch.Tensor,
    desc_mask: torch.Tensor | None,
    y: torch.Tensor,
    subgroup: torch.Tensor,
    table: torch.Tensor,
    include: torch.Tensor | None = None,
    active_threshold: float = 0.5,
) -> torch.Tensor:
    """Coverage-aware DVA weights (B,), constants with mean 1 over ``include`` (bool (B,), default all).

    ``table`` is the per-SCG weight of :func:`dva_weight_table`; samples outside ``include`` get 0.
    """
    with torch.no_grad():
        b = desc.shape[0]
        inc = torch.ones(b, dtype=torch.bool, device=desc.device) if include is None else include.bool()
        # w_i = mean over active k of table[y_i, k, s_i]; 1 for a sample without an active descriptor
        w = active_scg_mean(table, desc, desc_mask, y, subgroup, active_threshold, default=1.0) * inc
        return w * (inc.sum() / w.sum().clamp_min(1e-12))


def dva_loss(
    z_v: torch.Tensor,
    z_d: torch.Tensor,
    weights: torch.Tensor | None = None,
    mode: str = "cosine",
    tau: float = 0.1,
    include: torch.Tensor | None = None,
    normalized: bool = False,
) -> torch.Tensor:
    """Descriptor-visual alignment loss between paired embeddings (B, P), weighted per sample.

    SemCovNet uses ``"infonce"``: the cosine form has a constant solution (both heads output one
    vector; measured: the loss fell to 3e-4 with mean pairwise cos(z_v) 0.9995), at which the
    coverage weights multiply zeros; InfoNCE's negatives rule that solution out.
    ``include`` (bool (B,)) selects the samples that take part (e.g. those with at least one
    observed descriptor); with none included the loss is a graph-connected 0. Zero vectors
    have cosine 0 (no NaN). ``normalized=True`` skips the L2 normalisation (inputs already
    unit-norm).
    """
    if mode not in DVA_MODES:
        raise ValueError(f"dva mode {mode!r} unknown; choose one of {DVA_MODES}")
    b = z_v.shape[0]
    if include is None:
        n = b
        w = None if weights is None else weights.to(z_v.device, z_v.dtype)
    else:
        inc = include.bool()
        n = int(inc.sum())
        w = inc.to(z_v.dtype) if weights is None else weights.to(z_v.device, z_v.dtype) * inc
    if n == 0 or (mode == "infonce" and n < 2):  # nothing to align: a graph-connected 0
        return (z_v.sum() + z_d.sum()) * 0.0
    zv = z_v if normalized else F.normalize(z_v, dim=-1)
    zd = z_d if normalized else F.normalize(z_d, dim=-1)
    if mode == "cosine":  # sum_i w_i (1 - cos(z_v,i, z_d,i)) / n over the included samples
        per = 1.0 - (zv * zd).sum(dim=-1)
        return (per.sum() if w is None else (w * per).sum()) / n
    # symmetric InfoNCE among the included samples: positives on the diagonal of (n, n) logits
    if w is None:
        w = torch.ones(b, device=z_v.device, dtype=z_v.dtype)
    if include is not None:
        idx = include.bool().nonzero(as_tuple=True)[0]
        zv, zd, w = zv[idx], zd[idx], w[idx]
    logits = zv @ zd.t() / tau
    target = torch.arange(n, device=z_v.device)
    per = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                 + F.cross_entropy(logits.t(), target, reduction="none"))
    return (w * per).sum() / n


def scg_minibatch_loss(
    per_sample: torch.Tensor,
    y: torch.Tensor,
    subgroup: torch.Tensor,
    desc: torch.Tensor,
    desc_mask: torch.Tensor | None,
    n_classes: int,
    n_subgroups: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-SCG weighted mean of ``per_sample`` losses: (ℓ (T, K, S), weight sum (T, K, S)).

    ℓ_g is 0 where the weight sum is 0 (caller masks those SCGs out).
    """
    scores, mask = _clean_scores(desc, desc_mask)
    a = scores * mask  # (B, K)
    b, k = a.shape
    oy = F.one_hot(y, n_classes).to(a.dtype)  # (B, T)
    os_ = F.one_hot(subgroup, n_subgroups).to(a.dtype)  # (B, S)
    # weight[c, k, s] = Σ_i 1[y_i=c] a_ik 1[s_i=s]; numerator and denominator in one matmul
    member = (oy.unsqueeze(2) * a.unsqueeze(1)).reshape(b, n_classes * k)  # (B, T·K)
    both = member.t() @ torch.cat([os_ * per_sample.unsqueeze(1).to(a.dtype), os_], dim=1)  # (T·K, 2S)
    num = both[:, :n_subgroups].reshape(n_classes, k, n_subgroups)
    den = both[:, n_subgroups:].reshape(n_classes, k, n_subgroups)
    present = den > 0
    loss = num / torch.where(present, den, torch.ones_like(den))
    return loss, den


def pearson(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation of two tensors over the entries where ``mask`` is True (default all).

    0 (graph-connected, finite gradients) when either side is constant or fewer than 2 entries.
    """
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    n = m.sum().clamp_min(1.0)
    xc = (x - (m * x).sum() / n) * m
    yc = (y - (m * y).sum() / n) * m
    sx = (xc * xc).sum()
    sy = (yc * yc).sum()
    if float(sx.detach()) <= eps or float(sy.detach()) <= eps:
        return (x * m).sum() * 0.0 + (y * m).sum() * 0.0
    return (xc * yc).sum() / torch.sqrt(sx * sy)


class CDIRegularizer(nn.Module):
    """Differentiable coverage-error decorrelation penalty on r = Pearson(log(cov + eps), smoothed SCG loss).

    ``forward(per_sample_ce, y, subgroup, desc, desc_mask, update=True) -> penalty``: r^2
    (``"squared"``) or relu(-r) (``"relu_neg"``), a graph-connected 0 below ``min_scgs`` SCGs or
    with a constant side; after each call ``last_r`` (float, NaN when undefined) and ``last_n``
    (SCGs used) are set. SCGs with NaN coverage or no weight in the batch are skipped.
    """

    def __init__(self, coverage: np.ndarray | torch.Tensor, beta: float = 0.9, eps: float = 1e-3,
                 mode: str = "squared", min_scgs: int = 3):
        super().__init__()
        if mode not in PENALTY_MODES:
            raise ValueError(f"cdi mode {mode!r} unknown for the penalty; choose one of {PENALTY_MODES}")
        cov = _coverage_tensor(coverage)
        valid = torch.isfinite(cov)
        self.register_buffer("valid", valid, persistent=False)
        self.register_buffer("log_cov", torch.log(torch.nan_to_num(cov, nan=0.0).clamp_min(0.0) + eps),
                             persistent=False)
        self.register_buffer("ema", torch.zeros_like(cov))
        self.register_buffer("seen", torch.zeros_like(cov, dtype=torch.bool))
        self.beta = float(beta)
        self.mode = mode
        self.min_scgs = int(min_scgs)
        self.last_r = math.nan
        self.last_n = 0

    def forward(self, per_sample_ce: torch.Tensor, y: torch.Tensor, subgroup: torch.Tensor,
                desc: torch.Tensor, desc_mask: torch.Tensor | None, update: bool = True) -> torch.Tensor:
        t, _, s = self.ema.shape
        loss_g, den = scg_minibatch_loss(per_sample_ce, y, subgroup, desc, desc_mask, t, s)  # l_g, (T, K, S)
        present = (den > 0) & self.valid
        seen = self.seen.clone()  # the in-place update below must not touch autograd's saved tensor
        # L~_g = beta EMA_g + (1 - beta) l_g (first observation: l_g); EMA_g holds detached past values,
        # so the gradient flows only through this batch's l_g
        smoothed = torch.where(seen, self.beta * self.ema.clone() + (1.0 - self.beta) * loss_g, loss_g)
        if update:
            with torch.no_grad():
                self.ema.copy_(torch.where(present, smoothed.detach(), self.ema))  # EMA_g <- L~_g
                self.seen |= present
        n = int(present.sum())
        self.last_n = n
        zero = per_sample_ce.sum() * 0.0
        if n < self.min_scgs:
            self.last_r = math.nan
            return zero
        r = pearson(self.log_cov, smoothed, present)  # over the SCGs present in the batch
        self.last_r = float(r.detach())
        if self.mode == "squared":
            return r * r
        return F.relu(-r)

    def reset(self) -> None:
        """Forget the EMA (e.g. when training restarts)."""
        self.ema.zero_()
        self.seen.zero_()


def active_scg_mean(table: torch.Tensor, desc: torch.Tensor, desc_mask: torch.Tensor | None, y: torch.Tensor,
                    subgroup: torch.Tensor, active_threshold: float = 0.5, default: float = 0.0) -> torch.Tensor:
    """(B,) mean of ``table[y_i, k, s_i]`` over the sample's active descriptors (``default`` if none).

    Active: observed (mask > 0, finite) and score ≥ ``active_threshold``.
    """
    per_desc = table.to(desc.device)[y, :, subgroup]  # (B, K)
    active = desc >= active_threshold  # NaN compares False: unobserved
    if desc_mask is not None:
        active &= desc_mask > 0
    n_active = active.sum(dim=1)
    mean = (per_desc * active).sum(dim=1) / n_active.clamp_min(1)
    return torch.where(n_active > 0, mean, torch.full_like(mean, default))


class RareSCGWeights(nn.Module):
    """Rare-side per-sample CE weights w_i = 1 + λ·u_i, u_i the mean of u[y_i, k, s_i] over active k.

    Why: the penalty of :class:`CDIRegularizer` can lower the measured correlation by raising the
    error of well-covered SCGs (levelling down); these weights act on the under-covered side only.
    u is 0 for every SCG at or above the median training coverage (well-covered samples keep
    weight 1) and has mean 1 over the rare SCGs R = {g : cov_g < median}. ``"rare_reweight"``:
    static, u_g ∝ ((median + ε) / (cov_g + ε))^β on R. ``"closed_loop"`` (GroupDRO-style, per
    epoch): u_g = |R|·q_g with q_g ∝ exp(η·ℓ̄_g) over R, ℓ̄_g the SCG's mean training CE of the
    last epoch; u starts uniform.

    ``weights(desc, desc_mask, y, subgroup, lam)`` -> (B,) constants (no gradient);
    ``accumulate(per_sample_ce, ...)`` adds a training batch to the epoch's per-SCG losses;
    ``end_epoch()`` turns them into the closed-loop table (a no-op for ``"rare_reweight"``).
    """

    def __init__(self, coverage: np.ndarray | torch.Tensor, mode: str = "closed_loop", beta: float = 0.5,
                 eps: float = 0.05, eta: float = 2.0):
        super().__init__()
        if mode not in REWEIGHT_MODES:
            raise ValueError(f"reweighting mode {mode!r} unknown; choose one of {REWEIGHT_MODES}")
        cov = _coverage_tensor(coverage)
        finite = torch.isfinite(cov)
        median = cov[finite].median() if finite.any() else torch.tensor(0.0)  # lower median
        rare = finite & (torch.nan_to_num(cov, nan=0.0) < median)  # R = {g : cov_g < median}
        self.mode, self.eta = mode, float(eta)
        self.register_buffer("rare", rare, persistent=False)
        if mode == "rare_reweight":  # u_g ∝ ((median + ε) / (cov_g + ε))^β on R
            gain = ((median + eps) / (torch.nan_to_num(cov, nan=0.0) + eps)).pow(beta)
        else:  # closed loop starts uniform on R
            gain = torch.ones_like(cov)
        self.register_buffer("table", self._mean_one(gain))
        self.register_buffer("loss_sum", torch.zeros_like(cov))
        self.register_buffer("weight_sum", torch.zeros_like(cov))

    def _mean_one(self, gain: torch.Tensor) -> torch.Tensor:
        """gain on R rescaled to mean 1 over R; 0 outside R."""
        gain = torch.where(self.rare, gain, torch.zeros_like(gain))
        n_rare = int(self.rare.sum())
        return gain * (n_rare / gain.sum()) if n_rare and float(gain.sum()) > 0 else gain

    @torch.no_grad()
    def weights(self, desc: torch.Tensor, desc_mask: torch.Tensor | None, y: torch.Tensor,
                subgroup: torch.Tensor, lam: float) -> torch.Tensor:
        scores, mask = _clean_scores(desc, desc_mask)
        return 1.0 + lam * active_scg_mean(self.table, scores, mask, y, subgroup)  # w_i = 1 + λ·u_i

    @torch.no_grad()
    def accumulate(self, per_sample_ce: torch.Tensor, y: torch.Tensor, subgroup: torch.Tensor,
                   desc: torch.Tensor, desc_mask: torch.Tensor | None) -> None:
        if self.mode != "closed_loop":
            return
        t, _, s = self.table.shape
        loss_g, den = scg_minibatch_loss(per_sample_ce.detach().float(), y, subgroup, desc, desc_mask, t, s)
        self.loss_sum += loss_g * den  # Σ_i w_{i,g} ce_i
        self.weight_sum += den

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Closed loop: u_g = |R|·softmax_R(η·ℓ̄_g); SCGs unseen this epoch keep their old share."""
        if self.mode != "closed_loop":
            return
        seen = self.rare & (self.weight_sum > 0)
        if seen.any():
            mean_loss = self.loss_sum / self.weight_sum.clamp_min(1e-12)  # ℓ̄_g
            logits = torch.where(seen, self.eta * mean_loss, torch.full_like(mean_loss, -torch.inf))
            q = torch.softmax(logits.flatten(), 0).view_as(mean_loss)  # q_g ∝ exp(η ℓ̄_g) over seen R
            share = self.table[seen].sum()  # the seen SCGs share what they held before
            self.table.copy_(torch.where(seen, q * share, self.table))
        self.loss_sum.zero_()
        self.weight_sum.zero_()


class CoverageBalancingWeights(nn.Module):
    """Importance weights that turn the natural training distribution into the balanced-coverage one.

    Why: a model trained where a concept is common in some classes and rare in others learns the
    concept as evidence for the class (and its absence as evidence against); the oracle, trained
    with every concept equally likely in every (class, subgroup), does not. Weighting each sample
    by p_balanced(concepts | y, s) / p_natural(concepts | y, s) trains on the oracle's distribution
    in expectation with the same images. With p_k = cov[y, k, s], r = mean_k p_k (the balanced
    rate, as the generator's oracle) and soft presence z_k (the score):

        ratio_i = Π_k [ z_k · r / p_k + (1 − z_k) · (1 − r) / (1 − p_k) ]

    so a rare concept that is present and a common one that is absent both weigh more. The weight
    is ratio^α (α tempers it: 0 = plain CE, 1 = full importance weighting), with the ratio kept in
    [``min_ratio``, ``max_ratio``] (``min_ratio`` None: 1/``max_ratio``) before tempering; weights
    are rescaled to mean 1 in the batch (the loss mean_i w_i ce_i is then the self-normalised
    Σ w_i ce_i / Σ w_i). ``min_ratio`` = 1 acts on the rare side only: no sample weighs less
    than a plain one before normalisation, so well-covered samples keep their weight relative to
    each other and only the samples whose concepts are rarer than balanced gain.
    """

    def __init__(self, coverage: np.ndarray | torch.Tensor, max_ratio: float = 20.0, eps: float = 0.01,
                 hard: bool = False, min_ratio: float | None = None):
        super().__init__()
        self.hard = hard  # z = 1[score >= 0.5]; ``coverage`` must then be the hard presence rate
        cov = _coverage_tensor(coverage)
        self.max_log = math.log(max_ratio)
        self.min_log = -self.max_log if min_ratio is None else math.log(min_ratio)
        if not self.min_log <= self.max_log:
            raise ValueError(f"balancing weights: min_ratio={min_ratio} exceeds max_ratio={max_ratio}")
        self.eps = eps
        self.register_buffer("coverage", cov, persistent=False)

    @torch.no_grad()
    def weights(self, desc: torch.Tensor, desc_mask: torch.Tensor | None, y: torch.Tensor,
                subgroup: torch.Tensor, alpha: float) -> torch.Tensor:
        w = self.ratio(desc, desc_mask, y, subgroup, alpha)
        return w / _global_mean(w).clamp_min(1e-12)  # self-normalised: mean weight 1 in the (global) batch

    @torch.no_grad()
    def ratio(self, desc: torch.Tensor, desc_mask: torch.Tensor | None, y: torch.Tensor,
              subgroup: torch.Tensor, alpha: float) -> torch.Tensor:
        """The capped, tempered ratio^α per sample, before normalisation (also draw weights)."""
        if self.hard:
            desc = (torch.nan_to_num(desc) >= 0.5).to(desc.dtype).where(torch.isfinite(desc), desc)
        z, weight, p, r = _balance_terms(self.coverage, desc, desc_mask, subgroup, self.eps)
        rows = torch.arange(len(y), device=y.device)
        z, weight, p, r = z[:, 0], weight[rows, y], p[rows, y], r[rows, y]  # the sample's own class
        factor = z * r / p + (1 - z) * (1 - r) / (1 - p)
        log_ratio = (torch.log(factor) * weight).sum(dim=1)  # log Π_k factor_k over observed k
        return torch.exp(alpha * log_ratio.clamp(self.min_log, self.max_log))  # ratio^α, ratio capped


def _global_mean(w: torch.Tensor) -> torch.Tensor:
    """Mean of ``w`` over the whole batch: under DDP over every process's share, so the weights
    are the ones one process with the whole batch would compute."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return w.mean()
    total = torch.stack([w.sum(), torch.tensor(float(w.numel()), device=w.device)])
    torch.distributed.all_reduce(total)
    return total[0] / total[1]


def _balance_terms(coverage: torch.Tensor, desc: torch.Tensor, desc_mask: torch.Tensor | None,
                   subgroup: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores z (B, 1, K), their weight (B, 1, K) and, for every class t, the natural rates
    p[t, k, s_i] and balanced rates r[t, s_i] = mean_k p (B, T, K), NaN coverage weighing 0."""
    z, mask = _clean_scores(desc, desc_mask)
    p = coverage.to(z.device)[:, :, subgroup].permute(2, 0, 1)  # (B, T, K)
    known = torch.isfinite(p)
    p = torch.nan_to_num(p, nan=0.5).clamp(eps, 1 - eps)
    r = (p * known).sum(dim=2, keepdim=True) / known.sum(dim=2, keepdim=True).clamp_min(1)
    return z.clamp(0.0, 1.0)[:, None, :], mask[:, None, :] * known, p, r.expand_as(p)


class ConceptLogitAdjustment(nn.Module):
    """Logit adjustment (Menon et al., 2021) from class priors to concept coverage.

    Why: the natural training data make concepts evidence for the classes they are common in;
    a model trained on its logits plus the log-likelihood ratio of the sample's concepts under
    the natural and the balanced coverage learns raw logits that estimate the balanced-coverage
    posterior, without per-sample weights (whose variance importance weighting pays). For class t,
    sample i with soft presence z_k, p_k = cov[t, k, s_i] and r = mean_k p_k:

        a_t(i) = Σ_k log[z_k p_k + (1 − z_k)(1 − p_k)] − log[z_k r + (1 − z_k)(1 − r)]

    and the loss is CE(logits + τ·a, y); prediction uses the raw logits.
    """

    def __init__(self, coverage: np.ndarray | torch.Tensor, eps: float = 0.01):
        super().__init__()
        self.eps = eps
        self.register_buffer("coverage", _coverage_tensor(coverage), persistent=False)

    @torch.no_grad()
    def offsets(self, desc: torch.Tensor, desc_mask: torch.Tensor | None, subgroup: torch.Tensor) -> torch.Tensor:
        z, weight, p, r = _balance_terms(self.coverage, desc, desc_mask, subgroup, self.eps)
        natural = torch.log(z * p + (1 - z) * (1 - p))  # log p_nat(z_k | t, s)
        balanced = torch.log(z * r + (1 - z) * (1 - r))  # log p_bal(z_k | t, s)
        return ((natural - balanced) * weight).sum(dim=2)  # (B, T)


__all__ = [
    "BALANCE_MODES",
    "ConceptLogitAdjustment",
    "CDI_MODES",
    "CoverageBalancingWeights",
    "CDIRegularizer",
    "DVA_MODES",
    "PENALTY_MODES",
    "REWEIGHT_MODES",
    "RareSCGWeights",
    "active_scg_mean",
    "dva_loss",
    "dva_sample_weights",
    "dva_weight_table",
    "pearson",
    "scg_minibatch_loss",
]
