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

The options can be passed one by one as keywords or grouped in a :class:`CubOptions`.
:func:`write_cub` writes the tiny fixture copy (``fixtures.write_fixture("cub_200_2011", dest)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._common import (
    DatasetError, ImageSource, attribute_groups, check_fraction, choose, find_base, find_file, finish_table,
    holdout_mask, line_error, line_number_of_row, numeric_checker, preview, read_id_table, read_numeric_table,
    resolve_images, subgroup_option, warn, write_image, write_text,
)
from semcov_lib.data.table import NO_SUBGROUP, SCITable

CERTAINTY_WEIGHT = MappingProxyType({1: 0.0, 2: 1.0 / 3.0, 3: 2.0 / 3.0, 4: 1.0})
CERTAINTY_NAMES = MappingProxyType({1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"})
DESCRIPTOR_VALUES = ("presence", "certainty")


@dataclass(frozen=True)
class CubOptions:
    """The options of :func:`load_cub_200_2011` (meaning: module docstring); also its keyword arguments."""

    descriptor_value: str = "presence"
    not_visible: str = "keep"
    attributes: str | Sequence[str | int] = "all"
    min_classes: int = 10
    subgroup: str | None = NO_SUBGROUP
    val_fraction: float = 0.1
    split_seed: int = 0
    images_dir: str | Path | None = None
    missing_images: str = "error"


class _CubFiles(NamedTuple):
    """The parsed annotation files of one copy."""

    images: pd.DataFrame
    labels: pd.DataFrame
    split: pd.DataFrame
    classes: pd.DataFrame
    attrs: pd.DataFrame
    attr_path: Path
    label_path: Path


def load_cub_200_2011(root: str | Path, options: CubOptions | None = None, **overrides: Any) -> SCITable:
    """Read CUB-200-2011 into the common table (options: see module docstring).

    ``options`` groups the options; keyword ``overrides`` (the field names of :class:`CubOptions`)
    replace single fields, so ``load_cub_200_2011(root, attributes="cbm")`` works as before.
    """
    opt = replace(options or CubOptions(), **overrides)
    choose(opt.descriptor_value, DESCRIPTOR_VALUES, "descriptor_value")
    choose(opt.not_visible, ("keep", "nan"), "not_visible option")
    val_fraction = check_fraction("val_fraction", opt.val_fraction)
    meta: dict = {"dataset": "cub_200_2011"}
    base = find_base(root, (".", "CUB_200_2011", "CUB_200_2011/CUB_200_2011"), ("images.txt",), "CUB-200-2011")
    files = _read_files(base, Path(root).expanduser(), meta)
    image_ids = files.images["image_id"].to_numpy()
    class_of, label, is_train = _labels(base, files, image_ids)
    attr_names = files.attrs["name"].str.strip().tolist()
    presence, certainty = _read_attribute_labels(files.label_path, image_ids, files.attrs["attribute_id"].to_numpy(),
                                                 meta)

    # ---- splits: val carved from the official training images
    split_col = np.where(is_train, "train", "test").astype(object)
    train_rows = np.flatnonzero(is_train)
    val = holdout_mask(label[train_rows], val_fraction, opt.split_seed)
    split_col[train_rows[val]] = "val"

    # ---- attribute selection; a subgroup attribute leaves the descriptors
    selected = _select_attributes(opt.attributes, attr_names, presence, label, split_col == "train",
                                  opt.min_classes, files.attr_path, meta)
    subgroup = subgroup_option(opt.subgroup)
    column = None  # the subgroup attribute's column
    if subgroup != NO_SUBGROUP:
        if subgroup not in attr_names:
            raise DatasetError(f"{files.attr_path}: unknown subgroup attribute {subgroup!r}")
        column = attr_names.index(subgroup)
        if np.isnan(presence[:, column]).any():
            raise DatasetError(f"{files.label_path}: subgroup attribute {subgroup!r} is unannotated for some images")
        selected = [j for j in selected if j != column]
    values = _descriptor_values(presence[:, selected], certainty[:, selected], opt)
    names = [attr_names[j] for j in selected]

    image_dir = Path(opt.images_dir).expanduser() if opt.images_dir is not None else base / "images"
    source = ImageSource(image_dir, base, f"CUB-200-2011 ({base / 'images.txt'})", opt.missing_images)
    paths, keep = resolve_images(source, files.images["path"].str.strip().tolist(), meta)
    meta.update(descriptor_value=opt.descriptor_value, not_visible=opt.not_visible, subgroup=subgroup,
                n_attributes=len(names), images_dir=str(image_dir), split_seed=opt.split_seed,
                val_fraction=val_fraction)
    return finish_table(
        {"sample_id": [str(int(i)) for i in image_ids], "image_path": paths, "label": label,
         "subgroup": attribute_groups(presence, subgroup, column), "split": split_col},
        values, names, _metadata(base, image_ids, class_of, is_train), keep,
        classes=files.classes["name"].str.strip().tolist(), name="cub_200_2011", root=base, subgroup_name=subgroup,
        descriptor_kind="hard" if opt.descriptor_value == "presence" else "soft", source=str(base), meta=meta)


def _read_files(base: Path, top: Path, meta: dict) -> _CubFiles:
    """Read the annotation files (``attributes.txt`` may sit beside ``CUB_200_2011/``, as in the tarball)."""
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
    return _CubFiles(images, labels, split, classes, attrs, attr_path, label_path)


def _labels(base: Path, files: _CubFiles, image_ids: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per image (``images.txt`` order): class_id as listed, class index, and the official train flag."""
    class_of = _aligned(files.labels, "class_id", image_ids, base / "image_class_labels.txt")
    train_flag = _aligned(files.split, "is_training_image", image_ids, base / "train_test_split.txt")
    for value, line in zip(train_flag, _lines_for(files.split, image_ids)):
        if value not in ("0", "1"):
            raise DatasetError(f"{base / 'train_test_split.txt'}, line {line}: is_training_image {value!r} "
                               "is not 0 or 1")
    class_index = {int(c): i for i, c in enumerate(files.classes["class_id"])}
    label = np.empty(len(image_ids), dtype=np.int64)
    for i, (value, line) in enumerate(zip(class_of, _lines_for(files.labels, image_ids))):
        try:
            label[i] = class_index[int(value)]
        except (ValueError, KeyError):
            raise DatasetError(f"{base / 'image_class_labels.txt'}, line {line}: class_id {value!r} "
                               f"is not in classes.txt") from None
    return class_of, label, np.asarray(train_flag) == "1"


def _descriptor_values(presence: np.ndarray, certainty: np.ndarray, opt: CubOptions) -> np.ndarray:
    """is_present, or the certainty-weighted soft score ``0.5 + (is_present - 0.5) * w``; NaN for
    "not visible" with ``not_visible="nan"``."""
    if opt.descriptor_value == "presence":
        values = presence.copy()
    else:
        weight = np.full(certainty.shape, np.nan)
        for c, w in CERTAINTY_WEIGHT.items():
            weight[certainty == c] = w
        values = 0.5 + (presence - 0.5) * weight
    if opt.not_visible == "nan":
        values[certainty == 1] = np.nan
    return values


def _metadata(base: Path, image_ids: np.ndarray, class_of: list[str], is_train: np.ndarray) -> pd.DataFrame:
    """image_id, class_id, is_training_image and, when bounding_boxes.txt exists, bbox_x/y/w/h."""
    extra = pd.DataFrame({"image_id": image_ids.astype(np.int64),
                          "class_id": np.asarray([int(c) for c in class_of], dtype=np.int64),
                          "is_training_image": is_train.astype(np.int8)})
    bbox_path = base / "bounding_boxes.txt"
    if bbox_path.is_file():
        boxes = read_id_table(bbox_path, 5, ["image_id", "bbox_x", "bbox_y", "bbox_w", "bbox_h"])
        boxes = boxes.set_index("image_id").reindex(image_ids)
        for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"):
            extra[c] = pd.to_numeric(boxes[c], errors="coerce").to_numpy()
    return extra


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


# --------------------------------------------------------------------------- fixture copy
CUB_ATTRIBUTES = ("has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger", "has_bill_shape::hooked",
                  "has_wing_color::blue", "has_wing_color::grey", "has_wing_color::brown")
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross")
#: class-level presence pattern (per attribute) followed by every training image of the class
CUB_CLASS_PATTERN = MappingProxyType({1: (1, 0, 0, 1, 0, 1), 2: (0, 1, 0, 1, 0, 0)})
CUB_SIX_TOKEN_LINE = (2, 3)  # (image_id, attribute_id) written with an extra token


def cub_fixture_labels() -> list[tuple[int, int, int, int, float]]:
    """``(image_id, attribute_id, is_present, certainty_id, time)`` rows of the CUB fixture."""
    rows = []
    for img in range(1, 9):
        cls = 1 if img <= 4 else 2
        is_test = img in (4, 8)
        for attr in range(1, 7):
            present = CUB_CLASS_PATTERN[cls][attr - 1]
            if is_test and attr in (2, 5):
                present = 1 - present
            certainty = 1 + (img + attr) % 4
            rows.append((img, attr, present, certainty, round(1.5 + img * 0.731 + attr * 2.113, 4)))
    return rows


def write_cub(dest: str | Path, attributes_in: str = "top") -> Path:
    """CUB-200-2011 (as released): 2 classes x 4 images (3 train, 1 test), 6 attributes."""
    if attributes_in not in ("top", "attributes"):
        raise ValueError(f"attributes_in must be 'top' or 'attributes', got {attributes_in!r}")
    root = Path(dest) / "cub_200_2011"
    cub = root / "CUB_200_2011"
    files = []
    for img in range(1, 9):
        cls = 1 if img <= 4 else 2
        stem = ("Black_Footed_Albatross", "Laysan_Albatross")[cls - 1]
        rel = f"{CUB_CLASSES[cls - 1]}/{stem}_{img:04d}_{img + 10}.jpg"
        files.append(rel)
        write_image(cub / "images" / rel, img)
    write_text(cub / "README", "CUB-200-2011 fixture copy\n")
    write_text(cub / "images.txt", "".join(f"{i} {rel}\n" for i, rel in enumerate(files, start=1)))
    write_text(cub / "image_class_labels.txt", "".join(f"{i} {1 if i <= 4 else 2}\n" for i in range(1, 9)))
    write_text(cub / "train_test_split.txt", "".join(f"{i} {0 if i in (4, 8) else 1}\n" for i in range(1, 9)))
    write_text(cub / "classes.txt", "".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, start=1)))
    write_text(cub / "bounding_boxes.txt", "".join(f"{i} {60.0 + i} 27.0 325.0 304.0\n" for i in range(1, 9)))
    write_text(cub / "parts" / "parts.txt", "1 back\n2 beak\n")
    write_text(cub / "parts" / "part_locs.txt", "".join(f"{i} {p} 0.0 0.0 0\n" for i in range(1, 9) for p in (1, 2)))
    attr_text = "".join(f"{i} {a}\n" for i, a in enumerate(CUB_ATTRIBUTES, start=1))
    write_text((root if attributes_in == "top" else cub / "attributes") / "attributes.txt", attr_text)
    write_text(cub / "attributes" / "certainties.txt", "1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    lines = []
    for img, attr, present, certainty, seconds in cub_fixture_labels():
        if (img, attr) == CUB_SIX_TOKEN_LINE:
            lines.append(f"{img} {attr} {present} {certainty} 0 {seconds}")  # the known 6-token malformation
        else:
            lines.append(f"{img} {attr} {present} {certainty} {seconds:.4f}")
    write_text(cub / "attributes" / "image_attribute_labels.txt", "\n".join(lines) + "\n\n")  # trailing blank line
    continuous = []
    for cls in (1, 2):
        continuous.append(" ".join(repr(100.0 * p) if p else "0.0" for p in CUB_CLASS_PATTERN[cls]))
    write_text(cub / "attributes" / "class_attribute_labels_continuous.txt", "\n".join(continuous) + "\n")
    return root
