"""Dataset loaders on fixture copies written in the real formats (semcov_lib.data.datasets.fixtures)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from semcov_lib.data.datasets import fixtures as fx
from semcov_lib.data.datasets import (
    LOADERS,
    DatasetError,
    DatasetWarning,
    MissingFileError,
    UnknownDatasetError,
    available_datasets,
    load_dataset,
)
from semcov_lib.data.datasets._common import holdout_mask
from semcov_lib.data.datasets.celeba import CELEBA_ATTRIBUTES, LABEL_LEAKING, celeba_fixture_attributes, load_celeba
from semcov_lib.data.datasets.cub import CUB_ATTRIBUTES, CUB_CLASSES, CubOptions, cub_fixture_labels, load_cub_200_2011
from semcov_lib.data.datasets.isic_dicm import (
    ISIC_TRAIN_ROWS,
    ISIC_VALID_ROWS,
    MONET_COLUMNS,
    IsicOptions,
    load_isic_dicm_17k,
)
from semcov_lib.data.datasets.milk10k import MILK10K_CLASSES
from semcov_lib.data.datasets.nuswide import NUS_CONCEPTS, NUS_TAGS, NUS_TRAIN, load_nus_wide, nus_fixture_tags
from semcov_lib.data.datasets.vireofood import (
    VIREO_FOODS,
    VIREO_INGREDIENTS,
    load_vireofood172,
    vireo_fixture_ingredients,
)
from semcov_lib.data.table import SCITable


def quiet(loader, *args, **kwargs):
    """Call a loader, ignoring the DatasetWarnings a fixture triggers on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return loader(*args, **kwargs)


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """One read-only fixture copy per dataset for the tests that do not modify files."""
    base = tmp_path_factory.mktemp("fixtures")
    return {name: fx.write_fixture(name, base / name) for name in
            ("celeba", "cub_200_2011", "isic_dicm_17k", "nus_wide", "vireofood172")}


def assert_common(table: SCITable, n_rows: int) -> None:
    assert isinstance(table, SCITable) and len(table) == n_rows
    assert table.frame["sample_id"].is_unique
    assert all(p.is_file() for p in table.image_paths())
    scores = table.scores()
    finite = scores[~np.isnan(scores)]
    assert ((finite >= 0) & (finite <= 1)).all()
    for split in ("train", "val", "test"):  # every split holds at least two classes
        assert table.split(split).frame["label"].nunique() >= 2, split


# =========================================================================== CelebA
def test_celeba_flat_layout(shared):
    root = shared["celeba"]
    t = load_celeba(root)
    assert_common(t, 9)
    rows = celeba_fixture_attributes()
    col = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
    f = t.frame.set_index("sample_id")
    assert t.classes == ["not_Blond_Hair", "Blond_Hair"] and t.descriptor_kind == "hard"
    assert f["split"].value_counts().to_dict() == {"train": 4, "val": 3, "test": 2}
    assert f.loc["000001.jpg", "split"] == "train" and f.loc["000009.jpg", "split"] == "test"
    for name, values in rows.items():
        assert f.loc[name, "label"] == (values[col["Blond_Hair"]] + 1) // 2
        assert f.loc[name, "subgroup"] == ("Male" if values[col["Male"]] == 1 else "not_Male")
        assert f.loc[name, "Smiling"] == (values[col["Smiling"]] + 1) // 2
    # the real first row of list_attr_celeba.txt: Arched_Eyebrows 1, Bags_Under_Eyes -1, Young 1
    assert f.loc["000001.jpg", ["Arched_Eyebrows", "Bags_Under_Eyes", "Young"]].tolist() == [1.0, 0.0, 1.0]
    # label-leaking and subgroup attributes are not descriptors, but stay as metadata
    for leaked in ("Blond_Hair", "Black_Hair", "Brown_Hair", "Gray_Hair", "Bald", "Male"):
        assert leaked not in t.descriptors and leaked in t.frame.columns
    assert len(t.descriptors) == 34 and "Young" in t.descriptors  # trailing-space token filtered
    assert f.loc["000002.jpg", "identity"] == 2
    # the parent folder (torchvision's <root>/celeba/...) works as well
    assert load_celeba(root.parent).frame.equals(t.frame)


def test_celeba_official_layout_matches_flat(shared, tmp_path):
    official = fx.write_fixture("celeba", tmp_path, layout="official")
    assert (official / "Anno" / "list_attr_celeba.txt").is_file()
    a, b = load_celeba(shared["celeba"]), load_celeba(tmp_path)
    assert b.image_paths()[0].is_file()
    cols = [c for c in a.frame.columns if c != "image_path"]
    pd.testing.assert_frame_equal(a.frame[cols], b.frame[cols])


def test_celeba_png_release_is_found(shared, tmp_path):
    root = fx.write_fixture("celeba", tmp_path, layout="png")
    assert (root / "Img" / "img_align_celeba_png" / "000001.png").is_file()
    a, b = load_celeba(shared["celeba"]), load_celeba(tmp_path)
    assert b.frame["image_path"].iloc[0] == "Img/img_align_celeba_png/000001.png"
    assert all(p.is_file() for p in b.image_paths())
    cols = [c for c in a.frame.columns if c != "image_path"]
    pd.testing.assert_frame_equal(a.frame[cols], b.frame[cols])  # same ids (the annotation's .jpg names)


def test_celeba_options(shared):
    root = shared["celeba"]
    t = load_celeba(root, target="Smiling", subgroup="none")
    assert set(t.subgroup_levels()) == {"none"}
    assert not {"Smiling", "Mouth_Slightly_Open", "High_Cheekbones"} & set(t.descriptors)
    assert "Male" in t.descriptors
    assert set(LABEL_LEAKING["Blond_Hair"]) >= {"Black_Hair", "Brown_Hair", "Gray_Hair", "Bald"}
    t = load_celeba(root, descriptors=["Young", "Eyeglasses"])
    assert t.descriptors == ["Young", "Eyeglasses"]
    assert len(load_celeba(root, descriptors="all").descriptors) == 38
    with pytest.raises(DatasetError, match="unknown target attribute 'Blonde'"):
        load_celeba(root, target="Blonde")
    with pytest.raises(DatasetError, match="label leakage"):
        load_celeba(root, descriptors=["Blond_Hair", "Young"])
    with pytest.raises(DatasetError, match="unknown descriptor attribute"):
        load_celeba(root, descriptors=["Nope"])


def test_celeba_bad_values_name_file_and_line(tmp_path):
    root = fx.write_fixture("celeba", tmp_path)
    path = root / "list_attr_celeba.txt"
    lines = path.read_text().split("\n")
    lines[4] = lines[4][:-2] + " 2"  # 000003.jpg, Young = 2
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"list_attr_celeba.txt, line 5: attribute 'Young' value 2") as err:
        load_celeba(root)
    assert "000003.jpg" in str(err.value)
    lines[4] = lines[4][:-3]  # one value short
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"line 5: expected 41 whitespace-separated fields, found 40"):
        load_celeba(root)


def test_celeba_mixed_coding_duplicates_and_count(tmp_path):
    root = fx.write_fixture("celeba", tmp_path)
    path = root / "list_attr_celeba.txt"
    original = path.read_text()
    edit(path, "000002.jpg -1", "000002.jpg  0")
    with pytest.raises(DatasetError, match="line 4: .*value 0 is 0 while other values are -1"):
        load_celeba(root)
    path.write_text(original.replace("000004.jpg", "000003.jpg"))
    with pytest.raises(DatasetError, match="line 6: duplicated image '000003.jpg'"):
        load_celeba(root)
    path.write_text(original.replace("9\n", "12\n", 1))
    with pytest.warns(DatasetWarning, match="declares 12 images but 9 rows follow"):
        assert len(load_celeba(root)) == 9
    path.write_text(original.split("\n", 1)[1])  # no count line at all
    with pytest.warns(DatasetWarning, match="no image-count first line"):
        assert len(load_celeba(root)) == 9
    path.write_text(original.replace(" Young ", " ", 1))  # the header names 39 attributes
    with pytest.raises(DatasetError, match=r"line 3: 40 values, but the header \(line 2\) names 39 attributes"):
        load_celeba(root)
    path.write_text("9\n" + original.split("\n", 2)[2])  # header line missing
    with pytest.raises(DatasetError, match="expected the header line of attribute names"):
        load_celeba(root)


def test_celeba_partition_and_images(tmp_path):
    root = fx.write_fixture("celeba", tmp_path)
    edit(root / "list_eval_partition.txt", "000005.jpg 1", "000005.jpg 3")
    with pytest.raises(DatasetError, match=r"list_eval_partition.txt, line 5: partition value 3 for '000005.jpg'"):
        load_celeba(root)
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(MissingFileError, match=r"(?s)list_eval_partition.*Eval/list_eval_partition.txt"):
        load_celeba(root)
    fx.write_fixture("celeba", tmp_path)
    edit(root / "list_eval_partition.txt", "000009.jpg 2\n", "")
    with pytest.raises(DatasetError, match="1 image\\(s\\) of list_attr_celeba.txt have no partition, e.g. '000009.jpg'"):
        load_celeba(root)
    fx.write_fixture("celeba", tmp_path)
    (root / "img_align_celeba" / "000004.jpg").unlink()
    (root / "img_align_celeba" / "000006.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"2 of 9 listed images are absent .* e.g. '000004.jpg', '000006.jpg'"):
        load_celeba(root)
    with pytest.warns(DatasetWarning, match="2 of 9 listed images are absent"):
        t = load_celeba(root, missing_images="drop")
    assert len(t) == 7 and t.meta["counts"]["missing_images"] == 2
    with pytest.raises(MissingFileError, match="root folder .* does not exist"):
        load_celeba(tmp_path / "nowhere")
    with pytest.raises(MissingFileError, match=r"(?s)attribute file not found.*Anno/list_attr_celeba.txt"):
        load_celeba(root / "img_align_celeba")


# =========================================================================== CUB
def test_cub_default(shared):
    with pytest.warns(DatasetWarning, match=r"1 line\(s\) have 6 fields .* line 9"):
        t = load_cub_200_2011(shared["cub_200_2011"])
    assert_common(t, 8)
    assert t.classes == list(CUB_CLASSES) and t.descriptors == list(CUB_ATTRIBUTES)
    assert t.descriptor_kind == "hard" and t.subgroup_levels() == ["none"]
    assert t.meta["counts"]["six_token_lines"] == 1
    f = t.frame.set_index("image_id")
    assert f["split"].value_counts().to_dict() == {"train": 4, "val": 2, "test": 2}
    assert f.loc[[4, 8], "split"].tolist() == ["test", "test"]
    assert f["label"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    for img, attr, present, _c, _t in cub_fixture_labels():
        assert f.loc[img, CUB_ATTRIBUTES[attr - 1]] == present
    assert f.loc[1, "bbox_x"] == 61.0
    assert t.image_paths()[0].name == "Black_Footed_Albatross_0001_11.jpg"


def test_cub_layout_variants(tmp_path):
    root = fx.write_fixture("cub_200_2011", tmp_path, attributes_in="attributes")
    assert not (root / "attributes.txt").exists()
    a = quiet(load_cub_200_2011, root)
    b = quiet(load_cub_200_2011, root / "CUB_200_2011")  # the inner folder as root
    assert a.descriptors == list(CUB_ATTRIBUTES) and a.frame.equals(b.frame)
    (root / "CUB_200_2011" / "attributes" / "attributes.txt").unlink()
    with pytest.raises(MissingFileError, match=r"(?s)attributes.txt not found.*attributes/attributes.txt"):
        quiet(load_cub_200_2011, root)


def test_cub_certainty_not_visible_and_subsets(shared):
    root = shared["cub_200_2011"]
    t = quiet(load_cub_200_2011, root, descriptor_value="certainty")
    assert t.descriptor_kind == "soft"
    f = t.frame.set_index("image_id")
    for img, attr, present, certainty, _t in cub_fixture_labels():
        w = {1: 0.0, 2: 1 / 3, 3: 2 / 3, 4: 1.0}[certainty]
        assert f.loc[img, CUB_ATTRIBUTES[attr - 1]] == pytest.approx(0.5 + (present - 0.5) * w)
    t = quiet(load_cub_200_2011, root, not_visible="nan")
    f = t.frame.set_index("image_id")
    for img, attr, present, certainty, _t in cub_fixture_labels():
        value = f.loc[img, CUB_ATTRIBUTES[attr - 1]]
        assert np.isnan(value) if certainty == 1 else value == present
    # CBM subset: present (majority vote) in >= min_classes classes of the training split
    assert quiet(load_cub_200_2011, root, attributes="cbm", min_classes=2).descriptors == ["has_wing_color::blue"]
    cbm1 = quiet(load_cub_200_2011, root, attributes="cbm", min_classes=1)
    assert cbm1.descriptors == [CUB_ATTRIBUTES[i] for i in (0, 1, 3, 5)]
    with pytest.raises(DatasetError, match="no attribute is present in >= 3 classes"):
        quiet(load_cub_200_2011, root, attributes="cbm", min_classes=3)
    t = quiet(load_cub_200_2011, root, attributes=[1, "has_wing_color::brown"], subgroup="has_bill_shape::dagger")
    assert t.descriptors == ["has_bill_shape::curved_(up_or_down)", "has_wing_color::brown"]
    assert set(t.subgroup_levels()) == {"has_bill_shape::dagger", "not_has_bill_shape::dagger"}
    with pytest.raises(DatasetError, match="unknown attribute 'has_tail::long'"):
        quiet(load_cub_200_2011, root, attributes=["has_tail::long"])
    with pytest.raises(DatasetError, match="unknown descriptor_value 'soft'"):
        load_cub_200_2011(root, descriptor_value="soft")
    with pytest.raises(DatasetError, match="unknown subgroup attribute 'has_size::tiny'"):
        quiet(load_cub_200_2011, root, subgroup="has_size::tiny")


@pytest.mark.parametrize("old, new, message", [
    ("1 2 0 4 ", "1 2 0 4 0 0 ", r"line 2: expected 5 to 6 whitespace-separated fields, found 7"),
    ("1 2 0 4 ", "1 2 2 4 ", r"line 2: is_present 2 is not one of \[0, 1\]"),
    ("1 2 0 4 ", "1 2 0 5 ", r"line 2: certainty_id 5 is not one of \[1, 2, 3, 4\]"),
    ("1 2 0 4 ", "1 2 x 4 ", r"line 2: field 3 'x' is not a number"),
    ("1 2 0 4 ", "99 2 0 4 ", r"line 2: image_id 99 is not in images.txt"),
    ("1 2 0 4 ", "1 1 0 4 ", r"line 2: duplicated annotation of image 1, attribute 1"),
])
def test_cub_bad_attribute_labels(tmp_path, old, new, message):
    root = fx.write_fixture("cub_200_2011", tmp_path)
    path = root / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt"
    assert path.read_text().split("\n")[1].startswith("1 2 0 4 ")
    edit(path, old, new)
    with pytest.raises(DatasetError, match=message) as err:
        quiet(load_cub_200_2011, root)
    assert "image_attribute_labels.txt" in str(err.value)


def test_cub_missing_pair_warns_and_bad_tables(tmp_path):
    root = fx.write_fixture("cub_200_2011", tmp_path)
    cub = root / "CUB_200_2011"
    labels = cub / "attributes" / "image_attribute_labels.txt"
    lines = labels.read_text().split("\n")
    labels.write_text("\n".join(lines[:1] + lines[2:]))  # drop (image 1, attribute 2)
    with pytest.warns(DatasetWarning) as record:
        t = load_cub_200_2011(root)
    assert any("1 (image, attribute) pairs have no line" in str(w.message) for w in record)
    assert np.isnan(t.frame.loc[0, "has_bill_shape::dagger"])
    fx.write_fixture("cub_200_2011", tmp_path)
    edit(cub / "train_test_split.txt", "3 1", "3 2")
    with pytest.raises(DatasetError, match=r"train_test_split.txt, line 3: is_training_image '2' is not 0 or 1"):
        quiet(load_cub_200_2011, root)
    fx.write_fixture("cub_200_2011", tmp_path)
    edit(cub / "image_class_labels.txt", "5 2\n", "")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt: 1 image id\(s\) of images.txt are missing, e.g. '5'"):
        quiet(load_cub_200_2011, root)
    fx.write_fixture("cub_200_2011", tmp_path)
    edit(cub / "image_class_labels.txt", "5 2", "5 7")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt, line 5: class_id '7' is not in classes.txt"):
        quiet(load_cub_200_2011, root)
    fx.write_fixture("cub_200_2011", tmp_path)
    edit(cub / "images.txt", "2 001", "1 001")
    with pytest.raises(DatasetError, match=r"images.txt, line 2: duplicated image_id 1 \(first on line 1\)"):
        quiet(load_cub_200_2011, root)
    fx.write_fixture("cub_200_2011", tmp_path)
    edit(cub / "classes.txt", "2 002.Laysan_Albatross", "2")
    with pytest.raises(DatasetError, match=r"classes.txt, line 2: expected 2 whitespace-separated fields"):
        quiet(load_cub_200_2011, root)
    fx.write_fixture("cub_200_2011", tmp_path)
    shutil.rmtree(cub / "images" / "002.Laysan_Albatross")
    with pytest.raises(MissingFileError, match=r"4 of 8 listed images are absent .*Laysan_Albatross"):
        quiet(load_cub_200_2011, root)


# =========================================================================== MILK10k
def test_milk10k_flat_image_folder_of_any_name_is_found(tmp_path):
    from semcov_lib.data.datasets.milk10k import load_milk10k

    root = fx.write_fixture("milk10k", tmp_path, lesions_per_class=1)
    nested = load_milk10k(root)
    flat = root / "my_images"
    flat.mkdir()
    for image in (root / "MILK10k_Training_Input").rglob("*.jpg"):
        image.rename(flat / image.name)
    shutil.rmtree(root / "MILK10k_Training_Input")
    table = load_milk10k(root)  # no images_dir= needed
    assert all(p.startswith("my_images/") for p in table.frame["image_path"])
    cols = [c for c in nested.frame.columns if c != "image_path"]
    pd.testing.assert_frame_equal(nested.frame[cols], table.frame[cols])
    (flat / "copy").mkdir()
    shutil.copy(next(flat.glob("*.jpg")), flat / "copy")
    with pytest.raises(Exception, match="exists more than once"):
        load_milk10k(root)


# =========================================================================== ISIC-DICM-17K
def test_isic_default(shared):
    root = shared["isic_dicm_17k"]
    t = quiet(load_isic_dicm_17k, root, split="official")
    assert_common(t, 10)
    assert t.classes == ["non_melanoma", "melanoma"] and t.descriptors == list(MONET_COLUMNS)
    f = t.frame.set_index("sample_id")
    rows = {r[1]: r for r in (*ISIC_TRAIN_ROWS, *ISIC_VALID_ROWS)}
    for isic, row in rows.items():
        assert f.loc[isic, "label"] == row[2]
    assert f.loc["ISIC_0033171", "diagnosis"] == "basal cell carcinoma" and f.loc["ISIC_0033171", "label"] == 1
    assert f.loc["ISIC_0033171", "subgroup"] == "unknown" and f.loc["ISIC_0025105", "subgroup"] == "male"
    assert (f.loc[[r[1] for r in ISIC_TRAIN_ROWS], "split"] == "train").all()
    valid = f.loc[[r[1] for r in ISIC_VALID_ROWS]]
    assert valid["split"].value_counts().to_dict() == {"val": 2, "test": 2}
    assert valid.groupby("split")["label"].nunique().to_dict() == {"test": 2, "val": 2}
    # the image found by its `image` column in a sub-folder, the others by <isic_id>.jpg
    assert f.loc["ISIC_0025105", "image_path"] == "images/ISIC_2019/ISIC2019_0025105_mel.jpg"
    assert f.loc["ISIC_0021081", "image_path"] == "images/ISIC_0021081.jpg"
    desc = pd.read_csv(root / "descriptors.csv").set_index("isic_id")
    np.testing.assert_allclose(f.loc[desc.index, list(MONET_COLUMNS)].to_numpy(), desc.to_numpy())
    assert np.isnan(f.loc["ISIC_0033171", "age_approx"]) and f.loc["ISIC_0025105", "age_approx"] == 65.0
    assert quiet(load_isic_dicm_17k, root, split="official").frame.equals(t.frame)  # seeded split is reproducible


def test_isic_official_split_warns_on_lesion_and_patient_overlap(shared):
    with pytest.warns(DatasetWarning, match="2 of 4 valid rows share a lesion or patient with the train CSV"):
        t = load_isic_dicm_17k(shared["isic_dicm_17k"], split="official")
    assert t.meta["counts"]["valid_rows_sharing_lesion_with_train"] == 1
    assert t.meta["counts"]["valid_rows_sharing_patient_with_train"] == 1


def test_isic_default_split_keeps_lesions_and_patients_together(shared):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # no overlap warning: the split has none
        t = load_isic_dicm_17k(shared["isic_dicm_17k"])
    split = t.frame.set_index("sample_id")["split"]
    assert split["ISIC_0000011"] == split["ISIC_0025105"]  # same lesion
    assert split["ISIC_0000012"] == split["ISIC_0022327"]  # same patient
    assert set(split) == {"train", "val", "test"} and t.meta["split"] == "grouped"
    for column in ("lesion_id", "patient_id"):
        ids = t.frame[t.frame[column].notna()]
        assert (ids.groupby(column)["split"].nunique() == 1).all(), column
    assert load_isic_dicm_17k(shared["isic_dicm_17k"]).frame.equals(t.frame)  # seeded


def test_isic_second_copy_of_the_images_is_named(tmp_path):
    root = fx.write_fixture("isic_dicm_17k", tmp_path)
    shutil.copytree(root / "images", root / "backup" / "images")
    with pytest.raises(DatasetError, match=r"10 of 10 listed images exist more than once.*backup/images/.*images_dir="):
        load_isic_dicm_17k(root)
    assert len(load_isic_dicm_17k(root, images_dir=root / "backup")) == 10


def test_isic_subgroups_and_seeds(shared):
    root = shared["isic_dicm_17k"]
    ages = load_isic_dicm_17k(root, subgroup="age_bin").frame.set_index("sample_id")["subgroup"]
    assert ages["ISIC_0025105"] == "60+" and ages["ISIC_0022327"] == "40-59" and ages["ISIC_0000002"] == "<40"
    assert ages["ISIC_0033171"] == "unknown"
    sites = load_isic_dicm_17k(root, subgroup="anatom_site_general").subgroup_levels()
    assert "head/neck" in sites and "unknown" in sites
    assert load_isic_dicm_17k(root, subgroup="none").subgroup_levels() == ["none"]
    with pytest.raises(DatasetError, match="unknown subgroup 'skin_tone_class'"):
        load_isic_dicm_17k(root, subgroup="skin_tone_class")
    splits = {tuple(quiet(load_isic_dicm_17k, root, split_seed=s, split="official").frame["split"]) for s in range(6)}
    assert len(splits) > 1  # the seed changes the val/test split


def test_isic_requires_descriptors(tmp_path):
    root = fx.write_fixture("isic_dicm_17k", tmp_path, descriptors=False)
    with pytest.raises(MissingFileError, match=r"needs a descriptor table.*descriptors=PATH") as err:
        load_isic_dicm_17k(root)
    assert "MONET_hair" in str(err.value) and "isic_id" in str(err.value)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['MONET_sky'\]"):
        load_isic_dicm_17k(fx.write_fixture("isic_dicm_17k", tmp_path / "x"), descriptor_columns=["MONET_sky"])
    with pytest.raises(MissingFileError, match="descriptor file .*nope.csv does not exist"):
        load_isic_dicm_17k(root, descriptors=tmp_path / "nope.csv")
    other = fx.write_fixture("isic_dicm_17k", tmp_path / "other") / "descriptors.csv"
    assert len(load_isic_dicm_17k(root, descriptors=other)) == 10


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace("MONET_hair", "MONET_hairs"), r"missing column\(s\) \['MONET_hair'\]"),
    (lambda t: t.replace(",0.53,", ",1.53,"), r"column 'MONET_hair' holds 1.53 \(isic_id 'ISIC_0025105'\), outside \[0, 1\]"),
    (lambda t: "\n".join(l if i == 0 else ",".join([l.split(",")[0]] + ["-1" if float(v) < 0.5 else "1" for v in l.split(",")[1:]])
                         for i, l in enumerate(t.strip().split("\n"))),
     r"looks -1/\+1 coded"),
    (lambda t: t.replace(",0.53,", ",high,"), r"line 2: column 'MONET_hair' holds non-numeric 'high'"),
    (lambda t: t.replace("ISIC_0022327", "ISIC_0025105"), r"duplicated isic_id 'ISIC_0025105'"),
    (lambda t: "\n".join(t.split("\n")[:-3]) + "\n", r"2 of 10 images have no descriptor row, e.g. 'ISIC_0000013'"),
])
def test_isic_bad_descriptors(tmp_path, mutate, message):
    root = fx.write_fixture("isic_dicm_17k", tmp_path)
    path = root / "descriptors.csv"
    path.write_text(mutate(path.read_text()))
    with pytest.raises(DatasetError, match=message) as err:
        load_isic_dicm_17k(root)
    assert "descriptors.csv" in str(err.value)


def test_isic_bad_metadata(tmp_path):
    root = fx.write_fixture("isic_dicm_17k", tmp_path)
    train = root / "train-set-metadata.csv"
    original = train.read_text()
    train.write_text(original.replace("image,isic_id,year,class,", "image,isic_id,year,label,", 1))
    with pytest.raises(DatasetError, match=r"train-set-metadata.csv: missing column\(s\) \['class'\]"):
        load_isic_dicm_17k(root)
    train.write_text(original.replace("ISIC_0022327,,1,", "ISIC_0022327,,2,"))
    with pytest.raises(DatasetError, match=r"train-set-metadata.csv, line 3: column 'class' holds '2'"):
        load_isic_dicm_17k(root)
    train.write_text(original.replace("ISIC_0000002,", "ISIC_0000012,"))
    with pytest.raises(DatasetError, match=r"duplicated isic_id 'ISIC_0000012' \(in train CSV and valid CSV"):
        load_isic_dicm_17k(root)
    train.write_text(original)
    (root / "images" / "ISIC_0000003.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"1 of 10 listed images are absent .*ISIC2017_0000003_oth.jpg"):
        load_isic_dicm_17k(root)
    with pytest.warns(DatasetWarning, match="dropped those rows"):
        assert len(load_isic_dicm_17k(root, missing_images="drop")) == 9
    (root / "valid-set-metadata.csv").unlink()
    with pytest.raises(MissingFileError, match=r"(?s)metadata CSVs not found.*valid-set-metadata.csv"):
        load_isic_dicm_17k(root)


# =========================================================================== NUS-WIDE
def test_nus_wide_default(shared):
    with pytest.warns(DatasetWarning) as record:
        t = load_nus_wide(shared["nus_wide"])
    messages = " | ".join(str(w.message) for w in record)
    assert "dropped 1 of 16 images with no positive concept" in messages
    assert "dropped 1 images with several positive concepts" in messages
    assert_common(t, 14)
    assert t.classes == list(NUS_CONCEPTS) and t.descriptors == list(NUS_TAGS)
    assert "Labels_dog_Train.txt, line 10: label '-1130179' is not 0 or 1; read as missing" in messages
    assert t.meta["counts"] == {"invalid_label_values": 1, "no_positive_concept": 1, "several_positive_concepts": 1,
                                "missing_images": 0}
    f = t.frame.set_index("sample_id")
    assert "actor/0001_2124494179.jpg" in f.index  # backslash path converted
    assert f.loc["actor/0001_2124494179.jpg", "image_path"] == "Flickr/actor/0001_2124494179.jpg"
    assert f.loc["actor/0001_2124494179.jpg", "label"] == 1 and f.loc["actor/0001_2124494179.jpg", "concept_beach"] == 1
    assert f.loc["actor/0001_2124494179.jpg", "photo_id"] == "2124494179"
    assert "cat/0002_100021.jpg" not in f.index and "dog/0002_100031.jpg" not in f.index
    assert (f["split"] == "test").sum() == 4 and (f["split"] == "val").sum() == 4
    tags = nus_fixture_tags("Train")
    for i, (d, name, _pos) in enumerate(NUS_TRAIN):
        if f"{d}/{name}" in f.index:
            assert f.loc[f"{d}/{name}", list(NUS_TAGS)].tolist() == tags[i].tolist()


def test_nus_wide_policy_concepts_and_layout(tmp_path):
    root = fx.write_fixture("nus_wide", tmp_path)
    t = quiet(load_nus_wide, root, concepts=["dog", "cat"], label_policy="first", tags=["sky", "pet"])
    assert t.classes == ["dog", "cat"] and t.descriptors == ["sky", "pet"]
    f = t.frame.set_index("sample_id")
    assert f.loc["cat/0002_100021.jpg", "label"] == 0  # cat+dog -> first in the given order: dog
    assert list(f.filter(like="concept_").columns) == ["concept_dog", "concept_cat"]
    (root / "ConceptsList").mkdir()
    (root / "Concepts81.txt").rename(root / "ConceptsList" / "Concepts81.txt")
    for path in (root / "NUS_WID_Tags").glob("*.dat"):  # spaces and trailing spaces instead of tabs
        path.write_text(path.read_text().replace("\t", "  ").replace("\n", " \n"))
    t2 = quiet(load_nus_wide, tmp_path)  # parent folder as root
    assert len(t2) == 14 and t2.descriptors == list(NUS_TAGS)
    with pytest.raises(DatasetError, match=r"unknown concept\(s\) \['zebra'\]"):
        quiet(load_nus_wide, root, concepts=["zebra"])
    with pytest.raises(DatasetError, match="unknown label_policy 'multi'"):
        load_nus_wide(root, label_policy="multi")


def test_nus_wide_tags_zip_unpacked_beside_the_dataset(tmp_path):
    root = fx.write_fixture("nus_wide", tmp_path, tags_beside=True)
    assert not (root / "NUS_WID_Tags").exists() and (root.parent / "NUS_WID_Tags" / "TagList1k.txt").is_file()
    for where in (root, root.parent):
        t = quiet(load_nus_wide, where)
        assert len(t) == 14 and t.descriptors == list(NUS_TAGS)


def test_nus_wide_missing_images_dropped_and_counted_from_the_cli_config(tmp_path):
    from semcov_lib.experiment.train import train_config

    root = fx.write_fixture("nus_wide", tmp_path)
    (root / "Flickr" / "cat" / "0001_100020.jpg").unlink()
    with pytest.raises(MissingFileError, match="1 of 14 listed images are absent"):
        quiet(load_nus_wide, root)
    config = train_config("erm", "smoke", 0, {"data": str(root), "dataset": "nus_wide",
                                              "dataset_options.missing_images": "drop"})
    assert config.dataset_options == {"missing_images": "drop"}
    with pytest.warns(DatasetWarning, match="1 of 14 listed images are absent.*dropped those rows"):
        t = load_dataset(config.dataset, config.data, **config.dataset_options)
    assert len(t) == 13 and t.meta["counts"]["missing_images"] == 1


def test_nus_wide_bad_files(tmp_path):
    root = fx.write_fixture("nus_wide", tmp_path)
    labels = root / "Groundtruth" / "TrainTestLabels" / "Labels_cat_Train.txt"
    original = labels.read_text()
    labels.write_text(original + "0\n")
    with pytest.raises(DatasetError, match=r"Labels_cat_Train.txt: 13 label rows but .*TrainImagelist.txt lists 12"):
        quiet(load_nus_wide, root)
    labels.write_text(original.replace("1\n", "2\n", 1))
    with pytest.warns(DatasetWarning, match=r"Labels_cat_Train.txt, line 7: label '2' is not 0 or 1; read as missing"):
        assert "cat/0001_100020.jpg" not in load_nus_wide(root).frame["sample_id"].tolist()
    labels.write_text(original.replace("1\n", "yes\n", 1))
    with pytest.raises(DatasetError, match=r"Labels_cat_Train.txt, line 7: field 1 'yes' is not a number"):
        quiet(load_nus_wide, root)
    labels.unlink()
    with pytest.raises(MissingFileError, match=r"labels of concept 'cat' \(Train\) not found"):
        quiet(load_nus_wide, root)
    labels.write_text(original)
    tags = root / "NUS_WID_Tags" / "Test_Tags1k.dat"
    tag_text = tags.read_text()
    tags.write_text(tag_text.replace("\n", "\t0\n", 1))
    with pytest.raises(DatasetError, match=r"Test_Tags1k.dat, line 1: 9 values, but TagList1k.txt names 8 tags"):
        quiet(load_nus_wide, root)
    tags.write_text(tag_text.replace("\n", "\t0\n", 2).replace("\t0\n", "\n", 1))
    with pytest.raises(DatasetError, match=r"Test_Tags1k.dat, line 2: expected 8 whitespace-separated fields, found 9"):
        quiet(load_nus_wide, root)
    tags.write_text(tag_text.replace("0", "-1"))
    with pytest.raises(DatasetError, match=r"Test_Tags1k.dat, line 1: .*looks -1/\+1 coded"):
        quiet(load_nus_wide, root)
    tags.write_text(tag_text)
    (root / "Flickr" / "cat" / "0004_100023.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"1 of 14 listed images are absent .*cat/0004_100023.jpg"):
        quiet(load_nus_wide, root)
    with pytest.warns(DatasetWarning) as record:
        t = load_nus_wide(root, missing_images="keep")
    assert len(t) == 14 and any("kept those rows" in str(w.message) for w in record)
    edit(root / "ImageList" / "TestImagelist.txt", "airport\\0004_100003.jpg", "airport\\0001_100000.jpg")
    with pytest.raises(DatasetError, match=r"duplicated image \(listed in both Train and Test, or twice\) 'airport/0001_100000.jpg'"):
        quiet(load_nus_wide, root, missing_images="keep")


# =========================================================================== VireoFood-172
def test_vireofood_default(shared):
    t = load_vireofood172(shared["vireofood172"])
    assert_common(t, 12)
    assert t.classes == list(VIREO_FOODS) and t.descriptors == list(VIREO_INGREDIENTS)
    assert t.meta["ingredient_coding"] == "-1/+1"
    f = t.frame.set_index("sample_id")
    assert f["split"].value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    for cls in (1, 2, 3):
        for k in (1, 2, 3, 4):
            key = f"{cls}/{cls}_{k}.jpg"
            assert f.loc[key, "label"] == cls - 1 and f.loc[key, "class_id"] == cls
            expected = [(v + 1) // 2 for v in vireo_fixture_ingredients(cls, k)]
            assert f.loc[key, list(VIREO_INGREDIENTS)].tolist() == expected
    assert f.loc["1/1_4.jpg", "image_path"] == "ready_chinese_food/1/1_4.jpg"


def test_vireofood_tolerances(tmp_path):
    root = fx.write_fixture("vireofood172", tmp_path)
    split_dir = root / "SplitAndIngreLabel"
    ingre = split_dir / "IngreLabel.txt"
    original = ingre.read_text()
    ingre.write_text(original.replace("-1", "0"))  # a 0/1-coded copy
    t = load_vireofood172(root)
    assert t.meta["ingredient_coding"] == "0/1" and t.frame.loc[0, "Pork"] == 1.0
    ingre.write_text(original)
    (split_dir / "IngredientList.txt").unlink()
    (split_dir / "FoodList.txt").unlink()
    with pytest.warns(DatasetWarning) as record:
        t = load_vireofood172(tmp_path)  # parent folder as root
    assert t.descriptors == [f"ingr_{j:03d}" for j in range(5)]
    assert t.classes == ["class_001", "class_002", "class_003"]
    assert len(record) == 2
    fx.write_fixture("vireofood172", tmp_path)
    lines = original.split("\n")
    ingre.write_text("\n".join(lines[1:]))  # no row for /1/1_1.jpg
    with pytest.warns(DatasetWarning, match=r"1 listed image\(s\) have no ingredient row, e.g. '1/1_1.jpg'"):
        t = load_vireofood172(root)
    assert np.isnan(t.frame.loc[0, "Pork"]) and t.frame.loc[1, "Pork"] == 1.0


def test_vireofood_bad_files(tmp_path):
    root = fx.write_fixture("vireofood172", tmp_path)
    split_dir = root / "SplitAndIngreLabel"
    ingre = split_dir / "IngreLabel.txt"
    original = ingre.read_text()
    ingre.write_text(original.replace("/1/1_2.jpg 1", "/1/1_2.jpg 2"))
    with pytest.raises(DatasetError, match=r"IngreLabel.txt, line 2: ingredient 1 value 2 is not -1/1"):
        load_vireofood172(root)
    ingre.write_text(original.replace("/1/1_2.jpg 1 -1", "/1/1_2.jpg 1 0"))
    with pytest.raises(DatasetError, match=r"IngreLabel.txt: ingredient values mixes -1, 0 and 1"):
        load_vireofood172(root)
    ingre.write_text(original.replace("/1/1_2.jpg 1 -1 -1 -1 1", "/1/1_2.jpg 1 -1 -1 -1"))
    with pytest.raises(DatasetError, match=r"IngreLabel.txt, line 2: expected 6 whitespace-separated fields, found 5"):
        load_vireofood172(root)
    ingre.write_text(original.replace("/1/1_2.jpg", "/1/1_1.jpg"))
    with pytest.raises(DatasetError, match=r"IngreLabel.txt, line 2: duplicated image '1/1_1.jpg'"):
        load_vireofood172(root)
    ingre.write_text(original.replace("/", "/x/"))
    with pytest.raises(DatasetError, match="none of the 12 images of the split lists has an ingredient row"):
        load_vireofood172(root)
    ingre.unlink()
    with pytest.raises(MissingFileError, match="IngreLabel.txt not found"):
        load_vireofood172(root)
    ingre.write_text(original)
    edit(split_dir / "TE.txt", "/3/3_4.jpg", "/1/1_1.jpg")
    with pytest.raises(DatasetError, match=r"TE.txt, line 3: image '1/1_1.jpg' already listed in TR.txt line 1"):
        load_vireofood172(root)
    edit(split_dir / "TE.txt", "/1/1_1.jpg", "/soup/3_4.jpg")
    with pytest.raises(DatasetError, match=r"TE.txt, line 3: expected /<class_id>/<image>.jpg"):
        load_vireofood172(root)
    edit(split_dir / "TE.txt", "/soup/3_4.jpg", "/3/3_4.jpg")
    edit(split_dir / "IngredientList.txt", "Tomato\n", "")
    with pytest.raises(DatasetError, match="IngredientList.txt: 4 names but 5 value columns in IngreLabel.txt"):
        load_vireofood172(root)
    fx.write_fixture("vireofood172", tmp_path)
    (root / "ready_chinese_food" / "2" / "2_3.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"1 of 12 listed images are absent .* e.g. '2/2_3.jpg'"):
        load_vireofood172(root)


def test_vireofood_header_or_blank_line_in_name_lists_cannot_shift_names(tmp_path):
    root = fx.write_fixture("vireofood172", tmp_path)
    split_dir = root / "SplitAndIngreLabel"
    foods = (split_dir / "FoodList.txt").read_text()
    (split_dir / "FoodList.txt").write_text("Food name\n" + foods)  # a header line
    with pytest.raises(DatasetError, match=r"FoodList.txt: 4 names but 3 class ids .*first line: 'Food name'"):
        load_vireofood172(root)
    (split_dir / "FoodList.txt").write_text(foods.replace("\n", "\n\n", 1))  # a blank line inside
    with pytest.raises(DatasetError, match=r"FoodList.txt, line 2: blank line"):
        load_vireofood172(root)
    (split_dir / "FoodList.txt").write_text(foods + "\n\n")  # trailing blank lines are fine
    edit(split_dir / "IngredientList.txt", "Potato\n", "\nPotato\n")
    with pytest.raises(DatasetError, match=r"IngredientList.txt, line 2: blank line"):
        load_vireofood172(root)


# =========================================================================== registry, fixtures, splits
def test_registry_and_load_dataset(shared):
    assert {"milk10k", "milk10k_clinical", "isic_dicm_17k", "celeba", "cub_200_2011", "nus_wide",
            "vireofood172"} == set(LOADERS) == set(available_datasets())
    assert LOADERS["milk10k_clinical"].fixed == {"image_type": "clinical: close-up"}
    t = load_dataset("celeba", shared["celeba"], target="Smiling")
    assert t.classes == ["not_Smiling", "Smiling"]
    assert len(quiet(load_dataset, "cub_200_2011", shared["cub_200_2011"])) == 8
    assert len(load_dataset("vireofood172", shared["vireofood172"])) == 12
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'imagenet'; available: celeba, cub_200_2011"):
        load_dataset("imagenet", shared["celeba"])
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]; valid options: \['target'"):
        load_dataset("celeba", shared["celeba"], colour="red")


def test_grouped_options_equal_keyword_options(shared):
    """CUB and ISIC-DICM-17K group their options in a dataclass; keywords still work, one by one or on top."""
    cub = shared["cub_200_2011"]
    by_keyword = quiet(load_cub_200_2011, cub, descriptor_value="certainty", val_fraction=0.4)
    grouped = quiet(load_cub_200_2011, cub, CubOptions(descriptor_value="certainty", val_fraction=0.4))
    mixed = quiet(load_cub_200_2011, cub, CubOptions(descriptor_value="certainty"), val_fraction=0.4)
    assert by_keyword.frame.equals(grouped.frame) and by_keyword.frame.equals(mixed.frame)
    assert by_keyword.descriptor_kind == grouped.descriptor_kind == "soft"
    isic = shared["isic_dicm_17k"]
    assert load_isic_dicm_17k(isic, IsicOptions(subgroup="none")).frame.equals(
        load_isic_dicm_17k(isic, subgroup="none").frame)
    with pytest.raises(TypeError, match="colour"):
        load_cub_200_2011(cub, colour="red")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]; valid options: \['descriptor_value', "
                                         r"'not_visible', 'attributes', 'min_classes', 'subgroup', 'val_fraction', "
                                         r"'split_seed', 'images_dir', 'missing_images'\]"):
        load_dataset("cub_200_2011", cub, colour="red")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['options'\]; valid options: \['descriptors', "):
        load_dataset("isic_dicm_17k", isic, options=IsicOptions())


def test_milk10k_fixture_and_registry(tmp_path):
    plain = fx.write_fixture("milk10k", tmp_path / "plain")
    nested = fx.write_fixture("milk10k", tmp_path / "nested", nested=True)
    assert len(list((nested / "MILK10k_Training_Input" / "MILK10k_Training_Input").glob("IL_*/*.jpg"))) == 60
    meta = pd.read_csv(plain / "MILK10k_Training_Metadata.csv")
    assert len(meta) == 60 and set(meta["image_type"]) == {"clinical: close-up", "dermoscopic"}
    assert meta.groupby("lesion_id").size().eq(2).all()
    assert meta.loc[meta["lesion_id"] == "IL_0000002", ["age_approx", "skin_tone_class"]].isna().all().all()
    gt = pd.read_csv(plain / "MILK10k_Training_GroundTruth.csv")
    assert list(gt.columns) == ["lesion_id", *MILK10K_CLASSES] and (gt.iloc[:, 1:].sum(axis=1) == 1).all()
    pytest.importorskip("semcov_lib.data.datasets.milk10k")
    for root in (plain, nested):
        derm = quiet(load_dataset, "milk10k", root)
        clin = quiet(load_dataset, "milk10k_clinical", root)
        assert len(derm) == len(clin) == 30
        assert all(p.is_file() for p in derm.image_paths()) and all(p.is_file() for p in clin.image_paths())
        for split in ("train", "val", "test"):  # the fixture is large enough for the seeded lesion split
            assert derm.split(split).frame["label"].nunique() >= 2, split


def test_registry_fixed_options_reach_the_loader(monkeypatch, tmp_path):
    """The registry passes its fixed options (milk10k_clinical's image_type) and guards them."""
    import sys
    import types

    from semcov_lib.data.datasets import LoaderSpec

    calls = []
    fake = types.ModuleType("semcov_fake_milk10k")

    def load_milk10k(root, image_type="dermoscopic", subgroup="skin_tone_class", split_seed=0, val_fraction=0.15,
                     test_fraction=0.15, images_dir=None):
        calls.append((root, image_type, split_seed))
        return "table"

    fake.load_milk10k = load_milk10k
    monkeypatch.setitem(sys.modules, "semcov_fake_milk10k", fake)
    monkeypatch.setitem(LOADERS, "milk10k_clinical",
                        LoaderSpec("semcov_fake_milk10k", "load_milk10k", {"image_type": "clinical: close-up"}))
    assert load_dataset("milk10k_clinical", tmp_path, split_seed=3) == "table"
    assert calls == [(tmp_path, "clinical: close-up", 3)]
    with pytest.raises(ValueError, match=r"fixes option\(s\) \['image_type'\] to \['clinical: close-up'\]"):
        load_dataset("milk10k_clinical", tmp_path, image_type="dermoscopic")


def test_fixture_images_are_real_jpegs(shared):
    for root in shared.values():
        first = next(root.rglob("*.jpg"))
        with Image.open(first) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
    with pytest.raises(ValueError, match="no fixture for dataset 'imagenet'"):
        fx.write_fixture("imagenet", "unused")


def test_holdout_mask_is_seeded_stratified_and_group_aware():
    labels = np.array([0] * 10 + [1] * 10)
    a, b = holdout_mask(labels, 0.3, seed=1), holdout_mask(labels, 0.3, seed=1)
    assert (a == b).all() and a[:10].sum() == 3 and a[10:].sum() == 3
    assert not (holdout_mask(labels, 0.3, seed=2) == a).all()
    groups = np.repeat(np.arange(10), 2)  # pairs of rows move together
    m = holdout_mask(labels, 0.3, seed=0, groups=groups)
    assert (m[::2] == m[1::2]).all()
    tiny = holdout_mask(np.array([0, 0, 1]), 0.1, seed=0)  # >= 1 per class with two or more rows
    assert tiny[:2].sum() == 1 and not tiny[2]
    with pytest.raises(DatasetError, match=r"fraction must be in \[0, 1\)"):
        holdout_mask(labels, 1.0, seed=0)
