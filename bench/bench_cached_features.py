"""The cached-feature path of the `default` profile, old way against new, side by side in one run.

1. Feature extraction (frozen Lite0, 64 px images resized to 96 px): one process with the
   machine's intra-op threads (how features were extracted before) against
   :func:`~semcov_lib.models.backbones.extract_features` (single-threaded worker processes, one per
   usable core, spawn start-up included). Prints the median seconds, images/s, the ratio, and
   whether the two give the same float16 features.
2. The trainable adapter's 1x1 convolution: ``conv2d`` against the matrix product
   :class:`~semcov_lib.models.backbones.CachedFeatureAdapter` uses, forward + backward on one
   training batch with one thread (a grid worker's setting); median milliseconds and the ratio.

    .venv/bin/python bench/bench_cached_features.py [--images 4096] [--repeats 3] [--steps 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from semcov_lib.models.backbones import (_feature_net, _features, extract_features, usable_cores)


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def bench_extraction(n: int, repeats: int) -> None:
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    net = _feature_net(96, torch.device("cpu"))
    threads = torch.get_num_threads()
    old_s, old = median_seconds(lambda: _features(net, images, 64, progress=False), repeats)
    new_s, new = median_seconds(lambda: extract_features(images), repeats)
    print(f"feature extraction, {n} images of 64 px at 96 px, median of {repeats}:")
    print(f"  one process, {threads} threads       {old_s:6.1f} s  {n / old_s:6.0f} img/s")
    print(f"  {usable_cores()} single-thread processes    {new_s:6.1f} s  {n / new_s:6.0f} img/s  "
          f"speed-up {old_s / new_s:.2f}x")
    differ = (old != new).float().mean().item()
    print(f"  features that differ between the two: {differ:.3%} (max |diff| "
          f"{(old.float() - new.float()).abs().max().item():.2g})")


def bench_adapter(steps: int) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1280, 3, 3, generator=g).half()  # cached features are float16
    weight = torch.randn(256, 1280, 1, 1, generator=g, requires_grad=True)
    ways = {
        "conv2d": lambda: F.conv2d(x.float(), weight),
        "matrix product": lambda: F.linear(x.movedim(1, -1).contiguous().float(), weight.flatten(1)).movedim(-1, 1),
    }
    times = {name: [] for name in ways}
    for _ in range(steps):  # round-robin, so machine noise hits both alike
        for name, fn in ways.items():
            t = time.perf_counter()
            fn().square().mean().backward()
            times[name].append(time.perf_counter() - t)
    base = np.median(times["conv2d"])
    print(f"adapter 1x1 conv 1280 -> 256 on (128, 1280, 3, 3), forward + backward, 1 thread, median of {steps}:")
    for name, ts in times.items():
        print(f"  {name:15s} {np.median(ts) * 1e3:6.1f} ms  ratio to conv2d {np.median(ts) / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    bench_extraction(args.images, args.repeats)
    bench_adapter(args.steps)


if __name__ == "__main__":
    main()
