"""MILK10k reader on small fixtures written in the exact real file format (MILK10k's published file layout)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcov_lib.data.datasets.milk10k import MONET_COLUMNS, load_milk10k
from semcov_lib.data.table import TableError

HEADER = ("lesion_id,image_type,isic_id,attribution,copyright_license,image_manipulation,age_approx,sex,"
          "skin_tone_class,site," + ",".join(MONET_COLUMNS))
GT_HEADER = "lesion_id,AKIEC,BCC,BEN_OTH,BKL,DF,INF,MAL_OTH,MEL,NV,SCCKA,VASC"
CLASSES = GT_HEADER.split(",")[1:]
SITES = ["trunk", "head_neck_face", "lower_extremity", "upper_extremity", "hand", "foot", "genital"]


def write_fixture(root: Path, n_lesions: int = 6, *, nested: bool = False, flat: Path | None = None,
                  crlf: bool = False, split_column: bool = False) -> Path:
    """Write a MILK10k-format copy: 2 images per lesion (clinical close-up + dermoscopic)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, gt_rows = [HEADER + (",split" if split_column else "")], [GT_HEADER]
    for i in range(n_lesions):
        lesion = f"IL_{i + 1:07d}"
        label = i % len(CLASSES)
        onehot = ["1.0" if j == label else "0.0" for j in range(len(CLASSES))]
        gt_rows.append(",".join([lesion, *onehot]))
        # lesion 2 has empty age, sex and skin tone, as some real rows do
        age, sex, tone = ("", "", "") if i == 1 else (f"{40 + 5 * (i % 8)}.0", "male" if i % 2 else "female", str(i % 6))
        for k, image_type in enumerate(("clinical: close-up", "dermoscopic")):
            isic = f"ISIC_{100 + 2 * i + k:07d}"
            monet = ",".join(f"{v:.2f}" for v in rng.uniform(0, 1, len(MONET_COLUMNS)))
            row = f"{lesion},{image_type},{isic},Synthetic,CC-BY-NC,instrument only,{age},{sex},{tone},{SITES[i % 7]},{monet}"
            if split_column:
                row += ",test" if i % 3 == 0 else ",train"
            rows.append(row)
            folder = (flat if flat is not None else
                      root / "MILK10k_Training_Input" / ("MILK10k_Training_Input" if nested else "") / lesion)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.full((10, 14, 3), 20 * (i % 10) + 60 * k, dtype=np.uint8)  # non-square on purpose
            Image.fromarray(pixels).save(folder / f"{isic}.jpg", quality=95)
    eol = "\r\n" if crlf else "\n"
    (root / "MILK10k_Training_Metadata.csv").write_text(eol.join(rows) + eol)
    (root / "MILK10k_Training_GroundTruth.csv").write_text(eol.join(gt_rows) + eol)
    return root


def test_reads_dermoscopic_images(tmp_path):
    root = write_fixture(tmp_path / "milk10k")
    table = load_milk10k(root)
    assert len(table) == 6
    assert table.classes == CLASSES
    assert list(table.descriptors) == list(MONET_COLUMNS)
    assert table.descriptor_kind == "soft" and table.subgroup_name == "skin_tone_class"
    assert set(table.frame["image_type"]) == {"dermoscopic"}
    assert table.labels().tolist() == [0, 1, 2, 3, 4, 5]
    assert table.frame["sample_id"].tolist()[0] == "ISIC_0000101"
    assert all(p.is_file() for p in table.image_paths())
    assert set(table.frame["split"]) <= {"train", "val", "test"}
    scores = table.scores()
    assert scores.shape == (6, 7) and np.all((scores >= 0) & (scores <= 1))


def test_clinical_and_both_image_types_share_lesion_splits(tmp_path):
    root = write_fixture(tmp_path / "m", n_lesions=30)
    clinical = load_milk10k(root, image_type="clinical: close-up")
    assert len(clinical) == 30 and set(clinical.frame["image_type"]) == {"clinical: close-up"}
    assert len(load_milk10k(root, image_type="clinical")) == 30
    both = load_milk10k(root, image_type="both")
    assert len(both) == 60
    per_lesion = both.frame.groupby("lesion_id")["split"].nunique()
    assert (per_lesion == 1).all()  # both images of a lesion are always in the same split
    derm = load_milk10k(root)
    merged = derm.frame.set_index("lesion_id")["split"]
    assert (clinical.frame.set_index("lesion_id")["split"] == merged).all()
    with pytest.raises(TableError, match="image_type"):
        load_milk10k(root, image_type="overview")


def test_seeded_split_is_deterministic_and_stratified(tmp_path):
    root = write_fixture(tmp_path / "m", n_lesions=110)
    a = load_milk10k(root, split_seed=3).frame["split"].tolist()
    b = load_milk10k(root, split_seed=3).frame["split"].tolist()
    c = load_milk10k(root, split_seed=4).frame["split"].tolist()
    assert a == b and a != c
    frame = load_milk10k(root, split_seed=3, val_fraction=0.2, test_fraction=0.2).frame
    for _, rows in frame.groupby("label"):
        assert (rows["split"] == "test").sum() == 2 and (rows["split"] == "val").sum() == 2


def test_split_column_is_used(tmp_path):
    root = write_fixture(tmp_path / "m", split_column=True)
    frame = load_milk10k(root).frame
    assert frame["split"].tolist() == ["test" if i % 3 == 0 else "train" for i in range(6)]


def test_double_nested_and_flat_layouts(tmp_path):
    nested = write_fixture(tmp_path / "nested", nested=True)
    table = load_milk10k(nested)
    assert "MILK10k_Training_Input/MILK10k_Training_Input" in table.frame["image_path"].iloc[0]
    assert all(p.is_file() for p in table.image_paths())
    flat_dir = tmp_path / "flat_images"
    flat = write_fixture(tmp_path / "flat", flat=flat_dir)
    table = load_milk10k(flat, images_dir=flat_dir)
    assert all(p.parent == flat_dir for p in table.image_paths())


def test_missing_age_sex_tone_give_unknown_subgroup(tmp_path):
    root = write_fixture(tmp_path / "m")
    table = load_milk10k(root)
    assert table.frame["subgroup"].tolist() == ["0", "unknown", "2", "3", "4", "5"]
    assert np.isnan(table.frame["age_approx"].iloc[1]) and np.isnan(table.frame["skin_tone_class"].iloc[1])
    assert load_milk10k(root, subgroup="sex").subgroup_levels() == ["female", "male", "unknown"]
    ages = load_milk10k(root, subgroup="age").frame["subgroup"].tolist()
    assert ages[1] == "unknown" and ages[0] == "40-59"
    assert load_milk10k(root, subgroup="site").frame["subgroup"].iloc[1] == "head_neck_face"
    assert load_milk10k(root, subgroup="none").subgroup_levels() == ["none"]
    with pytest.raises(TableError, match="subgroup"):
        load_milk10k(root, subgroup="ethnicity")


def test_crlf_and_nested_root(tmp_path):
    write_fixture(tmp_path / "download" / "milk10k", crlf=True)
    table = load_milk10k(tmp_path / "download")  # the CSVs one folder down are found
    assert len(table) == 6 and table.frame["lesion_id"].iloc[0] == "IL_0000001"


def test_wrong_headers_raise_clear_errors(tmp_path):
    root = write_fixture(tmp_path / "m")
    meta = root / "MILK10k_Training_Metadata.csv"
    meta.write_text(meta.read_text().replace("isic_id", "image_id", 1))
    with pytest.raises(TableError, match=r"MILK10k_Training_Metadata\.csv.*isic_id"):
        load_milk10k(root)
    root = write_fixture(tmp_path / "g")
    gt = root / "MILK10k_Training_GroundTruth.csv"
    gt.write_text(gt.read_text().replace("lesion_id", "lesion", 1))
    with pytest.raises(TableError, match=r"GroundTruth\.csv.*lesion_id"):
        load_milk10k(root)
    with pytest.raises(TableError, match="not found"):
        load_milk10k(tmp_path / "g" / "MILK10k_Training_Input")


def test_two_diagnoses_in_a_row_raise(tmp_path):
    root = write_fixture(tmp_path / "m")
    gt = root / "MILK10k_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[3] = "IL_0000003," + ",".join(["1.0", "0.0", "1.0"] + ["0.0"] * 8)
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(TableError, match=r"GroundTruth\.csv: lesion 'IL_0000003' has 2 diagnoses"):
        load_milk10k(root)
    lines[3] = "IL_0000003," + ",".join(["0.5"] + ["0.0"] * 10)
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(TableError, match="IL_0000003.*'AKIEC'.*0.5"):
        load_milk10k(root)


def test_monet_value_outside_unit_interval_names_column(tmp_path):
    root = write_fixture(tmp_path / "m")
    meta = root / "MILK10k_Training_Metadata.csv"
    lines = meta.read_text().splitlines()
    cells = lines[2].split(",")
    cells[11] = "1.3"  # MONET_hair of the first dermoscopic image
    lines[2] = ",".join(cells)
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(TableError, match=r"'MONET_hair' holds 1\.3 \(isic_id ISIC_0000101\)"):
        load_milk10k(root)


def test_listed_but_absent_image_raises_naming_it(tmp_path):
    root = write_fixture(tmp_path / "m")
    (root / "MILK10k_Training_Input" / "IL_0000004" / "ISIC_0000107.jpg").unlink()
    with pytest.raises(TableError, match=r"ISIC_0000107\.jpg of lesion IL_0000004 not found"):
        load_milk10k(root)
    shutil.rmtree(root / "MILK10k_Training_Input")
    with pytest.raises(TableError, match="6 image"):
        load_milk10k(root)


def test_lesion_without_ground_truth_raises(tmp_path):
    root = write_fixture(tmp_path / "m")
    gt = root / "MILK10k_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    gt.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(TableError, match="IL_0000006.*no row"):
        load_milk10k(root)
