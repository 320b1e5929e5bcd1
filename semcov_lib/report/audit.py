"""``audit`` command: an SCI audit (coverage, permutation tests, CDI) of any table a user brings.

    python -m semcov_lib audit --table FILE.csv --id COL --label COL --descriptors COL,COL,... \\
        [--subgroup COL] [--split COL --train-split VALUE --eval-split VALUE] [--classes A,B,...] \\
        [--pred PREDICTIONS.csv] [--min-weight 5] [--min-train-n 10] [--min-group-n 30] \\
        [--n-boot 1000] [--n-perm 1000] [--seed 0] --out DIR

The table is CSV or Parquet, one row per sample; descriptor columns hold scores in [0, 1] (NaN =
not observed). Coverage comes from the training rows (all rows when no split is given, which the
report states). The predictions file holds the id column (same name as ``--id``, or
``sample_id``/``id``) and a ``pred`` column with predicted labels spelled like the label column;
optional ``prob_<class>`` columns enable ``--error soft``. Defaults: soft membership weights,
m = 5, ``min_train_n`` = 10, absolute Spearman. The audit builds the same
:class:`~semcov_lib.sci.cdi.SCGReference` from its training rows as the trainer does, and goes
through the same CDI and metric functions.

Outputs (written into a temporary folder, then moved into ``--out``; ``summary.json`` last; the
audit's own files left from an earlier run into the same folder are replaced or removed, other
files are never touched): ``coverage.csv``, ``coverage_class.csv`` (with a subgroup),
``permutation_test.json``, ``descriptor_tests.csv`` (one permutation test per descriptor, with
Benjamini-Hochberg q-values), ``coverage_long_tail``/``coverage_heatmap``/``permutation_null``
figures (PDF + PNG) and, with predictions, ``per_scg_error.csv``, ``group_accuracy.csv``
((class, subgroup) accuracy with Wilson 95% CIs), ``class_recall.csv`` (per-class recall, Wilson
CI, head/medium/tail by training count) and the ``coverage_vs_error`` figure; ``report.md`` and
``summary.json`` tie them together. :func:`audit_table` is the same audit as a library call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from semcov_lib.sci.cdi import CDIWarning, Resampling, SCGReference, compute_cdi
from semcov_lib.sci.coverage import (
    CoverageError,
    coverage_table,
    descriptor_permutation_tests,
    permutation_test,
)
from semcov_lib.sci.metrics import (
    group_accuracy,
    per_class_recall,
    shot_groups,
    stratum_errors,
    wilson_interval,
    worst_class,
    worst_group,
)
from semcov_lib.files import json_ready
from semcov_lib.report.outputs import markdown_table

MISSING_SUBGROUP = "missing"
FIGURES = ("coverage_long_tail", "coverage_heatmap", "permutation_null", "coverage_vs_error")
AUDIT_OUTPUTS = frozenset(
    ["coverage.csv", "coverage_class.csv", "permutation_test.json", "descriptor_tests.csv", "per_scg_error.csv",
     "group_accuracy.csv", "class_recall.csv", "report.md", "summary.json"]
    + [f"{f}.{ext}" for f in FIGURES for ext in ("pdf", "png")]
)  # every file write_audit may write: replaced or removed on a re-run into the same folder


class AuditError(ValueError):
    """The audited table or predictions are malformed (the message names file, column and value)."""


# --------------------------------------------------------------------------- reading and checks
def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (by suffix; anything else is read as CSV)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise AuditError(f"{path}: cannot read the table ({exc})") from exc


def _require(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AuditError(f"{source}: missing column(s) {missing}; available: {list(frame.columns)}")


def _text(series: pd.Series) -> np.ndarray:
    """Values as Python strings (integers stay '3', not '3.0'), NaN kept as None."""
    out = np.empty(len(series), dtype=object)
    for i, v in enumerate(series.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = None
        elif isinstance(v, float) and v.is_integer():
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def _unique_ids(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """The id column as text, or AuditError naming the first missing or duplicated id."""
    ids = _text(frame[column])
    if any(i is None for i in ids):
        raise AuditError(f"{source}: column {column!r} has missing ids")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise AuditError(f"{source}: column {column!r} has duplicated id {ids[dup][0]!r} ({int(dup.sum())} duplicates)")
    return ids


def _sorted_levels(values: np.ndarray) -> list[str]:
    levels = sorted(set(values.tolist()))
    try:
        return sorted(levels, key=float)
    except ValueError:
        return levels


def _descriptor_matrix(frame: pd.DataFrame, columns: Sequence[str], ids: np.ndarray, source: str) -> np.ndarray:
    out = np.empty((len(frame), len(columns)))
    for k, col in enumerate(columns):
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy())
        if len(bad):
            raise AuditError(f"{source}: descriptor column {col!r} holds non-numeric {raw.iloc[bad[0]]!r} "
                             f"(id {ids[bad[0]]!r}, {len(bad)} such rows)")
        outside = np.flatnonzero(np.isinf(values) | (values < 0) | (values > 1))
        if len(outside):
            hint = " Rescale it first, e.g. (a + 1) / 2 for a -1/+1 sign convention." if np.nanmin(values) < 0 else \
                " Rescale it to [0, 1] first."
            raise AuditError(f"{source}: descriptor column {col!r} holds {values[outside[0]]!r} (id {ids[outside[0]]!r}), "
                             f"outside [0, 1] ({len(outside)} such rows).{hint}")
        out[:, k] = values
    return out


def _read_predictions(predictions: pd.DataFrame, id_col: str, pred_col: str, classes: list[str],
                      known_ids: set, source: str) -> pd.DataFrame:
    """Predictions indexed by id: column ``pred`` (class index) and ``prob_<class>`` columns if present."""
    pid = next((c for c in (id_col, "sample_id", "id") if c in predictions.columns), None)
    if pid is None:
        raise AuditError(f"{source}: no id column (expected {id_col!r}, 'sample_id' or 'id'); "
                         f"available: {list(predictions.columns)}")
    _require(predictions, [pred_col], source)
    ids = _unique_ids(predictions, pid, source)
    unknown_ids = [i for i in ids if i not in known_ids]
    if unknown_ids:
        raise AuditError(f"{source}: {len(unknown_ids)} prediction id(s) not in the table, e.g. {unknown_ids[:3]}")
    preds = _text(predictions[pred_col])
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(p) for p in preds if p not in lookup})
    if unknown:
        raise AuditError(f"{source}: column {pred_col!r} holds label(s) {unknown[:5]} not among the table's "
                         f"labels {classes}")
    out = pd.DataFrame({"pred": [lookup[p] for p in preds]}, index=pd.Index(ids, name="id"))
    prob_cols = [f"prob_{c}" for c in classes]
    if all(c in predictions.columns for c in prob_cols):
        probs = predictions[prob_cols].to_numpy(dtype=np.float64)
        for j, c in enumerate(prob_cols):
            out[c] = probs[:, j]
    return out


# --------------------------------------------------------------------------- the audit
@dataclass(frozen=True)
class AuditColumns:
    """Which columns of the audited table mean what, and which split values to use.

    ``classes``: the class list, when it should not be inferred from the table's labels (then
    predicted labels may name classes without rows, and the table's labels must all be listed).
    """

    id: str
    label: str
    descriptors: tuple[str, ...]
    subgroup: str | None = None
    split: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    pred: str = "pred"
    classes: tuple[str, ...] | None = None


def _encode_labels(frame: pd.DataFrame, columns: AuditColumns, ids: np.ndarray, source: str):
    """(class names, class index per row)."""
    labels_text = _text(frame[columns.label])
    missing = [i for i, v in enumerate(labels_text) if v is None]
    if missing:
        raise AuditError(f"{source}: column {columns.label!r} is empty for id {ids[missing[0]]!r} ({len(missing)} rows)")
    if columns.classes is not None:
        classes = [str(c) for c in columns.classes]
        unknown = sorted(set(labels_text.tolist()) - set(classes))
        if unknown:
            raise AuditError(f"{source}: column {columns.label!r} holds label(s) {unknown[:5]} not in --classes {classes}")
    else:
        classes = _sorted_levels(labels_text)
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.array([lookup[v] for v in labels_text], dtype=np.int64)


def _encode_subgroups(frame: pd.DataFrame, column: str | None, notes: list[str]):
    """(subgroup levels, subgroup index per row); rows without a value form the level 'missing'."""
    if not column:
        return ["all"], np.zeros(len(frame), dtype=np.int64)
    sub_text = np.array([MISSING_SUBGROUP if v is None else v for v in _text(frame[column])], dtype=object)
    levels = _sorted_levels(sub_text)
    if MISSING_SUBGROUP in sub_text:
        notes.append(f"{int((sub_text == MISSING_SUBGROUP).sum())} row(s) without a {column!r} value form "
                     f"the subgroup {MISSING_SUBGROUP!r}.")
    lookup = {v: i for i, v in enumerate(levels)}
    return levels, np.array([lookup[v] for v in sub_text], dtype=np.int64)


def _split_rows(frame: pd.DataFrame, columns: AuditColumns, notes: list[str], source: str):
    """(training rows, evaluation rows); all rows for both when no split column is given."""
    if not columns.split:
        notes.append("No split was given: coverage and error come from the same rows, so the CDI measures "
                     "in-sample association and is likely optimistic about generalisation.")
        rows = np.arange(len(frame))
        return rows, rows
    split = _text(frame[columns.split])
    present = sorted({v for v in split if v is not None})
    for value in (columns.train_split, columns.eval_split):
        if value not in present:
            raise AuditError(f"{source}: split column {columns.split!r} has no rows with value {value!r}; "
                             f"values present: {present}")
    return np.flatnonzero(split == columns.train_split), np.flatnonzero(split == columns.eval_split)


def audit_table(
    frame: pd.DataFrame,
    columns: AuditColumns,
    predictions: pd.DataFrame | None = None,
    reference_options: dict[str, Any] | None = None,
    resampling: Resampling | None = None,
    source: str = "table",
    predictions_source: str = "predictions",
) -> dict[str, Any]:
    """SCI audit of a table: coverage, permutation tests and (with predictions) CDI and accuracies.

    ``reference_options``: rules of the :class:`~semcov_lib.sci.cdi.SCGReference` built from the
    training rows (mode, min_weight, min_train_n, min_group_n, error, ...), the same object the
    trainer builds. Returns a dict with ``summary`` (flat, JSON-ready apart from NaN), ``coverage``
    (SCG table), ``coverage_class`` ((class, descriptor) table or None), ``coverage_array``
    (T, K, S), ``permutation`` (PermutationResult), ``descriptor_tests`` (per-descriptor tests with
    BH q-values), ``reference``, ``cdi`` (CDIResult or None), ``group_accuracy`` and
    ``class_recall`` (tables or None), ``classes``, ``descriptors``, ``subgroups``, ``notes``,
    ``options`` and ``report`` (Markdown).
    """
    descriptor_cols = [str(c) for c in columns.descriptors]
    if not descriptor_cols:
        raise AuditError(f"{source}: no descriptor columns given")
    _require(frame, [columns.id, columns.label, *descriptor_cols] + [c for c in (columns.subgroup, columns.split) if c],
             source)
    if len(frame) == 0:
        raise AuditError(f"{source}: the table has a header but no rows; an audit needs one row per sample")
    rs = Resampling() if resampling is None else resampling
    notes: list[str] = []
    ids = _unique_ids(frame, columns.id, source)
    classes, y = _encode_labels(frame, columns, ids, source)
    scores = _descriptor_matrix(frame, descriptor_cols, ids, source)
    subgroups, s = _encode_subgroups(frame, columns.subgroup, notes)
    train, evaluation = _split_rows(frame, columns, notes, source)
    try:
        reference = SCGReference.from_training(y[train], s[train], scores[train], classes, descriptor_cols, subgroups,
                                               **(reference_options or {}))
    except (TypeError, CoverageError) as exc:
        raise AuditError(f"audit options: {exc}") from exc
    result = _coverage_part(reference, (y, s, scores), train, rs, columns.subgroup is not None)
    empty_classes = [classes[c] for c in np.flatnonzero(reference.class_counts == 0)]
    if empty_classes:
        notes.append(f"Class(es) {empty_classes} have no training rows; their coverage is undefined (NaN).")
    summary = _summary_head(reference, result, len(frame), (train, evaluation), source, columns.split is None)
    summary.update(n_perm=int(rs.n_perm), has_predictions=predictions is not None)
    result.update(summary=summary, reference=reference, cdi=None, group_accuracy=None, class_recall=None,
                  classes=classes, descriptors=descriptor_cols, subgroups=subgroups, notes=notes,
                  options={"id_col": columns.id, "label_col": columns.label, "subgroup_col": columns.subgroup,
                           "split_col": columns.split, "train_split": columns.train_split,
                           "eval_split": columns.eval_split, "min_weight": reference.min_weight})
    if predictions is not None:
        preds = _read_predictions(predictions, columns.id, columns.pred, classes, set(ids.tolist()), predictions_source)
        _prediction_part(result, preds, (ids, y, s, scores), evaluation, rs, predictions_source, columns)
    result["report"] = render_report(result)
    return result


def _coverage_part(reference: SCGReference, data, train: np.ndarray, rs: Resampling, by_subgroup: bool) -> dict:
    """Coverage tables, the overall and the per-descriptor permutation tests of the training rows."""
    y, s, scores = (x[train] for x in data)
    T, K, S = reference.shape
    rule = reference.membership
    names = list(reference.descriptors)
    return {
        "coverage": coverage_table(y, s, scores, list(reference.classes), names, list(reference.subgroups), rule),
        "coverage_class": coverage_table(y, None, scores, list(reference.classes), names, None, rule)
        if by_subgroup else None,
        "coverage_array": reference.coverage,
        "permutation": permutation_test(y, s, scores, T, S, rs, rule),
        # the same membership rule (mode, tau, training thresholds) as the coverage and the overall test
        "descriptor_tests": descriptor_permutation_tests(y, s, scores, T, S, rs, rule, descriptors=names),
    }


def _summary_head(reference: SCGReference, result: dict, n_rows: int, rows, source: str, same_rows: bool) -> dict:
    T, K, S = reference.shape
    tests = result["descriptor_tests"]
    return {
        "source": source, "n_samples": int(n_rows), "n_train": int(len(rows[0])), "n_eval": int(len(rows[1])),
        "same_rows": bool(same_rows), "n_classes": T, "n_descriptors": K, "n_subgroups": S, "n_scgs": int(T * K * S),
        "n_scgs_defined": int(np.isfinite(reference.coverage).sum()),
        "n_scgs_train_ok": int(reference.train_ok().sum()), "n_valid_scgs": int(reference.train_ok().sum()),
        "min_train_n": int(reference.min_train_n), "mode": reference.mode,
        "permutation_statistic": result["permutation"].statistic,
        "permutation_p_value": result["permutation"].p_value,
        "n_descriptors_significant_bh": int(tests["significant"].sum()),
    }


def _prediction_part(result: dict, preds: pd.DataFrame, data, evaluation: np.ndarray, rs: Resampling,
                     source: str, columns: AuditColumns) -> None:
    """CDI, per-group accuracy (Wilson CIs) and per-class recall of the evaluation rows."""
    ids, y, s, scores = data
    reference, classes, notes = result["reference"], result["classes"], result["notes"]
    has = np.array([i in preds.index for i in ids[evaluation]], dtype=bool)
    if not has.any():
        raise AuditError(f"{source}: none of the {len(evaluation)} evaluation rows"
                         f"{f' (split {columns.eval_split!r})' if columns.split else ''} has a prediction")
    if not has.all():
        notes.append(f"{int((~has).sum())} of {len(evaluation)} evaluation rows have no prediction and are "
                     "left out of the CDI.")
    rows = evaluation[has]
    p = preds.loc[ids[rows]]
    pred = p["pred"].to_numpy()
    probs = p[[f"prob_{c}" for c in classes]].to_numpy() if f"prob_{classes[0]}" in p.columns else None
    if reference.error == "soft" and probs is None:
        raise AuditError(f"{source}: error='soft' needs prob_<class> columns for {classes}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cdi = compute_cdi(reference, y[rows], pred, s[rows], scores[rows], probs=probs, resampling=rs)
        groups = group_accuracy(y[rows], pred, s[rows], classes, result["subgroups"])
        worst = worst_group(y[rows], pred, s[rows], reference.min_group_n, classes, result["subgroups"])
    for w in caught:
        if issubclass(w.category, CDIWarning):
            notes.append(f"CDI warning: {w.message}")
            warnings.warn(w.message, CDIWarning, stacklevel=3)
    recall = _class_recall(reference, y[rows], pred)
    tail = recall[recall["shot"] == "tail"]["recall"].dropna()
    result.update(cdi=cdi, group_accuracy=groups, class_recall=recall)
    result["summary"].update({
        "n_eval_with_predictions": int(len(rows)), "accuracy": float(np.mean(pred == y[rows])),
        "cdi": cdi.cdi, "cdi_ci_low": cdi.ci_low, "cdi_ci_high": cdi.ci_high, "cdi_signed_rho": cdi.signed_rho,
        "cdi_pearson_log": cdi.pearson_log, "cdi_weighted": cdi.weighted, "cdi_within": cdi.cdi_within,
        "cdi_within_signed": cdi.cdi_within_signed, "cdi_p": cdi.cdi_p, "cdi_within_p": cdi.cdi_within_p,
        "n_valid_scgs": int(cdi.n_valid), "n_removed_coverage": cdi.n_removed_coverage,
        "n_removed_train_n": cdi.n_removed_train_n, "n_removed_weight": cdi.n_removed_weight,
        "min_weight": float(reference.min_weight), "n_boot": int(rs.n_boot), "error": reference.error,
        **stratum_errors(cdi.per_scg), **worst, **worst_class(y[rows], pred, classes),
        "tail_recall": float(tail.mean()) if len(tail) else float("nan"), "n_tail_classes": int(len(tail)),
    })


def _class_recall(reference: SCGReference, y: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Recall per class with its Wilson CI and its head/medium/tail group by training count."""
    T = reference.shape[0]
    n = np.bincount(y, minlength=T)
    hits = np.bincount(y, weights=(pred == y).astype(float), minlength=T)  # correct predictions per class
    low, high = wilson_interval(hits, n)
    return pd.DataFrame({"class": list(reference.classes), "n_train": reference.class_counts,
                         "shot": shot_groups(reference.class_counts, scale="auto"), "n_eval": n,
                         "recall": per_class_recall(y, pred, T), "ci_low": low, "ci_high": high})


# --------------------------------------------------------------------------- report
def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (float, np.floating)):
        return "undefined" if not np.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def _cdi_lines(s: dict, min_group_n: int) -> list[str]:
    """The report's section on the CDI, validity counts, worst group and class recall."""
    return [
        "## Coverage Disparity Index",
        "",
        f"- CDI = |Spearman ρ(coverage, error)| = **{_fmt(s['cdi'])}** "
        f"(95% bootstrap CI {_fmt(s['cdi_ci_low'])}–{_fmt(s['cdi_ci_high'])}, {s['n_boot']} resamples; "
        f"permutation p = {_fmt(s['cdi_p'], 4)})",
        f"- class-stratified CDI (within classes) = **{_fmt(s['cdi_within'])}** (signed "
        f"{_fmt(s['cdi_within_signed'])}, permutation p = {_fmt(s['cdi_within_p'], 4)}); the pooled CDI also "
        "holds differences between classes",
        f"- signed ρ = {_fmt(s['cdi_signed_rho'])} (SCI predicts ρ < 0: lower coverage, higher error)",
        f"- Pearson r on log(coverage + 1e-3) = {_fmt(s['cdi_pearson_log'])}; support-weighted CDI = "
        f"{_fmt(s['cdi_weighted'])}",
        f"- {s['n_valid_scgs']} valid SCGs of {s['n_scgs']}: removed {s['n_removed_coverage']} without training "
        f"coverage, {s['n_removed_train_n']} whose (class, subgroup) has < {s['min_train_n']} training rows, "
        f"{s['n_removed_weight']} with evaluation weight < {_fmt(s['min_weight'], 1)}; "
        f"{s['n_eval_with_predictions']} evaluation rows, accuracy {_fmt(s['accuracy'])}, error = {s['error']}",
        f"- weighted error by coverage stratum: Tail {_fmt(s['tail_error'])}, Middle {_fmt(s['middle_error'])}, "
        f"Head {_fmt(s['head_error'])}",
        f"- worst (class, subgroup) group with ≥ {min_group_n} rows: "
        + (f"{s['worst_group']} accuracy {_fmt(s['worst_group_accuracy'])} (n = {s['worst_group_n']}, Wilson 95% "
           f"CI {_fmt(s['worst_group_ci_low'])}–{_fmt(s['worst_group_ci_high'])})" if s["worst_group"] else "none")
        + "; all groups in `group_accuracy.csv`",
        f"- worst class: {s['worst_class']} (recall {_fmt(s['worst_class_accuracy'])}); mean recall of the "
        f"{s['n_tail_classes']} tail class(es) by training count: {_fmt(s['tail_recall'])} (`class_recall.csv`)",
        "",
        "Per-SCG coverage, error and weight: `per_scg_error.csv`; figure `coverage_vs_error`.",
        "",
    ]


def render_report(result: dict) -> str:
    """The Markdown report of an :func:`audit_table` result."""
    s, opt = result["summary"], result["options"]
    cov = result["coverage"]
    lines = [f"# SCI audit of `{s['source']}`", ""]
    split = (f"split column `{opt['split_col']}`: coverage from `{opt['train_split']}` ({s['n_train']} rows), "
             f"error from `{opt['eval_split']}` ({s['n_eval']} rows)") if opt["split_col"] else \
        f"no split: coverage and error both from all {s['n_samples']} rows"
    lines += [
        f"- {s['n_samples']} rows, {s['n_classes']} classes ({', '.join(result['classes'])}), "
        f"{s['n_descriptors']} descriptors, {s['n_subgroups']} subgroup level(s)"
        + (f" of `{opt['subgroup_col']}`" if opt["subgroup_col"] else " (no subgroup column)"),
        f"- {split}",
        f"- membership weights: {s['mode']}; {s['n_scgs']} SCGs (class × descriptor × subgroup), "
        f"{s['n_scgs_defined']} with defined training coverage",
        "",
    ]
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    finite = cov[np.isfinite(cov["coverage"].to_numpy(float))]
    lines += ["## Coverage (training rows)", ""]
    if len(finite):
        q = np.quantile(finite["coverage"], [0, 0.25, 0.5, 0.75, 1])
        lines += [
            f"Coverage quartiles: min {q[0]:.3f}, Q25 {q[1]:.3f}, median {q[2]:.3f}, Q75 {q[3]:.3f}, max {q[4]:.3f}. "
            "Tail = coverage ≤ Q25, Head ≥ Q75 (`coverage.csv`, figures `coverage_long_tail`, `coverage_heatmap`).",
            "",
            "Lowest-coverage SCGs:",
            "",
            markdown_table(finite.nsmallest(min(10, len(finite)), "coverage")[
                ["class", "descriptor", "subgroup", "n_obs", "coverage", "prevalence", "excess"]], fmt=_fmt),
            "",
        ]
    else:
        lines += ["No SCG has defined coverage.", ""]
    lines += [
        "## Permutation null",
        "",
        f"Across-class variance of coverage: observed {_fmt(s['permutation_statistic'], 5)}, "
        f"p = {_fmt(s['permutation_p_value'], 4)} over {s['n_perm']} label permutations within subgroups "
        "(`permutation_test.json`, figure `permutation_null`). A small p means coverage differs between "
        "classes more than chance would give.",
        "",
        f"Per descriptor (same permutations, Benjamini–Hochberg over the {s['n_descriptors']} descriptors, "
        f"`descriptor_tests.csv`): {s['n_descriptors_significant_bh']} with q < 0.05.",
        "",
        markdown_table(result["descriptor_tests"], fmt=_fmt),
        "",
    ]
    if s["has_predictions"]:
        lines += _cdi_lines(s, result["reference"].min_group_n)
    else:
        lines += ["No predictions were given (`--pred`), so no CDI was computed.", ""]
    lines += ["Summary numbers: `summary.json`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing
def write_audit(result: dict, out_dir: str | Path, figures: bool = True) -> list[Path]:
    """Write an :func:`audit_table` result into ``out_dir`` atomically (tmp folder, then moves)."""
    import matplotlib.pyplot as plt

    from semcov_lib.report import figures as figs
    from semcov_lib.report.outputs import savefig

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        result["coverage"].to_csv(tmp / "coverage.csv", index=False)
        if result["coverage_class"] is not None:
            result["coverage_class"].to_csv(tmp / "coverage_class.csv", index=False)
        (tmp / "permutation_test.json").write_text(json.dumps(json_ready(result["permutation"].to_dict()), indent=2))
        result["descriptor_tests"].to_csv(tmp / "descriptor_tests.csv", index=False)
        if result["cdi"] is not None:
            result["cdi"].per_scg.to_csv(tmp / "per_scg_error.csv", index=False)
            result["group_accuracy"].to_csv(tmp / "group_accuracy.csv", index=False)
            result["class_recall"].to_csv(tmp / "class_recall.csv", index=False)
        if figures:
            made = {
                "coverage_long_tail": lambda: figs.coverage_long_tail(result["coverage"]),
                "coverage_heatmap": lambda: figs.coverage_heatmaps(result["coverage_array"], result["classes"],
                                                                   result["descriptors"], result["subgroups"]),
                "permutation_null": lambda: figs.permutation_null_hist(result["permutation"]),
            }
            if result["cdi"] is not None:
                made["coverage_vs_error"] = lambda: figs.coverage_error_scatter(result["cdi"])
            for name, make in made.items():
                fig = make()
                savefig(fig, name, tmp)
                plt.close(fig)
        (tmp / "report.md").write_text(result["report"])
        (tmp / "summary.json").write_text(json.dumps(json_ready(result["summary"]), indent=2, allow_nan=False))
        out_dir.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in tmp.iterdir() if p.name != "summary.json") + ["summary.json"]
        (out_dir / "summary.json").unlink(missing_ok=True)  # an interrupted update leaves no complete marker
        for stale in AUDIT_OUTPUTS - set(names):  # the audit's own files from an earlier run; never others
            (out_dir / stale).unlink(missing_ok=True)
        written = []
        for name in names:  # summary.json last: its presence marks a complete audit
            os.replace(tmp / name, out_dir / name)
            written.append(out_dir / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m semcov_lib audit``."""
    parser.add_argument("--table", required=True, help="CSV or Parquet file, one row per sample")
    parser.add_argument("--id", required=True, dest="id_col", help="column with unique sample ids")
    parser.add_argument("--label", required=True, dest="label_col", help="column with class labels")
    parser.add_argument("--descriptors", required=True,
                        help="comma-separated descriptor columns, scores in [0, 1], empty = not observed")
    parser.add_argument("--subgroup", dest="subgroup_col", default=None, help="subgroup column (optional)")
    parser.add_argument("--split", dest="split_col", default=None, help="split column (optional)")
    parser.add_argument("--train-split", default="train", help="value of --split for coverage rows (default train)")
    parser.add_argument("--eval-split", default="test", help="value of --split for error rows (default test)")
    parser.add_argument("--pred", default=None, help="predictions CSV/Parquet: id column + 'pred' (+ prob_<class>)")
    parser.add_argument("--pred-col", default="pred", help="column of predicted labels (default pred)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class list (default: the labels found in the table); predictions "
                             "may then name classes that have no rows")
    parser.add_argument("--min-weight", type=float, default=5.0, help="minimum evaluation weight of a valid SCG")
    parser.add_argument("--min-train-n", type=int, default=10,
                        help="minimum training rows of a (class, subgroup) for its SCGs to be valid")
    parser.add_argument("--min-group-n", type=int, default=30,
                        help="minimum evaluation rows of a (class, subgroup) for worst-group accuracy")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CDI CI")
    parser.add_argument("--n-perm", type=int, default=1000, help="label permutations for the null test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("soft", "hard"), default="soft", help="membership weights (default soft)")
    parser.add_argument("--error", choices=("hard", "soft"), default="hard",
                        help="per-sample error: 1[pred != y] (hard) or 1 - p(y|x) (soft, needs prob_ columns)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (faster)")
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    """Run the audit described by ``args`` and print where the report is."""
    frame = read_table(args.table)
    descriptors = [d.strip() for d in args.descriptors.split(",") if d.strip()]
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None
    predictions = read_table(args.pred) if args.pred else None
    columns = AuditColumns(id=args.id_col, label=args.label_col, descriptors=tuple(descriptors),
                           subgroup=args.subgroup_col, split=args.split_col, train_split=args.train_split,
                           eval_split=args.eval_split, pred=args.pred_col, classes=classes)
    options = {"mode": args.mode, "error": args.error, "min_weight": args.min_weight,
               "min_train_n": args.min_train_n, "min_group_n": args.min_group_n}
    result = audit_table(frame, columns, predictions, options, Resampling(n_boot=args.n_boot, n_perm=args.n_perm,
                                                                          seed=args.seed),
                         source=str(args.table), predictions_source=str(args.pred))
    from semcov_lib.experiment.runs import folder_lock

    with folder_lock(Path(args.out), "audit"):  # two audits into one folder would mix their files
        write_audit(result, args.out, figures=not args.no_figures)
    s = result["summary"]
    line = f"audit of {args.table}: {s['n_scgs']} SCGs, {s['n_valid_scgs']} valid"
    if s["has_predictions"]:
        line += f", CDI {_fmt(s['cdi'])} [{_fmt(s['cdi_ci_low'])}, {_fmt(s['cdi_ci_high'])}]"
    print(f"{line}\nreport: {Path(args.out) / 'report.md'}")
    return 0


__all__ = ["AuditColumns", "AuditError", "add_arguments", "audit_table", "read_table", "render_report", "run", "write_audit"]
