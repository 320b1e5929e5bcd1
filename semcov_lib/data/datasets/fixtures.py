"""Tiny copies of every supported dataset, written in the exact real on-disk formats.

Used by the tests and by the datasets notebook, so every loader runs end to end without the
real data (which the package never downloads). The formats follow each dataset's published release
(see the data manifests in ``semcov_lib/data/manifests/``), including the irregularities a real copy has: multi-space alignment and the trailing
space after ``Young`` (CelebA), a 6-token line and top-level ``attributes.txt`` (CUB), Windows
backslash paths and tab-separated tag matrices (NUS-WIDE), leading ``/`` and ±1 ingredient
labels (VireoFood-172), empty CSV fields (ISIC-DICM-17K, MILK10k), double-nested folders
(MILK10k). Images are tiny real JPEG files (Pillow).

Each fixture has at least two classes with samples in every split its loader produces.
Content is fully deterministic (no randomness), so tests can assert exact values.

``write_fixture(name, dest, **options) -> Path`` returns the folder to pass as ``root`` to the
dataset's loader. Options per dataset:

* ``milk10k``: ``nested=False`` (True: ``MILK10k_Training_Input/MILK10k_Training_Input/...``),
  ``lesions_per_class=10``, ``supplement=True``.
* ``celeba``: ``layout="flat"`` (torchvision's ``celeba/`` folder) or ``"official"``
  (``CelebA/{Anno,Eval,Img}``).
* ``cub_200_2011``: ``attributes_in="top"`` (next to ``CUB_200_2011/``, as in the tarball) or
  ``"attributes"`` (``CUB_200_2011/attributes/attributes.txt``, as the README says).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np

from semcov_lib.data.datasets.milk10k import MILK10K_CLASSES, MONET_COLUMNS

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


# --------------------------------------------------------------------------- utilities
def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    """A small real JPEG image of one colour with a darker square in the middle."""
    from PIL import Image

    w, h = size
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:] = color
    pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = [c // 2 for c in color]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _color(i: int) -> tuple[int, int, int]:
    return (40 + (i * 53) % 200, 40 + (i * 97) % 200, 40 + (i * 31) % 200)


def _image(path: Path, i: int, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(_color(i), size))


def _text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:  # exact bytes: no newline translation
        handle.write(content)


def _score(*keys: int) -> float:
    """A deterministic pseudo-random value in [0, 1] with two decimals."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + k * 7919 + 12345) % 2_147_483_647
    return round((h % 101) / 100.0, 2)


# --------------------------------------------------------------------------- MILK10k
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
                scores = ",".join(f"{_score(n, k, m):.2f}" for m in range(len(MONET_COLUMNS)))
                meta_lines.append(f"{lesion},{image_type},{isic},Synthetic,CC-BY-NC,{manipulation},{age},{sex},"
                                  f"{tone},{site},{scores}")
                supp_lines.append(f"{isic},{full.get(cls, cls)}")
                _image(images / lesion / f"{isic}.jpg", 2 * n + k)
            gt_lines.append(lesion + "," + ",".join("1.0" if c == cls else "0.0" for c in MILK10K_CLASSES))
    _text(root / "MILK10k_Training_Metadata.csv", "\n".join(meta_lines) + "\n")
    _text(root / "MILK10k_Training_GroundTruth.csv", "\n".join(gt_lines) + "\n")
    if supplement:
        _text(root / "MILK10k_Training_Supplement.csv", "\n".join(supp_lines) + "\n")
    return root


# --------------------------------------------------------------------------- CelebA
# Two data rows copied from the real list_attr_celeba.txt.
_CELEBA_REAL_ROWS = {
    "000001.jpg": "-1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 -1 -1  1 -1 -1 -1  1  1 -1  1 -1  1 -1 -1  1",
    "000007.jpg": "1 -1  1  1 -1 -1  1  1  1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1  1 -1 -1  1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1",
}
#: per image: (partition, Blond_Hair, Male, Smiling) for the generated rows
_CELEBA_ROWS = {
    "000002.jpg": (0, 1, 0, 1), "000003.jpg": (0, 1, 1, 0), "000004.jpg": (0, 0, 1, 1),
    "000005.jpg": (1, 1, 0, 0), "000006.jpg": (1, 0, 1, 1),
    "000008.jpg": (2, 1, 0, 1), "000009.jpg": (2, 0, 1, 0),
}
_CELEBA_PARTITION = {"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 0, "000004.jpg": 0, "000005.jpg": 1,
                     "000006.jpg": 1, "000007.jpg": 1, "000008.jpg": 2, "000009.jpg": 2}


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
        _text(root / "README.txt", "CelebA dataset (fixture copy)\n")
    else:
        raise ValueError(f"unknown CelebA fixture layout {layout!r}; expected 'flat', 'official' or 'png'")
    rows = celeba_fixture_attributes()
    lines = [str(len(rows)), " ".join(CELEBA_ATTRIBUTES) + " "]  # trailing space after 'Young', as in the real file
    lines += [f"{f} " + " ".join(f"{v:2d}" for v in vals) for f, vals in rows.items()]
    _text(anno / "list_attr_celeba.txt", "\n".join(lines) + "\n")
    _text(evaldir / "list_eval_partition.txt", "".join(f"{f} {p}\n" for f, p in _CELEBA_PARTITION.items()))
    _text(anno / "identity_CelebA.txt", "".join(f"{f} {1 + i % 3}\n" for i, f in enumerate(rows)))
    bbox = ["9", "image_id x_1 y_1 width height"]
    bbox += [f"{f}    {95 + i:>2d}  {71 + i:>2d} {226 + i:>3d} {313 + i:>3d}" for i, f in enumerate(rows)]
    _text(anno / "list_bbox_celeba.txt", "\n".join(bbox) + "\n")
    marks = ["9", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                  "rightmouth_x rightmouth_y"]
    marks += [f"{f} {69 + i}  {109 + i}  {106 + i}  {113 + i}   {77 + i}  {142 + i}   {73 + i}  {152 + i}  "
              f"{108 + i}  {154 + i}" for i, f in enumerate(rows)]
    _text(anno / "list_landmarks_align_celeba.txt", "\n".join(marks) + "\n")
    for i, f in enumerate(rows):
        if layout == "png":
            path = imgdir / Path(f).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.new("RGB", size, _color(i)).save(path, format="PNG")
        else:
            _image(imgdir / f, i, size)
    return root


# --------------------------------------------------------------------------- CUB-200-2011
CUB_ATTRIBUTES = ("has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger", "has_bill_shape::hooked",
                  "has_wing_color::blue", "has_wing_color::grey", "has_wing_color::brown")
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross")
#: class-level presence pattern (per attribute) followed by every training image of the class
CUB_CLASS_PATTERN = {1: (1, 0, 0, 1, 0, 1), 2: (0, 1, 0, 1, 0, 0)}
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
        _image(cub / "images" / rel, img)
    _text(cub / "README", "CUB-200-2011 fixture copy\n")
    _text(cub / "images.txt", "".join(f"{i} {rel}\n" for i, rel in enumerate(files, start=1)))
    _text(cub / "image_class_labels.txt", "".join(f"{i} {1 if i <= 4 else 2}\n" for i in range(1, 9)))
    _text(cub / "train_test_split.txt", "".join(f"{i} {0 if i in (4, 8) else 1}\n" for i in range(1, 9)))
    _text(cub / "classes.txt", "".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, start=1)))
    _text(cub / "bounding_boxes.txt", "".join(f"{i} {60.0 + i} 27.0 325.0 304.0\n" for i in range(1, 9)))
    _text(cub / "parts" / "parts.txt", "1 back\n2 beak\n")
    _text(cub / "parts" / "part_locs.txt", "".join(f"{i} {p} 0.0 0.0 0\n" for i in range(1, 9) for p in (1, 2)))
    attr_text = "".join(f"{i} {a}\n" for i, a in enumerate(CUB_ATTRIBUTES, start=1))
    _text((root if attributes_in == "top" else cub / "attributes") / "attributes.txt", attr_text)
    _text(cub / "attributes" / "certainties.txt", "1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    lines = []
    for img, attr, present, certainty, seconds in cub_fixture_labels():
        if (img, attr) == CUB_SIX_TOKEN_LINE:
            lines.append(f"{img} {attr} {present} {certainty} 0 {seconds}")  # the known 6-token malformation
        else:
            lines.append(f"{img} {attr} {present} {certainty} {seconds:.4f}")
    _text(cub / "attributes" / "image_attribute_labels.txt", "\n".join(lines) + "\n\n")  # trailing blank line
    continuous = []
    for cls in (1, 2):
        continuous.append(" ".join(repr(100.0 * p) if p else "0.0" for p in CUB_CLASS_PATTERN[cls]))
    _text(cub / "attributes" / "class_attribute_labels_continuous.txt", "\n".join(continuous) + "\n")
    return root


# --------------------------------------------------------------------------- ISIC-DICM-17K
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
    _text(root / "train-set-metadata.csv", "\n".join([ISIC_HEADER, *map(_isic_line, ISIC_TRAIN_ROWS)]) + "\n")
    _text(root / "valid-set-metadata.csv", "\n".join([ISIC_HEADER, *map(_isic_line, ISIC_VALID_ROWS)]) + "\n")
    rows = [*ISIC_TRAIN_ROWS, *ISIC_VALID_ROWS]
    for i, row in enumerate(rows):
        if i == 0:
            _image(root / "images" / "ISIC_2019" / row[0], i)
        else:
            _image(root / "images" / f"{row[1]}.jpg", i)
    if descriptors:
        lines = ["isic_id," + ",".join(MONET_COLUMNS)]
        for i, row in enumerate(rows):
            lines.append(row[1] + "," + ",".join(f"{_score(i, 99, m):.2f}" for m in range(len(MONET_COLUMNS))))
        _text(root / "descriptors.csv", "\n".join(lines) + "\n")
    return root


# --------------------------------------------------------------------------- NUS-WIDE
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
        _text(root / "ImageList" / f"{split}Imagelist.txt", "".join(f"{d}\\{f}\r\n" for d, f, _ in rows))
        for concept in NUS_CONCEPTS:
            values = [str(1 if concept in pos else 0) for _, _, pos in rows]
            if (concept, split) == NUS_BAD_LABEL[:2]:
                values[NUS_BAD_LABEL[2]] = NUS_BAD_LABEL[3]
            _text(root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split}.txt",
                  "".join(f"{v}\n" for v in values))
        tags = nus_fixture_tags(split)
        _text(tag_dir / f"{split}_Tags1k.dat", "".join("\t".join(map(str, r)) + "\n" for r in tags))
    everything = (*NUS_TRAIN, *NUS_TEST)
    _text(root / "ImageList" / "Imagelist.txt", "".join(f"{d}\\{f}\r\n" for d, f, _ in everything))
    for concept in NUS_CONCEPTS:
        _text(root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt",
              "".join(f"{1 if concept in pos else 0}\n" for _, _, pos in everything))
    _text(root / "Concepts81.txt", "".join(f"{c}\n" for c in NUS_CONCEPTS))
    _text(tag_dir / "TagList1k.txt", "".join(f"{t}\n" for t in NUS_TAGS))
    urls = ["Photo_file Photo_id url_Large url_Middle url_Small url_Original"]
    for i, (d, f, _) in enumerate(everything):
        urls.append(f"C:\\ImageData\\Flickr\\{d}\\{f} {f.split('_')[1][:-4]} null null null null")
        _image(root / "Flickr" / d / f, i)
    _text(root / "NUS-WIDE-urls.txt", "\r\n".join(urls) + "\r\n")
    return root


# --------------------------------------------------------------------------- VireoFood-172
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
            _image(root / "ready_chinese_food" / str(cls) / f"{cls}_{k}.jpg", 10 * cls + k)
    for name, rels in lists.items():
        _text(split_dir / f"{name}.txt", "\n".join(rels) + "\n")
    _text(split_dir / "IngreLabel.txt", "\n".join(ingre) + "\n")
    _text(split_dir / "IngredientList.txt", "\n".join(VIREO_INGREDIENTS) + "\n")
    _text(split_dir / "FoodList.txt", "\n".join(VIREO_FOODS) + "\n")
    return root


# --------------------------------------------------------------------------- registry
FIXTURES: dict[str, Callable[..., Path]] = {
    "milk10k": write_milk10k,
    "milk10k_clinical": write_milk10k,
    "isic_dicm_17k": write_isic_dicm_17k,
    "celeba": write_celeba,
    "cub_200_2011": write_cub,
    "nus_wide": write_nus_wide,
    "vireofood172": write_vireofood172,
}


def write_fixture(name: str, dest: str | Path, **options) -> Path:
    """Write the fixture copy of dataset ``name`` under ``dest``; return the loader root."""
    if name not in FIXTURES:
        raise ValueError(f"no fixture for dataset {name!r}; available: {sorted(FIXTURES)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return FIXTURES[name](dest, **options)
