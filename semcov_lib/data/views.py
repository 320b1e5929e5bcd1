"""Dihedral views of chosen training images: a method's rows are shown rotated or mirrored.

Why: a rare semantic-coverage group has a handful of training images, and drawing them more
often (SemCovNet's rare-side resampling) shows the very same pixels again, which a head on frozen
features memorises. A lesion's orientation carries no label, so its seven other dihedral views
(rotations by 90°, 180°, 270° and the mirror image of each orientation) are valid new images of the same
group. A method names the rows and how many views (:meth:`~semcov_lib.models.methods.base.Method.view_rows`):
each time one of those rows is in a training batch it is shown as the original or one of its first
n views, chosen uniformly (n = 3: the three rotations; n = 7: all). With cached frozen features the views' features are extracted once
(the content-addressed feature cache, so runs and seeds share them); with images the view is
taken on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Views besides the original: rotations by 90, 180 and 270 degrees, the mirror image and its three rotations.
N_VIEWS = 7
#: The first three of them: the rotations only.
ROTATIONS = 3


def _check_n(n: int) -> int:
    if not 1 <= n <= N_VIEWS:
        raise ValueError(f"dihedral views: n={n}; a square image has 1 to {N_VIEWS} views besides itself")
    return n


def _transform(images: torch.Tensor, k: int) -> torch.Tensor:
    """Dihedral transform ``k`` (1..7) of (N, C, H, W) images: rot90 k times for k <= 3, else the
    mirror image rotated k - 4 times."""
    return torch.rot90(images, k, (-2, -1)) if k <= 3 else torch.rot90(images.flip(-1), k - 4, (-2, -1))


def dihedral_views(images: torch.Tensor, n: int = N_VIEWS) -> torch.Tensor:
    """(N, C, H, W) -> (N, n, C, H, W): the first ``n`` dihedral transforms of each image other than
    the identity, in the order rot90, rot180, rot270, mirror, mirror + rot90, rot180, rot270."""
    return torch.stack([_transform(images, k) for k in range(1, _check_n(n) + 1)], 1)


def dihedral_view(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Each image (N, C, H, W) under its own transform ``which`` (N,): 0 = unchanged, 1..7 as
    :func:`dihedral_views`."""
    out = images.clone()
    for k in range(1, N_VIEWS + 1):
        rows = (which == k).nonzero().flatten()
        if len(rows):
            out[rows] = _transform(images[rows], k)
    return out


@dataclass(frozen=True)
class ViewRequest:
    """What a method asks for: these rows of the training split, each with ``n`` views."""

    rows: torch.Tensor
    n: int


@dataclass
class ViewBank:
    """The rows of a training split that are shown as views, and their views' inputs.

    ``lookup`` (N,) gives each split row's position in ``features`` (-1: shown as it is); ``n``
    views per row; ``features`` (R, n, C, h, w) are the views' cached features, or None when the
    split holds images (the view is then taken from the batch itself).
    """

    lookup: torch.Tensor
    n: int
    features: torch.Tensor | None

    def apply(self, batch: dict, idx: torch.Tensor, generator: torch.Generator) -> None:
        """Replace, in place, each chosen row of ``batch["x"]`` by a uniformly drawn one of its n + 1 views."""
        pos = self.lookup[idx]
        which = torch.randint(self.n + 1, (len(idx),), generator=generator)  # 0 = the original
        which = torch.where(pos >= 0, which, torch.zeros_like(which))
        use = (which > 0).nonzero().flatten()
        if not len(use):
            return
        x = batch["x"]
        if self.features is None:
            x[use] = dihedral_view(x[use], which[use])
        else:
            x[use] = self.features[pos[use], which[use] - 1].to(x.device, x.dtype)


def view_bank(rows: torch.Tensor, n_rows: int, n: int, images: torch.Tensor | None,
              features_of=None) -> ViewBank:
    """The :class:`ViewBank` of ``rows`` of a split of ``n_rows``, ``n`` views each. ``images``: the rows' uint8
    images (R, 3, H, W) when the split holds features, which ``features_of`` (uint8 images ->
    features, e.g. the feature cache) turns into the views' features; None when it holds images."""
    rows = torch.as_tensor(rows, dtype=torch.long)
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows or len(np.unique(rows.numpy())) != len(rows)):
        raise ValueError(f"view rows must be distinct rows of the {n_rows}-row training split")
    lookup = torch.full((n_rows,), -1, dtype=torch.long)
    lookup[rows] = torch.arange(len(rows))
    if images is None or not len(rows):
        return ViewBank(lookup, _check_n(n), None)
    feats = features_of(dihedral_views(images, n).flatten(0, 1))
    return ViewBank(lookup, n, feats.view(len(rows), n, *feats.shape[1:]))
