"""Benchmark: vectorised coverage + CDI + bootstrap against a straightforward pandas version.

    .venv/bin/python bench/bench_cdi.py [--n 100000] [--n-boot 1000] [--repeats 5] [--slow-boot-reps 20]
        [--paired-n 10000] [--calibration 0]

Also timed: the hierarchical paired bootstrap (one method pair x 3 seeds x 2000 draws x the
default metrics on ``--paired-n`` evaluation samples). ``--calibration R`` estimates the coverage
of the percentile and BCa 95% CIs of the CDI over R simulated evaluation splits of 2000 samples
(true CDI from one evaluation split of 400,000 samples).

Workload (the performance requirement of docs/METHODS.md, section "Coverage Disparity Index" in this project): training coverage from
``n`` training samples and the CDI with ``n_boot`` bootstrap resamples on ``n`` evaluation
samples, 11 classes, 7 descriptors (5% missing), 6 subgroups, soft weights, m = 5.

The slow reference is what one would write first with pandas: long format (one row per sample and
descriptor), ``groupby([class, descriptor, subgroup])`` sums for coverage and per-SCG error,
``scipy.stats.spearmanr`` over valid SCGs, and for the bootstrap the same per resample
(``iloc`` on resampled rows). Its bootstrap runs only ``--slow-boot-reps`` resamples and is
extrapolated linearly to ``n_boot`` (said in the output). Point estimates of both must agree
(exit code 1 otherwise); timings are medians of ``--repeats`` runs, wall clock and process CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from semcov_lib.sci.cdi import Resampling, SCGReference, compute_cdi, weighted_spearman
from semcov_lib.sci.coverage import coverage_array
from semcov_lib.sci.paired import DEFAULT_METRICS, SeedPair, paired_bootstrap

T, K, S = 11, 7, 6


def make_data(n: int, seed: int = 0):
    """Long-tailed classes, class- and subgroup-dependent descriptors, errors rising at low coverage."""
    rng = np.random.default_rng(seed)
    class_p = 0.7 ** np.arange(T)
    class_p /= class_p.sum()
    base = rng.beta(0.6, 1.4, size=(T, K, S))  # mean descriptor score per SCG

    def split(m):
        y = rng.choice(T, size=m, p=class_p)
        s = rng.integers(0, S, size=m)
        a = np.clip(base[y, :, s] + rng.normal(0, 0.15, size=(m, K)), 0, 1)
        a[rng.random((m, K)) < 0.05] = np.nan
        return y, s, a

    y_tr, s_tr, a_tr = split(n)
    y_ev, s_ev, a_ev = split(n)
    cov_mean = np.nanmean(base[y_ev, :, s_ev] * np.nan_to_num(a_ev, nan=0.5), axis=1)
    p_err = np.clip(0.45 - 0.6 * cov_mean, 0.02, 0.9)
    wrong = rng.random(n) < p_err
    pred = np.where(wrong, (y_ev + rng.integers(1, T, size=n)) % T, y_ev)
    return (y_tr, s_tr, a_tr), (y_ev, s_ev, a_ev, pred)


def fast(train, evaluation, n_boot: int, seed: int = 0, ci_method: str = "percentile"):
    y_tr, s_tr, a_tr = train
    y_ev, s_ev, a_ev, pred = evaluation
    reference = SCGReference.from_training(y_tr, s_tr, a_tr, [str(c) for c in range(T)],
                                           subgroup_levels=[str(g) for g in range(S)])
    return compute_cdi(reference, y_ev, pred, s_ev, a_ev,
                       resampling=Resampling(n_boot=n_boot, n_perm=0, seed=seed, ci_method=ci_method))


def bench_paired(n: int, n_boot: int = 2000, n_seeds: int = 3) -> None:
    """Time one method pair x n_seeds x n_boot draws of the default paired metrics."""
    train, (y, s, a, pred) = make_data(n, 1)
    reference = SCGReference.from_training(*train, [str(c) for c in range(T)],
                                           subgroup_levels=[str(g) for g in range(S)])
    rng = np.random.default_rng(0)

    def probs(flip):
        p = rng.dirichlet(np.ones(T), size=n) * 0.5
        p[np.arange(n), np.where(rng.random(n) < flip, rng.integers(0, T, n), pred)] += 1
        return p / p.sum(1, keepdims=True)

    pairs = [SeedPair(y, s, a, probs(0.1), probs(0.05)) for _ in range(n_seeds)]
    paired_bootstrap(pairs, reference, n_boot=20)  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    table = paired_bootstrap(pairs, reference, DEFAULT_METRICS, n_boot=n_boot, seed=0)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"paired 1 pair x {n_seeds} seeds x {n_boot} draws x {len(DEFAULT_METRICS)} metrics on {n} samples: "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU")
    print(table[["metric", "a", "b", "delta", "ci_low", "ci_high", "p"]].to_string(index=False, float_format="%.4f"))


def calibration(reps: int, n_eval: int = 2000, n_boot: int = 1000) -> None:
    """Share of percentile / BCa 95% CIs of the CDI that contain two targets.

    (a) the CDI of the population per-SCG errors (from 400,000 evaluation samples) over the
    split's valid SCGs: the coverage-error relation free of evaluation noise; (b) the mean CDI over
    the ``reps`` splits: what the estimator gives on average at this evaluation size. Noise in the
    per-SCG errors attenuates |rho|, so (b) < (a).
    """
    from scipy.stats import binomtest, spearmanr

    train, _ = make_data(n_eval, 0)
    _, big = make_data(400_000, 0)  # same generator and seed: the same per-SCG descriptor means
    population = fast(train, big, 0).per_scg["error"].to_numpy()
    intervals = {"percentile": [], "bca": []}
    truths, estimates = [], []
    for r in range(reps):
        _, evaluation = _resplit(n_eval, r)
        for method in intervals:
            res = fast(train, evaluation, n_boot, seed=r, ci_method=method)
            intervals[method].append((res.ci_low, res.ci_high))
        valid = res.per_scg["valid"].to_numpy()
        truths.append(abs(spearmanr(res.per_scg["coverage"].to_numpy()[valid], population[valid]).statistic))
        estimates.append(res.cdi)
    targets = {"(a) population-error CDI": np.array(truths), "(b) mean CDI at this size": np.mean(estimates)}
    print(f"calib  {reps} evaluation splits of {n_eval}: CDI mean {np.mean(estimates):.3f} (sd {np.std(estimates):.3f}); "
          f"population-error CDI mean {np.mean(truths):.3f}")
    for method, iv in intervals.items():
        iv = np.array(iv)
        for name, target in targets.items():
            k = int(np.sum((iv[:, 0] <= target) & (target <= iv[:, 1])))
            ci = binomtest(k, reps).proportion_ci(method="wilson")
            print(f"calib  {method:10s} 95% CI covers {name}: {k}/{reps} = {k / reps:.2f} "
                  f"[Wilson {ci.low:.2f}, {ci.high:.2f}]; mean width {np.mean(iv[:, 1] - iv[:, 0]):.3f}")


def _resplit(n_eval: int, r: int):
    """A fresh evaluation split from the same data-generating process (generator seed 0, draw r)."""
    _, (y, s, a, pred) = make_data(n_eval * (r + 2), 0)
    return None, (y[-n_eval:], s[-n_eval:], a[-n_eval:], pred[-n_eval:])


# --------------------------------------------------------------------------- slow pandas reference
def _long(y, s, a, extra=None) -> pd.DataFrame:
    frame = pd.DataFrame(a, columns=[f"d{k}" for k in range(K)])
    frame["label"], frame["subgroup"] = y, s
    if extra is not None:
        frame["err"] = extra
    id_vars = ["label", "subgroup"] + (["err"] if extra is not None else [])
    long = frame.melt(id_vars=id_vars, var_name="descriptor", value_name="w")
    long["descriptor"] = long["descriptor"].str[1:].astype(int)
    return long


def slow_coverage(y, s, a) -> pd.Series:
    g = _long(y, s, a).groupby(["label", "descriptor", "subgroup"])["w"]
    table = pd.DataFrame({"support": g.sum(), "n_obs": g.count()})  # count() skips NaN
    return table["support"] / table["n_obs"]


def slow_scg_error(y, s, a, err) -> pd.DataFrame:
    long = _long(y, s, a, err).dropna(subset=["w"])
    long["we"] = long["w"] * long["err"]
    g = long.groupby(["label", "descriptor", "subgroup"])
    return pd.DataFrame({"num": g["we"].sum(), "den": g["w"].sum()})


def slow_cdi(coverage: pd.Series, y, s, a, err, min_weight=5.0) -> dict:
    scg = slow_scg_error(y, s, a, err).join(coverage.rename("coverage"), how="outer")
    scg["error"] = scg["num"] / scg["den"]
    valid = scg[(scg["den"] >= min_weight) & scg["coverage"].notna()]
    rho = spearmanr(valid["coverage"], valid["error"]).statistic
    return {
        "cdi": abs(rho), "signed_rho": rho,
        "pearson_log": pearsonr(np.log(valid["coverage"] + 1e-3), valid["error"]).statistic,
        "weighted": abs(weighted_spearman(valid["coverage"].to_numpy(), valid["error"].to_numpy(),
                                          valid["den"].to_numpy())),
        "n_valid": len(valid), "scg": scg,
    }


def slow_bootstrap(coverage, y, s, a, err, n_reps, seed=0, min_weight=5.0) -> list[float]:
    rng = np.random.default_rng(seed)
    wide = pd.DataFrame(a)
    wide["y"], wide["s"], wide["err"] = y, s, err
    out = []
    for _ in range(n_reps):
        sample = wide.iloc[rng.integers(0, len(wide), len(wide))]
        res = slow_cdi(coverage, sample["y"].to_numpy(), sample["s"].to_numpy(),
                       sample[list(range(K))].to_numpy(), sample["err"].to_numpy(), min_weight)
        out.append(res["cdi"])
    return out


# --------------------------------------------------------------------------- main
def timed(fn, repeats: int):
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-repeats", type=int, default=3)
    parser.add_argument("--slow-boot-reps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paired-n", type=int, default=10_000)
    parser.add_argument("--calibration", type=int, default=0, help="replicates of the CI coverage study (0: skip)")
    args = parser.parse_args(argv)

    train, evaluation = make_data(args.n, args.seed)
    y_ev, s_ev, a_ev, pred = evaluation
    err = (pred != y_ev).astype(float)
    print(f"workload: {args.n} train + {args.n} eval samples, {T} classes, {K} descriptors, {S} subgroups, "
          f"{args.n_boot} bootstrap resamples")

    fast(train, evaluation, 10)  # warm-up (imports, caches)
    f_wall, f_cpu, res = timed(lambda: fast(train, evaluation, args.n_boot, args.seed), args.repeats)
    print(f"fast   coverage + CDI + {args.n_boot} bootstraps: median {f_wall:.3f} s wall, {f_cpu:.3f} s CPU "
          f"({args.repeats} runs)  CDI {res.cdi:.4f} [{res.ci_low:.4f}, {res.ci_high:.4f}], {res.n_valid} valid SCGs")

    def slow_point():
        cov = slow_coverage(*train)
        return cov, slow_cdi(cov, y_ev, s_ev, a_ev, err)

    s_wall, s_cpu, (cov_slow, point) = timed(slow_point, args.slow_repeats)
    b_wall, b_cpu, boot = timed(lambda: slow_bootstrap(cov_slow, y_ev, s_ev, a_ev, err, args.slow_boot_reps,
                                                       args.seed), 1)
    scale = args.n_boot / args.slow_boot_reps
    slow_wall, slow_cpu = s_wall + b_wall * scale, s_cpu + b_cpu * scale
    print(f"slow   pandas groupby coverage + CDI: median {s_wall:.3f} s wall; bootstrap {args.slow_boot_reps} "
          f"resamples {b_wall:.2f} s, extrapolated linearly x{scale:g} to {args.n_boot}: total {slow_wall:.1f} s "
          f"wall, {slow_cpu:.1f} s CPU")
    print(f"ratio  slow / fast: {slow_wall / f_wall:.0f}x wall, {slow_cpu / f_cpu:.0f}x CPU")

    # equality of the point estimates
    fast_cov = coverage_array(*train, T, S)
    scg = point["scg"]
    idx = tuple(np.array(scg.index.get_level_values(name)) for name in ("label", "descriptor", "subgroup"))
    checks = {
        "coverage": np.allclose(fast_cov[idx], scg["coverage"].to_numpy(), equal_nan=True, atol=1e-12),
        "per-SCG error": np.allclose(res.per_scg.set_index(["class_idx", "descriptor_idx", "subgroup_idx"])
                                     .loc[list(zip(*idx)), "error"].to_numpy(), scg["error"].to_numpy(),
                                     equal_nan=True, atol=1e-12),
        "n_valid": res.n_valid == point["n_valid"],
    }
    for key in ("cdi", "signed_rho", "pearson_log", "weighted"):
        checks[key] = bool(np.isclose(getattr(res, key), point[key], atol=1e-10))
    ok = all(checks.values())
    print("equal  point estimates (coverage, per-SCG error, n_valid, cdi, signed_rho, pearson_log, weighted): "
          + ("yes" if ok else "NO " + str({k: v for k, v in checks.items() if not v})))
    print(f"check  fast <= 2 s: {'yes' if f_wall <= 2 else 'no'} ({f_wall:.2f} s wall median); "
          f"ratio >= 50x: {'yes' if slow_wall / f_wall >= 50 else 'no'}")
    print(f"note   slow bootstrap CDI of its {len(boot)} resamples: mean {np.mean(boot):.4f} "
          f"(fast bootstrap mean {np.nanmean(res.boot):.4f})")
    if args.paired_n:
        bench_paired(args.paired_n)
    if args.calibration:
        calibration(args.calibration)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
