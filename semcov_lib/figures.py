"""Figure functions shared by the notebooks and the audit.

Each function takes computed results (tidy DataFrames or arrays; never raw data it has to
model), returns a matplotlib ``Figure`` built with ``plotting.figure`` (fixed sizes, project
theme) and never saves: callers use ``plotting.savefig``. Results tables follow the column names
of ``coverage.coverage_table``, ``cdi.CDIResult.per_scg``, ``metrics.evaluate`` and
``experiments.results_frame``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from semcov_lib.plotting import STRATUM_COLOURS, figure

COVERAGE_FLOOR = 1e-3  # zero coverage is drawn at this value on log axes


def _per_scg(result) -> pd.DataFrame:
    """A per-SCG table from a CDIResult or a DataFrame with coverage/error(/valid)."""
    frame = getattr(result, "per_scg", result)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a CDIResult or a DataFrame, got {type(result).__name__}")
    return frame


def _rho_text(result, frame: pd.DataFrame) -> str:
    rho = getattr(result, "signed_rho", None)
    if rho is None:
        from semcov_lib.cdi import spearman

        rows = frame[frame["valid"]] if "valid" in frame else frame
        rho = spearman(rows["coverage"].to_numpy(float), rows["error"].to_numpy(float)) if len(rows) >= 3 else np.nan
    return f"ρ = {rho:.2f}" if np.isfinite(rho) else "ρ undefined"


# --------------------------------------------------------------------------- coverage
def coverage_long_tail(coverage: pd.DataFrame, title: str | None = None) -> Figure:
    """SCG coverage sorted from high to low on a log axis, coloured by Tail/Middle/Head stratum."""
    from semcov_lib.coverage import assign_strata

    frame = coverage[np.isfinite(coverage["coverage"].to_numpy(float))]
    values = frame["coverage"].to_numpy(float)
    strata = frame["stratum"].to_numpy(object) if "stratum" in frame else assign_strata(values)
    order = np.argsort(-values, kind="stable")
    values, strata = values[order], strata[order]
    fig, ax = figure("wide")
    x = np.arange(len(values))
    for name, colour in STRATUM_COLOURS.items():
        sel = strata == name
        ax.bar(x[sel], np.maximum(values[sel], COVERAGE_FLOOR), width=1.0, color=colour, label=name, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, max(len(values), 1) - 0.5)
    ax.set_xlabel("SCG (sorted by coverage)")
    ax.set_ylabel("training coverage")
    ax.legend(title="stratum", frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def coverage_heatmaps(coverage: np.ndarray, classes: Sequence[str], descriptors: Sequence[str],
                      subgroups: Sequence[str] | None = None, ncols: int = 3) -> Figure:
    """Class x descriptor coverage heatmap per subgroup (small multiples, shared colour bar).

    ``coverage`` is (T, K, S); NaN cells (no training sample) are grey. Axes: S panels + 1 colour bar.
    """
    cov = np.asarray(coverage, dtype=float)
    if cov.ndim == 2:
        cov = cov[:, :, None]
    T, K, S = cov.shape
    subgroups = [str(i) for i in range(S)] if subgroups is None else list(subgroups)
    ncols = min(ncols, S)
    nrows = math.ceil(S / ncols)
    fig, axes = figure("grid" if nrows > 1 else "wide", nrows=nrows, ncols=ncols, squeeze=False,
                       layout="constrained")
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = None
    for i, ax in enumerate(axes.ravel()):
        if i >= S:
            ax.remove()
            continue
        image = ax.imshow(np.ma.masked_invalid(cov[:, :, i]), vmin=0, vmax=1, cmap=cmap, aspect="auto",
                          interpolation="nearest")
        ax.set_title(subgroups[i])
        ax.set_xticks(range(K), [str(d) for d in descriptors], rotation=90, fontsize="x-small")
        ax.set_yticks(range(T), [str(c) for c in classes] if i % ncols == 0 else [""] * T, fontsize="x-small")
        ax.grid(False)
    fig.colorbar(image, ax=[a for a in axes.ravel()[:S]], label="coverage", shrink=0.8)
    return fig


def prevalence_vs_coverage(coverage: pd.DataFrame) -> Figure:
    """Per (class, descriptor): global prevalence pi_k against class coverage (pooled over subgroups)."""
    frame = coverage.copy()
    frame["support"] = frame["support"].fillna(0.0)
    pooled = frame.groupby(["class", "descriptor"], sort=False).agg(
        support=("support", "sum"), n_obs=("n_obs", "sum"), prevalence=("prevalence", "first")).reset_index()
    pooled = pooled[pooled["n_obs"] > 0]
    cov = pooled["support"] / pooled["n_obs"]
    fig, ax = figure("square")
    above = cov >= pooled["prevalence"]
    ax.scatter(pooled["prevalence"][above], cov[above], s=12, color=STRATUM_COLOURS["Head"], label="excess ≥ 0")
    ax.scatter(pooled["prevalence"][~above], cov[~above], s=12, color=STRATUM_COLOURS["Tail"], label="excess < 0")
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("global prevalence π_k")
    ax.set_ylabel("class coverage")
    ax.legend(frameon=False, fontsize="small")
    return fig


def permutation_null_hist(null, observed: float | None = None, p_value: float | None = None) -> Figure:
    """Histogram of the permutation null with the observed statistic (PermutationResult accepted)."""
    if hasattr(null, "null"):
        observed = null.statistic if observed is None else observed
        p_value = null.p_value if p_value is None else p_value
        null = null.null
    values = np.asarray(null, dtype=float)
    values = values[np.isfinite(values)]
    fig, ax = figure("single")
    ax.hist(values, bins=min(40, max(5, len(values) // 10)), color=STRATUM_COLOURS["Middle"], label="null")
    if observed is not None and np.isfinite(observed):
        label = "observed" + (f" (p = {p_value:.3g})" if p_value is not None else "")
        ax.axvline(observed, color=STRATUM_COLOURS["Tail"], linewidth=1.5, label=label)
    ax.set_xlabel("across-class variance of coverage")
    ax.set_ylabel("permutations")
    ax.legend(frameon=False, fontsize="small")
    return fig


# --------------------------------------------------------------------------- CDI
def coverage_error_scatter(results, trend: str | None = "linear", min_points: int = 3) -> Figure:
    """Per-SCG error against training coverage (valid SCGs), log x axis, with a fitted trend.

    ``results``: a CDIResult / per-SCG DataFrame, or a mapping name -> one of those (several
    methods on one axis). ``trend``: ``"linear"`` (least squares in log10 coverage), ``"binned"``
    (mean error per coverage quintile) or ``None``. Spearman rho goes into the legend.
    """
    if not isinstance(results, Mapping):
        results = {"": results}
    fig, ax = figure("single")
    palette = iter(["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#949494", "#56b4e9"])
    for name, result in results.items():
        frame = _per_scg(result)
        rows = frame[frame["valid"].astype(bool)] if "valid" in frame else frame
        x = np.maximum(rows["coverage"].to_numpy(float), COVERAGE_FLOOR)
        y = rows["error"].to_numpy(float)
        colour = next(palette, None)
        label = f"{name} ({_rho_text(result, frame)})" if name else _rho_text(result, frame)
        ax.scatter(x, y, s=8, alpha=0.5, color=colour, label=label, linewidth=0)
        if trend and len(x) >= min_points and np.ptp(np.log10(x)) > 0:
            lx = np.log10(x)
            if trend == "linear":
                slope, intercept = np.polyfit(lx, y, 1)
                grid = np.linspace(lx.min(), lx.max(), 50)
                ax.plot(10 ** grid, intercept + slope * grid, color=colour, linewidth=1.5)
            elif trend == "binned":
                edges = np.unique(np.quantile(lx, np.linspace(0, 1, 6)))
                b = np.clip(np.searchsorted(edges, lx, side="right") - 1, 0, len(edges) - 2)
                centres = [10 ** lx[b == i].mean() for i in range(len(edges) - 1) if np.any(b == i)]
                means = [y[b == i].mean() for i in range(len(edges) - 1) if np.any(b == i)]
                ax.plot(centres, means, color=colour, linewidth=1.5, marker="o", markersize=3)
            else:
                raise ValueError(f"trend must be 'linear', 'binned' or None, got {trend!r}")
    ax.set_xscale("log")
    ax.set_xlabel("training coverage")
    ax.set_ylabel("evaluation error")
    ax.legend(frameon=False, fontsize="x-small")
    return fig


def reliability_diagrams(data, ncols: int = 3) -> Figure:
    """Reliability diagram(s) from ``metrics.reliability_data`` tables (one panel per method)."""
    if isinstance(data, pd.DataFrame):
        data = {"": data}
    n = len(data)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = figure("single" if n == 1 else ("wide" if nrows == 1 else "grid"), nrows=nrows, ncols=ncols,
                       squeeze=False, sharey=True)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.remove()
            continue
        name, rel = list(data.items())[i]
        rel = pd.DataFrame(rel)
        used = rel[rel["count"] > 0]
        width = (rel["upper"] - rel["lower"]).to_numpy(float)[0] if len(rel) else 0.1
        ax.bar(used["lower"], used["accuracy"], width=width, align="edge", color=STRATUM_COLOURS["Head"],
               edgecolor="white", label="accuracy")
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8)
        ax.plot(used["confidence"], used["accuracy"], color=STRATUM_COLOURS["Tail"], marker="o", markersize=2,
                linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        if i % ncols == 0:
            ax.set_ylabel("accuracy")
        if name:
            ax.set_title(name)
    return fig


def _column(frame: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def cdi_bar_chart(results, by: str = "method") -> Figure:
    """CDI per method with CI error bars (mean over rows when a method has several seeds).

    ``results``: a DataFrame with ``by``, ``cdi`` and ``cdi_ci_low``/``cdi_ci_high`` (or
    ``ci_low``/``ci_high``), or a mapping method -> CDIResult.
    """
    if isinstance(results, Mapping):
        results = pd.DataFrame([{by: k, "cdi": r.cdi, "ci_low": r.ci_low, "ci_high": r.ci_high}
                                for k, r in results.items()])
    lo_col, hi_col = _column(results, "cdi_ci_low", "ci_low"), _column(results, "cdi_ci_high", "ci_high")
    cols = ["cdi"] + [c for c in (lo_col, hi_col) if c]
    grouped = results.groupby(by, sort=False)[cols].mean(numeric_only=True)
    fig, ax = figure("single")
    x = np.arange(len(grouped))
    cdi = grouped["cdi"].to_numpy(float)
    yerr = None
    if lo_col and hi_col:
        yerr = np.vstack([cdi - grouped[lo_col].to_numpy(float), grouped[hi_col].to_numpy(float) - cdi])
        yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
    ax.bar(x, cdi, yerr=yerr, capsize=3, color=STRATUM_COLOURS["Head"])
    counts = results.groupby(by, sort=False).size()
    if (counts > 1).any():
        for i, key in enumerate(grouped.index):
            pts = results.loc[results[by] == key, "cdi"].to_numpy(float)
            ax.scatter(np.full(len(pts), i), pts, s=8, color="black", zorder=3)
    ax.set_xticks(x, [str(k) for k in grouped.index], rotation=30, ha="right")
    ax.set_ylabel("CDI (lower is better)")
    return fig


def stratum_error_bars(results: pd.DataFrame, by: str = "method") -> Figure:
    """Tail / Middle / Head weighted error per method (grouped bars; SD error bars over seeds)."""
    cols = ["tail_error", "middle_error", "head_error"]
    grouped = results.groupby(by, sort=False)[cols]
    mean, sd = grouped.mean(), grouped.std().fillna(0.0)
    fig, ax = figure("single")
    x = np.arange(len(mean))
    width = 0.27
    for i, (col, name) in enumerate(zip(cols, ("Tail", "Middle", "Head"))):
        ax.bar(x + (i - 1) * width, mean[col], width=width, yerr=sd[col], capsize=2,
               color=STRATUM_COLOURS[name], label=name)
    ax.set_xticks(x, [str(k) for k in mean.index], rotation=30, ha="right")
    ax.set_ylabel("weighted SCG error")
    ax.legend(title="stratum", frameon=False, fontsize="x-small")
    return fig


def ablation_chart(results: pd.DataFrame, by: str = "configuration", metrics: Sequence[str] = ("cdi", "macro_f1")) -> Figure:
    """One panel per metric (default CDI and macro-F1), configurations on x, SD over seeds."""
    fig, axes = figure("wide", ncols=len(metrics), squeeze=False)
    grouped = results.groupby(by, sort=False)
    for ax, metric in zip(axes[0], metrics):
        mean, sd = grouped[metric].mean(), grouped[metric].std().fillna(0.0)
        x = np.arange(len(mean))
        ax.bar(x, mean, yerr=sd, capsize=2, color=STRATUM_COLOURS["Head"] if metric != "cdi" else STRATUM_COLOURS["Tail"])
        ax.set_xticks(x, [str(k) for k in mean.index], rotation=30, ha="right")
        ax.set_ylabel({"cdi": "CDI (lower is better)", "macro_f1": "macro-F1"}.get(metric, metric))
    return fig


def descriptor_attention(frame: pd.DataFrame, value: str | None = None, hue: str | None = "method") -> Figure:
    """Gate value (descriptor-branch share) per descriptor, per method; SD error bars over seeds."""
    import seaborn as sns

    if value is None:
        value = _column(frame, "gate", "descriptor_share_present", "token_weight")
        if value is None:
            raise ValueError("descriptor_attention: no 'gate' / 'descriptor_share_present' column")
    hue = hue if hue in frame.columns else None
    fig, ax = figure("wide")
    sns.barplot(data=frame, x="descriptor", y=value, hue=hue, errorbar="sd", ax=ax, capsize=0.1)
    ax.set_xlabel("")
    ax.set_ylabel(value.replace("_", " "))
    ax.tick_params(axis="x", rotation=45)
    if hue:
        ax.legend(frameon=False, fontsize="x-small")
    return fig


def sensitivity_chart(results: pd.DataFrame, metrics: Sequence[str] = ("cdi", "macro_f1")) -> Figure:
    """Metric vs hyper-parameter value, one column per swept parameter (``param``/``value`` columns)."""
    params = list(dict.fromkeys(results["param"]))
    fig, axes = figure("wide", nrows=len(metrics), ncols=len(params), squeeze=False, sharex="col")
    for j, param in enumerate(params):
        rows = results[results["param"] == param]
        grouped = rows.groupby("value")
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            mean, sd = grouped[metric].mean(), grouped[metric].std().fillna(0.0)
            ax.errorbar(mean.index, mean.to_numpy(float), yerr=sd.to_numpy(float), marker="o", capsize=2,
                        color=STRATUM_COLOURS["Tail"] if metric == "cdi" else STRATUM_COLOURS["Head"])
            if (mean.index > 0).all() and len(mean) > 1:
                ax.set_xscale("log")
            if i == len(metrics) - 1:
                ax.set_xlabel(param.replace("lambda_", "λ_").upper().replace("Λ", "λ"))
            if j == 0:
                ax.set_ylabel({"cdi": "CDI", "macro_f1": "macro-F1"}.get(metric, metric))
    return fig


def tail_sweep_chart(results: pd.DataFrame, metric: str = "cdi", x: str = "tail_exponent") -> Figure:
    """A metric (default CDI) against the benchmark's coverage tail exponent, one line per method."""
    fig, ax = figure("single")
    for method, rows in results.groupby("method", sort=False):
        grouped = rows.groupby(x)[metric]
        mean, sd = grouped.mean(), grouped.std().fillna(0.0)
        ax.errorbar(mean.index, mean.to_numpy(float), yerr=sd.to_numpy(float), marker="o", capsize=2, label=method)
    ax.set_xlabel("coverage tail exponent of the benchmark")
    ax.set_ylabel({"cdi": "CDI (lower is better)", "stress_cdi": "stress-split CDI (lower is better)"}.get(metric, metric))
    ax.legend(frameon=False, fontsize="x-small")
    return fig


def example_predictions(examples: Mapping, top_k: int = 3) -> Figure:
    """A row of images, each titled with its true class, the predictions and its top descriptor scores.

    ``examples``: ``images`` (N,H,W,3 uint8), ``scores`` (N,K), ``labels``, ``descriptors`` and any
    ``preds*`` lists (e.g. ``preds`` and ``preds_erm``), as from ``analysis.example_images``.
    """
    images = examples["images"]
    n = len(images)
    pred_keys = [k for k in examples if k.startswith("preds")]
    fig, axes = figure("wide", ncols=max(n, 1), squeeze=False)
    short = [d.replace("MONET_", "").split("_")[0] for d in examples["descriptors"]]
    for i, ax in enumerate(axes[0]):
        ax.imshow(images[i])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        lines = [f"true {examples['labels'][i]}"]
        lines += [f"{k.replace('preds_', '').replace('preds', 'model')}: {examples[k][i]}" for k in pred_keys]
        scores = np.nan_to_num(np.asarray(examples["scores"][i], float), nan=-1.0)
        top = np.argsort(-scores)[:top_k]
        lines += [f"{short[t]} {scores[t]:.2f}" for t in top if scores[t] >= 0]
        ax.set_title("\n".join(lines), fontsize=5.5)
    return fig


def concept_grid(images: np.ndarray, presence: np.ndarray, descriptors: Sequence[str], n_per: int = 4,
                 seed: int = 0) -> Figure:
    """Sample images per concept: one row per descriptor (images where it is present), plus a
    last row with images that carry no concept. ``images`` (N,H,W,3) uint8, ``presence`` (N,K) bool."""
    presence = np.asarray(presence, bool)
    rng = np.random.default_rng(seed)
    rows = [(str(d).replace("MONET_", ""), np.flatnonzero(presence[:, k])) for k, d in enumerate(descriptors)]
    rows.append(("no concept", np.flatnonzero(~presence.any(axis=1))))
    fig, axes = figure("tall", nrows=len(rows), ncols=n_per, squeeze=False)
    for (name, pool), row_axes in zip(rows, axes):
        pick = rng.choice(pool, size=min(n_per, len(pool)), replace=False) if len(pool) else []
        for j, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j < len(pick):
                ax.imshow(images[pick[j]])
            if j == 0:
                ax.set_ylabel(name.replace("_", " ")[:22], fontsize=6, rotation=0, ha="right", va="center")
    return fig


__all__ = [
    "ablation_chart",
    "cdi_bar_chart",
    "concept_grid",
    "coverage_error_scatter",
    "coverage_heatmaps",
    "coverage_long_tail",
    "descriptor_attention",
    "example_predictions",
    "permutation_null_hist",
    "prevalence_vs_coverage",
    "reliability_diagrams",
    "sensitivity_chart",
    "stratum_error_bars",
    "tail_sweep_chart",
]
