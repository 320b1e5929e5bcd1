"""`verify`: a local copy against its data manifest (custom manifests over fixture files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from semcov_lib.data.datasets import fixtures as fx
from semcov_lib.cli import main
from semcov_lib.data.datasets import LOADERS
from semcov_lib.paths import MANIFESTS_DIR
from semcov_lib.data.verify import ManifestError, count_lines, file_digests, load_manifest, verify_dataset

DATASETS = ("milk10k", "isic_dicm_17k", "celeba", "cub_200_2011", "nus_wide", "vireofood172")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def copy(tmp_path) -> tuple[Path, Path]:
    """A CelebA fixture copy and a manifest describing it exactly (sizes, hashes, counts)."""
    root = fx.write_fixture("celeba", tmp_path / "data")
    attr, part, ident = (root / n for n in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"))
    manifest = {
        "name": "celeba_fixture",
        "base_dirs": [".", "celeba"],
        "files": [
            {"path": "list_attr_celeba.txt", "alternatives": ["Anno/list_attr_celeba.txt"],
             "size": attr.stat().st_size, "sha256": sha256(attr),
             "md5": hashlib.md5(attr.read_bytes()).hexdigest(), "lines": 11},
            {"path": "list_eval_partition.txt", "alternatives": ["Eval/list_eval_partition.txt"],
             "size": part.stat().st_size, "sha256": sha256(part)},
            {"path": "identity_CelebA.txt", "size": None, "sha256": None},  # hash unknown
            {"path": "img_align_celeba", "type": "directory", "glob": "*.jpg", "count": 9},
            {"path": "img_align_celeba.zip", "required": False, "size": None, "sha256": None},
        ],
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return tmp_path / "data", path


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["verify", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_intact_copy_passes(copy, capsys):
    root, manifest = copy
    report = verify_dataset("celeba", root, manifest=manifest)
    assert report.ok and report.base.name == "celeba"  # found below --root
    status = {e.path: e.status for e in report.entries}
    assert status == {"list_attr_celeba.txt": "ok", "list_eval_partition.txt": "ok",
                      "identity_CelebA.txt": "unchecked", "img_align_celeba": "ok",
                      "img_align_celeba.zip": "absent_optional"}
    code, out = run_cli(capsys, "celeba", "--root", str(root), "--manifest", str(manifest))
    assert code == 0
    assert "result: OK (3 verified, 1 present but unchecked, 1 optional absent)" in out
    assert "UNCHECKED" in out and "expected hash unknown" in out


def test_missing_and_corrupted_files_are_detected(copy, capsys):
    root, manifest = copy
    base = root / "celeba"
    (base / "list_eval_partition.txt").unlink()
    (base / "img_align_celeba" / "000003.jpg").unlink()
    attr = base / "list_attr_celeba.txt"
    data = bytearray(attr.read_bytes())
    data[-3] = ord("1") if data[-3] != ord("1") else ord("0")  # same size, different content
    attr.write_bytes(bytes(data))
    report = verify_dataset("celeba", root, manifest=manifest)
    assert not report.ok
    assert [e.path for e in report.missing] == ["list_eval_partition.txt"]
    assert {e.path: e.status for e in report.mismatched} == {"list_attr_celeba.txt": "hash_mismatch",
                                                            "img_align_celeba": "count_mismatch"}
    code, out = run_cli(capsys, "celeba", "--root", str(root), "--manifest", str(manifest))
    assert code == 1
    assert "MISSING" in out and "list_eval_partition.txt" in out and "Eval/list_eval_partition.txt" in out
    assert "HASH MISMATCH" in out and "sha256" in out
    assert "COUNT MISMATCH" in out and "8 files matching '*.jpg', expected 9" in out
    assert "result: NOT OK (1 missing, 2 different" in out
    # --no-hash: the same-size corruption goes unnoticed and the file is reported as unchecked
    code, out = run_cli(capsys, "celeba", "--root", str(root), "--manifest", str(manifest), "--no-hash")
    assert code == 1 and "HASH MISMATCH" not in out and "hash not computed (--no-hash)" in out


def test_size_and_line_mismatch(copy, capsys):
    root, manifest = copy
    base = root / "celeba"
    with open(base / "list_eval_partition.txt", "a") as handle:
        handle.write("000010.jpg 2\n")
    code, out = run_cli(capsys, "celeba", "--root", str(base), "--manifest", str(manifest), "--no-hash")
    assert code == 1 and "SIZE MISMATCH" in out and "list_eval_partition.txt" in out
    lines = load_manifest(manifest)
    lines["files"] = [dict(lines["files"][0], size=None, sha256=None, md5=None, lines=12)]
    manifest.write_text(yaml.safe_dump(lines))
    code, out = run_cli(capsys, "celeba", "--root", str(base), "--manifest", str(manifest))
    assert code == 1 and "LINES MISMATCH" in out and "11 non-blank lines, expected 12" in out


def test_official_layout_through_alternatives(copy, tmp_path):
    _, manifest = copy
    official = fx.write_fixture("celeba", tmp_path / "official", layout="official")
    report = verify_dataset("celeba", official, manifest=manifest)
    attr = next(e for e in report.entries if e.path == "list_attr_celeba.txt")
    assert attr.found == "Anno/list_attr_celeba.txt" and attr.status == "ok"  # identical bytes
    assert [e.path for e in report.missing] == ["identity_CelebA.txt", "img_align_celeba"]


def test_bad_inputs(copy, tmp_path, capsys):
    root, manifest = copy
    report = verify_dataset("celeba", tmp_path / "nowhere", manifest=manifest)
    assert not report.ok and len(report.missing) == 4
    code, out = run_cli(capsys, "celeba", "--root", str(tmp_path / "nowhere"), "--manifest", str(manifest))
    assert code == 1 and "does not exist" in out
    code, out = run_cli(capsys, "no_such_dataset", "--root", str(root))
    assert code == 2 and "no manifest for dataset 'no_such_dataset'" in out and "celeba" in out
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nfiles:\n  - path: a.txt\n    sha256: 1234\n")
    with pytest.raises(ManifestError, match=r"files\[0\] \(a.txt\): sha256 must be 64 hex digits"):
        load_manifest(broken)
    code, out = run_cli(capsys, "x", "--root", str(root), "--manifest", str(broken))
    assert code == 2 and "sha256 must be 64 hex digits" in out


def test_chunked_hashing_and_line_count(tmp_path):
    big = tmp_path / "big.bin"
    payload = bytes(range(256)) * 9000  # > 2 MiB, several chunks
    big.write_bytes(payload)
    digests = file_digests(big, ("sha256", "md5"))
    assert digests == {"sha256": hashlib.sha256(payload).hexdigest(), "md5": hashlib.md5(payload).hexdigest()}
    text = tmp_path / "t.txt"
    text.write_bytes(b"a\r\nb\n\n  \nc")
    assert count_lines(text) == 3


@pytest.mark.parametrize("name", DATASETS)
def test_shipped_manifests_are_complete(name):
    data = load_manifest(MANIFESTS_DIR / f"{name}.yaml")
    assert data["name"] == name
    for key in ("title", "source_pages", "licence", "terms", "citation", "obtain", "root_layout", "split",
                "label", "subgroup", "descriptors", "loader", "hashes_note"):
        assert data.get(key), f"{name}: {key} missing"
    assert data["loader"]["name"] in LOADERS
    module, function = data["loader"]["function"].rsplit(".", 1)
    assert (LOADERS[data["loader"]["name"]].module, LOADERS[data["loader"]["name"]].function) == (module, function)
    for entry in data["files"]:
        if entry.get("type", "file") == "file":
            assert "size" in entry and "sha256" in entry, f"{name}: {entry['path']} lacks size/sha256 keys"
    if name == "celeba":
        attr = next(e for e in data["files"] if e["path"] == "list_attr_celeba.txt")
        assert attr["md5"] == "75e246fa4810816ffd6ee81facbd244c"


def test_shipped_manifest_flags_a_fixture_as_incomplete(tmp_path):
    root = fx.write_fixture("cub_200_2011", tmp_path)
    report = verify_dataset("cub_200_2011", root, check_hashes=False)
    assert not report.ok
    images = next(e for e in report.entries if e.path == "CUB_200_2011/images.txt")
    assert images.status == "lines_mismatch" and "expected 11788" in images.detail


def test_verify_flags_the_nus_wide_bad_label_value(tmp_path, capsys):
    root = fx.write_fixture("nus_wide", tmp_path, tags_beside=True)
    report = verify_dataset("nus_wide", tmp_path, check_hashes=False)
    tags = next(e for e in report.entries if e.path == "NUS_WID_Tags/TagList1k.txt")
    assert tags.status != "missing"  # found beside NUS-WIDE/
    assert report.flags == ["Groundtruth/TrainTestLabels/Labels_dog_Train.txt, line 10: label '-1130179' is not "
                            "0 or 1; the loader reads it as missing"]
    code, out = run_cli(capsys, "nus_wide", "--root", str(root), "--no-hash")
    assert "FLAG  Groundtruth/TrainTestLabels/Labels_dog_Train.txt, line 10" in out


def test_verify_flags_the_isic_lesion_and_patient_overlap(tmp_path):
    root = fx.write_fixture("isic_dicm_17k", tmp_path)
    (flag,) = verify_dataset("isic_dicm_17k", root, check_hashes=False).flags
    assert flag.startswith("valid-set-metadata.csv: 2 of 4 rows share a lesion or patient") and "(1 a lesion)" in flag
