"""NUS-WIDE (Flickr images, 81 ground-truth concepts, 1,000-tag vocabulary) as an :class:`SCITable`.

Files (``root`` = the ``NUS-WIDE`` folder or its parent):

* ``Concepts81.txt`` (or ``ConceptsList/Concepts81.txt``): one concept per line;
* ``ImageList/{Train,Test}Imagelist.txt``: ``actor\\0001_2124494179.jpg`` (Windows backslashes),
  the image being ``Flickr/actor/0001_2124494179.jpg``;
* ``Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt``: one 0/1 per line, row *i*
  = line *i* of the matching image list. The release is not clean: ``Labels_lake_Train.txt``
  holds ``-1130179`` at line 78,372. A value other than 0/1 is read as missing (not a
  positive) with a warning naming the file, line and count (``counts["invalid_label_values"]``);
* ``NUS_WID_Tags/TagList1k.txt`` + ``NUS_WID_Tags/{Train,Test}_Tags1k.dat``: rows x 1,000
  whitespace (tab) separated 0/1 values, row-aligned with the image lists: the descriptors
  (``descriptor_kind="hard"``, named by the tag; a tag that collides with a table column is
  renamed with a counted warning). The tags come as a separate zip: its ``NUS_WID_Tags/``
  folder is found inside ``NUS-WIDE/`` or unpacked beside it.

The common table has one class per image, so a label policy is needed:

* ``label_policy="single"`` (default): keep images with exactly one positive concept among
  ``concepts`` (default: all concepts of ``Concepts81.txt``); the class is that concept.
* ``label_policy="first"``: keep images with at least one positive concept; the class is the
  first positive in ``concepts`` order (so the order of ``concepts`` is a priority list).

Images with no positive concept (and, under "single", with several) are dropped with counted
warnings. The multi-label ground truth of the chosen concepts is kept as ``concept_<name>``
metadata columns (0/1), with ``n_concepts`` = number of positives.

``split``: official Train -> ``train`` / ``val`` (seeded, class-stratified ``val_fraction`` of the
kept training images, default 0.1), official Test -> ``test``. ``subgroup``: ``"none"`` (NUS-WIDE
has no demographic attribute). The original images are not openly distributed and many
re-downloaded copies miss some: ``missing_images="drop"`` or ``"keep"`` (rows kept without
pixels, still fine for coverage analysis) handle that with a counted warning.

:func:`write_nus_wide` writes the tiny fixture copy (``fixtures.write_fixture("nus_wide", dest)``);
:func:`manifest_flags` is the ``verify`` check of a real copy (label values other than 0/1).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Sequence

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._common import (
    DatasetError, ImageSource, check_fraction, check_no_duplicates, choose, find_base, find_file,
    finish_table, holdout_mask, line_error, line_number_of_row, numeric_checker, read_lines,
    read_numeric_table, resolve_images, unique_names, warn, write_image, write_text,
)
from semcov_lib.data.table import NO_SUBGROUP, REQUIRED_COLUMNS, SCITable

LABEL_POLICIES = ("single", "first")
SPLIT_FILES = MappingProxyType({"Train": "train", "Test": "test"})


def load_nus_wide(
    root: str | Path,
    concepts: Sequence[str] | None = None,
    label_policy: str = "single",
    tags: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    images_dir: str | Path | None = None,
    missing_images: str = "error",
) -> SCITable:
    """Read NUS-WIDE into the common table (label policy and options: see module docstring).

    ``tags``: None (all tags of TagList1k.txt) or a subset of tag names to keep as descriptors.
    """
    choose(label_policy, LABEL_POLICIES, "label_policy")
    val_fraction = check_fraction("val_fraction", val_fraction)
    meta: dict = {"dataset": "nus_wide"}
    base = find_base(root, (".", "NUS-WIDE", "NUS_WIDE", "nus-wide", "nuswide", "NUS-WIDE/NUS-WIDE"),
                     ("ImageList", "Concepts81.txt", "ConceptsList/Concepts81.txt"), "NUS-WIDE")
    chosen = _chosen_concepts(base, concepts)
    tag_dirs = _tag_dirs(base)
    tag_path = find_file([d / "TagList1k.txt" for d in tag_dirs], "NUS-WIDE tag vocabulary TagList1k.txt")
    tag_names = [line.strip() for _, line in read_lines(tag_path)]
    if tags is not None:
        unknown = [t for t in tags if t not in tag_names]
        if unknown:
            raise DatasetError(f"{tag_path}: unknown tag(s) {unknown[:10]}")
    tag_cols = list(range(len(tag_names))) if tags is None else [tag_names.index(t) for t in tags]
    rels, split_arr, concept_matrix, tag_matrix = _read_splits(base, chosen, tag_dirs, tag_names, tag_cols, meta)
    keep, label, n_pos = _label_policy(concept_matrix, label_policy, f"NUS-WIDE ({base})", len(chosen), meta)

    # ---- splits: val carved from the kept training images
    train_rows = np.flatnonzero(keep & (split_arr == "train"))
    val = holdout_mask(label[train_rows], val_fraction, split_seed)
    split_arr[train_rows[val]] = "val"

    image_dir = Path(images_dir).expanduser() if images_dir is not None else base / "Flickr"
    kept = np.flatnonzero(keep)
    listed = [rels[i] for i in kept]
    paths, present = resolve_images(
        ImageSource(image_dir, base, f"NUS-WIDE ({base / 'ImageList'})", missing_images), listed, meta)

    concept_cols = [f"concept_{c}" for c in chosen]
    reserved = {*REQUIRED_COLUMNS, *concept_cols, "n_concepts", "photo_id"}
    names = unique_names([tag_names[j] for j in tag_cols], tag_path, "tag", meta, reserved)
    extra = pd.DataFrame(concept_matrix[kept].astype(np.int8), columns=concept_cols)
    extra["n_concepts"] = n_pos[kept].astype(np.int64)
    extra["photo_id"] = [Path(r).stem.split("_", 1)[-1] for r in listed]
    meta.update(label_policy=label_policy, concepts=chosen, images_dir=str(image_dir), split_seed=split_seed,
                val_fraction=val_fraction)
    return finish_table(
        {"sample_id": listed, "image_path": paths, "label": label[kept].astype(np.int64),
         "subgroup": np.full(len(kept), NO_SUBGROUP, dtype=object), "split": split_arr[kept]},
        tag_matrix[kept], names, extra, present,
        classes=chosen, name="nus_wide", root=base, subgroup_name="none", descriptor_kind="hard", source=str(base),
        meta=meta)


def _chosen_concepts(base: Path, concepts: Sequence[str] | None) -> list[str]:
    """The ``concepts`` option checked against Concepts81.txt (None: all of them, in file order)."""
    concept_path = find_file([base / "Concepts81.txt", base / "ConceptsList" / "Concepts81.txt"],
                             "NUS-WIDE concept list Concepts81.txt")
    all_concepts = [line.strip() for _, line in read_lines(concept_path)]
    check_no_duplicates(all_concepts, concept_path, "concept")
    if concepts is None:
        return all_concepts
    chosen = [str(c) for c in concepts]
    unknown = [c for c in chosen if c not in all_concepts]
    if unknown:
        raise DatasetError(f"{concept_path}: unknown concept(s) {unknown}; known: {all_concepts}")
    check_no_duplicates(chosen, "concepts option", "concept")
    if not chosen:
        raise DatasetError("concepts: empty list")
    return chosen


def _read_splits(base: Path, chosen: list[str], tag_dirs: list[Path], tag_names: list[str], tag_cols: list[int],
                 meta: dict) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Train then Test: image paths, official split, (N, C) concept labels and (N, T) tag matrix."""
    rels, split, concept_rows, tag_rows = [], [], [], []
    for key, split_name in SPLIT_FILES.items():
        list_path = find_file([base / "ImageList" / f"{key}Imagelist.txt"], f"NUS-WIDE {key} image list")
        entries = [_flickr_relative(line) for _, line in read_lines(list_path)]
        if not entries:
            raise DatasetError(f"{list_path} is empty")
        labels = np.stack([_read_labels(base, c, key, len(entries), list_path, meta) for c in chosen], axis=1)
        tag_file = find_file([d / f"{key}_Tags1k.dat" for d in tag_dirs], f"NUS-WIDE {key} tag matrix")
        tag_matrix = _read_tags(tag_file, len(tag_names), len(entries), list_path)
        rels += entries
        split += [split_name] * len(entries)
        concept_rows.append(labels)
        tag_rows.append(tag_matrix[:, tag_cols])
    check_no_duplicates(rels, base / "ImageList", "image (listed in both Train and Test, or twice)")
    return rels, np.asarray(split, dtype=object), np.concatenate(concept_rows), np.concatenate(tag_rows)


def _label_policy(concept_matrix: np.ndarray, label_policy: str, where: str, n_concepts: int, meta: dict
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows kept by the label policy, the class of each row (first positive) and its positive count."""
    n_pos = concept_matrix.sum(axis=1)
    counts = meta.setdefault("counts", {})
    counts["no_positive_concept"] = int((n_pos == 0).sum())
    counts["several_positive_concepts"] = int((n_pos > 1).sum())
    if counts["no_positive_concept"]:
        warn(f"{where}: dropped {counts['no_positive_concept']} of {len(n_pos)} images with no positive "
             f"concept among {n_concepts} concepts", meta, stacklevel=4)
    if label_policy == "single":
        keep = n_pos == 1
        if counts["several_positive_concepts"]:
            warn(f"{where}: dropped {counts['several_positive_concepts']} images with several positive "
                 "concepts (label_policy='single'; use label_policy='first' to keep them)", meta, stacklevel=4)
    else:
        keep = n_pos >= 1
    label = np.argmax(concept_matrix, axis=1)  # first positive in `chosen` order
    if not keep.any():
        raise DatasetError(f"{where}: no image left after the label policy {label_policy!r}")
    return keep, label, n_pos


# --------------------------------------------------------------------------- helpers
def _flickr_relative(line: str) -> str:
    """``actor\\0001_x.jpg`` (or ``C:\\ImageData\\Flickr\\actor\\...``) -> ``actor/0001_x.jpg``."""
    path = line.strip().replace("\\", "/")
    marker = "Flickr/"
    if marker in path:
        path = path.split(marker, 1)[1]
    return path.lstrip("/")


def _tag_dirs(base: Path) -> list[Path]:
    """Where the tag files may be: ``NUS_WID_Tags/`` inside the dataset folder or beside it
    (the tags are a separate zip users unpack next to ``NUS-WIDE/``), or loose in either."""
    return [base / "NUS_WID_Tags", base.parent / "NUS_WID_Tags", base, base.parent / "NUS_WID_Tags" / "NUS_WID_Tags"]


def _read_labels(base: Path, concept: str, key: str, n_rows: int, list_path: Path, meta: dict) -> np.ndarray:
    """One concept's 0/1 column; other values (the release has ``-1130179``) become 0 = missing, with a
    warning naming the file and line."""
    path = find_file([base / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{key}.txt"],
                     f"NUS-WIDE labels of concept {concept!r} ({key})")
    checker = numeric_checker(1, 1)
    values = read_numeric_table(path, 1, dtype=np.float64, checker=checker)[0].to_numpy()
    if len(values) != n_rows:
        raise DatasetError(f"{path}: {len(values)} label rows but {list_path} lists {n_rows} images "
                           "(the files must be row-aligned)")
    bad = np.flatnonzero(~np.isin(values, (0, 1)))
    if len(bad):
        lineno, line = line_number_of_row(path, int(bad[0]))
        counts = meta.setdefault("counts", {})
        counts["invalid_label_values"] = counts.get("invalid_label_values", 0) + len(bad)
        warn(f"{path}, line {lineno}: label {line.strip()!r} is not 0 or 1; read as missing (not a positive)"
             + (f", and {len(bad) - 1} more such values in this file" if len(bad) > 1 else ""), meta)
        values = np.where(np.isin(values, (0, 1)), values, 0)
    return values.astype(np.int8)


def _read_tags(path: Path, n_tags: int, n_rows: int, list_path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if raw.strip():
                n_first = len(raw.split())
                if n_first != n_tags:
                    raise line_error(path, lineno, raw.decode("utf-8", "replace").rstrip("\r\n"),
                                     f"{n_first} values, but TagList1k.txt names {n_tags} tags")
                break
    checker = numeric_checker(n_tags, n_tags, int_cols=set(range(n_tags)))
    table = read_numeric_table(path, n_tags, dtype=np.int8, checker=checker)
    values = table.to_numpy()
    if len(values) != n_rows:
        raise DatasetError(f"{path}: {len(values)} rows but {list_path} lists {n_rows} images "
                           "(the files must be row-aligned)")
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        lineno, line = line_number_of_row(path, int(r))
        hint = ""
        if set(np.unique(values).tolist()) <= {-1, 0, 1}:
            hint = "; the file looks -1/+1 coded, but NUS-WIDE tag matrices are 0/1"
        raise line_error(path, lineno, line, f"tag {c + 1} value {int(values[r, c])} is not 0 or 1{hint}")
    return values.astype(np.int8)


# --------------------------------------------------------------------------- verify
def manifest_flags(base: Path) -> list[str]:
    """``verify``'s known-problem check: every label file holding a value other than 0/1 (file, first line,
    value, count)."""
    flags = []
    for path in sorted((base / "Groundtruth").rglob("Labels_*.txt")):
        lines = path.read_bytes().splitlines()
        bad = [(i, line.strip()) for i, line in enumerate(lines, start=1) if line.strip() not in (b"0", b"1", b"")]
        if bad:
            lineno, value = bad[0]
            more = f" ({len(bad)} such lines)" if len(bad) > 1 else ""
            flags.append(f"{path.relative_to(base)}, line {lineno}: label {value.decode(errors='replace')!r} is "
                         f"not 0 or 1{more}; the loader reads it as missing")
    return flags


# --------------------------------------------------------------------------- fixture copy
NUS_CONCEPTS = ("airport", "beach", "cat", "dog")
NUS_TAGS = ("sky", "water", "city", "animal", "sand", "plane", "pet", "night")
#: (Flickr folder, file, positive concepts)
NUS_TRAIN = (
    ("actor", "0001_2124494179.jpg", ("beach",)),
    ("airport", "0001_100000.jpg", ("airport",)),
    ("airport", "0002_100001.jpg", ("airport",)),
    ("airport", "0003_100002.jpg", ("airport",)),
    ("beach", "0001_100010.jpg", ("beach",)),
    ("beach", "0002_100011.jpg", ("beach",)),
    ("cat", "0001_100020.jpg", ("cat",)),
    ("cat", "0002_100021.jpg", ("cat", "dog")),  # two positive concepts
    ("dog", "0001_100030.jpg", ("dog",)),
    ("dog", "0002_100031.jpg", ()),  # no positive concept
    ("dog", "0003_100032.jpg", ("dog",)),
    ("cat", "0003_100022.jpg", ("cat",)),
)
NUS_TEST = (
    ("airport", "0004_100003.jpg", ("airport",)),
    ("beach", "0003_100012.jpg", ("beach",)),
    ("cat", "0004_100023.jpg", ("cat",)),
    ("dog", "0004_100033.jpg", ("dog",)),
)


def nus_fixture_tags(split: str) -> np.ndarray:
    """The 0/1 tag matrix of the NUS-WIDE fixture for ``split`` ("Train"/"Test")."""
    rows = NUS_TRAIN if split == "Train" else NUS_TEST
    offset = 0 if split == "Train" else 50
    return np.array([[1 if (i + offset + 2 * j) % 3 == 0 else 0 for j in range(len(NUS_TAGS))]
                     for i in range(len(rows))], dtype=np.int8)


#: As the release's ``Labels_lake_Train.txt`` (``-1130179`` at line 78,372), one label file holds a
#: value that is not 0/1: (concept, split, 0-based row, value). The row has no other positive.
NUS_BAD_LABEL = ("dog", "Train", 9, "-1130179")


def write_nus_wide(dest: str | Path, tags_beside: bool = False) -> Path:
    """NUS-WIDE: Flickr images, image lists with backslashes, concept labels (with the release's
    one bad value, :data:`NUS_BAD_LABEL`), 1k-tag files (``tags_beside``: the separate tags zip
    unpacked beside ``NUS-WIDE/`` rather than inside it)."""
    root = Path(dest) / "NUS-WIDE"
    tag_dir = root.parent / "NUS_WID_Tags" if tags_beside else root / "NUS_WID_Tags"
    for split, rows in (("Train", NUS_TRAIN), ("Test", NUS_TEST)):
        write_text(root / "ImageList" / f"{split}Imagelist.txt", "".join(f"{d}\\{f}\r\n" for d, f, _ in rows))
        for concept in NUS_CONCEPTS:
            values = [str(1 if concept in pos else 0) for _, _, pos in rows]
            if (concept, split) == NUS_BAD_LABEL[:2]:
                values[NUS_BAD_LABEL[2]] = NUS_BAD_LABEL[3]
            write_text(root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split}.txt",
                  "".join(f"{v}\n" for v in values))
        tags = nus_fixture_tags(split)
        write_text(tag_dir / f"{split}_Tags1k.dat", "".join("\t".join(map(str, r)) + "\n" for r in tags))
    everything = (*NUS_TRAIN, *NUS_TEST)
    write_text(root / "ImageList" / "Imagelist.txt", "".join(f"{d}\\{f}\r\n" for d, f, _ in everything))
    for concept in NUS_CONCEPTS:
        write_text(root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt",
              "".join(f"{1 if concept in pos else 0}\n" for _, _, pos in everything))
    write_text(root / "Concepts81.txt", "".join(f"{c}\n" for c in NUS_CONCEPTS))
    write_text(tag_dir / "TagList1k.txt", "".join(f"{t}\n" for t in NUS_TAGS))
    urls = ["Photo_file Photo_id url_Large url_Middle url_Small url_Original"]
    for i, (d, f, _) in enumerate(everything):
        urls.append(f"C:\\ImageData\\Flickr\\{d}\\{f} {f.split('_')[1][:-4]} null null null null")
        write_image(root / "Flickr" / d / f, i)
    write_text(root / "NUS-WIDE-urls.txt", "\r\n".join(urls) + "\r\n")
    return root
