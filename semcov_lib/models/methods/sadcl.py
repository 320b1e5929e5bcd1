"""SADCL: semantic-aware dual contrastive learning (docs/METHODS.md, section "SADCL"), sized for the CPU.

Architecture (Query2Label-style):

* backbone (``hp["backbone"]``) -> feature map (B, C, h, w) -> 1x1 conv to ``d_model`` tokens;
* 2-D sine positional encoding added to queries/keys of every attention;
* ``enc_layers`` transformer encoder layers (self-attention over the h*w tokens);
* one learned query per label; ``dec_layers`` decoder layers *without* decoder self-attention
  (cross-attention over the tokens + FFN, post-norm), ``n_heads`` heads; the query embedding is
  the decoder's input (so each label feature keeps its identity through the residuals);
* label-level features h (B, L, d) and per-label linear logits s_l = w_l . h_l + b_l.

Contrastive part:

* projector g: MLP d -> d -> ``proj_dim`` shared by label features, memory bank and prototypes;
* memory bank ``[bank_size, L, d]`` (a buffer saved with the model, so a resumed run continues
  exactly; 512 x L x 128 floats = 0.25 MB per label by default) indexed by
  ``batch["index"] % bank_size``; initialised to the prototypes; after every step
  (:meth:`SADCL.after_step`) slot (index, l) <- detached h_{b,l} where y_{b,l} = 1 and
  p_{b,l} > ``bank_threshold`` (0.8). Collisions of the modulo index are benign: every entry of
  column l is a positive feature of label l (or its prototype);
* prototypes [L, d] (trainable) initialised at the end of the warm-up from label-wise means of h
  over confident positives (p > ``proto_threshold`` = 0.85), accumulated by ``after_step`` during
  the last warm-up epoch and set by ``on_epoch_end`` (fallbacks: mean over all positives, else the
  random initial value). The bank is then reset to the prototypes;
* warm-up = max(``warmup_epochs``, round(``warmup_frac`` * n_epochs)) epochs trained with the
  classification loss only; afterwards + lambda_SSCL * SSCL + lambda_PSCL * PSCL on g(h).
  Model selection chooses among the epochs after the warm-up (``selection_start_epoch``).

Two uses (``hp["sadcl_task"]``):

``"class"`` (default) the labels are the T classes (one-hot multi-label targets); the per-label
    logits *are* the class logits (``out["logits"] = out["label_logits"]``, (B, T)). The
    classification loss is ``class_loss``: ``"ce"`` (default; cross-entropy on the per-label
    logits, confidence p = softmax) or ``"bce"`` / ``"asl"`` on the one-hot targets
    (p = sigmoid). SSCL/PSCL then pull together label features of the true class.
``"descriptors"`` the labels are the K descriptors, targets ``desc >= desc_threshold`` where
    ``desc_mask = 1`` (unobserved entries are masked out of every loss); ``out["label_logits"]``
    (B, K); a class head Linear(2d -> T) on [mean_l h_l ; mean of the encoder tokens] gives
    ``out["logits"]`` so the method trains on the standard trainer:
    L = CE + lambda_ml * (BCE | ASL) + contrastive terms.

Multi-label loss: ``ml_loss`` ``"bce"`` (default) or ``"asl"`` (gamma- = 4, gamma+ = 0,
clip 0.05) with ``ml_reduction`` ``"mean"`` (default; weights 0.1 / 0.05) or ``"sum"`` (the
original ASL reduction; use weights about 100 / 50). Multi-label metrics: :func:`evaluate_multilabel`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from semcov_lib.models.backbones import build_backbone
from semcov_lib.models.losses.contrastive import (
    asymmetric_loss,
    multilabel_bce,
    pscl_loss,
    sscl_from_label_features,
)
from semcov_lib.models.methods.base import DataInfo, Method, TrainContext

DEFAULTS: dict = {
    "backbone": "cnn",
    "sadcl_task": "class",  # "class" | "descriptors"
    "d_model": 128,
    "n_heads": 4,
    "enc_layers": 1,
    "dec_layers": 2,
    "ffn_dim": 256,
    "dropout": 0.1,
    "proj_dim": 64,
    "class_loss": "ce",  # class task: "ce" | "bce" | "asl"
    "ml_loss": "bce",  # descriptor task: "bce" | "asl"
    "ml_reduction": "mean",  # "mean" | "sum" (for bce/asl)
    "lambda_ml": 1.0,  # descriptor task: weight of the multi-label loss next to the class CE
    "asl_gamma_neg": 4.0,
    "asl_gamma_pos": 0.0,
    "asl_clip": 0.05,
    "lambda_sscl": 0.1,
    "lambda_pscl": 0.05,
    "tau_sscl": 0.2,
    "tau_pscl": 0.07,
    "bank_size": 512,
    "bank_threshold": 0.8,
    "proto_threshold": 0.85,
    "warmup_epochs": 1,
    "warmup_frac": 0.2,
    "desc_threshold": 0.5,
}

TASKS = ("class", "descriptors")


class SADCLConfigError(ValueError):
    """Raised for an invalid SADCL hyper-parameter."""


def sine_positional_encoding(h: int, w: int, dim: int, temperature: float = 10000.0,
                             device: torch.device | None = None) -> torch.Tensor:
    """DETR-style normalised 2-D sine encoding, (h*w, dim): dim/2 channels for y, dim/2 for x."""
    if dim % 4:
        raise SADCLConfigError(f"d_model must be divisible by 4 for the sine encoding; got {dim}")
    npf = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    ys = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * scale
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * scale
    dim_t = torch.arange(npf, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)

    def enc(v: torch.Tensor) -> torch.Tensor:
        p = v[:, None] / dim_t  # (n, npf)
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = enc(ys)[:, None, :].expand(h, w, npf)
    pos_x = enc(xs)[None, :, :].expand(h, w, npf)
    return torch.cat((pos_y, pos_x), dim=-1).reshape(h * w, dim)


def _ffn(d: int, ffn_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(ffn_dim, d))


class _EncoderLayer(nn.Module):
    """Post-norm self-attention layer; positions added to queries and keys."""

    def __init__(self, d: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.ffn = _ffn(d, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = src + pos
        src = self.norm1(src + self.drop(self.attn(qk, qk, src, need_weights=False)[0]))
        return self.norm2(src + self.drop(self.ffn(src)))


class _DecoderLayer(nn.Module):
    """Cross-attention from label queries over the tokens + FFN (no decoder self-attention)."""

    def __init__(self, d: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.cross = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.ffn = _ffn(d, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        att = self.cross(tgt, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm1(tgt + self.drop(att))
        return self.norm2(tgt + self.drop(self.ffn(tgt)))


class LabelQueryDecoder(nn.Module):
    """Tokens (B, C, h, w) -> label-level features (B, L, d)."""

    def __init__(self, in_channels: int, n_labels: int, d: int = 128, n_heads: int = 4,
                 enc_layers: int = 1, dec_layers: int = 2, ffn_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        if d % n_heads:
            raise SADCLConfigError(f"d_model={d} must be divisible by n_heads={n_heads}")
        self.d = d
        self.input_proj = nn.Conv2d(in_channels, d, kernel_size=1)
        self.encoder = nn.ModuleList(_EncoderLayer(d, n_heads, ffn_dim, dropout) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(_DecoderLayer(d, n_heads, ffn_dim, dropout) for _ in range(dec_layers))
        self.query = nn.Parameter(torch.randn(n_labels, d) * 0.02)
        self.norm = nn.LayerNorm(d)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (label features (B, L, d), encoded tokens (B, h*w, d))."""
        src = self.input_proj(fmap.float())
        b, d, h, w = src.shape
        tokens = src.flatten(2).transpose(1, 2)  # (B, hw, d)
        pos = sine_positional_encoding(h, w, d, device=tokens.device)[None].to(tokens.dtype)
        for layer in self.encoder:
            tokens = layer(tokens, pos)
        tgt = self.query[None].expand(b, -1, -1)
        for layer in self.decoder:
            tgt = layer(tgt, tokens, pos)
        return self.norm(tgt), tokens


class GroupLinear(nn.Module):
    """Per-label linear logits s_l = w_l . h_l + b_l."""

    def __init__(self, n_labels: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_labels, d))
        self.bias = nn.Parameter(torch.zeros(n_labels))
        nn.init.uniform_(self.weight, -1 / math.sqrt(d), 1 / math.sqrt(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h * self.weight).sum(-1) + self.bias


class SADCL(Method):
    """SADCL as a class predictor (``sadcl_task="class"``) or descriptor learner (``"descriptors"``)."""

    name = "sadcl"

    def __init__(self, info: DataInfo, hp: dict):
        hp = {**DEFAULTS, **hp}
        super().__init__(info, hp)
        self.task = str(hp["sadcl_task"])
        if self.task not in TASKS:
            raise SADCLConfigError(f"sadcl_task must be one of {TASKS}; got {self.task!r}")
        self.class_loss = str(hp["class_loss"])
        if self.class_loss not in ("ce", "bce", "asl"):
            raise SADCLConfigError(f"class_loss must be 'ce', 'bce' or 'asl'; got {self.class_loss!r}")
        if str(hp["ml_loss"]) not in ("bce", "asl"):
            raise SADCLConfigError(f"ml_loss must be 'bce' or 'asl'; got {hp['ml_loss']!r}")
        if self.task == "descriptors" and info.n_descriptors == 0:
            raise SADCLConfigError("sadcl_task='descriptors' needs at least one descriptor in DataInfo")
        self.n_labels = info.n_classes if self.task == "class" else info.n_descriptors
        d = int(hp["d_model"])
        self.backbone = build_backbone(hp["backbone"], info, hp)
        self.decoder = LabelQueryDecoder(
            self.backbone.out_channels, self.n_labels, d, int(hp["n_heads"]), int(hp["enc_layers"]),
            int(hp["dec_layers"]), int(hp["ffn_dim"]), float(hp["dropout"]),
        )
        self.label_head = GroupLinear(self.n_labels, d)
        self.class_head = (
            nn.Sequential(nn.Dropout(float(hp["dropout"])), nn.Linear(2 * d, info.n_classes))
            if self.task == "descriptors" else None
        )
        dp = int(hp["proj_dim"])
        self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, dp))
        self.prototypes = nn.Parameter(torch.randn(self.n_labels, d) * 0.02)
        self.bank_size = int(hp["bank_size"])
        if self.bank_size < 1:
            raise SADCLConfigError(f"bank_size must be >= 1; got {self.bank_size}")
        self.register_buffer("bank", self.prototypes.detach().clone()[None].repeat(self.bank_size, 1, 1))
        self.register_buffer("proto_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("_proto_sum", torch.zeros(self.n_labels, d), persistent=False)
        self.register_buffer("_proto_count", torch.zeros(self.n_labels), persistent=False)
        self.register_buffer("_pos_sum", torch.zeros(self.n_labels, d), persistent=False)
        self.register_buffer("_pos_count", torch.zeros(self.n_labels), persistent=False)

    # ---------------------------------------------------------------- forward and targets
    def forward(self, batch: dict) -> dict:
        fmap, _ = self.backbone(batch["x"])
        h, tokens = self.decoder(fmap)
        label_logits = self.label_head(h)
        out = {"h": h, "label_logits": label_logits}
        if self.task == "class":
            out["logits"] = label_logits
        else:
            pooled = torch.cat((h.mean(1), tokens.mean(1)), dim=-1)
            out["logits"] = self.class_head(pooled)
        if self.training:
            # projections for the contrastive terms, computed here (not in ``loss``) so that every
            # trainable parameter is reached from forward's outputs (DistributedDataParallel)
            out.update(self._projections(batch, h))
        return out

    def _projections(self, batch: dict, h: torch.Tensor) -> dict:
        z_bank = self.projector(self._bank_view(batch, h.shape[0]).to(h.dtype))
        return {"z": self.projector(h), "z_bank": z_bank, "z_proto": self.projector(self.prototypes)}

    def label_targets(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary label targets (B, L) and observation mask (B, L) for the current task."""
        if self.task == "class":
            y = F.one_hot(batch["y"].long(), self.n_labels).float()
            return y, torch.ones_like(y)
        desc = batch["desc"].float()
        mask = batch.get("desc_mask")
        mask = torch.ones_like(desc) if mask is None else mask.float()
        y = (desc >= float(self.hp["desc_threshold"])).float() * mask
        return y, mask

    def label_probs(self, label_logits: torch.Tensor) -> torch.Tensor:
        """Per-label confidence: softmax for the CE-trained class task, sigmoid otherwise."""
        if self.task == "class" and self.class_loss == "ce":
            return label_logits.softmax(-1)
        return torch.sigmoid(label_logits)

    # ---------------------------------------------------------------- losses
    def warmup_epochs(self, n_epochs: int) -> int:
        """Warm-up length = max(warmup_epochs, round(warmup_frac * n_epochs))."""
        return max(int(self.hp["warmup_epochs"]), int(round(float(self.hp["warmup_frac"]) * n_epochs)))

    def selection_start_epoch(self, n_epochs: int) -> int:
        """Model selection chooses among the contrastive (post-warm-up) epochs only."""
        warm = self.warmup_epochs(n_epochs)
        return warm if warm < n_epochs else 0

    def contrastive_active(self, ctx: TrainContext) -> bool:
        return ctx.epoch >= self.warmup_epochs(ctx.n_epochs) and bool(self.proto_ready)

    def _multilabel(self, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        kind = self.class_loss if self.task == "class" else str(hp["ml_loss"])
        if kind == "asl":
            return asymmetric_loss(logits, y, mask, float(hp["asl_gamma_neg"]), float(hp["asl_gamma_pos"]),
                                   float(hp["asl_clip"]), str(hp["ml_reduction"]))
        return multilabel_bce(logits, y, mask, str(hp["ml_reduction"]))

    def _bank_view(self, batch: dict, n: int) -> torch.Tensor:
        index = batch.get("index")
        if index is None:
            index = torch.arange(n, device=self.bank.device)
        return self.bank[index.long().to(self.bank.device) % self.bank_size]

    def loss(self, batch: dict, out: dict, ctx: TrainContext) -> tuple[torch.Tensor, dict[str, float]]:
        y, mask = self.label_targets(batch)
        parts: dict[str, float] = {}
        if self.task == "class":
            if self.class_loss == "ce":
                total = F.cross_entropy(out["logits"], batch["y"])
            else:
                total = self._multilabel(out["logits"], y, mask)
            parts["cls"] = float(total.detach())
        else:
            ce = F.cross_entropy(out["logits"], batch["y"])
            ml = self._multilabel(out["label_logits"], y, mask)
            total = ce + float(self.hp["lambda_ml"]) * ml
            parts["ce"], parts["ml"] = float(ce.detach()), float(ml.detach())
        if self.contrastive_active(ctx):
            proj = out if "z" in out else self._projections(batch, out["h"])
            sscl = sscl_from_label_features(proj["z"], y * mask, proj["z_bank"], float(self.hp["tau_sscl"]))
            pscl = pscl_loss(proj["z"], proj["z_proto"], y, mask, float(self.hp["tau_pscl"]))
            total = total + float(self.hp["lambda_sscl"]) * sscl + float(self.hp["lambda_pscl"]) * pscl
            parts["sscl"], parts["pscl"] = float(sscl.detach()), float(pscl.detach())
        parts["total"] = float(total.detach())
        return total, parts

    # ---------------------------------------------------------------- bank and prototypes
    @torch.no_grad()
    def update_bank(self, batch: dict, out: dict) -> int:
        """slot (index % bank_size, l) <- h_{b,l} where y = 1 and p > bank_threshold; returns #updates."""
        y, mask = self.label_targets(batch)
        p = self.label_probs(out["label_logits"].detach())
        sel = (y > 0.5) & (mask > 0.5) & (p > float(self.hp["bank_threshold"]))
        b_idx, l_idx = sel.nonzero(as_tuple=True)
        if b_idx.numel():
            index = batch.get("index")
            if index is None:
                index = torch.arange(sel.shape[0], device=sel.device)
            slots = index.long().to(self.bank.device)[b_idx.to(self.bank.device)] % self.bank_size
            self.bank[slots, l_idx.to(self.bank.device)] = out["h"].detach()[b_idx, l_idx].to(self.bank)
        return int(b_idx.numel())

    @torch.no_grad()
    def accumulate_prototypes(self, batch: dict, out: dict) -> None:
        """Add this batch's confident-positive (p > proto_threshold) and positive features."""
        y, mask = self.label_targets(batch)
        pos = ((y > 0.5) & (mask > 0.5)).float()
        conf = pos * (self.label_probs(out["label_logits"].detach()) > float(self.hp["proto_threshold"])).float()
        h = out["h"].detach().float()
        self._proto_sum += torch.einsum("bl,bld->ld", conf, h)
        self._proto_count += conf.sum(0)
        self._pos_sum += torch.einsum("bl,bld->ld", pos, h)
        self._pos_count += pos.sum(0)

    @torch.no_grad()
    def init_prototypes(self) -> None:
        """Prototypes <- means over confident positives (fallback: all positives, else unchanged);
        the memory bank is reset to the prototypes and the contrastive terms become active."""
        conf = self._proto_count > 0
        pos_only = (~conf) & (self._pos_count > 0)
        protos = self.prototypes.data
        protos[conf] = (self._proto_sum[conf] / self._proto_count[conf, None]).to(protos)
        protos[pos_only] = (self._pos_sum[pos_only] / self._pos_count[pos_only, None]).to(protos)
        self.bank.copy_(protos[None].expand_as(self.bank))
        for buf in (self._proto_sum, self._proto_count, self._pos_sum, self._pos_count):
            buf.zero_()
        self.proto_ready.fill_(True)

    def after_step(self, batch: dict, out: dict, ctx: TrainContext) -> None:
        warm = self.warmup_epochs(ctx.n_epochs)
        if not bool(self.proto_ready) and ctx.epoch == warm - 1:
            self.accumulate_prototypes(batch, out)
        self.update_bank(batch, out)

    def on_epoch_start(self, ctx: TrainContext) -> None:
        # safety net (warm-up of 0 epochs, or a trainer that skipped on_epoch_end)
        if not bool(self.proto_ready) and ctx.epoch >= self.warmup_epochs(ctx.n_epochs):
            self.init_prototypes()

    def on_epoch_end(self, ctx: TrainContext) -> None:
        if not bool(self.proto_ready) and ctx.epoch == self.warmup_epochs(ctx.n_epochs) - 1:
            self.init_prototypes()


# -------------------------------------------------------------------- multi-label evaluation


def _masked_multilabel_metrics(y: np.ndarray, scores: np.ndarray, mask: np.ndarray,
                               threshold: float = 0.5, top_k: int = 3) -> dict:
    """mAP, CP/CR/CF1, OP/OR/OF1 (threshold) and their top-k variants over observed entries.

    AP per label over its observed rows (sklearn ``average_precision_score``); labels without an
    observed positive are left out of mAP. Precision/recall with 0/0 counted as 0 (ML-GCN style).
    Top-k: each sample predicts its k highest-scoring observed labels.
    """
    from sklearn.metrics import average_precision_score

    y = (y > 0.5) & (mask > 0.5)
    obs = mask > 0.5
    aps = []
    for j in range(y.shape[1]):
        rows = obs[:, j]
        if y[rows, j].any():
            aps.append(average_precision_score(y[rows, j], scores[rows, j]))
    res = {"mAP": float(np.mean(aps)) if aps else float("nan"), "n_labels_ap": len(aps)}

    def prf(pred: np.ndarray, suffix: str) -> None:
        pred = pred & obs
        tp = (pred & y).sum(0).astype(float)
        n_pred, n_true = pred.sum(0).astype(float), y.sum(0).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            cp = float(np.mean(np.where(n_pred > 0, tp / np.maximum(n_pred, 1), 0.0)))
            cr = float(np.mean(np.where(n_true > 0, tp / np.maximum(n_true, 1), 0.0)))
        op = float(tp.sum() / n_pred.sum()) if n_pred.sum() else 0.0
        orr = float(tp.sum() / n_true.sum()) if n_true.sum() else 0.0
        res.update({
            f"CP{suffix}": cp, f"CR{suffix}": cr, f"CF1{suffix}": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
            f"OP{suffix}": op, f"OR{suffix}": orr, f"OF1{suffix}": 2 * op * orr / (op + orr) if op + orr else 0.0,
        })

    prf(scores >= threshold, "")
    k = min(top_k, y.shape[1])
    masked_scores = np.where(obs, scores, -np.inf)
    top = np.argsort(-masked_scores, axis=1, kind="stable")[:, :k]
    pred_top = np.zeros_like(y)
    np.put_along_axis(pred_top, top, True, axis=1)
    prf(pred_top, f"_top{top_k}")
    return res


@torch.no_grad()
def collect_label_scores(method: SADCL, batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``method`` in eval mode over ``batches``; return (targets, probabilities, mask), (N, L)."""
    was_training = method.training
    method.eval()
    ys, ps, ms = [], [], []
    try:
        for batch in batches:
            out = method(batch)
            y, m = method.label_targets(batch)
            ys.append(y.cpu().numpy())
            ms.append(m.cpu().numpy())
            ps.append(method.label_probs(out["label_logits"]).float().cpu().numpy())
    finally:
        method.train(was_training)
    if not ys:
        raise ValueError("collect_label_scores: no batches given")
    return np.concatenate(ys), np.concatenate(ps), np.concatenate(ms)


def evaluate_multilabel(method: SADCL, batches, threshold: float = 0.5, top_k: int = 3) -> dict:
    """Multi-label metrics of ``method``'s label predictions (descriptors, or one-hot classes).

    Uses ``semcov_lib.sci.metrics.multilabel_metrics`` when every entry is observed and that function
    exists; otherwise (masked descriptors) the masked equivalent above.
    """
    y, p, m = collect_label_scores(method, batches)
    if bool((m > 0.5).all()):
        try:
            from semcov_lib.sci.metrics import multilabel_metrics
        except ImportError:
            multilabel_metrics = None
        if multilabel_metrics is not None:
            return dict(multilabel_metrics(y.astype(int), p, threshold=threshold, top_k=top_k))
    return _masked_multilabel_metrics(y, p, m, threshold, top_k)


__all__ = [
    "DEFAULTS",
    "GroupLinear",
    "LabelQueryDecoder",
    "SADCL",
    "SADCLConfigError",
    "collect_label_scores",
    "evaluate_multilabel",
    "sine_positional_encoding",
]
