"""Result tables for display and the sentences that follow them: 'Δ [CI]' cells with the
significance and levelling-down marks, 'mean ± std' cells, and the per-configuration summary.

Kept free of torch so the audit command and the notebooks share it cheaply; files are written by
:mod:`semcov_lib.report.outputs`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

LOWER_IS_BETTER = frozenset({"cdi", "stress_cdi", "cdi_within", "stress_cdi_within", "ece", "tail_error",
                             "middle_error", "head_error", "cdi_ci_low", "cdi_ci_high"})


def percent(value: float, signed: bool = False) -> str:
    """A share or relative reduction as a whole percentage: ``0.123`` -> ``12%`` (``+12%`` when
    ``signed``); the one spelling of reductions in tables and sentences."""
    return f"{100 * value:+.0f}%" if signed else f"{100 * value:.0f}%"


def format_mean_std(summary: pd.DataFrame, metrics: Iterable[str], digits: int = 3, keys: Iterable[str] = ("method",)) -> pd.DataFrame:
    """A display table with 'mean ± std' strings."""
    out = summary[list(keys)].copy()
    for m in metrics:
        mean, std = summary[f"{m}_mean"], summary[f"{m}_std"].fillna(0.0)
        out[m] = [f"{a:.{digits}f} ± {b:.{digits}f}" if np.isfinite(a) else "n/a" for a, b in zip(mean, std)]
    return out


def insert_run_facts(table: pd.DataFrame, runs: pd.DataFrame, names: Sequence[str] = ("sees descriptors",),
                     at: int = 1) -> None:
    """Insert per-method facts of ``runs`` (one row per run) into ``table`` (one row per method, in
    the runs' order) as columns ``at``, ``at + 1``, ...: ``sees descriptors`` (reads scores at test
    time), ``selection`` (the validation metric that chose the epoch), ``epochs chosen`` (per seed)."""
    first = runs.groupby("method", sort=False)
    facts = {
        "sees descriptors": lambda: first["sees_descriptors_at_test"].first(),
        "selection": lambda: first["selection_metric"].first(),
        "epochs chosen": lambda: first["best_epoch"].apply(lambda e: "/".join(str(int(x)) for x in e)),
    }
    for i, name in enumerate(names):
        table.insert(at + i, name, facts[name]().values)  # positional: the table's rows follow the runs' order


def format_paired(table: pd.DataFrame, digits: int = 3, index: Iterable[str] = ("method",)) -> pd.DataFrame:
    """Paired differences as a display table: one row per ``index`` value (method by default), one
    'Δ [CI]' column per metric (``*`` = the 95% CI excludes 0; ``(levelling down)`` where
    Head/Middle error rose)."""
    def cell(row) -> str:
        if not np.isfinite(row["delta"]):
            return "n/a"
        mark = " *" if row["significant"] else ""
        down = " (levelling down)" if row.get("levelling_down", False) else ""
        return f"{row['delta']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]{mark}{down}"

    shown = table.assign(cell=table.apply(cell, axis=1))
    wide = shown.pivot_table(index=list(index), columns="metric", values="cell", aggfunc="first", sort=False)
    order = [m for m in dict.fromkeys(table["metric"]) if m in wide.columns]
    return wide[order].reset_index()


def paired_sentences(table: pd.DataFrame, baseline: str) -> list[str]:
    """Plain sentences from a paired table: what each method changes significantly against ``baseline``
    (CI excluding 0), what it does not, and any levelling down; so prose follows the numbers."""
    sentences = []
    for method, rows in table.groupby("method", sort=False):
        rows = rows.set_index("metric")
        better = [m for m in rows.index if rows.loc[m, "significant"]
                  and (rows.loc[m, "delta"] < 0) == (m in LOWER_IS_BETTER)]
        worse = [m for m in rows.index if rows.loc[m, "significant"] and m not in better]
        text = f"{method} vs {baseline}: "
        text += (f"significantly better on {', '.join(better)}" if better else "no significant improvement")
        text += (f"; significantly worse on {', '.join(worse)}" if worse else "; nothing significantly worse")
        if "levelling_down" in rows and rows["levelling_down"].any():
            text += " (levelling down: Head/Middle error rose)"
        if "cdi" in rows.index and np.isfinite(rows.loc["cdi", "rel_reduction"]):
            r = rows.loc["cdi"]
            text += (f"; relative CDI reduction {percent(r['rel_reduction'], signed=True)} "
                     f"[{percent(r['rel_ci_low'], signed=True)}, {percent(r['rel_ci_high'], signed=True)}]")
        sentences.append(text + ".")
    return sentences


def configuration_summary(paired: pd.DataFrame, methods: Iterable[str]) -> pd.DataFrame:
    """The display table of :func:`configuration_paired` for ``methods``: Δ [CI] of ``cdi`` and
    ``cdi_within``, the shares of the reducible and the levelling-free gaps and the gaps, per
    (configuration, baseline, method)."""
    keys = ["configuration", "baseline", "method"]
    rows = paired[paired["metric"].isin(["cdi", "cdi_within"]) & paired["method"].isin(list(methods))]
    table = format_paired(rows, index=keys).sort_values(keys, ignore_index=True)
    for gap_name, label in (("reducible", "reducible"), ("levelling_free", "levelling-free")):
        share = rows[rows["metric"] == "cdi"].set_index(keys)[f"share_of_{gap_name}_gap"]
        share = share.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy(float)
        table[f"share of {label} CDI gap"] = [percent(v) if np.isfinite(v) else "n/a" for v in share]
        gap = paired.groupby("configuration")[f"{gap_name}_gap"].first()
        table[f"{label} CDI gap"] = table["configuration"].map(gap).map(lambda v: f"{v:.3f}")
    return table
