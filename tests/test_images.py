"""Image loading: decoding, resizing, the on-disk cache and the benchmark bundle."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from semcov_lib.data import images
from semcov_lib.data.images import ImageLoadError, load_images, write_bundle
from semcov_lib.data.table import SCITable


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path / "cache"))


def make_table(root, n=5, sizes=((20, 12), (16, 16), (40, 40))) -> SCITable:
    root.mkdir(parents=True, exist_ok=True)
    rel = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        pixels = np.zeros((h, w, 3), dtype=np.uint8)
        pixels[..., 0] = 30 * i
        pixels[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        name = f"img{i}.png" if i % 2 else f"img{i}.jpg"
        Image.fromarray(pixels).save(root / name)
        rel.append(name)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "image_path": rel, "label": 0,
                          "subgroup": "none", "split": "train", "d": 0.5})
    return SCITable(frame=frame, classes=["a"], descriptors=["d"], root=root, name="toy")


def test_load_images_shapes_and_values(tmp_path):
    table = make_table(tmp_path / "imgs")
    x = load_images(table, 8)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.shape == (5, 3, 8, 8)
    assert x[1, 0].float().mean().item() == pytest.approx(30, abs=2)  # red channel of a PNG, exact
    assert x[1, 1, 0, 0] < x[1, 1, 0, -1]  # horizontal ramp survives crop and resize


def test_cache_is_reused_and_invalidated_by_mtime(tmp_path, monkeypatch):
    table = make_table(tmp_path / "imgs")
    first = load_images(table, 8)
    cached = list((tmp_path / "cache" / "images").glob("*.npy"))
    assert len(cached) == 1

    def fail(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(images, "decode_image", fail)
    assert torch.equal(load_images(table, 8), first)
    monkeypatch.undo()
    monkeypatch.setenv("SEMCOV_CACHE", str(tmp_path / "cache"))
    path = table.image_paths()[0]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_images(table, 8)
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 2  # new key after the change
    load_images(table, 12)
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 3  # size is part of the key


def test_missing_file_is_named(tmp_path):
    table = make_table(tmp_path / "imgs")
    (tmp_path / "imgs" / "img3.png").unlink()
    with pytest.raises(ImageLoadError, match="img3.png"):
        load_images(table, 8)


def test_bundle_serves_subsets_in_any_order(tmp_path, monkeypatch):
    table = make_table(tmp_path / "imgs", sizes=((16, 16),))
    decoded = images.decode_images(table.image_paths(), 16)
    write_bundle(table.root, list(table.frame["image_path"]), decoded)

    def fail(*args, **kwargs):
        raise AssertionError("decoded although a bundle exists")

    monkeypatch.setattr(images, "decode_image", fail)
    sub = SCITable(frame=table.frame.iloc[[4, 0, 2]].reset_index(drop=True), classes=["a"], descriptors=["d"],
                   root=table.root)
    assert torch.equal(load_images(sub, 16), torch.from_numpy(decoded[[4, 0, 2]]))
    # a touched file is not served from the bundle any more
    path = table.image_paths()[0]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded"):
        load_images(sub, 16)
