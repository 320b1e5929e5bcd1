"""Image files -> one uint8 tensor (N, 3, size, size), decoded once and cached on disk.

Decoding thousands of JPEGs every epoch would dominate CPU training, so :func:`load_images`
decodes a table's images once (RGB, centre-cropped to a square, resized to ``size``) and keeps
the array under ``cache_dir()/images/<hash of paths + mtimes + sizes + size>.npy``. A changed
or touched file changes the key, so a stale cache is never used.

Fast path: a folder may carry a *bundle* (``.semcov/images_u8_<size>.npy`` plus an index of
relative paths, byte sizes and mtimes), written by the benchmark generator from the very JPEG
bytes it wrote. Any table whose images all lie in the bundle (a split, a subset, any order) is
served from it without decoding; the pixels equal what decoding the files gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from semcov_lib.data.table import TableError
from semcov_lib.files import write_npy_atomic, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from semcov_lib.data.table import SCITable

BUNDLE_DIR = ".semcov"


class ImageLoadError(TableError):
    """An image listed in a table is missing or cannot be decoded."""


def _bundle_files(root: Path, size: int) -> tuple[Path, Path]:
    return root / BUNDLE_DIR / f"images_u8_{size}.npy", root / BUNDLE_DIR / f"images_u8_{size}.json"


def write_bundle(root: str | Path, rel_paths: Sequence[str], array: np.ndarray) -> Path:
    """Store ``array`` (N, 3, S, S) uint8, row i = decoded ``root/rel_paths[i]``, as the folder's bundle."""
    root = Path(root)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3 or array.shape[2] != array.shape[3]:
        raise ImageLoadError(f"bundle array must be uint8 (N, 3, S, S), got {array.dtype} {array.shape}")
    if len(rel_paths) != len(array):
        raise ImageLoadError(f"bundle: {len(rel_paths)} paths for {len(array)} images")
    npy, index = _bundle_files(root, array.shape[2])
    files = {}
    for row, rel in enumerate(rel_paths):
        st = os.stat(root / rel)
        files[str(rel)] = [row, st.st_size, st.st_mtime_ns]
    write_npy_atomic(npy, array)
    write_text_atomic(index, json.dumps({"size": int(array.shape[2]), "files": files}))  # last: the pair is complete
    return npy


def _from_bundle(root: Path, paths: list[Path], size: int) -> np.ndarray | None:
    """The rows of the folder's bundle for ``paths``, or None if any file is not in it or changed."""
    npy, index = _bundle_files(root, size)
    if not (npy.is_file() and index.is_file()):
        return None
    try:
        files = json.loads(index.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return None
    rows = np.empty(len(paths), dtype=np.int64)
    root_s = os.path.abspath(root)
    for i, path in enumerate(paths):
        rel = os.path.relpath(path, root_s).replace(os.sep, "/")
        entry = files.get(rel)
        if entry is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_size != entry[1] or st.st_mtime_ns != entry[2]:
            return None
        rows[i] = entry[0]
    try:
        array = np.load(npy, mmap_mode="r")
        return np.ascontiguousarray(array[rows])
    except (OSError, ValueError, IndexError) as exc:  # truncated or foreign bundle: decode the files
        import warnings

        warnings.warn(f"image bundle {npy} is unreadable ({exc}); decoding the image files instead",
                      stacklevel=3)
        return None


def image_cache_key(paths: Sequence[str | Path], size: int) -> str:
    """Hash of (size, each absolute path with its byte size and mtime); raises naming a missing file."""
    h = hashlib.sha256(f"semcov-images-v1 {int(size)}\n".encode())
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageLoadError(f"image file not found: {path}") from None
        h.update(f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): RGB, centre-cropped to a square, resized (bicubic)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(im.size) > 2 * size:
                im.draft("RGB", (size, size))  # decode large JPEGs at reduced scale (much faster)
            im = im.convert("RGB")
            w, h = im.size
            if w != h:
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageLoadError(f"cannot decode image {path}: {exc}") from exc


def decode_images(paths: Sequence[str | Path], size: int, workers: int | None = None,
                  progress: bool = False) -> np.ndarray:
    """Decode many images in a thread pool: uint8 (N, 3, size, size)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = decode_image(paths[i], size).transpose(2, 0, 1)

    n_workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(n_workers) as pool:
        iterator = pool.map(work, range(len(paths)))
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(paths), desc="decoding images")
        for _ in iterator:
            pass
    return out


def load_images(table: "SCITable", size: int, *, cache: bool = True, workers: int | None = None,
                progress: bool = False) -> "torch.Tensor":
    """The table's images (row order) as a uint8 tensor (N, 3, size, size), decoded at most once.

    Order of lookup: the folder bundle of ``table.root`` (benchmark), the on-disk cache keyed by
    paths + mtimes + size, then decoding (and caching the result when ``cache`` is true).
    A missing file raises :class:`ImageLoadError` naming it.
    """
    import torch

    from semcov_lib.paths import cache_dir

    size = int(size)
    if size < 1:
        raise ImageLoadError(f"image size must be positive, got {size}")
    paths = [Path(os.path.abspath(p)) for p in table.image_paths()]
    if not paths:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ImageLoadError(f"{table.name}: image file not found: {missing[0]}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if table.root is not None:
        array = _from_bundle(Path(table.root), paths, size)
        if array is not None:
            return torch.from_numpy(array)
    target = None
    if cache:
        target = cache_dir() / "images" / f"{image_cache_key(paths, size)}.npy"
        if target.is_file():
            try:
                array = np.load(target)
                if array.shape == (len(paths), 3, size, size) and array.dtype == np.uint8:
                    return torch.from_numpy(array)
            except (OSError, ValueError):
                pass  # a corrupt cache file is rebuilt below
    array = decode_images(paths, size, workers=workers, progress=progress)
    if target is not None:
        write_npy_atomic(target, array)
    return torch.from_numpy(array)
