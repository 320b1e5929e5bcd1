"""Long-tail and group-robustness baselines (docs/METHODS.md, section "Baselines"), all on one architecture.

Every baseline is ``VisualEncoder`` (backbone + Linear(C, D) + ReLU) → dropout → classifier
with T outputs; only the loss, the sampling schedule or the test-time logits differ:

``erm``               plain cross-entropy
``erm_desc``          ERM whose classifier also takes the descriptor scores and their missing-mask
``erm_views``         ERM with every training image shown as itself or one of its rotations (a control)
``cb``                class-balanced CE, w_y = (1−β)/(1−β^{n_y}), Σ w = T
``focal``             focal loss −α_y (1−p_y)^γ log p_y
``ldam_drw``          LDAM margins on a normalised-cosine classifier + deferred re-weighting
``balanced_softmax``  CE(z + log n) in training, raw z at test
``logit_adjustment``  trained as ERM, predicts argmax(z − τ log π)
``crt``               ERM, then classifier re-training on a frozen encoder with class-balanced sampling
``groupdro``          online GroupDRO over (class, subgroup) groups

Two-phase methods (``ldam_drw``, ``crt``) place their final phase with
:func:`~semcov_lib.models.methods.base.final_phase_start` and report it through
``selection_start_epoch``, so model selection only chooses among epochs of that phase.

Class counts come from ``info.class_counts`` (T,), group counts from ``info.group_counts``
(T, S). The formulas live in :mod:`semcov_lib.models.losses.longtail`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from semcov_lib.data.views import ROTATIONS, ViewRequest
from semcov_lib.models.backbones import VisualEncoder
from semcov_lib.models.losses import longtail as lt
from semcov_lib.models.methods.base import DataInfo, Method, TrainContext, final_phase_start

DEFAULTS: dict = {
    # shared architecture
    "backbone": "cnn",
    "dim": 256,
    "dropout": 0.1,
    # class-balanced loss
    "cb_beta": 0.9999,
    "cb_reduction": "mean",  # Σ w_y ℓ / B (CB paper); "weighted_mean" = Σ w_y ℓ / Σ w_y
    # focal loss
    "focal_gamma": 2.0,
    "focal_alpha": None,  # None | "cb" (class-balanced weights with cb_beta) | list of T floats
    # LDAM-DRW
    "ldam_max_margin": 0.5,
    "ldam_scale": 30.0,
    "drw_fraction": 0.2,  # class-balanced weights for the last 20% of epochs
    "drw_beta": 0.9999,
    "drw_reduction": "weighted_mean",  # as F.cross_entropy(weight=...) in the LDAM-DRW code
    # logit adjustment
    "la_tau": 1.0,
    # classifier re-training
    "crt_fraction": 0.7,  # fraction of epochs of stage 1 (ERM); stage 2 re-trains the classifier
    # GroupDRO
    "groupdro_eta": 0.01,
}

def _params(hp: dict | None) -> dict:
    return {**DEFAULTS, **(hp or {})}


def _class_counts(info: DataInfo) -> np.ndarray:
    counts = np.asarray(info.class_counts, dtype=np.float64).reshape(-1)
    if counts.size != info.n_classes:
        raise ValueError(
            f"DataInfo.class_counts has {counts.size} entries but there are {info.n_classes} classes"
        )
    return counts


class CosineClassifier(nn.Module):
    """Normalised linear layer: z_j = cos(f, W_j) = f·W_j / (‖f‖‖W_j‖) ∈ [−1, 1].

    The LDAM paper (Cao et al., 2019) uses this "NormedLinear" head so that the margins Δ
    (max 0.5) and the scale s = 30 have a fixed meaning regardless of the feature norm.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()


class BaselineMethod(Method):
    """ERM: VisualEncoder → dropout → Linear(D, T), plain cross-entropy.

    Subclasses change :meth:`loss`, :meth:`predict_logits`, :meth:`sampling` or the hooks.
    ``forward`` returns ``logits`` (B, T) and ``features`` f_v (B, D).
    """

    name = "erm"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, _params(hp))
        self.encoder = VisualEncoder(info, self.hp)
        self.dropout = nn.Dropout(float(self.hp["dropout"]))
        self.classifier = self._make_classifier(self.encoder.dim, info.n_classes)
        self.register_buffer("class_counts", torch.as_tensor(_class_counts(info), dtype=torch.float32))

    def _make_classifier(self, dim: int, n_classes: int) -> nn.Module:
        return nn.Linear(dim, n_classes)

    def forward(self, batch: dict) -> dict:
        _, f_v = self.encoder(batch["x"])
        return {"logits": self.classifier(self.dropout(f_v)), "features": f_v}

    def loss(self, batch: dict, out: dict, ctx: TrainContext) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(out["logits"], batch["y"])
        return ce, {"ce": float(ce.detach())}

    def _phase_fraction(self, key: str) -> float:
        """``hp[key]`` checked as a fraction of the epochs, in [0, 1]."""
        fraction = float(self.hp[key])
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {fraction}")
        return fraction

    @staticmethod
    def _plain_ce(out: dict, batch: dict) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(out["logits"], batch["y"]))


class ERM(BaselineMethod):
    """Empirical risk minimisation: plain cross-entropy."""

    name = "erm"


class ERMWithDescriptors(BaselineMethod):
    """ERM whose classifier takes [f_v; a; m]: the visual feature, the descriptor scores a
    (NaN set to 0) and the missing-mask m (1 = observed), at training and at test time.

    The reference for any method that reads descriptor scores: a gain over ``erm_desc`` is
    not explained by the extra input alone. Same encoder and dropout (on f_v) as ERM.
    """

    name = "erm_desc"

    def _make_classifier(self, dim: int, n_classes: int) -> nn.Module:
        return nn.Linear(dim + 2 * self.info.n_descriptors, n_classes)

    def forward(self, batch: dict) -> dict:
        _, f_v = self.encoder(batch["x"])
        a = batch["desc"].to(f_v.dtype).nan_to_num(0.0)
        m = batch["desc_mask"].to(f_v.dtype)
        logits = self.classifier(torch.cat([self.dropout(f_v), a, m], dim=1))
        return {"logits": logits, "features": f_v}

    @property
    def sees_descriptors_at_test(self) -> bool:
        return self.info.n_descriptors > 0


class ERMWithViews(BaselineMethod):
    """ERM with *every* training image shown as itself or one of its three rotations: the views that
    SemCovNet's default gives its rare-side images only, given to all.

    The control for those views: what they do as plain augmentation, apart from where SemCovNet
    puts them. Not part of the pipeline (its extra feature extraction does not fit the 30-minute
    budget); ``bench/diagnostic_configurations.py --methods erm erm_views semcovnet`` runs it.
    """

    name = "erm_views"

    def view_rows(self, split) -> ViewRequest:
        return ViewRequest(torch.arange(len(split.y)), ROTATIONS)


class ClassBalanced(BaselineMethod):
    """Class-balanced cross-entropy (Cui et al., 2019): w_y = (1−β)/(1−β^{n_y}), Σ w = T.

    Classes without training images get weight 0 (see ``class_balanced_weights``).
    """

    name = "cb"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        self.criterion = lt.ClassBalancedCE(
            self.class_counts, float(self.hp["cb_beta"]), str(self.hp["cb_reduction"])
        )

    def loss(self, batch, out, ctx):
        loss = self.criterion(out["logits"], batch["y"])
        return loss, {"cb_ce": float(loss.detach()), "ce": self._plain_ce(out, batch)}


class Focal(BaselineMethod):
    """Focal loss (Lin et al., 2017): −α_y (1 − p_y)^γ log p_y, γ = ``focal_gamma``.

    ``focal_alpha``: None (α = 1), ``"cb"`` (class-balanced weights with ``cb_beta``) or a
    list of T per-class weights.
    """

    name = "focal"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        alpha = self.hp.get("focal_alpha")
        if isinstance(alpha, str) and alpha.lower() == "none":
            alpha = None
        if isinstance(alpha, str):
            if alpha.lower() != "cb":
                raise ValueError(f"focal_alpha must be None, 'cb' or a list of {info.n_classes} floats; got {alpha!r}")
            alpha = lt.class_balanced_weights(self.class_counts, float(self.hp["cb_beta"])).numpy()
        elif alpha is not None:
            alpha = np.asarray(alpha, dtype=np.float32).reshape(-1)
            if alpha.size != info.n_classes:
                raise ValueError(f"focal_alpha: expected {info.n_classes} values, got {alpha.size}")
        self.criterion = lt.FocalLoss(float(self.hp["focal_gamma"]), alpha)

    def loss(self, batch, out, ctx):
        loss = self.criterion(out["logits"], batch["y"])
        return loss, {"focal": float(loss.detach()), "ce": self._plain_ce(out, batch)}


class LDAMDRW(BaselineMethod):
    """LDAM with deferred re-weighting (Cao et al., 2019).

    Head: normalised-cosine classifier (:class:`CosineClassifier`), as in the LDAM paper.
    ``forward`` returns ``cosine`` z ∈ [−1, 1] and ``logits`` = s·z (what is evaluated, so
    softmax probabilities have the training scale). Loss: CE(s·(z − Δ_y e_y)) with
    Δ_j ∝ n_j^(−1/4), max Δ = ``ldam_max_margin``, s = ``ldam_scale``. DRW: for the last
    ``drw_fraction`` of epochs (at least one when 0 < ``drw_fraction`` < 1 and there are two
    epochs or more; :meth:`drw_start`) each sample is weighted by the class-balanced weight of
    its class (β = ``drw_beta``). Model selection chooses among the DRW epochs only.
    """

    name = "ldam_drw"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        self._phase_fraction("drw_fraction")
        self.scale = float(self.hp["ldam_scale"])
        self.criterion = lt.LDAMLoss(
            self.class_counts, float(self.hp["ldam_max_margin"]), self.scale, str(self.hp["drw_reduction"])
        )
        self.register_buffer("drw_weights", lt.class_balanced_weights(self.class_counts, float(self.hp["drw_beta"])))

    def _make_classifier(self, dim: int, n_classes: int) -> nn.Module:
        return CosineClassifier(dim, n_classes)

    def forward(self, batch: dict) -> dict:
        _, f_v = self.encoder(batch["x"])
        cosine = self.classifier(self.dropout(f_v))
        return {"logits": self.scale * cosine, "cosine": cosine, "features": f_v}

    def drw_start(self, n_epochs: int) -> int:
        """First epoch with deferred re-weighting (``n_epochs`` when it never starts)."""
        return final_phase_start(n_epochs, float(self.hp["drw_fraction"]))

    def drw_active(self, ctx: TrainContext) -> bool:
        """True in the last ``drw_fraction`` of epochs."""
        return ctx.epoch >= self.drw_start(ctx.n_epochs)

    def selection_start_epoch(self, n_epochs: int) -> int:
        start = self.drw_start(n_epochs)
        return start if start < n_epochs else 0

    def loss(self, batch, out, ctx):
        drw = self.drw_active(ctx)
        loss = self.criterion(out["cosine"], batch["y"], self.drw_weights if drw else None)
        return loss, {"ldam": float(loss.detach()), "drw": float(drw), "ce": self._plain_ce(out, batch)}


class BalancedSoftmax(BaselineMethod):
    """Balanced softmax (Ren et al., 2020): CE(z + log n) in training, raw z at test.

    The adjustment is applied only in :meth:`loss`; a class with n = 0 gets a very negative
    finite offset (see ``log_class_counts``).
    """

    name = "balanced_softmax"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        self.criterion = lt.BalancedSoftmaxLoss(self.class_counts)

    def loss(self, batch, out, ctx):
        loss = self.criterion(out["logits"], batch["y"])
        return loss, {"balanced_softmax": float(loss.detach()), "ce": self._plain_ce(out, batch)}


class LogitAdjustment(BaselineMethod):
    """Post-hoc logit adjustment (Menon et al., 2021): trained as ERM; evaluation logits are
    z − τ log π with π the training class prior (τ = ``la_tau``). Classes without training
    images are left unadjusted (see ``logit_adjusted``)."""

    name = "logit_adjustment"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        self.tau = float(self.hp["la_tau"])
        self.register_buffer("log_prior", lt.log_class_prior(self.class_counts))

    @torch.no_grad()
    def predict_logits(self, batch: dict) -> torch.Tensor:
        return lt.logit_adjusted(self(batch)["logits"], self.log_prior, self.tau)


class ClassifierRetraining(BaselineMethod):
    """cRT (Kang et al., 2020): decoupled representation and classifier learning.

    Stage 1 (the first ``crt_fraction`` of epochs): ERM with instance sampling. At the first
    epoch of stage 2 (:meth:`stage2_start`, at least one epoch when 0 < ``crt_fraction`` < 1
    and there are two epochs or more; :meth:`on_epoch_start`) the encoder is frozen
    (``requires_grad=False``, its gradients cleared, BatchNorm/dropout kept in eval mode even
    when the model is put in train mode), the classifier is re-initialised, and
    :meth:`sampling` returns ``"class_balanced"`` from then on. The trainer's optimiser must
    skip parameters whose ``.grad`` is None (PyTorch optimisers do); its state for the
    classifier (momentum / Adam moments) is not reset here. The stage is kept in the
    ``crt_stage`` buffer so it survives a checkpoint. Model selection chooses among stage-2
    epochs only (before it the model is ERM).
    """

    name = "crt"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        self._phase_fraction("crt_fraction")
        self.register_buffer("crt_stage", torch.tensor(1, dtype=torch.long))

    def stage2_start(self, n_epochs: int) -> int:
        """First epoch of classifier re-training (``n_epochs`` when it never starts)."""
        return final_phase_start(n_epochs, 1.0 - float(self.hp["crt_fraction"]))

    def in_stage2(self, ctx: TrainContext) -> bool:
        """True when ``ctx`` lies in the classifier re-training stage."""
        return ctx.epoch >= self.stage2_start(ctx.n_epochs)

    def selection_start_epoch(self, n_epochs: int) -> int:
        start = self.stage2_start(n_epochs)
        return start if start < n_epochs else 0

    @property
    def encoder_frozen(self) -> bool:
        return int(self.crt_stage) == 2

    def sampling(self, ctx: TrainContext) -> str:
        return "class_balanced" if self.in_stage2(ctx) else "instance"

    def on_epoch_start(self, ctx: TrainContext) -> None:
        if self.in_stage2(ctx) and not self.encoder_frozen:
            self.crt_stage.fill_(2)
            self.classifier.reset_parameters()
            self._freeze_encoder()

    def _freeze_encoder(self) -> None:
        for p in self.encoder.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            self._freeze_encoder()
        return self

    def forward(self, batch: dict) -> dict:
        if not self.encoder_frozen:
            return super().forward(batch)
        with torch.no_grad():  # frozen encoder: no graph needed
            _, f_v = self.encoder(batch["x"])
        return {"logits": self.classifier(self.dropout(f_v)), "features": f_v}

    def loss(self, batch, out, ctx):
        loss, parts = super().loss(batch, out, ctx)
        parts["crt_stage"] = float(int(self.crt_stage))
        return loss, parts


class GroupDROMethod(BaselineMethod):
    """Online GroupDRO (Sagawa et al., 2020) over groups g = (class, subgroup).

    Per-sample CE is averaged per group present in the batch; :class:`~semcov_lib.models.losses.
    longtail.GroupDRO` updates q ← q·exp(η_q ℓ_g) (normalised, η_q = ``groupdro_eta``,
    no gradient through q) inside :meth:`loss` and returns Σ_g q_g ℓ_g. Groups with no
    training images (``info.group_counts`` = 0) start at q = 0.
    """

    name = "groupdro"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__(info, hp)
        counts = np.asarray(info.group_counts, dtype=np.float64)
        expected = (info.n_classes, info.n_subgroups)
        if counts.shape != expected:
            raise ValueError(f"DataInfo.group_counts has shape {counts.shape}, expected (T, S) = {expected}")
        self.n_subgroups = info.n_subgroups
        self.dro = lt.GroupDRO(counts.size, float(self.hp["groupdro_eta"]), counts.reshape(-1))

    def loss(self, batch, out, ctx):
        per_sample = F.cross_entropy(out["logits"], batch["y"], reduction="none")
        groups = lt.group_index(batch["y"], batch["subgroup"], self.n_subgroups)
        robust = self.dro(per_sample, groups, update=self.training)
        return robust, {
            "groupdro": float(robust.detach()),
            "ce": float(per_sample.detach().mean()) if per_sample.numel() else 0.0,
            "q_max": float(self.dro.q.max()),
        }


__all__ = [
    "DEFAULTS",
    "BaselineMethod",
    "BalancedSoftmax",
    "ClassBalanced",
    "ClassifierRetraining",
    "CosineClassifier",
    "ERM",
    "ERMWithDescriptors",
    "Focal",
    "GroupDROMethod",
    "LDAMDRW",
    "LogitAdjustment",
]
