"""VireoFood-172 (172 Chinese dishes, 353 ingredient labels) as an :class:`SCITable`.

Files (``root`` = the dataset folder or its parent):

* ``ready_chinese_food/<class_id>/<image>.jpg`` (``class_id`` 1..172 is the folder name);
* ``SplitAndIngreLabel/{TR,VAL,TE}.txt``: one image path per line with a leading slash
  (``/1/1_1.jpg``) -> splits train / val / test (official);
* ``SplitAndIngreLabel/IngreLabel.txt``: ``/<class_id>/<image>.jpg`` + one value per ingredient,
  1 = present, -1 = absent (0/1 is tolerated; a mix of -1 and 0 is an error) -> 0/1 descriptors
  (``descriptor_kind="hard"``). An image of a split list without a row gets NaN descriptors
  (counted warning); no match at all is an error (path conventions differ);
* ``SplitAndIngreLabel/IngredientList.txt`` (optional: names ``ingr_000``.. otherwise) and
  ``SplitAndIngreLabel/FoodList.txt`` (optional: names ``class_001``.. otherwise); line *i* names
  ingredient column *i* / class id *i*, so a header or a blank line inside either file would shift
  every name after it: a blank line inside is an error naming it, and the count must match
  (IngredientList: the value columns of IngreLabel; FoodList: the largest class id).

``label`` = class id - 1, ``classes`` = every class of FoodList (or 1..max id seen);
``subgroup`` = ``"none"``; metadata ``class_id``. ``sample_id`` = the path without the leading slash.

:func:`write_vireofood172` writes the tiny fixture copy (``fixtures.write_fixture("vireofood172", dest)``).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._common import (
    DatasetError, ImageSource, find_base, find_file, finish_table, line_error, line_number_of_row,
    numeric_checker, preview, read_lines, read_numeric_table, resolve_images, to_binary, unique_names, warn,
    write_image, write_text,
)
from semcov_lib.data.table import NO_SUBGROUP, REQUIRED_COLUMNS, SCITable

SPLIT_FILES = MappingProxyType({"TR.txt": "train", "VAL.txt": "val", "TE.txt": "test"})


def load_vireofood172(
    root: str | Path,
    images_dir: str | Path | None = None,
    missing_images: str = "error",
) -> SCITable:
    """Read VireoFood-172 into the common table (see module docstring)."""
    meta: dict = {"dataset": "vireofood172"}
    base = find_base(root, (".", "VireoFood172", "VireoFood-172", "vireofood172", "VireoFood172/VireoFood172"),
                     ("SplitAndIngreLabel",), "VireoFood-172")
    labels_dir = base / "SplitAndIngreLabel"
    rels, split, class_ids = _read_split_lists(labels_dir)
    ingre_path = find_file([labels_dir / "IngreLabel.txt"], "VireoFood-172 ingredient labels IngreLabel.txt")
    names, descriptors = _ingredients(ingre_path, rels, meta)
    classes = _class_names(labels_dir / "FoodList.txt", max(class_ids), meta)

    image_dir = Path(images_dir).expanduser() if images_dir is not None else _images_dir(base, rels[0])
    paths, keep = resolve_images(ImageSource(image_dir, base, f"VireoFood-172 ({labels_dir})", missing_images),
                                 rels, meta)
    meta.update(images_dir=str(image_dir), files={"ingredients": str(ingre_path)})
    return finish_table(
        {"sample_id": rels, "image_path": paths, "label": np.asarray(class_ids, dtype=np.int64) - 1,
         "subgroup": np.full(len(rels), NO_SUBGROUP, dtype=object), "split": np.asarray(split, dtype=object)},
        descriptors, names, pd.DataFrame({"class_id": np.asarray(class_ids, dtype=np.int64)}), keep,
        classes=classes, name="vireofood172", root=base, subgroup_name="none", descriptor_kind="hard",
        source=str(labels_dir), meta=meta)


def _read_split_lists(labels_dir: Path) -> tuple[list[str], list[str], list[int]]:
    """TR, VAL, TE lists: image path (no leading slash), split and class id per image; no image twice."""
    rels, split, class_ids, origin = [], [], [], []
    for fname, split_name in SPLIT_FILES.items():
        path = find_file([labels_dir / fname], f"VireoFood-172 split list {fname}")
        lines = read_lines(path)
        if not lines:
            raise DatasetError(f"{path} is empty")
        for lineno, line in lines:
            if len(line.split()) != 1:
                raise line_error(path, lineno, line, "expected one image path per line")
            rel = _normalise(line)
            rels.append(rel)
            split.append(split_name)
            class_ids.append(_class_id(rel, path, lineno, line))
            origin.append((path, lineno))
    dup = pd.Series(rels, dtype=object).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = rels.index(rels[i])
        raise DatasetError(f"{origin[i][0]}, line {origin[i][1]}: image {rels[i]!r} already listed in "
                           f"{origin[first][0].name} line {origin[first][1]} ({int(dup.sum())} duplicates)")
    return rels, split, class_ids


def _ingredients(ingre_path: Path, rels: list[str], meta: dict) -> tuple[list[str], np.ndarray]:
    """Ingredient names and the (N, I) 0/1 matrix in split-list order (NaN rows for images without a row)."""
    keys, matrix, coding = _read_ingredients(ingre_path)
    meta["ingredient_coding"] = {"pm1": "-1/+1", "01": "0/1"}[coding]
    names_path = ingre_path.parent / "IngredientList.txt"
    if names_path.is_file():
        names = _read_names(names_path, matrix.shape[1], f"value columns in {ingre_path.name}")
    else:
        names = [f"ingr_{j:03d}" for j in range(matrix.shape[1])]
        warn(f"{names_path} not found; ingredients named ingr_000..ingr_{matrix.shape[1] - 1:03d}", meta,
             stacklevel=4)
    names = unique_names(names, names_path, "ingredient", meta, {*REQUIRED_COLUMNS, "class_id"})
    row_of = {k: i for i, k in enumerate(keys)}
    positions = np.array([row_of.get(r, -1) for r in rels])
    n_missing = int((positions < 0).sum())
    meta.setdefault("counts", {})["no_ingredient_row"] = n_missing
    if n_missing == len(rels):
        raise DatasetError(f"{ingre_path}: none of the {len(rels)} images of the split lists has an ingredient "
                           f"row (split lists use e.g. {rels[0]!r}, {ingre_path.name} uses e.g. {keys[0]!r})")
    if n_missing:
        absent = [r for r, p in zip(rels, positions) if p < 0]
        warn(f"{ingre_path}: {n_missing} listed image(s) have no ingredient row, e.g. {preview(absent)}; "
             "their descriptors are NaN", meta, stacklevel=4)
    descriptors = np.full((len(rels), matrix.shape[1]), np.nan)
    ok = positions >= 0
    descriptors[ok] = matrix[positions[ok]]
    return names, descriptors


def _class_names(food_path: Path, max_id: int, meta: dict) -> list[str]:
    """FoodList.txt (line i names class id i), else ``class_001``...; made unique with a warning."""
    if food_path.is_file():
        classes = _read_names(food_path, max_id, "class ids used by the split lists (largest id)")
    else:
        classes = [f"class_{i:03d}" for i in range(1, max_id + 1)]
        warn(f"{food_path} not found; classes named class_001..class_{max_id:03d}", meta, stacklevel=4)
    if len(set(classes)) != len(classes):
        classes = unique_names(classes, food_path, "class", meta)
    return classes


# --------------------------------------------------------------------------- helpers
def _normalise(path: str) -> str:
    return path.strip().replace("\\", "/").lstrip("/")


def _read_names(path: Path, expected: int, what: str) -> list[str]:
    """One name per line, line i naming item i: no blank line inside, exactly ``expected`` names."""
    lines = read_lines(path)
    for i, (lineno, _line) in enumerate(lines, start=1):
        if lineno != i:
            raise DatasetError(f"{path}, line {i}: blank line; line i names item i, so it would shift every "
                               "name after it: remove it")
    if len(lines) != expected:
        first = repr(lines[0][1].strip()) if lines else "none"
        raise DatasetError(f"{path}: {len(lines)} names but {expected} {what}; a header or missing line would "
                           f"shift the names (first line: {first})")
    return [line.strip() for _, line in lines]


def _class_id(rel: str, path: Path, lineno: int, line: str) -> int:
    parts = rel.split("/")
    if len(parts) < 2 or not parts[-2].isdigit() or int(parts[-2]) < 1:
        raise line_error(path, lineno, line, "expected /<class_id>/<image>.jpg with a class id >= 1")
    return int(parts[-2])


def _images_dir(base: Path, probe: str) -> Path:
    candidates = [base / "ready_chinese_food", base / "ready_chinese_food" / "ready_chinese_food", base / "images"]
    for cand in candidates:
        if (cand / probe).is_file():
            return cand
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _read_ingredients(path: Path) -> tuple[list[str], np.ndarray, str]:
    lines = read_lines(path)
    if not lines:
        raise DatasetError(f"{path} is empty")
    n_values = len(lines[0][1].split()) - 1
    if n_values < 1:
        raise line_error(path, lines[0][0], lines[0][1], "expected '<image path> <value> <value> ...'")
    checker = numeric_checker(n_values + 1, n_values + 1, text_cols={0}, int_cols=set(range(1, n_values + 1)))
    dtype = {0: str, **{i: np.int8 for i in range(1, n_values + 1)}}
    table = read_numeric_table(path, n_values + 1, dtype=dtype, checker=checker)
    keys = [_normalise(k) for k in table[0].astype(str)]
    values = table.drop(columns=[0]).to_numpy()
    bad = ~np.isin(values, (-1, 0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        lineno, line = line_number_of_row(path, int(r))
        raise line_error(path, lineno, line, f"ingredient {c + 1} value {int(values[r, c])} is not -1/1 (or 0/1)")
    binary, coding = to_binary(values, path, "ingredient values")
    dup = pd.Series(keys, dtype=object).duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        lineno, line = line_number_of_row(path, r)
        raise line_error(path, lineno, line, f"duplicated image {keys[r]!r}")
    return keys, binary.astype(np.float64), coding


# --------------------------------------------------------------------------- fixture copy
VIREO_FOODS = ("Braised pork in brown sauce", "Shredded potato", "Tomato and egg")
VIREO_INGREDIENTS = ("Pork", "Potato", "Egg", "Tomato", "Green pepper")


def vireo_fixture_ingredients(class_id: int, k: int) -> list[int]:
    """±1 ingredient row of image ``<class_id>_<k>.jpg`` in the VireoFood-172 fixture."""
    base = {1: (1, -1, -1, -1, 1), 2: (-1, 1, -1, -1, 1), 3: (-1, -1, 1, 1, -1)}[class_id]
    row = list(base)
    if k == 4:
        row[4] = -row[4]
    return row


def write_vireofood172(dest: str | Path) -> Path:
    """VireoFood-172 (as released): 3 classes x 4 images (TR 2, VAL 1, TE 1 per class), 5 ingredients."""
    root = Path(dest) / "VireoFood172"
    split_dir = root / "SplitAndIngreLabel"
    lists: dict[str, list[str]] = {"TR": [], "VAL": [], "TE": []}
    ingre = []
    for cls in (1, 2, 3):
        for k in (1, 2, 3, 4):
            rel = f"/{cls}/{cls}_{k}.jpg"
            lists["TR" if k <= 2 else "VAL" if k == 3 else "TE"].append(rel)
            ingre.append(rel + " " + " ".join(str(v) for v in vireo_fixture_ingredients(cls, k)))
            write_image(root / "ready_chinese_food" / str(cls) / f"{cls}_{k}.jpg", 10 * cls + k)
    for name, rels in lists.items():
        write_text(split_dir / f"{name}.txt", "\n".join(rels) + "\n")
    write_text(split_dir / "IngreLabel.txt", "\n".join(ingre) + "\n")
    write_text(split_dir / "IngredientList.txt", "\n".join(VIREO_INGREDIENTS) + "\n")
    write_text(split_dir / "FoodList.txt", "\n".join(VIREO_FOODS) + "\n")
    return root
