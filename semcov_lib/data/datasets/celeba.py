"""CelebA (aligned and cropped faces, 40 binary attributes) as an :class:`SCITable`.

Own parser (torchvision's ``CelebA`` MD5-checks every file, so it cannot read a copy that
differs by a byte); the format rules are the same: whitespace-separated, ``list_attr_celeba.txt``
has a count line, then a header line of 40 names (with a trailing space after ``Young`` in the
real file), then ``<file> ±1 x 40`` with two-character right-aligned values.

Accepted layouts (the first one found wins):

* torchvision's flat layout: ``<root>/celeba/{list_attr_celeba.txt, list_eval_partition.txt,
  identity_CelebA.txt, img_align_celeba/}`` or the same files directly in ``<root>``;
* the official Drive layout: ``<root>/[CelebA/]{Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt,
  Img/img_align_celeba/}``, or its PNG release ``Img/img_align_celeba_png/`` (``000001.png`` for the
  ``000001.jpg`` the annotation files name; the sample ids keep the annotation names);
* (cheap extra) the Kaggle CSV mirror: ``list_attr_celeba.csv`` / ``list_eval_partition.csv``
  headed ``image_id,...`` and an ``img_align_celeba/img_align_celeba/`` double folder.

The table:

* ``label``: the target attribute (default ``Blond_Hair``, the target of the GroupDRO CelebA
  benchmark, with ``Male`` as the spurious attribute); classes ``["not_<target>", "<target>"]``.
* ``subgroup``: the subgroup attribute (default ``Male``): ``"<attr>"`` / ``"not_<attr>"``, or
  ``"none"`` with ``subgroup="none"``.
* descriptors: hard 0/1 attributes (``descriptor_kind="hard"``). By default every attribute except
  the target, the subgroup attribute and the target's *label-leaking* attributes
  (:data:`LABEL_LEAKING`): attributes from the same mutually-exclusive or definitional family,
  e.g. for ``Blond_Hair`` the other hair colours and ``Bald``; for ``Smiling`` ``Mouth_Slightly_Open``
  and ``High_Cheekbones``; for ``Male`` the facial-hair and make-up attributes. Pass
  ``descriptors=[...]`` for an explicit list or ``descriptors="all"`` to keep all but target and
  subgroup.
* ``split``: the official partition 0/1/2 -> train/val/test.
* metadata: every attribute under its own name (0/1), ``identity`` (when identity_CelebA.txt is
  present), ``partition``.

:func:`write_celeba` writes the tiny fixture copy (``fixtures.write_fixture("celeba", dest)``).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._common import (
    DatasetError, ImageSource, MissingFileError, attribute_groups, check_no_duplicates, find_dir,
    finish_table, first_data_line, fixture_color, line_error, line_number_of_row, numeric_checker, preview,
    read_lines, read_numeric_table, resolve_images, subgroup_option, warn, write_image, write_text,
)
from semcov_lib.data.table import NO_SUBGROUP, SCITable

DEFAULT_TARGET = "Blond_Hair"
DEFAULT_SUBGROUP = "Male"
PARTITIONS = MappingProxyType({0: "train", 1: "val", 2: "test"})

# Families of attributes that define each other or are (near) mutually exclusive by annotation.
_FAMILIES = (
    ("Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Receding_Hairline"),
    ("Straight_Hair", "Wavy_Hair"),
    ("5_o_Clock_Shadow", "Goatee", "Mustache", "No_Beard", "Sideburns"),
    ("High_Cheekbones", "Mouth_Slightly_Open", "Smiling"),
    ("Heavy_Makeup", "Wearing_Lipstick"),
)


def _leaking_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, set[str]] = {}
    for family in _FAMILIES:
        for attr in family:
            table.setdefault(attr, set()).update(a for a in family if a != attr)
    # Receding_Hairline says nothing about hair colour; keep it out of the colour targets' lists.
    for colour in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        table[colour].discard("Receding_Hairline")
    table["Receding_Hairline"] = {"Bald"}
    # Sex is annotated together with facial hair and make-up.
    table["Male"] = {"5_o_Clock_Shadow", "Goatee", "Mustache", "No_Beard", "Sideburns",
                     "Heavy_Makeup", "Wearing_Lipstick"}
    return {k: tuple(sorted(v)) for k, v in table.items()}


#: target attribute -> attributes excluded from the default descriptors (label leakage).
LABEL_LEAKING: Mapping[str, tuple[str, ...]] = MappingProxyType(_leaking_table())

_BASES = (".", "celeba", "CelebA", "celeba/celeba", "CelebA/CelebA")
_ATTR_FILES = ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt", "list_attr_celeba.csv")
_PART_FILES = ("list_eval_partition.txt", "Eval/list_eval_partition.txt", "list_eval_partition.csv",
               "Anno/list_eval_partition.txt")
_ID_FILES = ("identity_CelebA.txt", "Anno/identity_CelebA.txt")
_IMG_DIRS = ("img_align_celeba", "img_align_celeba/img_align_celeba", "Img/img_align_celeba",
             "Img/img_align_celeba/img_align_celeba", "Img/img_align_celeba_png", "img_align_celeba_png",
             "Img/img_align_celeba_png/img_align_celeba_png")


def leaking_attributes(target: str) -> list[str]:
    """Attributes excluded from the default descriptors when ``target`` is the label."""
    return list(LABEL_LEAKING.get(target, ()))


def load_celeba(
    root: str | Path,
    target: str = DEFAULT_TARGET,
    subgroup: str | None = DEFAULT_SUBGROUP,
    descriptors: Sequence[str] | str | None = None,
    exclude: Sequence[str] = (),
    images_dir: str | Path | None = None,
    missing_images: str = "error",
) -> SCITable:
    """Read CelebA into the common table (see module docstring for layouts and columns).

    ``descriptors``: None (default: all but target, subgroup and :data:`LABEL_LEAKING` [target]),
    ``"all"`` (all but target and subgroup) or an explicit list; ``exclude`` removes more.
    ``missing_images``: ``"error"`` | ``"drop"`` | ``"keep"`` (see ``_common.apply_missing_images``).
    """
    root = Path(root).expanduser()
    meta: dict = {"dataset": "celeba"}
    base, attr_path = _find_attr_file(root)
    part_path = _find_sibling(base, _PART_FILES, "CelebA partition file (list_eval_partition)")
    meta["files"] = {"attributes": str(attr_path), "partition": str(part_path)}

    names, files, values = (_read_attr_csv(attr_path) if attr_path.suffix == ".csv"
                            else _read_attr_txt(attr_path, meta))
    partition = (_read_partition_csv(part_path) if part_path.suffix == ".csv"
                 else _read_pairs(part_path, "partition"))

    # ---- options
    subgroup = subgroup_option(subgroup)
    for what, attr in (("target", target), ("subgroup", subgroup)):
        if attr != NO_SUBGROUP and attr not in names:
            raise DatasetError(f"{attr_path}: unknown {what} attribute {attr!r}; the file has {names}")
    desc_names = _descriptor_names(names, target, subgroup, descriptors, exclude, attr_path)

    split, partition_codes = _join_partition(partition, files, attr_path, part_path, meta)
    identity = _read_identity(base, files, meta)

    # ---- images
    image_dir = (Path(images_dir).expanduser() if images_dir is not None
                 else _find_images(base, files[0], required=missing_images != "keep"))
    image_name = _image_namer(image_dir, files[0])
    paths, keep = resolve_images(ImageSource(image_dir, base, f"CelebA ({attr_path})", missing_images), files, meta,
                                 find=lambda index, i: index.direct(image_name(files[i])))

    # ---- table
    col = {n: i for i, n in enumerate(names)}
    metadata = pd.DataFrame({n: values[:, col[n]] for n in names if n not in desc_names})
    metadata["partition"] = partition_codes
    if identity is not None:
        metadata["identity"] = identity
    meta.update(target=target, subgroup=subgroup, excluded=[n for n in names if n not in desc_names],
                images_dir=str(image_dir))
    return finish_table(
        {"sample_id": files, "image_path": paths, "label": values[:, col[target]].astype(np.int64),
         "subgroup": attribute_groups(values, subgroup, col.get(subgroup)), "split": split},
        values[:, [col[n] for n in desc_names]], desc_names, metadata, keep,
        classes=[f"not_{target}", target], name="celeba", root=base, subgroup_name=subgroup,
        descriptor_kind="hard", source=str(attr_path), meta=meta)


def _join_partition(partition: pd.DataFrame, files: list[str], attr_path: Path, part_path: Path, meta: dict
                    ) -> tuple[np.ndarray, list[int]]:
    """Split name and partition code (0/1/2) of every annotated image; every image needs a partition."""
    part_map = dict(zip(partition["file"], partition["value"]))
    bad_part = np.flatnonzero(~partition["value"].isin(list(PARTITIONS)).to_numpy())
    if len(bad_part):
        row = int(bad_part[0])
        raise DatasetError(f"{part_path}, line {int(partition['line'].iloc[row])}: partition value "
                           f"{int(partition['value'].iloc[row])} for {partition['file'].iloc[row]!r} "
                           "is not 0 (train), 1 (valid) or 2 (test)")
    missing_part = [f for f in files if f not in part_map]
    if missing_part:
        raise DatasetError(f"{part_path}: {len(missing_part)} image(s) of {attr_path.name} have no partition, "
                           f"e.g. {preview(missing_part)}")
    file_set = set(files)
    extra = sum(1 for f in part_map if f not in file_set)
    if extra:
        warn(f"{part_path}: {extra} image(s) listed in the partition file have no attributes in "
             f"{attr_path.name}; ignored", meta, stacklevel=4)
    split = np.array([PARTITIONS[int(part_map[f])] for f in files], dtype=object)
    return split, [int(part_map[f]) for f in files]


def _read_identity(base: Path, files: list[str], meta: dict) -> pd.arrays.IntegerArray | None:
    """The optional identity_CelebA.txt as a nullable integer per image (None when the file is absent)."""
    id_path = _find_optional(base, _ID_FILES)
    if id_path is None:
        return None
    ids = _read_pairs(id_path, "identity")
    id_map = dict(zip(ids["file"], ids["value"]))
    meta["files"]["identity"] = str(id_path)
    return pd.array([id_map.get(f) for f in files], dtype="Int64")


# --------------------------------------------------------------------------- helpers
def _find_attr_file(root: Path) -> tuple[Path, Path]:
    if not root.is_dir():
        raise MissingFileError(f"CelebA: root folder {root} does not exist")
    tried = []
    for sub in _BASES:
        base = root if sub == "." else root / sub
        for rel in _ATTR_FILES:
            tried.append(base / rel)
            if (base / rel).is_file():
                return base, base / rel
    listed = "\n  ".join(str(p) for p in tried)
    raise MissingFileError(f"CelebA attribute file not found under {root}; looked for:\n  {listed}")


def _find_sibling(base: Path, rels: Sequence[str], what: str) -> Path:
    for rel in rels:
        if (base / rel).is_file():
            return base / rel
    listed = "\n  ".join(str(base / r) for r in rels)
    raise MissingFileError(f"{what} not found; looked for:\n  {listed}")


def _find_optional(base: Path, rels: Sequence[str]) -> Path | None:
    return next((base / r for r in rels if (base / r).is_file()), None)


def _find_images(base: Path, probe: str, required: bool = True) -> Path:
    candidates = [base / d for d in _IMG_DIRS]
    for cand in candidates:  # prefer the folder that actually holds the images
        if (cand / probe).is_file() or (cand / _png(probe)).is_file():
            return cand
    if not required:
        return next((c for c in candidates if c.is_dir()), candidates[0])
    return find_dir(candidates, "CelebA image folder (img_align_celeba; unzip img_align_celeba.zip)")


def _png(name: str) -> str:
    return str(Path(name).with_suffix(".png"))


def _image_namer(image_dir: Path, probe: str):
    """File name of an annotated image in ``image_dir``: as listed, or ``.png`` in the PNG release."""
    if not (image_dir / probe).is_file() and (image_dir / _png(probe)).is_file():
        return _png
    return lambda name: name


def _read_attr_txt(path: Path, meta: dict) -> tuple[list[str], list[str], np.ndarray]:
    """Parse list_attr_celeba.txt: [count line], header line of names, then ``<file> ±1 ...`` rows."""
    head: list[tuple[int, str]] = []
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8-sig", errors="replace").rstrip("\r\n")
            if line.strip():
                head.append((lineno, line))
            if len(head) == 2:
                break
    if not head:
        raise DatasetError(f"{path} is empty")
    count = None
    first_tokens = head[0][1].split()
    if len(first_tokens) == 1 and first_tokens[0].isdigit():
        count = int(first_tokens[0])
        if len(head) < 2:
            raise DatasetError(f"{path}: only a count line, no attribute-name header")
        header_lineno, header = head[1]
        skip = 2
    else:
        header_lineno, header = head[0]
        skip = 1
        warn(f"{path}: no image-count first line; read line {header_lineno} as the attribute-name header", meta)
    names = header.split()  # also drops the empty token after the trailing space of 'Young '
    if names and names[0].lower() in ("image_id", "image", "filename", "file"):
        names = names[1:]
    if not names:
        raise DatasetError(f"{path}, line {header_lineno}: empty attribute-name header")
    if names[0].lower().endswith((".jpg", ".png")) or all(_is_int(t) for t in names):
        raise line_error(path, header_lineno, header,
                         "expected the header line of attribute names, found a data row")
    check_no_duplicates(names, path, "attribute name")

    n = len(names)
    first = first_data_line(path, skip)
    if first is not None and len(first[1].split()) != n + 1:
        raise line_error(path, first[0], first[1], f"{len(first[1].split()) - 1} values, but the header "
                         f"(line {header_lineno}) names {n} attributes")
    checker = numeric_checker(n + 1, n + 1, text_cols={0}, int_cols=set(range(1, n + 1)))
    dtype = {0: str, **{i: np.int8 for i in range(1, n + 1)}}
    table = read_numeric_table(path, n + 1, dtype=dtype, skip_lines=skip, checker=checker)
    files = table[0].astype(str).tolist()
    values = table.drop(columns=[0]).to_numpy(dtype=np.int8)
    if count is not None and count != len(files):
        warn(f"{path}: the first line declares {count} images but {len(files)} rows follow", meta)
    values = _attributes_to_01(values, path, names, skip)
    _check_unique_files(files, path, skip)
    return names, files, values


def _attributes_to_01(values: np.ndarray, path: Path, names: list[str], skip: int) -> np.ndarray:
    """-1/1 -> 0/1 (a 0/1 copy is accepted as is); anything else raises naming the line."""
    if np.isin(values, (-1, 1)).all():
        return ((values.astype(np.int16) + 1) // 2).astype(np.int8)
    if np.isin(values, (0, 1)).all():
        return values.astype(np.int8)
    bad = ~np.isin(values, (-1, 0, 1))
    problem = "is not -1 or 1"
    if not bad.any():
        bad, problem = values == 0, "is 0 while other values are -1 (mixed codings)"
    r, c = np.argwhere(bad)[0]
    lineno, line = line_number_of_row(path, int(r), skip)
    raise line_error(path, lineno, line, f"attribute {names[int(c)]!r} value {int(values[r, c])} {problem}; "
                                        "CelebA attributes are coded -1 (absent) / 1 (present)")


def _check_unique_files(files: list[str], path: Path, skip: int) -> None:
    series = pd.Series(files, dtype=object)
    dup = series.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        lineno, line = line_number_of_row(path, row, skip)
        raise line_error(path, lineno, line, f"duplicated image {files[row]!r} ({int(dup.sum())} duplicates)")


def _read_pairs(path: Path, what: str) -> pd.DataFrame:
    """``<file> <int>`` lines (partition, identity); tolerates a non-official header line."""
    lines = read_lines(path)
    if not lines:
        raise DatasetError(f"{path} is empty")
    if len(lines[0][1].split()) == 2 and not _is_int(lines[0][1].split()[1]):
        lines = lines[1:]  # e.g. "image identity" added by some copies
    files, values, numbers, seen = [], [], [], {}
    for lineno, line in lines:
        parts = line.split()
        if len(parts) != 2:
            raise line_error(path, lineno, line, f"expected '<image> <{what}>', found {len(parts)} fields")
        if not _is_int(parts[1]):
            raise line_error(path, lineno, line, f"{what} {parts[1]!r} is not an integer")
        if parts[0] in seen:
            raise line_error(path, lineno, line, f"duplicated image {parts[0]!r} (first on line {seen[parts[0]]})")
        seen[parts[0]] = lineno
        files.append(parts[0])
        values.append(int(parts[1]))
        numbers.append(lineno)
    return pd.DataFrame({"file": pd.Series(files, dtype=object), "value": np.asarray(values, dtype=np.int64),
                         "line": numbers})


def _read_attr_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """The Kaggle mirror: ``image_id,5_o_Clock_Shadow,...`` with -1/1 values."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "image_id" not in frame.columns:
        raise DatasetError(f"{path}: expected an 'image_id' column, found {list(frame.columns)[:5]}...")
    names = [c for c in frame.columns if c != "image_id"]
    numeric = frame[names].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().to_numpy().any():
        r, c = np.argwhere(numeric.isna().to_numpy())[0]
        raise DatasetError(f"{path}, line {r + 2}: attribute {names[c]!r} value {frame.iloc[r][names[c]]!r} "
                           "is not -1 or 1")
    files = frame["image_id"].astype(str).tolist()
    check_no_duplicates(files, path, "image_id")
    return names, files, _attributes_to_01(numeric.to_numpy(dtype=np.int8), path, names, 1)


def _read_partition_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns[:2]) != ["image_id", "partition"]:
        raise DatasetError(f"{path}: expected columns image_id,partition, found {list(frame.columns)}")
    values = pd.to_numeric(frame["partition"], errors="coerce")
    if values.isna().any():
        r = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DatasetError(f"{path}, line {r + 2}: partition {frame['partition'].iloc[r]!r} is not an integer")
    check_no_duplicates(frame["image_id"].tolist(), path, "image_id")
    return pd.DataFrame({"file": frame["image_id"].astype(object), "value": values.astype(np.int64),
                         "line": np.arange(2, len(frame) + 2)})


def _descriptor_names(names: list[str], target: str, subgroup: str, descriptors, exclude, path: Path) -> list[str]:
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise DatasetError(f"{path}: unknown attribute(s) in exclude: {unknown}")
    if descriptors is None or descriptors == "all":
        drop = {target, subgroup, *exclude}
        if descriptors is None:
            drop |= set(leaking_attributes(target))
        chosen = [n for n in names if n not in drop]
    else:
        if isinstance(descriptors, str):
            raise DatasetError(f"descriptors must be None, 'all' or a list of attribute names, got {descriptors!r}")
        chosen = list(descriptors)
        unknown = [d for d in chosen if d not in names]
        if unknown:
            raise DatasetError(f"{path}: unknown descriptor attribute(s) {unknown}; the file has {names}")
        if target in chosen:
            raise DatasetError(f"descriptor list contains the target attribute {target!r} (label leakage)")
        check_no_duplicates(chosen, "descriptors option", "attribute")
        chosen = [d for d in chosen if d not in set(exclude)]
    if not chosen:
        raise DatasetError("no descriptor attributes left after exclusions")
    return chosen


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- fixture copy
#: The 40 attribute names of list_attr_celeba.txt, in file order.
CELEBA_ATTRIBUTES = tuple((
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split())

# Two data rows copied from the real list_attr_celeba.txt.
_CELEBA_REAL_ROWS = MappingProxyType({
    "000001.jpg": "-1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 -1 -1  1 -1 -1 -1  1  1 -1  1 -1  1 -1 -1  1",
    "000007.jpg": "1 -1  1  1 -1 -1  1  1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1  1 -1 -1  1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1",
})
#: per image: (partition, Blond_Hair, Male, Smiling) for the generated rows
_CELEBA_ROWS = MappingProxyType({
    "000002.jpg": (0, 1, 0, 1), "000003.jpg": (0, 1, 1, 0), "000004.jpg": (0, 0, 1, 1),
    "000005.jpg": (1, 1, 0, 0), "000006.jpg": (1, 0, 1, 1),
    "000008.jpg": (2, 1, 0, 1), "000009.jpg": (2, 0, 1, 0),
})
_CELEBA_PARTITION = MappingProxyType({"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 0, "000004.jpg": 0,
                                       "000005.jpg": 1, "000006.jpg": 1, "000007.jpg": 1, "000008.jpg": 2,
                                       "000009.jpg": 2})


def celeba_fixture_attributes() -> dict[str, list[int]]:
    """The ±1 attribute rows of the CelebA fixture, by file name (40 values in header order)."""
    rows = {f: [int(t) for t in v.split()] for f, v in _CELEBA_REAL_ROWS.items()}
    col = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
    for k, (fname, (_part, blond, male, smiling)) in enumerate(_CELEBA_ROWS.items()):
        i = int(fname[:6])
        values = [1 if (i * 7 + j * 3) % 5 == 0 else -1 for j in range(len(CELEBA_ATTRIBUTES))]
        for hair in ("Black_Hair", "Brown_Hair", "Gray_Hair", "Bald"):
            values[col[hair]] = -1
        if not blond:
            values[col[("Black_Hair", "Brown_Hair")[k % 2]]] = 1
        values[col["Blond_Hair"]] = 1 if blond else -1
        values[col["Male"]] = 1 if male else -1
        values[col["Smiling"]] = 1 if smiling else -1
        values[col["Young"]] = 1 if i % 3 else -1
        rows[fname] = values
    return {f: rows[f] for f in sorted(rows)}


def write_celeba(dest: str | Path, layout: str = "flat", size: tuple[int, int] = (8, 10)) -> Path:
    """CelebA annotation files + 9 tiny images; ``layout`` "flat", "official" (Anno/Eval/Img) or
    "png" (the official PNG release: ``Img/img_align_celeba_png/000001.png``, annotations naming ``.jpg``)."""
    if layout == "flat":
        root = Path(dest) / "celeba"
        anno = evaldir = root
        imgdir = root / "img_align_celeba"
    elif layout in ("official", "png"):
        root = Path(dest) / "CelebA"
        anno, evaldir = root / "Anno", root / "Eval"
        imgdir = root / "Img" / ("img_align_celeba_png" if layout == "png" else "img_align_celeba")
        write_text(root / "README.txt", "CelebA dataset (fixture copy)\n")
    else:
        raise ValueError(f"unknown CelebA fixture layout {layout!r}; expected 'flat', 'official' or 'png'")
    rows = celeba_fixture_attributes()
    lines = [str(len(rows)), " ".join(CELEBA_ATTRIBUTES) + " "]  # trailing space after 'Young', as in the real file
    lines += [f"{f} " + " ".join(f"{v:2d}" for v in vals) for f, vals in rows.items()]
    write_text(anno / "list_attr_celeba.txt", "\n".join(lines) + "\n")
    write_text(evaldir / "list_eval_partition.txt", "".join(f"{f} {p}\n" for f, p in _CELEBA_PARTITION.items()))
    write_text(anno / "identity_CelebA.txt", "".join(f"{f} {1 + i % 3}\n" for i, f in enumerate(rows)))
    bbox = ["9", "image_id x_1 y_1 width height"]
    bbox += [f"{f}    {95 + i:>2d}  {71 + i:>2d} {226 + i:>3d} {313 + i:>3d}" for i, f in enumerate(rows)]
    write_text(anno / "list_bbox_celeba.txt", "\n".join(bbox) + "\n")
    marks = ["9", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                  "rightmouth_x rightmouth_y"]
    marks += [f"{f} {69 + i}  {109 + i}  {106 + i}  {113 + i}   {77 + i}  {142 + i}   {73 + i}  {152 + i}  "
              f"{108 + i}  {154 + i}" for i, f in enumerate(rows)]
    write_text(anno / "list_landmarks_align_celeba.txt", "\n".join(marks) + "\n")
    for i, f in enumerate(rows):
        if layout == "png":
            path = imgdir / Path(f).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.new("RGB", size, fixture_color(i)).save(path, format="PNG")
        else:
            write_image(imgdir / f, i, size)
    return root
