"""Training-step cost of every method relative to ERM, measured side by side in one run.

For each protocol (the compact CNN trained end to end on 64 px images, and the `default`
profile's head on cached EfficientNet-Lite0 features) it times forward + loss + backward +
optimiser step on the same random batch, interleaving methods round-robin so machine noise
hits all of them alike, and prints the median step time, images/s and the ratio to ERM.

    .venv/bin/python bench/bench_train_step.py [--repeats 30] [--batch 64] [--methods erm semcovnet]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from semcov_lib.models.backbones import extract_features
from semcov_lib.models.methods import METHODS, build_method
from semcov_lib.models.methods.base import DataInfo, TrainContext
from semcov_lib.models.text_embed import descriptor_text

DESCRIPTORS = ["MONET_ulceration_crust", "MONET_hair", "MONET_vasculature_vessels", "MONET_erythema",
               "MONET_pigmented", "MONET_gel_water_drop_fluid_dermoscopy_liquid",
               "MONET_skin_markings_pen_ink_purple_pen"]


def make_info(input_shape, cached: bool, n_classes: int = 6, n_subgroups: int = 6) -> DataInfo:
    rng = np.random.default_rng(0)
    return DataInfo(
        classes=[f"C{i}" for i in range(n_classes)], descriptors=DESCRIPTORS, descriptor_text=descriptor_text(DESCRIPTORS),
        subgroups=[str(i) for i in range(n_subgroups)], class_counts=np.geomspace(2000, 100, n_classes).astype(int),
        coverage=rng.uniform(0.001, 0.9, (n_classes, len(DESCRIPTORS), n_subgroups)),
        group_counts=np.full((n_classes, n_subgroups), 50), prevalence=rng.uniform(0.05, 0.5, len(DESCRIPTORS)),
        input_shape=tuple(input_shape), features_cached=cached,
    )


def make_batch(info: DataInfo, batch: int) -> dict:
    g = torch.Generator().manual_seed(0)
    desc = torch.rand(batch, info.n_descriptors, generator=g)
    return {
        "x": torch.randn(batch, *info.input_shape, generator=g),
        "y": torch.randint(0, info.n_classes, (batch,), generator=g),
        "desc": desc, "desc_mask": torch.ones_like(desc),
        "subgroup": torch.randint(0, info.n_subgroups, (batch,), generator=g),
        "index": torch.arange(batch),
    }


def bench(protocol: str, input_shape, cached: bool, methods: list[str], batch: int, repeats: int) -> None:
    info = make_info(input_shape, cached)
    data = make_batch(info, batch)
    # epoch 5 of 10: every warm-up (CDI regulariser, prototypes) is over, as in most of training
    ctx = TrainContext(epoch=5, n_epochs=10, step=1000)
    models, opts = {}, {}
    for name in methods:
        torch.manual_seed(0)
        hp = {"backbone": "cached" if cached else "cnn"}
        models[name] = build_method(name, info, hp)
        models[name].on_epoch_start(ctx)
        models[name].train()
        opts[name] = torch.optim.AdamW([p for p in models[name].parameters() if p.requires_grad], lr=1e-3)

    def step(name):
        model, opt = models[name], opts[name]
        out = model(data)
        loss, _ = model.loss(data, out, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.after_step(data, out, ctx)

    for name in methods:  # warm-up
        for _ in range(3):
            step(name)
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name in methods:  # round-robin: noise hits every method alike
            t0 = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - t0)
    base = np.median(times["erm"])
    print(f"\n{protocol}: batch {batch}, input {tuple(input_shape)}, {torch.get_num_threads()} threads, "
          f"{repeats} interleaved repeats (medians)")
    print(f"{'method':<18}{'step ms':>10}{'img/s':>10}{'x ERM':>8}")
    for name in methods:
        med = np.median(times[name])
        print(f"{name:<18}{1000 * med:>10.1f}{batch / med:>10.0f}{med / base:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--feature-shape", type=int, nargs=3, default=None,
                        help="cached feature shape C h w (default: what Lite0 gives at 96 px)")
    args = parser.parse_args()
    methods = ["erm"] + [m for m in args.methods if m != "erm"]
    bench("compact CNN, end to end, 64 px", (3, 64, 64), False, methods, args.batch, args.repeats)
    if args.feature_shape is None:
        shape = tuple(extract_features(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), input_size=96).shape[1:])
    else:
        shape = tuple(args.feature_shape)
    bench("default protocol: head on cached Lite0 features", shape, True, methods, 128, args.repeats)


if __name__ == "__main__":
    main()
