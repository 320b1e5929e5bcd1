"""The common table: one row per image, the format every loader produces.

Every dataset (the embedded benchmark, MILK10k, CelebA, CUB, ...) is turned into an
:class:`SCITable`, so coverage analysis, CDI, training and every notebook run on any of
them unchanged.

Required columns of ``SCITable.frame``:

``sample_id``   unique string id of the image
``image_path``  path of the image file (absolute, or relative to ``SCITable.root``)
``label``       integer class index into ``SCITable.classes``
``subgroup``    string subgroup level ("none" when the dataset has no subgroup)
``split``       one of :data:`SPLITS`
one float column per name in ``SCITable.descriptors``: scores in [0, 1], NaN = not observed.

Any other column (``lesion_id``, age, sex, ``gt_<descriptor>`` presence, ...) is kept as
metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

# val_stress: coverage-balanced validation part (tuning); coverage_reference: rows that only give the
# training coverage an oracle trained on other rows is evaluated against (never trained on)
SPLITS = ("train", "val", "test", "stress", "val_stress", "coverage_reference")
REQUIRED_COLUMNS = ("sample_id", "image_path", "label", "subgroup", "split")
NO_SUBGROUP = "none"


class TableError(ValueError):
    """A table (or the file it came from) does not have the expected content."""


class ClassesAndDescriptors:
    """The two axes every SCG index runs over, for objects with ``classes`` and ``descriptors``
    lists (the common table, and what a model is told about its training data)."""

    classes: list[str]
    descriptors: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_descriptors(self) -> int:
        return len(self.descriptors)


@dataclass
class SCITable(ClassesAndDescriptors):
    """A dataset in the common format (see module docstring)."""

    frame: pd.DataFrame
    classes: list[str]
    descriptors: list[str]
    name: str = "dataset"
    root: Path | None = None
    subgroup_name: str = "subgroup"
    descriptor_kind: str = "soft"  # "soft" (probabilities) or "hard" (0/1 attributes)
    source: str = ""  # file or folder the table was read from, used in error messages
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.descriptors = [str(d) for d in self.descriptors]
        if self.root is not None:
            self.root = Path(self.root)
        validate_table(self)

    # ------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return len(self.frame)

    def labels(self) -> np.ndarray:
        """Class indices as an int64 array."""
        return self.frame["label"].to_numpy(dtype=np.int64)

    def scores(self) -> np.ndarray:
        """Descriptor scores as a float32 (N, K) array; NaN where not observed."""
        return self.frame[self.descriptors].to_numpy(dtype=np.float32)

    def subgroup_levels(self) -> list[str]:
        """Sorted subgroup levels (fixed for the whole table, whatever the split)."""
        return sorted(self.frame["subgroup"].astype(str).unique().tolist())

    def subgroup_codes(self, levels: list[str] | None = None) -> np.ndarray:
        """Subgroup of each row as an index into ``levels`` (default: all levels)."""
        levels = self.subgroup_levels() if levels is None else list(levels)
        lookup = {level: i for i, level in enumerate(levels)}
        values = self.frame["subgroup"].astype(str)
        unknown = sorted(set(values) - set(lookup))
        if unknown:
            raise TableError(f"{self._where()}: subgroup values {unknown[:5]} not in levels {levels}")
        return values.map(lookup).to_numpy(dtype=np.int64)

    def image_paths(self) -> list[Path]:
        """Absolute image paths (relative ones are resolved against ``root``)."""
        base = self.root or Path(".")
        return [Path(p) if Path(p).is_absolute() else base / p for p in self.frame["image_path"].astype(str)]

    def split(self, name: str) -> "SCITable":
        """The rows of one split, as a table with the same classes and descriptors."""
        if name not in SPLITS:
            raise TableError(f"unknown split {name!r}; expected one of {SPLITS}")
        rows = self.frame[self.frame["split"] == name].reset_index(drop=True)
        return replace(self, frame=rows)

    def has_split(self, name: str) -> bool:
        return bool((self.frame["split"] == name).any())

    def _where(self) -> str:
        return f"{self.name} ({self.source})" if self.source else self.name


def validate_table(table: SCITable) -> None:
    """Raise :class:`TableError` naming the column and value when the table is malformed."""
    frame, where = table.frame, table._where()
    missing = [c for c in (*REQUIRED_COLUMNS, *table.descriptors) if c not in frame.columns]
    if missing:
        raise TableError(f"{where}: missing column(s) {missing}")
    if not table.classes:
        raise TableError(f"{where}: the class list is empty")
    if len(set(table.classes)) != len(table.classes):
        raise TableError(f"{where}: duplicated class names in {table.classes}")
    if table.descriptor_kind not in ("soft", "hard"):
        raise TableError(f"{where}: descriptor_kind must be 'soft' or 'hard', got {table.descriptor_kind!r}")

    dup = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(dup):
        raise TableError(f"{where}: duplicated sample_id values, e.g. {dup.iloc[0]!r} ({len(dup)} duplicates)")

    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame["label"][labels.isna() | (labels != labels.round()) | (labels < 0) | (labels >= len(table.classes))]
    if len(bad):
        raise TableError(
            f"{where}: column 'label' holds {bad.iloc[0]!r} (row {bad.index[0]}), "
            f"not a class index in 0..{len(table.classes) - 1} ({len(bad)} bad rows)"
        )

    bad_split = frame["split"][~frame["split"].isin(SPLITS)]
    if len(bad_split):
        raise TableError(f"{where}: column 'split' holds {bad_split.iloc[0]!r}; expected one of {SPLITS}")

    for name in table.descriptors:
        values = pd.to_numeric(frame[name], errors="coerce")
        not_numeric = frame[name][values.isna() & frame[name].notna()]
        if len(not_numeric):
            raise TableError(f"{where}: descriptor column {name!r} holds non-numeric {not_numeric.iloc[0]!r}")
        outside = values[(values < 0) | (values > 1)]
        if len(outside):
            raise TableError(
                f"{where}: descriptor column {name!r} holds {outside.iloc[0]!r} (row {outside.index[0]}), "
                "outside [0, 1]; rescale it (e.g. map -1/+1 attributes to 0/1) before loading"
            )
