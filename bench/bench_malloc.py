"""glibc's default memory return against :func:`semcov_lib.memory.keep_freed_memory`, side by side.

Each measurement runs in a fresh child process (the setting is per process), alternating the two
settings so machine noise hits both alike:

1. feature extraction of random 64 px images with the default worker processes;
2. one real `default`-profile training run (SemCovNet, seed 0, one thread) into a temporary folder
   (the embedded benchmark is generated into the cache first if it is missing).

Prints median wall, user and system seconds, the wall ratio, and whether both settings gave the
same features and the same run metrics (they must: only where freed memory goes changes).

    .venv/bin/python bench/bench_malloc.py [--images 4096] [--repeats 3] [--method semcovnet]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SETTINGS = {"glibc default": "0", "keep freed memory": "1"}


def _cpu() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def child_extract(n: int) -> str:
    import torch

    from semcov_lib.models.backbones import extract_features

    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return hashlib.sha1(extract_features(images).numpy().tobytes()).hexdigest()


def child_train(method: str) -> tuple[str, tuple[tuple[float, float], float]]:
    """The run's headline metrics and the (CPU, wall) clock at its start (data caches filled first)."""
    import torch

    from semcov_lib.experiment.batches import prepare_data
    from semcov_lib.experiment.protocol import train_config
    from semcov_lib.experiment.train import train

    torch.set_num_threads(1)
    config = train_config(method, "default", 0)
    prepare_data(config)  # fills the caches outside the timed part on a first call
    with tempfile.TemporaryDirectory() as folder:
        start = _cpu(), time.perf_counter()
        metrics = train(config, folder, progress=False)
    return json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "cdi")}, sort_keys=True), start


def run_child(task: list[str], setting: str) -> dict:
    env = dict(os.environ, SEMCOV_KEEP_FREED_MEMORY=setting)
    out = subprocess.run([sys.executable, __file__, "--child", *task], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_main(task: list[str]) -> None:
    cpu0, t0 = _cpu(), time.perf_counter()
    if task[0] == "extract":
        result = child_extract(int(task[1]))
    else:
        result, (cpu0, t0) = child_train(task[1])
    cpu1 = _cpu()
    print(json.dumps({"wall": time.perf_counter() - t0, "user": cpu1[0] - cpu0[0], "sys": cpu1[1] - cpu0[1],
                      "result": result}))


def compare(title: str, task: list[str], repeats: int) -> None:
    rows = {name: [] for name in SETTINGS}
    for _ in range(repeats):
        for name, setting in SETTINGS.items():  # alternating: noise hits both alike
            rows[name].append(run_child(task, setting))
    print(f"\n{title}: {repeats} alternating repeats (medians)")
    print(f"{'setting':<20}{'wall s':>9}{'user s':>9}{'sys s':>9}")
    for name, runs in rows.items():
        med = {k: np.median([r[k] for r in runs]) for k in ("wall", "user", "sys")}
        print(f"{name:<20}{med['wall']:>9.1f}{med['user']:>9.1f}{med['sys']:>9.1f}")
    walls = [np.median([r["wall"] for r in runs]) for runs in rows.values()]
    same = len({r["result"] for runs in rows.values() for r in runs}) == 1
    print(f"wall ratio (keep / default): {walls[1] / walls[0]:.2f}; identical results: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="semcovnet")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return
    compare(f"feature extraction, {args.images} images", ["extract", str(args.images)], args.repeats)
    compare(f"one default run ({args.method}, seed 0, one thread)", ["train", args.method], args.repeats)


if __name__ == "__main__":
    main()
