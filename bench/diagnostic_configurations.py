"""Paired stress-split comparison of methods and the oracle on any named benchmark configurations.

    .venv/bin/python bench/diagnostic_configurations.py compositional shortcut [--methods erm erm_desc semcovnet groupdro]
        [--seeds 0 1 2] [--benchmark-seed 0] [--jobs 2] [--set KEY=VALUE [KEY=VALUE ...]]

The same runs and statistics as notebook 04's configuration table (``plan.configuration_configs``,
``results.configuration_paired``: every method and the balanced-coverage oracle against ERM, 3
seeds, hierarchical paired bootstrap), for configurations the pipeline does not train, such as
the diagnostic ``compositional`` and ``shortcut`` (``semcov_lib/data/benchmark/config.py``).
``--set`` passes SemCovNet hyper-parameters (e.g. ``cdi_mode=closed_loop lambda_cdi=3``).
``--benchmark-seed`` draws the configurations afresh (the pipeline's benchmarks are seed 0): a
held-out replication of any configuration. Runs go to the usual run folders and are reused. Prints one line per (configuration, method, metric).
"""

from __future__ import annotations

import argparse
import dataclasses

from semcov_lib.config import parse_overrides
from semcov_lib.experiment import plan, results
from semcov_lib.experiment.train import train_many

METRICS = ("cdi", "cdi_within", "macro_f1", "balanced_accuracy", "tail_accuracy", "worst_group_accuracy",
           "head_error", "middle_error", "tail_error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configurations", nargs="+")
    parser.add_argument("--methods", nargs="+", default=["erm", "erm_desc", "semcovnet", "groupdro"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--benchmark-seed", type=int, default=0, help="seed of the benchmark draws (pipeline: 0)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="SemCovNet hyper-parameters")
    args = parser.parse_args()
    grid = plan.configuration_configs("default", args.seeds, args.configurations, args.methods)
    hp = parse_overrides(args.set)
    grid = {key: [dataclasses.replace(c, benchmark_seed=args.benchmark_seed,
                                      hp={**c.hp, **hp} if key[1] == "semcovnet" else c.hp) for c in cs]
            for key, cs in grid.items()}
    train_many(plan.flatten(grid), jobs=args.jobs)
    table = results.configuration_paired(grid, args.configurations, args.methods, n_boot=1000)
    for _, r in table[table["metric"].isin(METRICS)].iterrows():
        print(f"{r['configuration']:16s} {r['method']:10s} vs {r['baseline']:9s} {r['metric']:13s} "
              f"{r['a']:.3f} -> {r['b']:.3f}  delta {r['delta']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
              f"{' *' if r['significant'] else ''}")


if __name__ == "__main__":
    main()
