"""CUB-200-2011 (200 bird species, 312 binary attributes per image) as an :class:`SCITable`.

Layout (after ``tar xzf CUB_200_2011.tgz``): ``attributes.txt`` at the top level *next to*
``CUB_200_2011/`` (the README says ``attributes/attributes.txt``; both places are checked, plus
``CUB_200_2011/attributes.txt``). ``root`` may be the folder holding ``CUB_200_2011/`` or
``CUB_200_2011/`` itself.

Files read: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``,
``attributes.txt``, ``attributes/image_attribute_labels.txt`` and (optional) ``bounding_boxes.txt``.
A few lines of the real ``image_attribute_labels.txt`` carry a sixth token; like Koh et al.
(ConceptBottleneck) the first four tokens are used, and the lines are reported in one counted
:class:`DatasetWarning`. Why that is right: a line is ``image_id attribute_id is_present
certainty_id time``, the extra token comes after the fourth (the annotation-time field of those
lines is split in two), and time is the one field the package does not use. The four used
fields are still checked on those lines (integers, is_present 0/1, certainty 1-4, known ids, no
(image, attribute) pair twice), so a line shifted any other way would be refused, not misread.

The table:

* ``label``: class index in ``classes.txt`` order; classes keep their file names
  (``001.Black_footed_Albatross``).
* ``split``: official ``train_test_split.txt`` (1 = train, 0 = test); ``val`` is carved from the
  official training images: seeded (``split_seed``), stratified by class, ``val_fraction``
  (default 0.1, at least one image per class with two or more training images).
* descriptors, one per attribute (named as in ``attributes.txt``), by ``descriptor_value``:

  - ``"presence"`` (default): ``is_present`` 0/1 (``descriptor_kind="hard"``);
  - ``"certainty"``: a soft score ``0.5 + (is_present - 0.5) * w(certainty)`` with
    w = 0 (1 not visible), 1/3 (2 guessing), 2/3 (3 probably), 1 (4 definitely), so a definite
    "present" is 1, a definite "absent" 0 and "not visible" 0.5 (``descriptor_kind="soft"``).

  ``not_visible="nan"`` turns certainty-1 ("not visible") annotations into NaN (not observed) in
  both modes. (image, attribute) pairs absent from the file are NaN, with a counted warning.
* ``attributes``: ``"all"`` (312), an explicit list of names or 1-based ids, or ``"cbm"``: the
  concept-bottleneck subset of Koh et al. 2020, a *derived product*, not a file: attributes
  present (per-class strict majority vote of ``is_present`` over this table's training split) in
  at least ``min_classes`` classes (default 10; Koh et al. report 112 attributes for the official
  data, which this reconstruction is expected but not verified to reproduce).
* ``subgroup``: ``"none"`` (default) or an attribute name (levels ``"<attr>"`` / ``"not_<attr>"``;
  the attribute is then removed from the descriptors).
* metadata: ``image_id``, ``class_id``, ``is_training_image``, ``bbox_x/y/w/h`` when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._parsing import (
    DatasetError,
    ImageIndex,
    apply_missing_images,
    assemble_frame,
    check_fraction,
    choose,
    find_base,
    find_file,
    holdout_mask,
    line_error,
    line_number_of_row,
    numeric_checker,
    preview,
    read_id_table,
    read_numeric_table,
    relative_to,
    warn,
)
from semcov_lib.data.table import NO_SUBGROUP, SCITable

CERTAINTY_WEIGHT = {1: 0.0, 2: 1.0 / 3.0, 3: 2.0 / 3.0, 4: 1.0}
CERTAINTY_NAMES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
DESCRIPTOR_VALUES = ("presence", "certainty")


def load_cub_200_2011(
    root: str | Path,
    descriptor_value: str = "presence",
    not_visible: str = "keep",
    attributes: str | Sequence[str | int] = "all",
    min_classes: int = 10,
    subgroup: str | None = NO_SUBGROUP,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    images_dir: str | Path | None = None,
    missing_images: str = "error",
) -> SCITable:
    """Read CUB-200-2011 into the common table (options: see module docstring)."""
    choose(descriptor_value, DESCRIPTOR_VALUES, "descriptor_value")
    choose(not_visible, ("keep", "nan"), "not_visible option")
    val_fraction = check_fraction("val_fraction", val_fraction)
    meta: dict = {"dataset": "cub_200_2011"}
    base = find_base(root, (".", "CUB_200_2011", "CUB_200_2011/CUB_200_2011"), ("images.txt",), "CUB-200-2011")
    top = Path(root).expanduser()

    images = read_id_table(find_file([base / "images.txt"], "CUB images.txt"), 2,
                           ["image_id", "path"], rest_as_text=True)
    labels = read_id_table(find_file([base / "image_class_labels.txt"], "CUB image_class_labels.txt"), 2,
                           ["image_id", "class_id"])
    split = read_id_table(find_file([base / "train_test_split.txt"], "CUB train_test_split.txt"), 2,
                          ["image_id", "is_training_image"])
    classes = read_id_table(find_file([base / "classes.txt"], "CUB classes.txt"), 2,
                            ["class_id", "name"], rest_as_text=True)
    attr_path = find_file([base / "attributes" / "attributes.txt", base.parent / "attributes.txt",
                           base / "attributes.txt", top / "attributes.txt"], "CUB attributes.txt")
    attrs = read_id_table(attr_path, 2, ["attribute_id", "name"], rest_as_text=True)
    label_path = find_file([base / "attributes" / "image_attribute_labels.txt"], "CUB image_attribute_labels.txt")
    meta["files"] = {"images": str(base / "images.txt"), "attributes": str(attr_path),
                     "image_attribute_labels": str(label_path)}

    image_ids = images["image_id"].to_numpy()
    class_of = _aligned(labels, "class_id", image_ids, base / "image_class_labels.txt")
    train_flag = _aligned(split, "is_training_image", image_ids, base / "train_test_split.txt")
    for value, line in zip(train_flag, _lines_for(split, image_ids)):
        if value not in ("0", "1"):
            raise DatasetError(f"{base / 'train_test_split.txt'}, line {line}: is_training_image {value!r} "
                               "is not 0 or 1")
    class_index = {int(c): i for i, c in enumerate(classes["class_id"])}
    label = np.empty(len(image_ids), dtype=np.int64)
    for i, (value, line) in enumerate(zip(class_of, _lines_for(labels, image_ids))):
        try:
            label[i] = class_index[int(value)]
        except (ValueError, KeyError):
            raise DatasetError(f"{base / 'image_class_labels.txt'}, line {line}: class_id {value!r} "
                               f"is not in classes.txt") from None
    is_train = np.asarray(train_flag) == "1"

    attr_names = attrs["name"].str.strip().tolist()
    presence, certainty = _read_attribute_labels(label_path, image_ids, attrs["attribute_id"].to_numpy(), meta)

    # ---- splits
    split_col = np.where(is_train, "train", "test").astype(object)
    train_rows = np.flatnonzero(is_train)
    val = holdout_mask(label[train_rows], val_fraction, split_seed)
    split_col[train_rows[val]] = "val"

    # ---- attribute selection
    selected = _select_attributes(attributes, attr_names, presence, label, split_col == "train", min_classes,
                                  attr_path, meta)
    subgroup = NO_SUBGROUP if subgroup in (None, "", NO_SUBGROUP) else subgroup
    if subgroup != NO_SUBGROUP:
        if subgroup not in attr_names:
            raise DatasetError(f"{attr_path}: unknown subgroup attribute {subgroup!r}")
        s = attr_names.index(subgroup)
        if np.isnan(presence[:, s]).any():
            raise DatasetError(f"{label_path}: subgroup attribute {subgroup!r} is unannotated for some images")
        groups = np.where(presence[:, s] == 1, subgroup, f"not_{subgroup}").astype(object)
        selected = [j for j in selected if j != s]
    else:
        groups = np.full(len(image_ids), NO_SUBGROUP, dtype=object)

    # ---- descriptor values
    chosen_presence, chosen_certainty = presence[:, selected], certainty[:, selected]
    if descriptor_value == "presence":
        values = chosen_presence.copy()
    else:
        weight = np.full(chosen_certainty.shape, np.nan)
        for c, w in CERTAINTY_WEIGHT.items():
            weight[chosen_certainty == c] = w
        values = 0.5 + (chosen_presence - 0.5) * weight
    if not_visible == "nan":
        values[chosen_certainty == 1] = np.nan
    names = [attr_names[j] for j in selected]

    # ---- images
    image_dir = Path(images_dir).expanduser() if images_dir is not None else base / "images"
    rels = images["path"].str.strip().tolist()
    index = ImageIndex(image_dir)
    found = [index.find(r) for r in rels]
    keep = apply_missing_images(found, rels, f"CUB-200-2011 ({base / 'images.txt'})", image_dir,
                                missing_images, meta, index=index)
    paths = [relative_to(p if p is not None else image_dir / r, base) for p, r in zip(found, rels)]

    extra = pd.DataFrame({"image_id": image_ids.astype(np.int64),
                          "class_id": np.asarray([int(c) for c in class_of], dtype=np.int64),
                          "is_training_image": is_train.astype(np.int8)})
    bbox_path = base / "bounding_boxes.txt"
    if bbox_path.is_file():
        boxes = read_id_table(bbox_path, 5, ["image_id", "bbox_x", "bbox_y", "bbox_w", "bbox_h"])
        boxes = boxes.set_index("image_id").reindex(image_ids)
        for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"):
            extra[c] = pd.to_numeric(boxes[c], errors="coerce").to_numpy()
    frame = assemble_frame(
        {"sample_id": [str(int(i)) for i in image_ids], "image_path": paths, "label": label,
         "subgroup": groups, "split": split_col},
        values, names, extra)
    frame = frame[keep].reset_index(drop=True)
    meta.update(descriptor_value=descriptor_value, not_visible=not_visible, subgroup=subgroup,
                n_attributes=len(names), images_dir=str(image_dir), split_seed=split_seed,
                val_fraction=val_fraction)
    return SCITable(frame=frame, classes=classes["name"].str.strip().tolist(), descriptors=names,
                    name="cub_200_2011", root=base, subgroup_name=subgroup if subgroup != NO_SUBGROUP else "none",
                    descriptor_kind="hard" if descriptor_value == "presence" else "soft",
                    source=str(base), meta=meta)


# --------------------------------------------------------------------------- helpers
def _aligned(table: pd.DataFrame, column: str, image_ids: np.ndarray, path: Path) -> list[str]:
    """Values of ``column`` in ``images.txt`` order; every image id must appear exactly once."""
    mapping = dict(zip(table["image_id"], table[column]))
    missing = [int(i) for i in image_ids if i not in mapping]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} image id(s) of images.txt are missing, e.g. {preview(missing)}")
    extra = sorted(set(mapping) - set(int(i) for i in image_ids))
    if extra:
        raise DatasetError(f"{path}: {len(extra)} image id(s) are not in images.txt, e.g. {preview(extra)}")
    return [str(mapping[i]).strip() for i in image_ids]


def _lines_for(table: pd.DataFrame, image_ids: np.ndarray) -> list[int]:
    mapping = dict(zip(table["image_id"], table["line"]))
    return [int(mapping[i]) for i in image_ids]


def _read_attribute_labels(path: Path, image_ids: np.ndarray, attr_ids: np.ndarray, meta: dict
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) float presence (NaN where unannotated) and int certainty (0 where unannotated)."""
    checker = numeric_checker(5, 6, int_cols={0, 1, 2, 3})
    dtype = {0: np.int64, 1: np.int64, 2: np.int64, 3: np.int64, 4: np.float64, 5: np.float64}
    table = read_numeric_table(path, 6, dtype=dtype, checker=checker)
    if table.empty:
        raise DatasetError(f"{path} is empty")

    def fail(row: int, problem: str) -> DatasetError:
        lineno, line = line_number_of_row(path, row)
        return line_error(path, lineno, line, problem)

    short = np.flatnonzero(table[4].isna().to_numpy())
    if len(short):
        raise fail(int(short[0]), "expected 5 fields (image_id attribute_id is_present certainty_id time), found 4")
    # 6 tokens: only the trailing time field is split; tokens 0-3 are validated below like any line.
    six = np.flatnonzero(table[5].notna().to_numpy())
    meta.setdefault("counts", {})["six_token_lines"] = int(len(six))
    if len(six):
        lineno, line = line_number_of_row(path, int(six[0]))
        warn(f"{path}: {len(six)} line(s) have 6 fields instead of 5 (a known irregularity of the release); "
             f"used the first 4 (image_id attribute_id is_present certainty_id), e.g. line {lineno}: {line!r}", meta)

    img = table[0].to_numpy()
    att = table[1].to_numpy()
    pres = table[2].to_numpy()
    cert = table[3].to_numpy()
    for values, allowed, what in ((pres, (0, 1), "is_present"), (cert, (1, 2, 3, 4), "certainty_id")):
        bad = np.flatnonzero(~np.isin(values, allowed))
        if len(bad):
            raise fail(int(bad[0]), f"{what} {int(values[bad[0]])} is not one of {list(allowed)}")
    img_pos = pd.Index(image_ids).get_indexer(img)
    bad = np.flatnonzero(img_pos < 0)
    if len(bad):
        raise fail(int(bad[0]), f"image_id {int(img[bad[0]])} is not in images.txt")
    att_pos = pd.Index(attr_ids).get_indexer(att)
    bad = np.flatnonzero(att_pos < 0)
    if len(bad):
        raise fail(int(bad[0]), f"attribute_id {int(att[bad[0]])} is not in attributes.txt")
    flat = img_pos.astype(np.int64) * len(attr_ids) + att_pos
    dup = pd.Series(flat).duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise fail(row, f"duplicated annotation of image {int(img[row])}, attribute {int(att[row])}")
    presence = np.full(len(image_ids) * len(attr_ids), np.nan)
    certainty = np.zeros(len(image_ids) * len(attr_ids), dtype=np.int8)
    presence[flat] = pres
    certainty[flat] = cert
    n_missing = int(np.isnan(presence).sum())
    meta["counts"]["unannotated_pairs"] = n_missing
    if n_missing:
        warn(f"{path}: {n_missing} (image, attribute) pairs have no line; their descriptors are NaN", meta)
    shape = (len(image_ids), len(attr_ids))
    return presence.reshape(shape), certainty.reshape(shape)


def _select_attributes(attributes, names: list[str], presence: np.ndarray, label: np.ndarray, train: np.ndarray,
                       min_classes: int, attr_path: Path, meta: dict) -> list[int]:
    if isinstance(attributes, str):
        if attributes == "all":
            return list(range(len(names)))
        if attributes != "cbm":
            raise DatasetError(f"attributes must be 'all', 'cbm' or a list of names/ids, got {attributes!r}")
        if int(min_classes) < 1:
            raise DatasetError(f"min_classes must be >= 1, got {min_classes!r}")
        n_classes = int(label.max()) + 1
        counts = np.zeros((n_classes, len(names)))
        totals = np.zeros((n_classes, len(names)))
        p = presence[train]
        for c in range(n_classes):
            rows = p[label[train] == c]
            counts[c] = np.nansum(rows, axis=0)
            totals[c] = np.sum(~np.isnan(rows), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            majority = (counts / totals) > 0.5
        n_present = majority.sum(axis=0)
        chosen = [j for j in range(len(names)) if n_present[j] >= int(min_classes)]
        meta["cbm"] = {"min_classes": int(min_classes), "n_selected": len(chosen),
                       "note": "derived: per-class majority vote on the training split (Koh et al. 2020)"}
        if not chosen:
            raise DatasetError(f"attributes='cbm': no attribute is present in >= {min_classes} classes "
                               f"(by majority vote over {int(train.sum())} training images); lower min_classes")
        return chosen
    chosen = []
    for item in attributes:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 1 <= int(item) <= len(names):
                raise DatasetError(f"{attr_path}: attribute id {item} outside 1..{len(names)}")
            chosen.append(int(item) - 1)
        elif item in names:
            chosen.append(names.index(item))
        else:
            raise DatasetError(f"{attr_path}: unknown attribute {item!r}")
    if not chosen:
        raise DatasetError("attributes: empty list")
    if len(set(chosen)) != len(chosen):
        raise DatasetError(f"attributes: duplicated entries in {list(attributes)}")
    return chosen
