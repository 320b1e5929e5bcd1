"""What a model may know about its training data: shared by backbones and methods, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semcov_lib.data.table import ClassesAndDescriptors


@dataclass
class DataInfo(ClassesAndDescriptors):
    """What a method may know about its training data (all from the training split)."""

    classes: list[str]
    descriptors: list[str]  # column names, e.g. MONET_hair
    descriptor_text: list[str]  # human-readable names used for text embeddings, e.g. "hair"
    subgroups: list[str]
    class_counts: np.ndarray  # (T,) training images per class
    coverage: np.ndarray  # (T, K, S) soft training coverage cov_g, NaN where N_{c,s} = 0
    group_counts: np.ndarray  # (T, S) training images per (class, subgroup)
    prevalence: np.ndarray  # (K,) global descriptor prevalence pi_k
    input_shape: tuple[int, int, int]  # shape of one batch["x"] item
    features_cached: bool = False  # True when batch["x"] holds cached backbone features
    presence: np.ndarray | None = None  # (T, K, S) share of samples whose score is >= 0.5 (hard membership)
    extra: dict = field(default_factory=dict)

    @property
    def n_subgroups(self) -> int:
        return len(self.subgroups)


__all__ = ["DataInfo"]
