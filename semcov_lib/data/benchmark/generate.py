"""Writing the benchmark: JPEG files, CSVs and the uint8 image bundle in the MILK10k layout, installed
atomically into an output folder or the cache; and the ``generate`` command (``add_arguments``/``run``)."""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from semcov_lib.config import load_yaml, parse_overrides, to_dict
from semcov_lib.data.benchmark.config import (
    BENCHMARK_CONFIGS, BENCHMARK_PROFILES, GENERATOR_VERSION, REFERENCE_SPLIT, SPLIT_ORDER, BenchmarkConfig,
    BenchmarkError, benchmark_config, config_hash, configuration_overrides,
)
from semcov_lib.data.benchmark.design import _design, _Design
from semcov_lib.data.benchmark.render import _render_batch_size, _render_plan, _render_rows
from semcov_lib.data.datasets.milk10k import GROUNDTRUTH_FILE, INPUT_DIR, METADATA_FILE, MILK10K_CLASSES

CONFIG_FILE = "benchmark_config.yaml"


# ------------------------------------------------------------------------------ writing
def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _decode_jpeg(data: bytes, size: int) -> np.ndarray:
    """Decode our own baseline RGB JPEG with PIL's C decoder directly (skips the Python header parser;
    same pixels as ``Image.open``, which :func:`semcov_lib.data.images.load_images` uses: tested)."""
    from PIL import Image

    return np.asarray(Image.frombytes("RGB", (size, size), data, "jpeg", "RGB", ""))



def _process_batch(item: tuple[int, int, np.ndarray], design: _Design, cfg: BenchmarkConfig, seed: int, tmp: Path,
                   rel_paths: list[str], cache: np.ndarray) -> None:
    """Render, encode, write and decode (for the uint8 cache) one batch of images."""
    rows, pixels = _render_rows(design, cfg, seed, item)
    for i, row in enumerate(rows):
        data = _encode_jpeg(pixels[i], cfg.jpeg_quality)
        path = tmp / rel_paths[row]
        path.parent.mkdir(exist_ok=True)  # lesion folder (the clinical variant puts 2 images in it)
        with open(path, "wb") as fh:
            fh.write(data)
        cache[row] = _decode_jpeg(data, cfg.image_size).transpose(2, 0, 1)



def _ground_truth_frame(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    lesions = frame.drop_duplicates("lesion_id").sort_values("lesion_id")
    header = list(MILK10K_CLASSES) if len(names) == len(MILK10K_CLASSES) else names
    onehot = np.zeros((len(lesions), len(header)))
    col = np.array([header.index(n) for n in names])[lesions["label"].to_numpy()]
    onehot[np.arange(len(lesions)), col] = 1.0
    gt = pd.DataFrame(onehot, columns=header)
    gt.insert(0, "lesion_id", lesions["lesion_id"].to_numpy())
    return gt


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def estimated_memory(cfg: BenchmarkConfig, workers: int) -> int:
    """Bytes a generation needs at its peak: the uint8 image cache, the design tables (about 2 kB a
    row with the pandas frame and the CSV text) and each worker's float32 render buffers (about 40
    full-batch planes)."""
    size = cfg.image_size
    per_worker = 40 * _render_batch_size(size) * 3 * size * size * 4
    return cfg.n_images * (3 * size * size + 2048) + max(1, workers) * per_worker + 300 * 2**20


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux, else free pages); None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: BenchmarkConfig, workers: int) -> None:
    """Refuse up front (one line, with the estimate) a generation that would not fit in memory."""
    need, have = estimated_memory(cfg, workers), available_memory()
    if have is not None and need > have:
        raise BenchmarkError(
            f"benchmark of {cfg.n_images} images of {cfg.image_size}x{cfg.image_size} px needs about "
            f"{need / 2**30:.1f} GiB of memory, {have / 2**30:.1f} GiB available; lower image_size or the "
            "split sizes (n_train, n_test, n_stress, ...), or use --workers 1")


# top-level entries a generation writes; everything else in an output folder belongs to the user
_OWN_ENTRIES = (METADATA_FILE, GROUNDTRUTH_FILE, INPUT_DIR, ".semcov", CONFIG_FILE)
_OWN_IMAGE = re.compile(r"IL_\d{7}/ISIC_\d{7}\.jpg")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """An existing ``out_dir`` must be empty or a previous benchmark whose image folder holds only
    the generator's files (the user's other files beside it are kept)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BenchmarkError(f"{out_dir} is a file, not a folder; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / CONFIG_FILE).is_file():
        raise BenchmarkError(f"{out_dir} exists, is not empty and is not a benchmark folder; refusing to overwrite it")
    if not overwrite:
        raise BenchmarkError(f"{out_dir} already holds a benchmark (overwrite=False)")
    images = out_dir / INPUT_DIR
    if images.is_dir():
        for path in images.rglob("*"):
            rel = path.relative_to(images).as_posix()
            if path.is_file() and not _OWN_IMAGE.fullmatch(rel):
                raise BenchmarkError(f"{out_dir} holds {path.relative_to(out_dir)}, not a generated file, inside "
                                     f"{INPUT_DIR}; move it out or choose another --out")


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the generated entries of ``tmp`` into ``out_dir``, replacing only the generator's own
    entries; the config file goes last, so an interrupted swap never looks like a finished benchmark."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    trash.mkdir()
    try:
        for name in (CONFIG_FILE, *_OWN_ENTRIES[:-1]):
            if (out_dir / name).exists():
                (out_dir / name).rename(trash / name)
        for name in _OWN_ENTRIES:
            if (tmp / name).exists():
                (tmp / name).rename(out_dir / name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)



def generate_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, seed: int = 0, *,
                       workers: int | None = None, overwrite: bool = True, _keep_existing: bool = False) -> Path:
    """Write the benchmark in the MILK10k layout into ``out_dir`` (atomically) and return it.

    Files: ``MILK10k_Training_Metadata.csv`` (one row per image, with ``split`` and ``gt_*``
    columns), ``MILK10k_Training_GroundTruth.csv`` (one-hot per lesion),
    ``MILK10k_Training_Input/<lesion_id>/<isic_id>.jpg``, ``benchmark_config.yaml`` and a uint8
    image bundle that :func:`semcov_lib.data.images.load_images` uses instead of decoding the JPEGs.
    An existing ``out_dir`` must be empty or a previous benchmark: only the generator's own files
    are replaced (files the user added beside them are kept), and a generation that would not fit
    in memory is refused before anything is written.
    """
    cfg = cfg.validate()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    n_workers = workers or _default_workers()
    check_memory(cfg, n_workers)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_benchmark(cfg, seed, tmp, n_workers)
        if out_dir.exists() and _keep_existing and (out_dir / CONFIG_FILE).is_file():
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent generation of the same benchmark won
            return out_dir
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_benchmark(cfg: BenchmarkConfig, seed: int, tmp: Path, n_workers: int) -> None:
    """Every file of the benchmark, written into the (new, empty) folder ``tmp``."""
    from semcov_lib.data import images as images_mod

    design = _design(cfg, seed)
    frame = design.frame
    rel_paths = [f"{INPUT_DIR}/{les}/{isic}.jpg" for les, isic in zip(frame["lesion_id"], frame["isic_id"])]
    (tmp / INPUT_DIR).mkdir()
    size = cfg.image_size
    cache = np.empty((len(frame), 3, size, size), dtype=np.uint8)
    plan = _render_plan(design, cfg)
    # batches draw from their own streams and write disjoint rows: the thread count changes no byte
    if n_workers > 1 and len(plan) > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            futures = [pool.submit(_process_batch, item, design, cfg, seed, tmp, rel_paths, cache) for item in plan]
            for fut in futures:
                fut.result()
    else:
        for item in plan:
            _process_batch(item, design, cfg, seed, tmp, rel_paths, cache)

    meta = frame.drop(columns=["label", "class_name"])
    meta.to_csv(tmp / METADATA_FILE, index=False, lineterminator="\n")
    _ground_truth_frame(frame, cfg.resolved_class_names()).to_csv(tmp / GROUNDTRUTH_FILE, index=False,
                                                                 lineterminator="\n")
    info = {"seed": int(seed), "generator_version": GENERATOR_VERSION, **to_dict(cfg)}
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(info, sort_keys=False))
    images_mod.write_bundle(tmp, rel_paths, cache)


def ensure_benchmark(profile: str = "default", seed: int = 0, overrides: dict[str, Any] | None = None,
                     config_file: str | Path | None = None, workers: int | None = None) -> Path:
    """Generate the benchmark once into ``cache_dir()/benchmarks/<profile>-s<seed>-<hash>/``; reuse it afterwards."""
    from semcov_lib.paths import cache_dir

    cfg = benchmark_config(profile, config_file=config_file, overrides=overrides)
    target = cache_dir() / "benchmarks" / f"{profile}-s{int(seed)}-{config_hash(cfg, seed)}"
    if (target / CONFIG_FILE).is_file():
        return target
    try:
        return generate_benchmark(cfg, target, seed, workers=workers, overwrite=True, _keep_existing=True)
    except OSError:
        if (target / CONFIG_FILE).is_file():  # another process finished first
            return target
        raise


def load_benchmark(profile: str = "default", seed: int = 0, overrides: dict[str, Any] | None = None,
                   config_file: str | Path | None = None, **loader_options: Any):
    """Ensure the benchmark exists and read it as an :class:`~semcov_lib.data.table.SCITable`."""
    from semcov_lib.data.datasets.milk10k import load_milk10k

    root = ensure_benchmark(profile, seed, overrides=overrides, config_file=config_file)
    table = load_milk10k(root, **loader_options)
    table.name = f"benchmark-{profile}-s{int(seed)}"
    table.meta.update({"benchmark_profile": profile, "benchmark_seed": int(seed),
                       "benchmark_config": load_yaml(root / CONFIG_FILE)})
    return table


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m semcov_lib generate``."""
    parser.add_argument("--profile", default="default", choices=sorted(BENCHMARK_PROFILES), help="size profile")
    parser.add_argument("--configuration", default="default", choices=sorted(BENCHMARK_CONFIGS),
                        help="named benchmark configuration (its overrides come before --config and --set)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--out", default=None, help="output folder (default: the cache, reused if present)")
    parser.add_argument("--config", default=None, help="YAML file of BenchmarkConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable)")
    parser.add_argument("--workers", type=int, default=None, help="render/encode threads")


def run(args: argparse.Namespace) -> int:
    """Generate the benchmark and print a one-line summary."""
    from_file = load_yaml(args.config) if args.config else {}
    for key in ("seed", "generator_version"):  # a benchmark_config.yaml written by generate_benchmark
        from_file.pop(key, None)
    named = configuration_overrides(getattr(args, "configuration", "default"), args.profile)
    overrides = {**named, **from_file, **parse_overrides(args.overrides)}  # named < YAML file < --set
    cfg = benchmark_config(args.profile, overrides=overrides)
    t0 = time.perf_counter()
    if args.out:
        out = generate_benchmark(cfg, args.out, args.seed, workers=args.workers)
    else:
        out = ensure_benchmark(args.profile, args.seed, overrides=overrides or None, workers=args.workers)
    elapsed = time.perf_counter() - t0
    meta = pd.read_csv(out / METADATA_FILE, usecols=["split"])
    counts = meta["split"].value_counts()
    names = (*SPLIT_ORDER, REFERENCE_SPLIT) if REFERENCE_SPLIT in counts else SPLIT_ORDER
    parts = ", ".join(f"{s} {int(counts.get(s, 0))}" for s in names)
    print(f"benchmark {args.profile} seed {args.seed}: {len(meta)} images ({parts}), {cfg.n_classes} classes, "
          f"{cfg.image_size}x{cfg.image_size} px, {elapsed:.1f} s -> {out}")
    return 0
