"""Figure functions shared by the notebooks and the audit.

Each function takes computed results (tidy DataFrames or arrays; never raw data it has to
model), returns a matplotlib ``Figure`` built with :func:`semcov_lib.report.outputs.figure` (fixed
sizes, project theme) and never saves: callers use :func:`semcov_lib.report.outputs.savefig`.
Results tables follow the column names of ``sci.coverage.coverage_table``,
``sci.cdi.CDIResult.per_scg``, ``sci.metrics.evaluate`` and ``experiment.results.results_frame``.
Methods and descriptors are drawn with the display names and colours of :mod:`semcov_lib.report.outputs`
(raw keys never reach a figure), and every figure with error bars says under it what they are
(seed spread or bootstrap CI)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from semcov_lib.report.outputs import (BOOTSTRAP_CI, REFERENCE, SEED_SD, STRATUM_COLOURS, add_note, descriptor_label,
                                 figure, format_p, method_colour, method_label, metric_label)

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
        from semcov_lib.sci.cdi import spearman

        rows = frame[frame["valid"]] if "valid" in frame else frame
        rho = spearman(rows["coverage"].to_numpy(float), rows["error"].to_numpy(float)) if len(rows) >= 3 else np.nan
    return f"ρ = {rho:.2f}" if np.isfinite(rho) else "ρ undefined"


# --------------------------------------------------------------------------- coverage
def coverage_long_tail(coverage: pd.DataFrame, title: str | None = None) -> Figure:
    """SCG coverage sorted from high to low on a log axis, coloured by Tail/Middle/Head stratum."""
    from semcov_lib.sci.coverage import assign_strata

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
        ax.set_xticks(range(K), [descriptor_label(d) for d in descriptors], rotation=60, ha="right",
                      rotation_mode="anchor", fontsize="x-small")
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
    """Histogram of the permutation null with the observed statistic (PermutationResult accepted).

    When the observed value lies far beyond the null (the usual case for real SCI), the x axis is
    logarithmic so the null's shape stays visible instead of collapsing into one bar at 0.
    """
    if hasattr(null, "null"):
        observed = null.statistic if observed is None else observed
        p_value = null.p_value if p_value is None else p_value
        null = null.null
    values = np.asarray(null, dtype=float)
    values = values[np.isfinite(values)]
    fig, ax = figure("single")
    has_obs = observed is not None and np.isfinite(observed)
    far = (has_obs and len(values) > 0 and values.min() > 0
           and observed > 5 * np.quantile(values, 0.99))  # null would be squashed into the first bin
    if far:
        bins = np.geomspace(values.min(), max(observed, values.max()) * 1.05, 50)
        ax.set_xscale("log")
    else:
        bins = min(40, max(5, len(values) // 10))
    ax.hist(values, bins=bins, color=STRATUM_COLOURS["Middle"], label=f"null ({len(values)} permutations)")
    if has_obs:
        label = "observed" + (f" ({format_p(p_value)})" if p_value is not None else "")
        ax.axvline(observed, color=STRATUM_COLOURS["Tail"], linewidth=1.5, label=label)
    ax.set_xlabel("across-class variance of coverage" + (" (log scale)" if far else ""))
    ax.set_ylabel("permutations")
    ax.legend(frameon=False, fontsize="x-small", loc="upper center")
    return fig


# --------------------------------------------------------------------------- helpers
def _grid(n: int, ncols: int, panel: tuple[float, float] = (2.4, 2.2), **kwargs):
    """``n`` panels in rows of ``ncols``; surplus axes removed. Returns (fig, list of axes)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = figure((min(7.2, panel[0] * ncols), panel[1] * nrows), nrows=nrows, ncols=ncols,
                       squeeze=False, layout="constrained", **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:max(n, 1)]


def _method_ticks(ax, keys: Sequence[str], axis: str = "y") -> None:
    """Method display names as tick labels; the highlighted method (SemCovNet) in bold."""
    positions = np.arange(len(keys))
    labels = [method_label(k) for k in keys]
    (ax.set_yticks if axis == "y" else ax.set_xticks)(positions, labels)
    ticks = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    for tick, key in zip(ticks, keys):
        if str(key).startswith("semcovnet"):
            tick.set_fontweight("bold")


def _seed_summary(frame: pd.DataFrame, by: str, metric: str) -> pd.DataFrame:
    """Mean, SD (0 for one seed) and the per-seed values of ``metric`` per ``by`` (input order)."""
    grouped = frame.groupby(by, sort=False)[metric]
    out = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std().fillna(0.0), "n": grouped.count()})
    out["values"] = grouped.apply(lambda v: v.to_numpy(float))
    return out


def _finite_err(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Error-bar lengths for matplotlib: non-negative and 0 where a bound is NaN."""
    err = np.vstack([lower, upper])
    return np.where(np.isfinite(err), np.maximum(err, 0), 0)


def _reference_line(ax, value: float, label: str, axis: str = "x", style: str = "--") -> None:
    if np.isfinite(value):
        line = ax.axvline if axis == "x" else ax.axhline
        line(value, color=method_colour(REFERENCE), linestyle=style, linewidth=0.9, label=label, zorder=1)


# --------------------------------------------------------------------------- CDI
def _trend(lx: np.ndarray, y: np.ndarray, trend: str):
    """(x, y) of a fitted trend in log10 coverage: least squares or quintile means."""
    if trend == "linear":
        slope, intercept = np.polyfit(lx, y, 1)
        grid = np.linspace(lx.min(), lx.max(), 50)
        return 10 ** grid, intercept + slope * grid
    if trend == "binned":
        edges = np.unique(np.quantile(lx, np.linspace(0, 1, 6)))  # quintile edges; ties merge bins
        # bin index per point; the maximum (right edge) joins the last bin instead of its own
        b = np.clip(np.searchsorted(edges, lx, side="right") - 1, 0, len(edges) - 2)
        used = [i for i in range(len(edges) - 1) if np.any(b == i)]
        return [10 ** lx[b == i].mean() for i in used], [y[b == i].mean() for i in used]
    raise ValueError(f"trend must be 'linear', 'binned' or None, got {trend!r}")


def _valid_xy(result) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    frame = _per_scg(result)
    rows = frame[frame["valid"].astype(bool)] if "valid" in frame else frame
    rows = rows[np.isfinite(rows["error"].to_numpy(float))]
    return np.maximum(rows["coverage"].to_numpy(float), COVERAGE_FLOOR), rows["error"].to_numpy(float), frame


def coverage_error_scatter(results, trend: str | None = "linear", min_points: int = 3, ncols: int = 3) -> Figure:
    """Per-SCG error against training coverage (valid SCGs), log x axis, one facet per method.

    ``results``: a CDIResult / per-SCG DataFrame, or a mapping method -> one of those. ``trend``:
    ``"linear"`` (least squares in log10 coverage), ``"binned"`` (mean error per coverage
    quintile) or ``None``. Each facet's title gives Spearman ρ; ERM's trend is repeated as a
    dashed grey reference in the other facets.
    """
    if trend not in ("linear", "binned", None):
        raise ValueError(f"trend must be 'linear', 'binned' or None, got {trend!r}")
    if not isinstance(results, Mapping):
        results = {"": results}
    fig, axes = _grid(len(results), ncols, sharex=True, sharey=True)
    ref = None
    if REFERENCE in results and trend:
        x, y, _ = _valid_xy(results[REFERENCE])
        if len(x) >= min_points and np.ptp(np.log10(x)) > 0:
            ref = _trend(np.log10(x), y, trend)
    for i, (ax, (name, result)) in enumerate(zip(axes, results.items())):
        x, y, frame = _valid_xy(result)
        colour = method_colour(name) if name else STRATUM_COLOURS["Head"]
        ax.scatter(x, y, s=7, alpha=0.55, color=colour, linewidth=0)
        if trend and len(x) >= min_points and np.ptp(np.log10(x)) > 0:
            ax.plot(*_trend(np.log10(x), y, trend), color=colour, linewidth=1.6)
        if ref is not None and name != REFERENCE:
            ax.plot(*ref, color=method_colour(REFERENCE), linestyle="--", linewidth=1.0)
        ax.set_title(f"{method_label(name)}  {_rho_text(result, frame)}" if name else _rho_text(result, frame),
                     fontsize="small")
        ax.set_xscale("log")
        ax.set_xlabel("training coverage")
        ax.set_ylabel("evaluation error" if i % ncols == 0 else "")
    add_note(fig, "One point per valid SCG; solid line: " + ("least-squares fit on log coverage"
             if trend == "linear" else "mean per coverage quintile") + (
             "; dashed grey: ERM's fit" if ref is not None else ""))
    return fig


def _ece_from_bins(rel: pd.DataFrame) -> float:
    """ECE = Σ_b (n_b / N) |acc_b − conf_b| from a reliability table."""
    used = rel[rel["count"] > 0]
    total = used["count"].sum()  # N; each bin weighs n_b / N
    return float((used["count"] * (used["accuracy"] - used["confidence"]).abs()).sum() / total) if total else np.nan


def reliability_diagrams(data, ncols: int = 3) -> Figure:
    """Reliability diagram per method with its ECE, and the bin counts in a strip below.

    ``data``: a ``metrics.reliability_data`` table, or a mapping method -> table.
    """
    if isinstance(data, pd.DataFrame):
        data = {"": data}
    n = len(data)
    ncols = max(1, min(ncols, n if n != 4 else 2))
    nrows = math.ceil(n / ncols)
    fig, axes = figure((min(7.2, 2.4 * ncols), 2.9 * nrows), nrows=2 * nrows, ncols=ncols, squeeze=False,
                       layout="constrained", gridspec_kw={"height_ratios": [3, 1] * nrows})
    for i in range(nrows * ncols):
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        if i >= n:
            top.remove()
            bottom.remove()
            continue
        name, rel = list(data.items())[i]
        _reliability_panel(top, bottom, pd.DataFrame(rel), name, first=i % ncols == 0)
    add_note(fig, "Bars: accuracy per confidence bin (15 equal-width bins); dashed: perfect calibration; "
                  "lower strip: test samples per bin")
    return fig


def _reliability_panel(top, bottom, rel: pd.DataFrame, name: str, first: bool) -> None:
    used = rel[rel["count"] > 0]
    width = float((rel["upper"] - rel["lower"]).iloc[0]) if len(rel) else 1 / 15
    colour = method_colour(name) if name else STRATUM_COLOURS["Head"]
    top.bar(used["lower"], used["accuracy"], width=width, align="edge", color=colour, alpha=0.8, edgecolor="white")
    top.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8)
    top.text(0.04, 0.93, f"ECE = {_ece_from_bins(rel):.3f}", transform=top.transAxes, fontsize="x-small", va="top",
             bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5})
    top.set(xlim=(0, 1), ylim=(0, 1), xticklabels=[])
    top.set_ylabel("accuracy" if first else "")
    if name:
        top.set_title(method_label(name), fontsize="small")
    bottom.bar(used["lower"], used["count"], width=width, align="edge", color=STRATUM_COLOURS["Middle"])
    bottom.set_yscale("log")
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count" if first else "")


def _column(frame: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def cdi_bar_chart(results, by: str = "method", metric: str = "cdi", errorbar: str = "ci") -> Figure:
    """CDI per method: horizontal bars (mean over seeds), seeds as dots, ERM as a dashed line.

    ``results``: a DataFrame with ``by``, ``metric`` and ``<metric>_ci_low``/``_ci_high`` (or
    ``ci_low``/``ci_high``), or a mapping method -> CDIResult. ``errorbar``: ``"ci"`` (the
    per-run 95% bootstrap CI over evaluation samples, bounds averaged over seeds) or ``"sd"``
    (SD over seeds).
    """
    if isinstance(results, Mapping):
        results = pd.DataFrame([{by: k, metric: r.cdi, "ci_low": r.ci_low, "ci_high": r.ci_high}
                                for k, r in results.items()])
    if errorbar not in ("ci", "sd"):
        raise ValueError(f"errorbar must be 'ci' or 'sd', got {errorbar!r}")
    summary = _seed_summary(results, by, metric)
    lo_col = _column(results, f"{metric}_ci_low", "ci_low")
    hi_col = _column(results, f"{metric}_ci_high", "ci_high")
    mean = summary["mean"].to_numpy(float)
    if errorbar == "ci" and lo_col and hi_col:
        bounds = results.groupby(by, sort=False)[[lo_col, hi_col]].mean()
        err, note = _finite_err(mean - bounds[lo_col].to_numpy(float), bounds[hi_col].to_numpy(float) - mean), (
            BOOTSTRAP_CI + " (per run; bounds averaged over seeds)")
    else:
        err, note = _finite_err(summary["sd"].to_numpy(float), summary["sd"].to_numpy(float)), SEED_SD
    keys = list(summary.index)
    fig, ax = figure((3.6, 0.8 + 0.24 * len(keys)), layout="constrained")
    y = np.arange(len(keys))
    ax.barh(y, mean, xerr=err, capsize=2, color=[method_colour(k) for k in keys], error_kw={"linewidth": 0.8})
    for i, values in enumerate(summary["values"]):
        if len(values) > 1:
            ax.scatter(values, np.full(len(values), i), s=6, color="black", zorder=3)
    if REFERENCE in summary.index:
        _reference_line(ax, summary.loc[REFERENCE, "mean"], "ERM")
    _method_ticks(ax, keys)
    ax.invert_yaxis()
    ax.set_xlabel(metric_label(metric))
    ax.set_xlim(left=0)
    add_note(fig, f"Bars: mean over seeds; dots: seeds; dashed: ERM; {note}")
    return fig


def stratum_error_bars(results: pd.DataFrame, by: str = "method") -> Figure:
    """Tail / Middle / Head weighted SCG error per method: one row per method, SD over seeds."""
    cols = {"Tail": "tail_error", "Middle": "middle_error", "Head": "head_error"}
    keys = list(dict.fromkeys(results[by]))
    fig, ax = figure((3.6, 0.9 + 0.3 * len(keys)), layout="constrained")
    for offset, (name, col) in zip((-0.22, 0.0, 0.22), cols.items()):
        summary = _seed_summary(results, by, col).reindex(keys)
        ax.errorbar(summary["mean"], np.arange(len(keys)) + offset, xerr=summary["sd"], fmt="o", markersize=3.5,
                    capsize=2, linewidth=0.8, color=STRATUM_COLOURS[name], label=name)
    _method_ticks(ax, keys)
    ax.invert_yaxis()
    ax.set_xlabel("weighted SCG error (↓)")
    ax.legend(title="stratum", frameon=False, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    add_note(fig, SEED_SD)
    return fig


def _variant_colour(name: str) -> str:
    return {"backbone": method_colour(REFERENCE), "full": method_colour("semcovnet")}.get(str(name), "#f0a070")


def ablation_chart(results: pd.DataFrame, by: str = "configuration", metrics: Sequence[str] = ("cdi", "macro_f1")) -> Figure:
    """One panel per metric, variants as rows (mean ± SD over seeds, seeds as dots); the first
    variant (the backbone) is a dashed reference line. The x axis is not forced to 0 so small
    differences stay visible; read the values on the axis."""
    keys = list(dict.fromkeys(results[by]))
    fig, axes = figure((7.2, 0.8 + 0.24 * len(keys)), ncols=len(metrics), squeeze=False, sharey=True,
                       layout="constrained")
    for ax, metric in zip(axes[0], metrics):
        summary = _seed_summary(results, by, metric).reindex(keys)
        y = np.arange(len(keys))
        for i, (key, row) in enumerate(summary.iterrows()):
            ax.errorbar(row["mean"], i, xerr=row["sd"], fmt="o", color=_variant_colour(key), capsize=2, markersize=4)
            if isinstance(row["values"], np.ndarray) and len(row["values"]) > 1:
                ax.scatter(row["values"], np.full(len(row["values"]), i), s=5, color="black", alpha=0.6, zorder=3)
        _reference_line(ax, summary["mean"].iloc[0], str(keys[0]))
        ax.set_yticks(y, [str(k) for k in keys])
        ax.set_xlabel(metric_label(metric))
    axes[0, 0].invert_yaxis()
    add_note(fig, f"Dots: mean over seeds (black: individual seeds); {SEED_SD}; dashed: {keys[0] if keys else ''}")
    return fig


def descriptor_attention(frame: pd.DataFrame, value: str | None = None, hue: str | None = "method") -> Figure:
    """Gate value (descriptor-branch share) per descriptor, per method; SD error bars over seeds."""
    import seaborn as sns

    if value is None:
        value = _column(frame, "gate", "descriptor_share_present", "token_weight")
        if value is None:
            raise ValueError("descriptor_attention: no 'gate' / 'descriptor_share_present' column")
    hue = hue if hue in frame.columns else None
    data = frame.assign(descriptor=frame["descriptor"].map(descriptor_label))
    if hue:
        data[hue] = data[hue].map(method_label)
    palette = {method_label(k): method_colour(k) for k in frame[hue].unique()} if hue else None
    n = data["descriptor"].nunique()
    fig, ax = figure((3.6, 0.9 + 0.28 * n), layout="constrained")
    sns.barplot(data=data, y="descriptor", x=value, hue=hue, palette=palette, errorbar="sd", ax=ax, capsize=0.1,
                color=None if hue else method_colour("semcovnet"), orient="h")
    ax.set_ylabel("")
    ax.set_xlabel(value.replace("_", " "))
    if hue:
        ax.legend(frameon=False, fontsize="x-small")
    add_note(fig, SEED_SD)
    return fig


def _semcovnet_defaults() -> dict:
    try:
        from semcov_lib.models.methods import method_defaults

        return method_defaults("semcovnet")
    except Exception:  # the figure must not depend on the model code being importable
        return {}


def _param_label(param: str) -> str:
    """``lambda_cdi`` -> λ_CDI (mathtext); other names with spaces."""
    if param.startswith("lambda_"):
        return rf"$\lambda_{{\mathrm{{{param[7:].upper()}}}}}$"
    return param.replace("_", " ")


def sensitivity_chart(results: pd.DataFrame, metrics: Sequence[str] = ("cdi", "macro_f1"),
                      defaults: Mapping[str, float] | None = None) -> Figure:
    """Metric vs hyper-parameter value, one column per swept parameter (``param``/``value``
    columns): mean ± SD over seeds, seeds as dots, the default value as a dotted line
    (``defaults`` param -> value; by default SemCovNet's registered defaults)."""
    defaults = _semcovnet_defaults() if defaults is None else defaults
    params = list(dict.fromkeys(results["param"]))
    fig, axes = figure((min(7.2, 2.6 * len(params)), 1.8 * len(metrics)), nrows=len(metrics), ncols=len(params),
                       squeeze=False, sharex="col", layout="constrained")
    for j, param in enumerate(params):
        rows = results[results["param"] == param]
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            summary = _seed_summary(rows, "value", metric).sort_index()
            x = summary.index.to_numpy(float)
            ax.errorbar(x, summary["mean"], yerr=summary["sd"], marker="o", markersize=3, capsize=2,
                        color=STRATUM_COLOURS["Tail"] if "cdi" in metric else STRATUM_COLOURS["Head"])
            ax.scatter(rows["value"], rows[metric], s=5, color="black", alpha=0.5, zorder=3)
            if (x > 0).all() and len(x) > 1:
                ax.set_xscale("log")
            if param in defaults and np.isfinite(float(defaults[param])):
                ax.axvline(float(defaults[param]), color="black", linestyle=":", linewidth=0.9,
                           label="default" if i == 0 else None)
            if i == len(metrics) - 1:
                ax.set_xlabel(_param_label(param))
            ax.set_ylabel(metric_label(metric) if j == 0 else "")
    if any(p in defaults for p in params):
        axes[0, 0].legend(frameon=False, fontsize="x-small")
    add_note(fig, f"Line: mean over seeds; dots: seeds; {SEED_SD}; dotted: default value")
    return fig


def tail_sweep_chart(results: pd.DataFrame, metric: str = "cdi", x: str = "tail_exponent",
                     default_x: float | None = None) -> Figure:
    """A metric (default CDI) against the benchmark's coverage tail exponent, one line per method,
    mean ± SD over seeds with seeds as dots; ``default_x`` (the default benchmark) dotted."""
    fig, ax = figure((3.8, 2.8), layout="constrained")
    for method, rows in results.groupby("method", sort=False):
        summary = _seed_summary(rows, x, metric).sort_index()
        colour = method_colour(method)
        ax.errorbar(summary.index.to_numpy(float), summary["mean"], yerr=summary["sd"], marker="o", markersize=3,
                    capsize=2, label=method_label(method), color=colour,
                    linewidth=1.8 if method == "semcovnet" else 1.0)
        ax.scatter(rows[x], rows[metric], s=5, color=colour, alpha=0.5)
    if default_x is not None:
        ax.axvline(default_x, color="black", linestyle=":", linewidth=0.9, label="default benchmark")
    ax.set_xlabel("coverage tail exponent of the benchmark")
    ax.set_ylabel(metric_label(metric))
    ax.legend(frameon=False, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    add_note(fig, f"Line: mean over seeds; dots: seeds; {SEED_SD}")
    return fig


# --------------------------------------------------------------------------- paired statistics
def paired_difference_forest(frame: pd.DataFrame, baseline: str = "ERM", metrics: Sequence[str] | None = None,
                             ncols: int = 4) -> Figure:
    """Forest plot of paired differences Δ = method − baseline, one panel per metric.

    ``frame``: columns method, metric, delta, ci_low, ci_high, significant (and optionally
    config, drawn as offset rows with their own marker). Filled markers: the 95% CI excludes 0.
    """
    missing = {"method", "metric", "delta", "ci_low", "ci_high"} - set(frame.columns)
    if missing:
        raise ValueError(f"paired_difference_forest: missing columns {sorted(missing)}")
    metrics = list(dict.fromkeys(frame["metric"])) if metrics is None else list(metrics)
    configs = list(dict.fromkeys(frame["config"])) if "config" in frame else [None]
    fig, axes = _grid(len(metrics), ncols, panel=(1.9, 0.9 + 0.22 * frame["method"].nunique() * len(configs)),
                      sharey=True)
    keys = list(dict.fromkeys(frame["method"]))
    for ax, metric in zip(axes, metrics):
        for c, (config, marker) in enumerate(zip(configs, "os^Dv<>p")):
            rows = frame[(frame["metric"] == metric) & ((frame["config"] == config) if config is not None else True)]
            _forest_rows(ax, rows, keys, c, len(configs), marker, config)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(metric_label(metric), fontsize="small")
        ax.set_xlabel(f"Δ vs {baseline}")
        _method_ticks(ax, keys)
    axes[0].invert_yaxis()
    if len(configs) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=len(configs),
                   frameon=False, fontsize="x-small")
    add_note(fig, f"Δ = method − {baseline} on the same samples; error bars: 95% hierarchical bootstrap CI "
                  "(seeds and evaluation samples); filled: CI excludes 0")
    return fig


def _forest_rows(ax, rows: pd.DataFrame, keys: list, c: int, n_configs: int, marker: str, config) -> None:
    """One marker + CI per method row, offset within the row for the ``c``-th configuration."""
    # configurations share a method's row: spread them evenly over 0.6 of the row, centred on it
    offset = (c - (n_configs - 1) / 2) * (0.6 / max(n_configs, 1))
    sig = rows["significant"].fillna(False).astype(bool) if "significant" in rows else (
        (rows["ci_low"] > 0) | (rows["ci_high"] < 0))
    for (_, row), is_sig in zip(rows.iterrows(), sig):
        if not np.isfinite(row["delta"]):
            continue
        y = keys.index(row["method"]) + offset
        colour = method_colour(row["method"])
        err = _finite_err(np.array([row["delta"] - row["ci_low"]]), np.array([row["ci_high"] - row["delta"]]))
        ax.errorbar(row["delta"], y, xerr=err, fmt=marker, color=colour, markersize=4, capsize=2, linewidth=0.9,
                    markerfacecolor=colour if is_sig else "white")
    if config is not None:
        ax.plot([], [], marker, color="black", markerfacecolor="white", linestyle="", label=str(config))


def cdi_by_configuration(frame: pd.DataFrame, metric: str = "cdi", ncols: int = 3) -> Figure:
    """CDI per benchmark configuration (one panel each): methods as rows with 95% CIs, ERM
    dashed and the oracle (balanced-coverage training) dotted; the band between them is the
    reducible SCI, ``CDI(ERM) − CDI(oracle)``.

    ``frame``: columns config, method, ``metric`` and optionally ci_low/ci_high (several rows per
    (config, method), e.g. seeds, are averaged; bounds too).
    """
    lo, hi = _column(frame, f"{metric}_ci_low", "ci_low"), _column(frame, f"{metric}_ci_high", "ci_high")
    cols = [metric] + [c for c in (lo, hi) if c]
    # one point per (config, method): seeds averaged, CI bounds too (a summary, not a pooled CI)
    summary = frame.groupby(["config", "method"], sort=False)[cols].mean().reset_index()
    configs = list(dict.fromkeys(summary["config"]))
    keys = list(dict.fromkeys(summary["method"]))
    fig, axes = _grid(len(configs), ncols, panel=(2.4, 0.9 + 0.25 * len(keys)), sharey=True)
    for ax, config in zip(axes, configs):
        rows = summary[summary["config"] == config].set_index("method").reindex(keys)
        value = rows[metric].to_numpy(float)
        err = _finite_err(value - rows[lo].to_numpy(float), rows[hi].to_numpy(float) - value) if lo and hi else None
        for i, key in enumerate(keys):
            ax.errorbar(value[i], i, xerr=None if err is None else err[:, i:i + 1], fmt="o", color=method_colour(key),
                        markersize=4, capsize=2, linewidth=0.9)
        erm = rows[metric].get(REFERENCE, np.nan)
        oracle = rows[metric].get("oracle", np.nan)
        _reference_line(ax, erm, "ERM")
        if np.isfinite(oracle):
            ax.axvline(oracle, color=method_colour("oracle"), linestyle=":", linewidth=0.9, label="oracle")
            if np.isfinite(erm):
                ax.axvspan(min(oracle, erm), max(oracle, erm), color="#fde0c5", alpha=0.6, zorder=0,
                           label="reducible SCI")
        ax.set_title(str(config), fontsize="small")
        ax.set_xlabel(metric_label(metric))
        _method_ticks(ax, keys)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=3, frameon=False,
               fontsize="x-small")
    add_note(fig, "Points: mean over seeds; error bars: each run's 95% bootstrap CI over evaluation samples, "
                  "bounds averaged over seeds; dashed: ERM; "
                  "dotted: oracle trained with balanced coverage; shaded: reducible SCI")
    return fig


# --------------------------------------------------------------------------- images
def example_predictions(examples: Mapping, top_k: int = 3) -> Figure:
    """A row of images, each titled with its true class, the predictions and its top descriptor scores.

    ``examples``: ``images`` (N,H,W,3 uint8), ``scores`` (N,K), ``labels``, ``descriptors`` and any
    ``preds*`` lists (e.g. ``preds`` and ``preds_erm``), as from ``experiment.results.example_images``.
    """
    images = examples["images"]
    n = len(images)
    pred_keys = [k for k in examples if k.startswith("preds")]
    fig, axes = figure("wide", ncols=max(n, 1), squeeze=False)
    short = [descriptor_label(d) for d in examples["descriptors"]]
    for i, ax in enumerate(axes[0]):
        if i >= n:
            ax.remove()
            continue
        ax.imshow(images[i])
        ax.set(xticks=[], yticks=[])
        ax.grid(False)
        lines = [f"true {examples['labels'][i]}"]
        lines += [f"{method_label(k.removeprefix('preds_')) if k != 'preds' else 'model'}: {examples[k][i]}"
                  for k in pred_keys]
        scores = np.nan_to_num(np.asarray(examples["scores"][i], float), nan=-1.0)  # unobserved: sorts last, not shown
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
    rows = [(descriptor_label(d), np.flatnonzero(presence[:, k])) for k, d in enumerate(descriptors)]
    rows.append(("no concept", np.flatnonzero(~presence.any(axis=1))))
    side = 0.7  # inches per image
    fig, axes = figure((1.3 + side * n_per, side * len(rows)), nrows=len(rows), ncols=n_per, squeeze=False)
    fig.subplots_adjust(left=1.3 / (1.3 + side * n_per), right=0.99, top=0.99, bottom=0.01, wspace=0.04, hspace=0.04)
    for (name, pool), row_axes in zip(rows, axes):
        pick = rng.choice(pool, size=min(n_per, len(pool)), replace=False) if len(pool) else []
        for j, ax in enumerate(row_axes):
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
            if j < len(pick):
                ax.imshow(images[pick[j]])
            else:
                ax.spines[:].set_visible(False)
            if j == 0:
                ax.set_ylabel(f"{name} (n={len(pool)})", fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
    return fig


__all__ = [
    "ablation_chart",
    "cdi_bar_chart",
    "cdi_by_configuration",
    "concept_grid",
    "coverage_error_scatter",
    "coverage_heatmaps",
    "coverage_long_tail",
    "descriptor_attention",
    "example_predictions",
    "paired_difference_forest",
    "permutation_null_hist",
    "prevalence_vs_coverage",
    "reliability_diagrams",
    "sensitivity_chart",
    "stratum_error_bars",
    "tail_sweep_chart",
]
