"""The contract between the trainer and every method (SemCovNet, peers, baselines).

A *batch* is a dict of tensors on the training device:

``x``          float (B, 3, H, W) normalised images, or (B, C, h, w) cached backbone features
``y``          long (B,) class index
``desc``       float (B, K) descriptor scores with NaN replaced by 0
``desc_mask``  float (B, K) 1 where the score was observed, 0 where it was NaN
``subgroup``   long (B,) subgroup index into ``DataInfo.subgroups``
``index``      long (B,) row index inside the split being iterated

A method is an ``nn.Module`` that owns its backbone. The trainer only calls the methods
below, so a new method never needs a trainer change.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from semcov_lib.data.views import ViewRequest
from semcov_lib.models.data_info import DataInfo


@dataclass
class TrainContext:
    """Where training stands; handed to every loss and hook."""

    epoch: int  # 0-based
    n_epochs: int
    step: int = 0  # global optimisation step
    device: torch.device = torch.device("cpu")

    @property
    def progress(self) -> float:
        """Fraction of training done at the start of this epoch, in [0, 1)."""
        return self.epoch / max(self.n_epochs, 1)


#: ``desc_source`` values with which a method predicts the descriptor scores at test time.
PREDICTED_DESC_SOURCES = ("predicted", "predicted_test")


def final_phase_start(n_epochs: int, final_fraction: float) -> int:
    """First epoch of a final training phase that covers ``final_fraction`` of the epochs.

    n_final = round(n_epochs · final_fraction) (halves round up), clamped to [1, n_epochs − 1]
    so that both phases get at least one epoch whenever 0 < final_fraction < 1 and there are
    at least 2 epochs: 12 epochs x 0.2 -> epochs 10, 11; 2 epochs x 0.2 -> epoch 1.
    ``final_fraction`` ≤ 0 -> ``n_epochs`` (the phase never starts); ≥ 1 -> 0 (it is all of
    training). With a single epoch a two-phase schedule cannot happen: the phase never starts.
    """
    if final_fraction <= 0 or n_epochs < 1:
        return n_epochs
    if final_fraction >= 1:
        return 0
    if n_epochs < 2:
        warnings.warn("a two-phase method trained for 1 epoch never reaches its final phase; use epochs >= 2",
                      stacklevel=2)
        return n_epochs
    n_final = math.floor(n_epochs * final_fraction + 0.5 + 1e-9)
    return n_epochs - min(max(n_final, 1), n_epochs - 1)


class Method(nn.Module):
    """Base class: plain cross-entropy on ``forward(batch)["logits"]`` (i.e. ERM)."""

    name = "method"

    def __init__(self, info: DataInfo, hp: dict):
        super().__init__()
        self.info = info
        self.hp = dict(hp)

    def forward(self, batch: dict) -> dict:  # pragma: no cover - abstract
        """Return a dict with at least ``logits`` (B, T)."""
        raise NotImplementedError

    def loss(self, batch: dict, out: dict, ctx: TrainContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and its named parts (floats, logged per epoch)."""
        ce = nn.functional.cross_entropy(out["logits"], batch["y"])
        return ce, {"ce": float(ce.detach())}

    @torch.no_grad()
    def predict_logits(self, batch: dict) -> torch.Tensor:
        """Logits used for evaluation (post-hoc adjustments override this)."""
        return self(batch)["logits"]

    def sampling(self, ctx: TrainContext) -> str:
        """``"instance"`` (default), ``"class_balanced"`` or ``"weighted"`` sampling for this epoch
        (``"weighted"``: draw with replacement by :meth:`sample_weights`)."""
        return "instance"

    def sample_weights(self, split) -> torch.Tensor:
        """(N,) non-negative draw weights over the training split's rows, for ``"weighted"`` sampling.
        ``split`` holds the rows' ``y``, ``desc``, ``desc_mask`` and ``subgroup`` tensors."""
        raise NotImplementedError(f"{type(self).__name__} asks for weighted sampling but defines no sample_weights")

    def view_rows(self, split) -> ViewRequest | None:
        """Rows of the training split shown as random dihedral views, and how many views each
        (:mod:`semcov_lib.data.views`), or None (the default: every row as it is)."""
        return None

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Hook: switch loss phases, freeze parts, ..."""

    def on_epoch_end(self, ctx: TrainContext) -> None:
        """Hook: update memory banks, prototypes, group weights, ..."""

    def after_step(self, batch: dict, out: dict, ctx: TrainContext) -> None:
        """Hook run after each optimiser step (EMA buffers, memory banks, ...)."""

    def selection_start_epoch(self, n_epochs: int) -> int:
        """First epoch model selection may choose (0 = any epoch).

        A method with phases returns the first epoch of its final phase, so the selected
        model is that method and not an earlier phase of it (cRT before re-training is ERM).
        """
        return 0

    @property
    def sees_descriptors_at_test(self) -> bool:
        """True when the test-time prediction reads the sample's descriptor scores.

        Convention: a method that takes descriptor scores as input declares the
        hyper-parameter ``desc_source``; it sees them at test time unless that is
        ``"predicted"`` or ``"predicted_test"`` (scores predicted from the image), the data
        has no descriptors, or ``use_sdm`` (its descriptor branch) is off. Methods without
        ``desc_source`` use descriptors at most as training targets, so False.
        """
        source = self.hp.get("desc_source")
        if source is None or source in PREDICTED_DESC_SOURCES or self.info.n_descriptors == 0:
            return False
        return bool(self.hp.get("use_sdm", True))


__all__ = ["PREDICTED_DESC_SOURCES", "DataInfo", "Method", "TrainContext", "final_phase_start"]
