"""ISIC-DICM-17K (17,060 dermoscopic images, melanoma vs non-melanoma) as an :class:`SCITable`.

Files (``root``): the released ``train-set-metadata.csv`` and ``valid-set-metadata.csv`` (from
github.com/mmu-dermatology-research/isic-dicm-17k) and the images from ISIC Archive collection
469, anywhere below ``images_dir`` (default ``root``; searched recursively). Each row's image is
resolved by its ``image`` column (curated name, e.g. ``ISIC2019_0025105_mel.jpg``), then by
``<isic_id>.jpg`` (the ISIC Archive's naming): first as a path relative to ``images_dir``, then
by file name anywhere below it.

Descriptors are required. The dataset ships no concept scores (SemCovNet used 7 MONET concept
probabilities it computed itself), so the user supplies a CSV with ``isic_id`` and the 7
``MONET_*`` columns (same names as MILK10k), values in [0, 1] (empty = not observed), via
``descriptors=PATH``; without it ``<root>/descriptors.csv`` is used when present, otherwise the
loader raises an error explaining how to make one. It never proceeds without descriptors.

The table:

* ``label``: the CSV's ``class`` column (1 -> ``melanoma``, 0 -> ``non_melanoma``, as named in the
  dataset README); never derived from ``diagnosis`` (some class-1 rows are carcinomas).
* ``split``: in the released CSVs 38% of the valid rows share a lesion with a train row and
  about two thirds share a lesion or a patient, so evaluating on the valid file is optimistic.
  ``split="grouped"`` (default) therefore pools both files and splits them group-aware: rows
  sharing a non-empty ``lesion_id`` or ``patient_id`` stay together; seeded (``split_seed``),
  stratified by class; ``holdout_fraction`` of the rows (default: the valid file's share, so
  the sizes match the release) are held out and ``test_fraction`` (default 0.5) of those go to
  ``test``, the rest to ``val``. ``split="official"``: ``train`` = the train CSV, the valid
  CSV split into ``val``/``test`` the same way, with a warning counting the valid rows that
  share a lesion or patient with train. Either split is the package's, not the authors'.
* ``subgroup``: ``"sex"`` (default; male/female/unknown), ``"age_bin"`` (edges ``age_bins``,
  default (40, 60) -> ``<40`` / ``40-59`` / ``60+`` / ``unknown``), ``"anatom_site_general"``
  (its values, ``unknown`` when empty) or ``"none"``.
* metadata: every CSV column (``age_approx`` and ``year`` as floats, empty fields as NaN) and
  ``source_csv`` (``train`` / ``valid``).

The options can be passed one by one as keywords or grouped in an :class:`IsicOptions`.
:func:`write_isic_dicm_17k` writes the tiny fixture copy (``fixtures.write_fixture("isic_dicm_17k", dest)``);
:func:`manifest_flags` is the ``verify`` check of a real copy (valid rows sharing a lesion or patient).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from semcov_lib.data.datasets._common import (
    DatasetError, ImageSource, MissingFileError, check_fraction, check_unit_interval, choose,
    connected_groups, finish_table, fixture_score, holdout_mask, preview, resolve_images, warn, write_image,
    write_text,
)
from semcov_lib.data.datasets.milk10k import MONET_COLUMNS
from semcov_lib.data.table import NO_SUBGROUP, SCITable

CLASSES = ("non_melanoma", "melanoma")
SUBGROUPS = ("sex", "age_bin", "anatom_site_general", "none")
REQUIRED = ("image", "isic_id", "class")
CSV_FILES = ("train-set-metadata.csv", "valid-set-metadata.csv")
SPLITS = ("grouped", "official")

DESCRIPTORS_HELP = (
    "ISIC-DICM-17K ships no concept descriptors. Supply a CSV with a column 'isic_id' and the 7 MONET "
    "concept columns {cols} (probabilities in [0, 1], empty = not observed; the same names as MILK10k), "
    "one row per image, e.g. scores from the MONET model (Kim et al., Nat Med 2024) run on the images, "
    "then pass descriptors=PATH (or save it as {default})."
)


@dataclass(frozen=True)
class IsicOptions:
    """The options of :func:`load_isic_dicm_17k` (meaning: module docstring); also its keyword arguments."""

    descriptors: str | Path | None = None
    subgroup: str = "sex"
    test_fraction: float = 0.5
    split_seed: int = 0
    age_bins: Sequence[int] = (40, 60)
    descriptor_columns: Sequence[str] = MONET_COLUMNS
    images_dir: str | Path | None = None
    missing_images: str = "error"
    split: str = "grouped"
    holdout_fraction: float | None = None


def load_isic_dicm_17k(root: str | Path, options: IsicOptions | None = None, **overrides: Any) -> SCITable:
    """Read ISIC-DICM-17K into the common table (options: see module docstring).

    ``options`` groups the options; keyword ``overrides`` (the field names of :class:`IsicOptions`)
    replace single fields, so ``load_isic_dicm_17k(root, split="official")`` works as before.
    """
    opt = replace(options or IsicOptions(), **overrides)
    choose(opt.split, SPLITS, "split")
    choose(opt.subgroup if opt.subgroup is not None else "none", SUBGROUPS, "subgroup")
    subgroup = opt.subgroup or "none"
    opt = replace(opt, test_fraction=check_fraction("test_fraction", opt.test_fraction))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"ISIC-DICM-17K: root folder {root} does not exist")
    meta: dict = {"dataset": "isic_dicm_17k"}
    base = _find_csv_dir(root)
    data = _read_both_csvs(base)
    desc_path = _descriptor_path(opt.descriptors, root, opt.descriptor_columns)
    scores = _read_descriptors(desc_path, data["isic_id"], opt.descriptor_columns)
    meta["files"] = {"train": str(base / CSV_FILES[0]), "valid": str(base / CSV_FILES[1]),
                     "descriptors": str(desc_path)}

    # ---- images: the curated ``image`` name first, then ``<isic_id>.jpg``
    image_dir = Path(opt.images_dir).expanduser() if opt.images_dir is not None else root
    images, isic_ids = data["image"].tolist(), data["isic_id"].tolist()
    paths, keep = resolve_images(ImageSource(image_dir, root, f"ISIC-DICM-17K ({base})", opt.missing_images),
                                 [img or f"{iid}.jpg" for img, iid in zip(images, isic_ids)], meta,
                                 find=lambda index, i: index.find(images[i], f"{isic_ids[i]}.jpg"))

    label = data["class_int"].to_numpy(dtype=np.int64)
    split_col = _split_column(data, label, opt, base, meta)
    groups_col = _subgroups(data, subgroup, opt.age_bins, base)
    metadata = data.drop(columns=["class_int"]).copy()
    for col in ("age_approx", "year"):
        if col in metadata.columns:
            metadata[col] = pd.to_numeric(metadata[col], errors="coerce")
    metadata = metadata.mask(metadata.astype(str) == "")
    split_note = ("grouped: both CSVs pooled, seeded, class-stratified, lesion/patient-grouped"
                  if opt.split == "grouped" else "official: train = train CSV; val/test = grouped split of the valid CSV")
    meta.update(subgroup=subgroup, test_fraction=opt.test_fraction, split_seed=opt.split_seed,
                images_dir=str(image_dir), split=opt.split, split_note=split_note)
    return finish_table(
        {"sample_id": isic_ids, "image_path": paths, "label": label, "subgroup": groups_col, "split": split_col},
        scores, list(opt.descriptor_columns), metadata, keep,
        classes=list(CLASSES), name="isic_dicm_17k", root=root, subgroup_name=subgroup, descriptor_kind="soft",
        source=str(base), meta=meta)


def _read_both_csvs(base: Path) -> pd.DataFrame:
    """The train and valid metadata CSVs pooled, with ``source_csv``; an isic_id in both raises."""
    parts = []
    for source, name in zip(("train", "valid"), CSV_FILES):
        frame = _read_metadata(base / name)
        frame["source_csv"] = source
        parts.append(frame)
    data = pd.concat(parts, ignore_index=True)
    dup = data["isic_id"][data["isic_id"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        where = sorted(set(data.loc[data["isic_id"] == first, "source_csv"]))
        raise DatasetError(f"{base}: duplicated isic_id {first!r} (in {' and '.join(w + ' CSV' for w in where)}; "
                           f"{dup.nunique()} duplicated ids)")
    return data


def _split_column(data: pd.DataFrame, label: np.ndarray, opt: IsicOptions, base: Path, meta: dict) -> np.ndarray:
    """train / val / test per row: the held-out part (grouped or the valid CSV) is split into val and test."""
    groups = connected_groups(*[data[c].tolist() for c in ("lesion_id", "patient_id") if c in data.columns])
    source = data["source_csv"].to_numpy()
    overlap = overlap_counts(data, source)
    meta.setdefault("counts", {}).update(overlap)
    if opt.split == "official":
        if overlap["valid_rows_sharing_lesion_or_patient_with_train"]:
            warn(f"ISIC-DICM-17K ({base}): {overlap['valid_rows_sharing_lesion_or_patient_with_train']} of "
                 f"{(source == 'valid').sum()} valid rows share a lesion or patient with the train CSV, so val/test "
                 "metrics are optimistic; split='grouped' (the default) keeps lesions and patients together", meta,
                 stacklevel=4)
        held = source == "valid"
    else:
        fraction = (source == "valid").mean() if opt.holdout_fraction is None else opt.holdout_fraction
        held = holdout_mask(label, check_fraction("holdout_fraction", fraction), opt.split_seed, groups)
    split_col = np.where(held, "val", "train").astype(object)
    held_rows = np.flatnonzero(held)
    test = holdout_mask(label[held_rows], opt.test_fraction, opt.split_seed + 1, groups[held_rows])
    split_col[held_rows[test]] = "test"
    return split_col


# --------------------------------------------------------------------------- helpers
def overlap_counts(data: pd.DataFrame, source: np.ndarray) -> dict[str, int]:
    """Valid-CSV rows sharing a lesion, a patient, or either with a train-CSV row."""
    def shared(column: str) -> np.ndarray:
        if column not in data.columns:
            return np.zeros(len(data), dtype=bool)
        ids = data[column].astype(str).where(data[column].notna() & (data[column].astype(str) != ""), None)
        train_ids = set(ids[source == "train"].dropna())
        return (source == "valid") & ids.isin(train_ids).to_numpy()

    lesion, patient = shared("lesion_id"), shared("patient_id")
    return {"valid_rows_sharing_lesion_with_train": int(lesion.sum()),
            "valid_rows_sharing_patient_with_train": int(patient.sum()),
            "valid_rows_sharing_lesion_or_patient_with_train": int((lesion | patient).sum())}


def _find_csv_dir(root: Path) -> Path:
    tried = []
    for sub in (".", "isic-dicm-17k", "isic_dicm_17k", "metadata"):
        base = root if sub == "." else root / sub
        tried += [base / n for n in CSV_FILES]
        if all((base / n).is_file() for n in CSV_FILES):
            return base
    listed = "\n  ".join(str(p) for p in tried)
    raise MissingFileError(f"ISIC-DICM-17K metadata CSVs not found under {root}; looked for:\n  {listed}")


def _read_metadata(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; the header is {list(frame.columns)[:12]}"
                           f"{'...' if len(frame.columns) > 12 else ''} (expected the released "
                           "ISIC-DICM-17K header: image,isic_id,year,class,...)")
    if frame.empty:
        raise DatasetError(f"{path} has a header but no rows")
    for col in frame.columns:
        frame[col] = frame[col].astype(str).str.strip()
    empty_id = np.flatnonzero((frame["isic_id"] == "").to_numpy())
    if len(empty_id):
        raise DatasetError(f"{path}, line {int(empty_id[0]) + 2}: empty isic_id")
    numeric = pd.to_numeric(frame["class"], errors="coerce")
    bad = np.flatnonzero(~numeric.isin([0, 1]).to_numpy())
    if len(bad):
        r = int(bad[0])
        raise DatasetError(f"{path}, line {r + 2}: column 'class' holds {frame['class'].iloc[r]!r} "
                           f"(isic_id {frame['isic_id'].iloc[r]}); expected 0 or 1 ({len(bad)} bad rows)")
    frame["class_int"] = numeric.astype(np.int64)
    return frame


def _descriptor_path(descriptors: str | Path | None, root: Path, columns: Sequence[str]) -> Path:
    default = root / "descriptors.csv"
    help_text = DESCRIPTORS_HELP.format(cols=list(columns), default=default)
    if descriptors is None:
        if default.is_file():
            return default
        raise MissingFileError(f"ISIC-DICM-17K needs a descriptor table and none was given "
                               f"(no descriptors=PATH, and {default} does not exist). {help_text}")
    path = Path(descriptors).expanduser()
    if not path.is_file():
        raise MissingFileError(f"ISIC-DICM-17K descriptor file {path} does not exist. {help_text}")
    return path


def _read_descriptors(path: Path, isic_ids: pd.Series, columns: Sequence[str]) -> np.ndarray:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{path}: cannot be read as CSV ({exc})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("isic_id", *columns) if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(table.columns)}; the descriptor "
                           f"table needs 'isic_id' and {list(columns)}")
    table["isic_id"] = table["isic_id"].astype(str).str.strip()
    dup = table["isic_id"][table["isic_id"].duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: duplicated isic_id {dup.iloc[0]!r} ({len(dup)} duplicate rows)")
    values = pd.DataFrame({c: pd.to_numeric(table[c].str.strip().replace("", np.nan), errors="coerce")
                           for c in columns})
    for c in columns:  # non-numeric text (not empty) is an error, not NaN
        raw = table[c].str.strip()
        bad = np.flatnonzero((values[c].isna() & (raw != "")).to_numpy())
        if len(bad):
            r = int(bad[0])
            raise DatasetError(f"{path}, line {r + 2}: column {c!r} holds non-numeric {raw.iloc[r]!r} "
                               f"(isic_id {table['isic_id'].iloc[r]})")
    values["isic_id"] = table["isic_id"]
    check_unit_interval(values, list(columns), path, "isic_id")
    indexed = values.set_index("isic_id")
    absent = [i for i in isic_ids if i not in indexed.index]
    if absent:
        raise DatasetError(f"{path}: {len(absent)} of {len(isic_ids)} images have no descriptor row, "
                           f"e.g. {preview(absent)}")
    return indexed.loc[list(isic_ids), list(columns)].to_numpy(dtype=np.float64)


def _subgroups(data: pd.DataFrame, subgroup: str, age_bins: Sequence[int], base: Path) -> np.ndarray:
    if subgroup == "none":
        return np.full(len(data), NO_SUBGROUP, dtype=object)
    column = "age_approx" if subgroup == "age_bin" else subgroup
    if column not in data.columns:
        raise DatasetError(f"{base}: subgroup {subgroup!r} needs column {column!r}, absent from the CSVs")
    if subgroup == "sex":
        values = data["sex"].str.lower()
        return np.where(values.isin(["male", "female"]), values, "unknown").astype(object)
    if subgroup == "anatom_site_general":
        values = data[column]
        return np.where(values != "", values, "unknown").astype(object)
    edges = [int(e) for e in age_bins]
    if not edges or sorted(edges) != edges or len(set(edges)) != len(edges):
        raise DatasetError(f"age_bins must be increasing integers, got {list(age_bins)!r}")
    labels = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    age = pd.to_numeric(data["age_approx"], errors="coerce").to_numpy()
    codes = np.searchsorted(np.asarray(edges, dtype=float), age, side="right")
    out = np.array([labels[c] for c in np.minimum(codes, len(labels) - 1)], dtype=object)
    out[np.isnan(age)] = "unknown"
    return out


# --------------------------------------------------------------------------- verify
def manifest_flags(base: Path) -> list[str]:
    """``verify``'s known-problem check: valid-CSV rows sharing a lesion or patient with the train CSV."""
    if not all((base / name).is_file() for name in CSV_FILES):
        return []
    frames = [pd.read_csv(base / name, dtype=str, keep_default_na=False).assign(_source=source)
              for source, name in zip(("train", "valid"), CSV_FILES)]
    data = pd.concat(frames, ignore_index=True)
    counts = overlap_counts(data, data["_source"].to_numpy())
    n_valid = int(np.sum(data["_source"] == "valid"))
    shared = counts["valid_rows_sharing_lesion_or_patient_with_train"]
    if not shared:
        return []
    return [f"{CSV_FILES[1]}: {shared} of {n_valid} rows share a lesion or patient with {CSV_FILES[0]} "
            f"({counts['valid_rows_sharing_lesion_with_train']} a lesion); evaluating on the valid file is "
            "optimistic: the loader's default split='grouped' keeps lesions and patients together"]


# --------------------------------------------------------------------------- fixture copy
ISIC_HEADER = ("image,isic_id,year,class,patient_id,lesion_id,sex,age_approx,anatom_site_general,benign_malignant,"
               "dermoscopic_type,diagnosis,diagnosis_confirm_type,image_type,mel_class,mel_mitotic_index,mel_type,"
               "mel_ulcer,melanocytic,nevus_type,clin_size_long_diam_mm,mel_thick_mm,personal_hx_mm,family_hx_mm")
#: (file name in the `image` column, isic_id, class, patient_id, lesion_id, sex, age, site, diagnosis)
ISIC_TRAIN_ROWS = (
    ("ISIC2019_0025105_mel.jpg", "ISIC_0025105", 1, "", "IL_3060556", "male", "65.0", "posterior torso", "melanoma"),
    ("ISIC_0022327_mel.jpg", "ISIC_0022327", 1, "IP_8481777", "", "female", "45.0", "lower extremity", "melanoma"),
    ("ISIC2019_0033171_mel.jpg", "ISIC_0033171", 1, "", "IL_9013946", "", "", "", "basal cell carcinoma"),
    ("ISIC_0021081_oth.jpg", "ISIC_0021081", 0, "IP_3168027", "", "female", "65.0", "lower extremity", "nevus"),
    ("ISIC2020_0000002_oth.jpg", "ISIC_0000002", 0, "IP_0000002", "IL_0000002", "male", "30.0", "head/neck", "nevus"),
    ("ISIC2017_0000003_oth.jpg", "ISIC_0000003", 0, "", "", "male", "80.0", "anterior torso", "seborrheic keratosis"),
)
#: As in the released CSVs, valid rows share lesions and patients with train rows: ISIC_0000011 is
#: lesion IL_3060556 (train's ISIC_0025105), ISIC_0000012 is patient IP_8481777 (train's ISIC_0022327).
ISIC_VALID_ROWS = (
    ("ISIC2019_0000011_mel.jpg", "ISIC_0000011", 1, "", "IL_3060556", "female", "55.0", "upper extremity", "melanoma"),
    ("ISIC2020_0000012_mel.jpg", "ISIC_0000012", 1, "IP_8481777", "IL_0000012", "male", "70.0", "palms/soles", "melanoma"),
    ("ISIC2019_0000013_oth.jpg", "ISIC_0000013", 0, "", "IL_0000013", "female", "25.0", "oral/genital", "nevus"),
    ("ISIC2019_0000014_oth.jpg", "ISIC_0000014", 0, "", "", "", "40.0", "lateral torso", "nevus"),
)


def _isic_line(row: tuple) -> str:
    image, isic, cls, patient, lesion, sex, age, site, diagnosis = row
    year = image[4:8] + ".0" if image.startswith("ISIC20") and image[4:8].isdigit() else ""
    bm = "malignant" if cls == 1 else "benign"
    confirm = "histopathology" if cls == 1 else "single image expert consensus"
    fields = [image, isic, year, str(cls), patient, lesion, sex, age, site, bm, "contact polarized" if patient else "",
              diagnosis, confirm, "dermoscopic", "", "", "", "", "1.0", "", "", "", "", ""]
    return ",".join(fields)


def write_isic_dicm_17k(dest: str | Path, descriptors: bool = True) -> Path:
    """ISIC-DICM-17K (as released): train/valid metadata CSVs, images, optional descriptors.csv.

    Images are named ``<isic_id>.jpg`` under ``images/`` except the first training image, which is
    stored under its curated ``image``-column name in a sub-folder (tests the recursive search).
    """
    root = Path(dest) / "isic_dicm_17k"
    write_text(root / "train-set-metadata.csv", "\n".join([ISIC_HEADER, *map(_isic_line, ISIC_TRAIN_ROWS)]) + "\n")
    write_text(root / "valid-set-metadata.csv", "\n".join([ISIC_HEADER, *map(_isic_line, ISIC_VALID_ROWS)]) + "\n")
    rows = [*ISIC_TRAIN_ROWS, *ISIC_VALID_ROWS]
    for i, row in enumerate(rows):
        if i == 0:
            write_image(root / "images" / "ISIC_2019" / row[0], i)
        else:
            write_image(root / "images" / f"{row[1]}.jpg", i)
    if descriptors:
        lines = ["isic_id," + ",".join(MONET_COLUMNS)]
        for i, row in enumerate(rows):
            lines.append(row[1] + "," + ",".join(f"{fixture_score(i, 99, m):.2f}" for m in range(len(MONET_COLUMNS))))
        write_text(root / "descriptors.csv", "\n".join(lines) + "\n")
    return root
