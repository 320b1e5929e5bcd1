"""MILK10k reader (ISIC 2025; also the layout the embedded benchmark is written in).

Files under ``root``:

``MILK10k_Training_Metadata.csv``     one row per image: lesion_id, image_type, isic_id, age_approx,
                                      sex, skin_tone_class, site, the 7 MONET concept probabilities
``MILK10k_Training_GroundTruth.csv``   one row per lesion: lesion_id + one-hot diagnosis columns
``MILK10k_Training_Input/<lesion_id>/<isic_id>.jpg``  (also accepted: the double-nested
                                      ``MILK10k_Training_Input/MILK10k_Training_Input/...``, and
                                      ``<isic_id>.jpg`` anywhere below ``root`` or ``images_dir``,
                                      e.g. a flat image folder of any name)

Columns are found by name, never by position. A ``split`` column (the benchmark writes one) is
used as is; otherwise a seeded, class-stratified split at lesion level keeps both images of a
lesion in the same split. Every problem raises :class:`~semcov_lib.data.table.TableError` naming the
file, the column and the value.

:func:`write_milk10k` writes the tiny fixture copy (``fixtures.write_fixture("milk10k", dest)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._common import ImageIndex, finish_table, fixture_score, write_image, write_text
from semcov_lib.data.table import SPLITS, SCITable, TableError

METADATA_FILE = "MILK10k_Training_Metadata.csv"
GROUNDTRUTH_FILE = "MILK10k_Training_GroundTruth.csv"
INPUT_DIR = "MILK10k_Training_Input"
MONET_COLUMNS = (
    "MONET_ulceration_crust",
    "MONET_hair",
    "MONET_vasculature_vessels",
    "MONET_erythema",
    "MONET_pigmented",
    "MONET_gel_water_drop_fluid_dermoscopy_liquid",
    "MONET_skin_markings_pen_ink_purple_pen",
)
#: The 11 diagnosis columns of MILK10k_Training_GroundTruth.csv, in file order.
MILK10K_CLASSES = ("AKIEC", "BCC", "BEN_OTH", "BKL", "DF", "INF", "MAL_OTH", "MEL", "NV", "SCCKA", "VASC")
IMAGE_TYPES = MappingProxyType({"dermoscopic": "dermoscopic", "clinical": "clinical: close-up",
                                "clinical: close-up": "clinical: close-up"})
ALL_IMAGE_TYPES = ("both", "all")
SUBGROUPS = ("skin_tone_class", "sex", "age_bin", "site", "none")
_SUBGROUP_ALIASES = MappingProxyType({"skin_tone": "skin_tone_class", "age": "age_bin", "age_approx": "age_bin"})
AGE_BINS = ((0, 40, "<40"), (40, 60, "40-59"), (60, 75, "60-74"), (75, 200, "75+"))
UNKNOWN = "unknown"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".png")


def _find_file(root: Path, name: str) -> Path:
    """``root/name``, else ``root/<one subfolder>/name`` (downloads are often nested once)."""
    direct = root / name
    if direct.is_file():
        return direct
    if root.is_dir():
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            if (child / name).is_file():
                return child / name
    raise TableError(f"MILK10k: {name} not found in {root} (nor in its sub-folders)")


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV with stripped header names and string cells (tolerates BOM, CRLF, spaces)."""
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: cannot be read as CSV ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in frame.columns:
        frame[column] = frame[column].astype(str).str.strip()
    return frame.dropna(how="all")


def _require(frame: pd.DataFrame, columns: list[str] | tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """Column as float; empty cells and 'nan' become NaN."""
    values = frame[column].replace({"": np.nan, "nan": np.nan, "NaN": np.nan, "NA": np.nan})
    return pd.to_numeric(values, errors="coerce")


def _read_ground_truth(path: Path) -> tuple[list[str], pd.Series]:
    """Class names and a Series lesion_id -> class index, validating the one-hot rows."""
    gt = _read_csv(path)
    _require(gt, ["lesion_id"], path)
    classes = [c for c in gt.columns if c != "lesion_id"]
    if len(classes) < 2:
        raise TableError(f"{path}: expected lesion_id plus at least 2 diagnosis columns, found {list(gt.columns)}")
    dup = gt["lesion_id"][gt["lesion_id"].duplicated()]
    if len(dup):
        raise TableError(f"{path}: lesion {dup.iloc[0]!r} appears more than once")
    values = np.empty((len(gt), len(classes)))
    for j, column in enumerate(classes):
        col = _numeric(gt, column)
        bad = ~col.isin([0.0, 1.0])
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise TableError(f"{path}: lesion {gt['lesion_id'].iloc[i]!r}, column {column!r} holds "
                             f"{gt[column].iloc[i]!r}; ground truth must be one-hot 0.0/1.0")
        values[:, j] = col.to_numpy()
    ones = values.sum(axis=1)
    bad_rows = np.nonzero(ones != 1)[0]
    if len(bad_rows):
        i = int(bad_rows[0])
        raise TableError(f"{path}: lesion {gt['lesion_id'].iloc[i]!r} has {int(ones[i])} diagnoses marked 1.0 "
                         f"(exactly one expected; {len(bad_rows)} such rows)")
    return classes, pd.Series(values.argmax(axis=1), index=gt["lesion_id"].to_numpy())


def _image_bases(root: Path, images_dir: str | Path | None) -> list[Path]:
    if images_dir is not None:
        base = Path(images_dir)
        if not base.is_absolute() and not base.exists():
            base = root / base
        return [base, base / INPUT_DIR]
    top = root / INPUT_DIR
    return [top, top / INPUT_DIR, root]


def _locate_images(meta: pd.DataFrame, bases: list[Path], path: Path, search_root: Path) -> list[str]:
    """Path of each row's image: a lesion folder or flat folder of ``bases``, else the unique
    ``<isic_id>.jpg`` anywhere below ``search_root``; raises naming the first missing one."""
    index = ImageIndex(search_root)
    patterns = [(base, nested) for base in bases for nested in (True, False)]
    found: list[str] = []
    last_ok = 0  # try the layout that worked for the previous row first
    missing = []
    for lesion, isic in zip(meta["lesion_id"], meta["isic_id"]):
        hit = None
        order = [last_ok] + [i for i in range(len(patterns)) if i != last_ok]
        for ext in _IMAGE_EXTENSIONS:
            for i in order:
                base, nested = patterns[i]
                candidate = os.path.join(base, lesion, isic + ext) if nested else os.path.join(base, isic + ext)
                if os.path.isfile(candidate):
                    hit, last_ok = candidate, i
                    break
            if hit:
                break
        if hit is None:
            found_by_name = index.find(*[isic + ext for ext in _IMAGE_EXTENSIONS])
            hit = str(found_by_name) if found_by_name is not None else None
        if hit is None:
            missing.append((lesion, isic))
            found.append("")
        else:
            found.append(hit)
    if missing:
        lesion, isic = missing[0]
        tried = os.path.join(bases[0], lesion, isic + ".jpg")
        if index.ambiguous:
            name, copies = next(iter(index.ambiguous.items()))
            raise TableError(f"{path}: {name} exists more than once below {search_root} ({', '.join(map(str, copies[:3]))})"
                             f"; {len(index.ambiguous)} such image(s): delete the extra copy or pass images_dir=")
        raise TableError(f"{path}: image {isic}.jpg of lesion {lesion} not found (looked for {tried}, the double-nested "
                         f"{INPUT_DIR}/{INPUT_DIR}/ variant, and {isic}.jpg anywhere below {search_root}); "
                         f"{len(missing)} image(s) missing")
    return found


def _subgroups(meta: pd.DataFrame, subgroup: str, path: Path) -> pd.Series:
    if subgroup == "none":
        return pd.Series("none", index=meta.index, dtype=object)
    if subgroup == "skin_tone_class":
        _require(meta, ["skin_tone_class"], path)
        tone = _numeric(meta, "skin_tone_class")
        text = meta["skin_tone_class"]
        out = np.where(tone.notna(), tone.round().astype("Int64").astype(str), np.where(text == "", UNKNOWN, text))
        return pd.Series(out, index=meta.index, dtype=object)
    if subgroup == "age_bin":
        _require(meta, ["age_approx"], path)
        age = _numeric(meta, "age_approx")
        out = pd.Series(UNKNOWN, index=meta.index, dtype=object)
        for lo, hi, name in AGE_BINS:
            out[(age >= lo) & (age < hi)] = name
        return out
    column = subgroup  # sex, site
    _require(meta, [column], path)
    values = meta[column].str.lower()
    return pd.Series(np.where(values.isin(["", "nan", "none"]), UNKNOWN, values), index=meta.index, dtype=object)


def _descriptor_kind(scores: np.ndarray) -> str:
    """``hard`` when every observed concept value is 0 or 1 (a benchmark generated with 0/1
    annotations), else ``soft`` (MONET probabilities, as in MILK10k)."""
    values = scores[np.isfinite(scores)]
    return "hard" if len(values) and np.isin(values, (0.0, 1.0)).all() else "soft"


def _seeded_split(lesion_class: pd.Series, seed: int, val_fraction: float, test_fraction: float) -> pd.Series:
    """Class-stratified lesion-level split: lesion_id -> train/val/test."""
    rng = np.random.default_rng(seed)
    out = pd.Series("train", index=lesion_class.index, dtype=object)
    for c in np.sort(lesion_class.unique()):
        lesions = np.sort(lesion_class.index[lesion_class.to_numpy() == c].to_numpy())
        lesions = lesions[rng.permutation(len(lesions))]
        n = len(lesions)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n_test + n_val >= n:  # keep at least one training lesion per class
            n_val = max(0, min(n_val, n - 1 - n_test))
            n_test = max(0, min(n_test, n - 1))
        out[lesions[:n_test]] = "test"
        out[lesions[n_test:n_test + n_val]] = "val"
    return out


def load_milk10k(root: str | Path, image_type: str = "dermoscopic", subgroup: str = "skin_tone_class",
                 split_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 images_dir: str | Path | None = None) -> SCITable:
    """Read MILK10k (or the embedded benchmark) as an :class:`SCITable`.

    ``image_type``: ``"dermoscopic"``, ``"clinical"`` (= ``"clinical: close-up"``) or ``"both"``.
    ``subgroup``: ``"skin_tone_class"``, ``"sex"``, ``"age_bin"`` (alias ``"age"``), ``"site"`` or
    ``"none"``; missing values become ``"unknown"``. Descriptors are the 7 MONET columns (soft
    scores in [0, 1]); classes are the ground-truth columns in file order.
    """
    root = Path(root)
    if not root.exists():
        raise TableError(f"MILK10k root folder {root} does not exist")
    wanted = _image_type_option(image_type)
    subgroup = _SUBGROUP_ALIASES.get(subgroup, subgroup)
    if subgroup not in SUBGROUPS:
        raise TableError(f"MILK10k: subgroup {subgroup!r} not understood; choose one of {list(SUBGROUPS)}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise TableError(f"MILK10k: val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                         "with a sum below 1")

    meta_path = _find_file(root, METADATA_FILE)
    gt_path = _find_file(root, GROUNDTRUTH_FILE)
    data_root = meta_path.parent
    classes, lesion_class = _read_ground_truth(gt_path)
    meta = _read_metadata(meta_path, gt_path, lesion_class)
    # split, decided per lesion before filtering by image type (same split whatever the image type)
    if "split" in meta.columns:
        split, split_source = _split_column(meta, meta_path), "column"
    else:
        present = lesion_class[lesion_class.index.isin(meta["lesion_id"])]
        split = meta["lesion_id"].map(_seeded_split(present, split_seed, val_fraction, test_fraction))
        split_source = f"seeded lesion-level stratified split (seed {split_seed})"
    if wanted is not None:
        keep = meta["image_type"] == wanted
        if not keep.any():
            raise TableError(f"{meta_path}: no image with image_type {wanted!r}; "
                             f"found {sorted(meta['image_type'].unique())}")
        meta, split = meta[keep], split[keep]
    meta, split = meta.reset_index(drop=True), split.reset_index(drop=True)

    groups = _subgroups(meta, subgroup, meta_path).to_numpy()
    scores = _monet_scores(meta, meta_path)
    bases = _image_bases(data_root, images_dir)
    paths = _locate_images(meta, bases, meta_path, bases[0] if images_dir is not None else data_root)
    root_abs = os.path.abspath(data_root)
    columns = {"sample_id": meta["isic_id"].to_numpy(),
               "image_path": [os.path.relpath(p, root_abs) if os.path.abspath(p).startswith(root_abs + os.sep)
                              else os.path.abspath(p) for p in paths],
               "label": meta["lesion_id"].map(lesion_class).to_numpy(dtype=np.int64),
               "subgroup": groups, "split": split.to_numpy()}
    return finish_table(
        columns, scores, MONET_COLUMNS, _other_metadata(meta), np.ones(len(meta), dtype=bool),
        classes=classes, name="milk10k", root=data_root, subgroup_name=subgroup,
        descriptor_kind=_descriptor_kind(scores), source=str(meta_path),
        meta={"dataset": "milk10k", "image_type": wanted or "both", "split_source": split_source,
              "metadata_file": str(meta_path), "groundtruth_file": str(gt_path)})


def _image_type_option(image_type: str) -> str | None:
    """The ``image_type`` value to keep, or None for every image type."""
    key = str(image_type).strip()
    if key.lower() in ALL_IMAGE_TYPES:
        return None
    if key in IMAGE_TYPES or key.lower() in IMAGE_TYPES:
        return IMAGE_TYPES.get(key, IMAGE_TYPES.get(key.lower()))
    raise TableError(f"MILK10k: image_type {image_type!r} not understood; use 'dermoscopic', 'clinical' or 'both'")


def _read_metadata(meta_path: Path, gt_path: Path, lesion_class: pd.Series) -> pd.DataFrame:
    """The metadata CSV: required columns, unique isic_id, every lesion in the ground truth."""
    meta = _read_csv(meta_path)
    _require(meta, ["lesion_id", "image_type", "isic_id", *MONET_COLUMNS], meta_path)
    dup = meta["isic_id"][meta["isic_id"].duplicated()]
    if len(dup):
        raise TableError(f"{meta_path}: isic_id {dup.iloc[0]!r} appears more than once")
    unlabelled = meta["lesion_id"][~meta["lesion_id"].isin(lesion_class.index)]
    if len(unlabelled):
        raise TableError(f"{meta_path}: lesion {unlabelled.iloc[0]!r} has no row in {gt_path.name} "
                         f"({unlabelled.nunique()} lesion(s) without ground truth)")
    return meta


def _split_column(meta: pd.DataFrame, meta_path: Path) -> pd.Series:
    """The metadata's own ``split`` column (the benchmark writes one), lower-cased and checked."""
    split = meta["split"].str.lower()
    bad = split[~split.isin(SPLITS)]
    if len(bad):
        raise TableError(f"{meta_path}: column 'split' holds {meta['split'][bad.index[0]]!r} "
                         f"(isic_id {meta['isic_id'][bad.index[0]]}); expected one of {list(SPLITS)}")
    return split


def _monet_scores(meta: pd.DataFrame, meta_path: Path) -> np.ndarray:
    """(N, 7) MONET probabilities; empty cells are NaN, text or values outside [0, 1] raise."""
    scores = np.empty((len(meta), len(MONET_COLUMNS)), dtype=np.float64)
    for j, column in enumerate(MONET_COLUMNS):
        values = _numeric(meta, column)
        text = meta[column]
        bad = values.isna() & ~text.isin(["", "nan", "NaN", "NA"])
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise TableError(f"{meta_path}: column {column!r} holds non-numeric {text.iloc[i]!r} "
                             f"(isic_id {meta['isic_id'].iloc[i]})")
        out = (values < 0) | (values > 1)
        if out.any():
            i = int(np.argmax(out.to_numpy()))
            raise TableError(f"{meta_path}: column {column!r} holds {text.iloc[i]} "
                             f"(isic_id {meta['isic_id'].iloc[i]}), outside [0, 1]; MONET scores are probabilities")
        scores[:, j] = values.to_numpy(dtype=np.float64)
    return scores


def _other_metadata(meta: pd.DataFrame) -> pd.DataFrame:
    """Every other metadata column, typed where it is numeric (age, skin tone, ``gt_*``)."""
    taken = {"sample_id", "image_path", "label", "subgroup", "split", *MONET_COLUMNS}
    extra = {}
    for column in meta.columns:
        if column in taken:
            continue
        if column in ("age_approx", "skin_tone_class") or column.startswith("gt_"):
            extra[column] = _numeric(meta, column).to_numpy()
        else:
            extra[column] = meta[column].replace({"": np.nan}).to_numpy(dtype=object)
    return pd.DataFrame(extra, index=meta.index)


# --------------------------------------------------------------------------- fixture copy
def write_milk10k(dest: str | Path, nested: bool = False, lesions_per_class: int = 10,
                  classes: tuple[str, ...] = ("BCC", "MEL", "NV"), supplement: bool = True) -> Path:
    """MILK10k training files (as released): metadata (2 rows per lesion), one-hot ground truth,
    supplement, and ``MILK10k_Training_Input/<lesion_id>/<isic_id>.jpg`` (both image types).

    Lesion 2 has empty age and skin tone, lesion 3 an empty sex, lesion 4 an empty site.
    """
    root = Path(dest) / "milk10k"
    images = root / "MILK10k_Training_Input"
    if nested:
        images = images / "MILK10k_Training_Input"
    sites = ("foot", "genital", "hand", "head_neck_face", "lower_extremity", "trunk", "upper_extremity")
    header = ("lesion_id,image_type,isic_id,attribution,copyright_license,image_manipulation,age_approx,sex,"
              "skin_tone_class,site," + ",".join(MONET_COLUMNS))
    meta_lines, gt_lines, supp_lines = [header], ["lesion_id," + ",".join(MILK10K_CLASSES)], ["isic_id,diagnosis_full"]
    full = {"MEL": "Melanoma Invasive", "NV": "Nevus", "BCC": "Basal cell carcinoma", "BKL": "Seborrheic keratosis"}
    n = 0
    for c_index, cls in enumerate(classes):
        if cls not in MILK10K_CLASSES:
            raise ValueError(f"unknown MILK10k class {cls!r}; expected one of {MILK10K_CLASSES}")
        for j in range(lesions_per_class):
            n += 1
            lesion = f"IL_{n:07d}"
            age = "" if n == 2 else f"{30 + 5 * ((n * 7) % 11)}.0"
            sex = "" if n == 3 else ("male" if n % 2 else "female")
            tone = "" if n == 2 else str((n + c_index) % 6)
            site = "" if n == 4 else sites[n % len(sites)]
            manipulation = "altered" if n % 5 == 0 else "instrument only"
            for k, image_type in enumerate(("clinical: close-up", "dermoscopic")):
                isic = f"ISIC_{100 + 2 * (n - 1) + k + 1:07d}"
                scores = ",".join(f"{fixture_score(n, k, m):.2f}" for m in range(len(MONET_COLUMNS)))
                meta_lines.append(f"{lesion},{image_type},{isic},Synthetic,CC-BY-NC,{manipulation},{age},{sex},"
                                  f"{tone},{site},{scores}")
                supp_lines.append(f"{isic},{full.get(cls, cls)}")
                write_image(images / lesion / f"{isic}.jpg", 2 * n + k)
            gt_lines.append(lesion + "," + ",".join("1.0" if c == cls else "0.0" for c in MILK10K_CLASSES))
    write_text(root / "MILK10k_Training_Metadata.csv", "\n".join(meta_lines) + "\n")
    write_text(root / "MILK10k_Training_GroundTruth.csv", "\n".join(gt_lines) + "\n")
    if supplement:
        write_text(root / "MILK10k_Training_Supplement.csv", "\n".join(supp_lines) + "\n")
    return root
