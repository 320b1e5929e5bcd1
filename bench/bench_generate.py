"""Benchmark generation speed: median wall time of generating a benchmark profile (target: default <= 10 s).

    .venv/bin/python bench/bench_generate.py [--profile default] [--configuration NAME] [--repeats 5] [--workers N]

Each repeat writes a fresh copy into a temporary folder (JPEG files, CSVs, uint8 bundle), so the
time includes everything ``python -m semcov_lib generate`` does. The render-only time (no JPEG,
no files) is reported separately. Timings on a shared machine are noisy: read the median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from semcov_lib.data import benchmark as bm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=sorted(bm.BENCHMARK_PROFILES))
    parser.add_argument("--configuration", default="default", choices=sorted(bm.BENCHMARK_CONFIGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = bm.benchmark_config(args.profile, overrides=bm.configuration_overrides(args.configuration, args.profile))
    n = cfg.n_images
    full, render = [], []
    with tempfile.TemporaryDirectory(prefix="semcov-bench-", dir=bm_parent()) as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"run{i}"
            t0 = time.perf_counter()
            bm.generate_benchmark(cfg, out, seed=args.seed, workers=args.workers)
            full.append(time.perf_counter() - t0)
            shutil.rmtree(out)  # not timed
            t0 = time.perf_counter()
            bm.render_images(cfg, seed=args.seed)
            render.append(time.perf_counter() - t0)
            print(f"repeat {i + 1}/{args.repeats}: generate {full[-1]:.2f} s, render only (1 thread) {render[-1]:.2f} s",
                  flush=True)
    med, med_r = statistics.median(full), statistics.median(render)
    print(f"profile {args.profile}, configuration {args.configuration}: {n} images of {cfg.image_size}x{cfg.image_size} px; "
          f"median generate {med:.2f} s ({n / med:.0f} images/s, min {min(full):.2f} s, max {max(full):.2f} s); "
          f"median render only {med_r:.2f} s ({n / med_r:.0f} images/s); target <= 10 s: "
          f"{'met' if med <= 10 else 'NOT met'}")


def bm_parent() -> str:
    """Time on the cache's file system, where ensure_benchmark writes (often not tmpfs)."""
    from semcov_lib.paths import cache_dir

    return str(cache_dir())


if __name__ == "__main__":
    main()
