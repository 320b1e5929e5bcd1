"""``audit`` command: an SCI audit (coverage, permutation null, CDI) of any table a user brings.

    python -m semcov_lib audit --table FILE.csv --id COL --label COL --descriptors COL,COL,... \\
        [--subgroup COL] [--split COL --train-split VALUE --eval-split VALUE] \\
        [--pred PREDICTIONS.csv] [--min-weight 5] [--n-boot 1000] [--seed 0] --out DIR

The table is CSV or Parquet, one row per sample; descriptor columns hold scores in [0, 1] (NaN =
not observed). Coverage comes from the training rows (all rows when no split is given, which the
report states). The predictions file holds the id column (same name as ``--id``, or
``sample_id``/``id``) and a ``pred`` column with predicted labels spelled like the label column;
optional ``prob_<class>`` columns enable ``--error soft``. CDI defaults follow METHODS.md §2:
soft membership weights, m = 5, absolute Spearman.

Outputs (written into a temporary folder, then moved into ``--out``; ``summary.json`` last):
``coverage.csv``, ``coverage_class.csv`` (with a subgroup), ``permutation_test.json``,
``coverage_long_tail``/``coverage_heatmap``/``permutation_null`` figures (PDF + PNG) and, with
predictions, ``per_scg_error.csv`` and the ``coverage_vs_error`` figure; ``report.md`` and
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
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from semcov_lib.cdi import CDIWarning, compute_cdi
from semcov_lib.coverage import coverage_array, coverage_table, permutation_test
from semcov_lib.metrics import stratum_errors
from semcov_lib.runs import json_ready
from semcov_lib.tables import markdown_table

MISSING_SUBGROUP = "missing"


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
    ids = _text(predictions[pid])
    if any(i is None for i in ids):
        raise AuditError(f"{source}: column {pid!r} has missing ids")
    dup = pd.Series(ids).duplicated()
    if dup.any():
        raise AuditError(f"{source}: duplicated id {ids[dup.to_numpy()][0]!r} ({int(dup.sum())} duplicates)")
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
def audit_table(
    frame: pd.DataFrame,
    id_col: str,
    label_col: str,
    descriptor_cols: Sequence[str],
    subgroup_col: str | None = None,
    split_col: str | None = None,
    train_split: str = "train",
    eval_split: str = "test",
    predictions: pd.DataFrame | None = None,
    pred_col: str = "pred",
    min_weight: float = 5,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    mode: str = "soft",
    error: str = "hard",
    source: str = "table",
    predictions_source: str = "predictions",
) -> dict[str, Any]:
    """SCI audit of a table: coverage tables, permutation null and (with predictions) the CDI.

    Returns a dict with ``summary`` (flat, JSON-ready apart from NaN), ``coverage`` (SCG table),
    ``coverage_class`` ((class, descriptor) table or None), ``coverage_array`` (T, K, S),
    ``permutation`` (PermutationResult), ``cdi`` (CDIResult or None), ``classes``,
    ``descriptors``, ``subgroups``, ``notes`` (list of str) and ``report`` (Markdown).
    """
    descriptor_cols = [str(c) for c in descriptor_cols]
    if not descriptor_cols:
        raise AuditError(f"{source}: no descriptor columns given")
    needed = [id_col, label_col, *descriptor_cols] + [c for c in (subgroup_col, split_col) if c]
    _require(frame, needed, source)
    notes: list[str] = []

    ids = _text(frame[id_col])
    if any(i is None for i in ids):
        raise AuditError(f"{source}: column {id_col!r} has missing ids")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise AuditError(f"{source}: column {id_col!r} has duplicated id {ids[dup][0]!r} ({int(dup.sum())} duplicates)")
    labels_text = _text(frame[label_col])
    missing = [i for i, v in enumerate(labels_text) if v is None]
    if missing:
        raise AuditError(f"{source}: column {label_col!r} is empty for id {ids[missing[0]]!r} ({len(missing)} rows)")
    classes = _sorted_levels(labels_text)
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in labels_text], dtype=np.int64)
    scores = _descriptor_matrix(frame, descriptor_cols, ids, source)

    if subgroup_col:
        sub_text = np.array([MISSING_SUBGROUP if v is None else v for v in _text(frame[subgroup_col])], dtype=object)
        subgroups = _sorted_levels(sub_text)
        if MISSING_SUBGROUP in sub_text:
            notes.append(f"{int((sub_text == MISSING_SUBGROUP).sum())} row(s) without a {subgroup_col!r} value form "
                         f"the subgroup {MISSING_SUBGROUP!r}.")
        s_lookup = {v: i for i, v in enumerate(subgroups)}
        s = np.array([s_lookup[v] for v in sub_text], dtype=np.int64)
    else:
        subgroups, s = ["all"], np.zeros(len(frame), dtype=np.int64)

    same_rows = split_col is None
    if split_col:
        split = _text(frame[split_col])
        present = sorted({v for v in split if v is not None})
        for value in (train_split, eval_split):
            if value not in present:
                raise AuditError(f"{source}: split column {split_col!r} has no rows with value {value!r}; "
                                 f"values present: {present}")
        train = np.flatnonzero(split == train_split)
        evaluation = np.flatnonzero(split == eval_split)
    else:
        train = evaluation = np.arange(len(frame))
        notes.append("No split was given: coverage and error come from the same rows, so the CDI measures "
                     "in-sample association and is likely optimistic about generalisation.")

    T, K, S = len(classes), len(descriptor_cols), len(subgroups)
    cov = coverage_array(y[train], s[train], scores[train], T, S, mode=mode)
    cov_tab = coverage_table(y[train], s[train], scores[train], classes, descriptor_cols, subgroups, mode=mode)
    cov_class = coverage_table(y[train], None, scores[train], classes, descriptor_cols, None, mode=mode) \
        if subgroup_col else None
    perm = permutation_test(y[train], s[train], scores[train], T, S, n_perm=n_perm, seed=seed, mode=mode)
    empty_classes = [classes[c] for c in np.flatnonzero(np.bincount(y[train], minlength=T) == 0)]
    if empty_classes:
        notes.append(f"Class(es) {empty_classes} have no training rows; their coverage is undefined (NaN).")

    finite = np.isfinite(cov)
    summary: dict[str, Any] = {
        "source": source,
        "n_samples": int(len(frame)),
        "n_train": int(len(train)),
        "n_eval": int(len(evaluation)),
        "same_rows": bool(same_rows),
        "n_classes": T,
        "n_descriptors": K,
        "n_subgroups": S,
        "n_scgs": int(T * K * S),
        "n_scgs_defined": int(finite.sum()),
        "n_valid_scgs": int(finite.sum()),
        "mode": mode,
        "permutation_statistic": perm.statistic,
        "permutation_p_value": perm.p_value,
        "n_perm": int(n_perm),
        "has_predictions": predictions is not None,
    }

    cdi = None
    if predictions is not None:
        preds = _read_predictions(predictions, id_col, pred_col, classes, set(ids.tolist()), predictions_source)
        eval_ids = ids[evaluation]
        has = np.array([i in preds.index for i in eval_ids], dtype=bool)
        if not has.any():
            raise AuditError(f"{predictions_source}: none of the {len(evaluation)} evaluation rows"
                             f"{f' (split {eval_split!r})' if split_col else ''} has a prediction")
        if not has.all():
            notes.append(f"{int((~has).sum())} of {len(evaluation)} evaluation rows have no prediction and are "
                         "left out of the CDI.")
        rows = evaluation[has]
        p = preds.loc[ids[rows]]
        probs = p[[f"prob_{c}" for c in classes]].to_numpy() if f"prob_{classes[0]}" in p.columns else None
        if error == "soft" and probs is None:
            raise AuditError(f"{predictions_source}: error='soft' needs prob_<class> columns for {classes}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CDIWarning)
            cdi = compute_cdi(cov, y[rows], p["pred"].to_numpy(), s[rows], scores[rows], probs=probs,
                              min_weight=min_weight, error=error, n_boot=n_boot, seed=seed, mode=mode,
                              classes=classes, descriptors=descriptor_cols, subgroup_levels=subgroups)
        for w in caught:
            notes.append(f"CDI warning: {w.message}")
            warnings.warn(w.message, CDIWarning, stacklevel=2)
        summary.update({
            "n_eval_with_predictions": int(len(rows)),
            "accuracy": float(np.mean(p["pred"].to_numpy() == y[rows])),
            "cdi": cdi.cdi,
            "cdi_ci_low": cdi.ci_low,
            "cdi_ci_high": cdi.ci_high,
            "cdi_signed_rho": cdi.signed_rho,
            "cdi_pearson_log": cdi.pearson_log,
            "cdi_weighted": cdi.weighted,
            "n_valid_scgs": int(cdi.n_valid),
            "min_weight": float(min_weight),
            "n_boot": int(n_boot),
            "error": error,
            **stratum_errors(cdi.per_scg),
        })

    result = {
        "summary": summary, "coverage": cov_tab, "coverage_class": cov_class, "coverage_array": cov,
        "permutation": perm, "cdi": cdi, "classes": classes, "descriptors": descriptor_cols,
        "subgroups": subgroups, "notes": notes,
        "options": {"id_col": id_col, "label_col": label_col, "subgroup_col": subgroup_col, "split_col": split_col,
                    "train_split": train_split, "eval_split": eval_split, "min_weight": min_weight},
    }
    result["report"] = render_report(result)
    return result


# --------------------------------------------------------------------------- report
def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (float, np.floating)):
        return "undefined" if not np.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


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
    ]
    if s["has_predictions"]:
        lines += [
            "## Coverage Disparity Index",
            "",
            f"- CDI = |Spearman ρ(coverage, error)| = **{_fmt(s['cdi'])}** "
            f"(95% bootstrap CI {_fmt(s['cdi_ci_low'])}–{_fmt(s['cdi_ci_high'])}, {s['n_boot']} resamples)",
            f"- signed ρ = {_fmt(s['cdi_signed_rho'])} (SCI predicts ρ < 0: lower coverage, higher error)",
            f"- Pearson r on log(coverage + 1e-3) = {_fmt(s['cdi_pearson_log'])}; support-weighted CDI = "
            f"{_fmt(s['cdi_weighted'])}",
            f"- {s['n_valid_scgs']} valid SCGs (evaluation weight ≥ {_fmt(s['min_weight'], 1)}, defined coverage), "
            f"{s['n_eval_with_predictions']} evaluation rows, accuracy {_fmt(s['accuracy'])}, error = {s['error']}",
            f"- weighted error by coverage stratum: Tail {_fmt(s['tail_error'])}, Middle {_fmt(s['middle_error'])}, "
            f"Head {_fmt(s['head_error'])}",
            "",
            "Per-SCG coverage, error and weight: `per_scg_error.csv`; figure `coverage_vs_error`.",
            "",
        ]
    else:
        lines += ["No predictions were given (`--pred`), so no CDI was computed.", ""]
    lines += ["Summary numbers: `summary.json`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- writing
def write_audit(result: dict, out_dir: str | Path, figures: bool = True) -> list[Path]:
    """Write an :func:`audit_table` result into ``out_dir`` atomically (tmp folder, then moves)."""
    import matplotlib.pyplot as plt

    from semcov_lib import figures as figs
    from semcov_lib.plotting import savefig

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        result["coverage"].to_csv(tmp / "coverage.csv", index=False)
        if result["coverage_class"] is not None:
            result["coverage_class"].to_csv(tmp / "coverage_class.csv", index=False)
        (tmp / "permutation_test.json").write_text(json.dumps(json_ready(result["permutation"].to_dict()), indent=2))
        if result["cdi"] is not None:
            result["cdi"].per_scg.to_csv(tmp / "per_scg_error.csv", index=False)
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
    parser.add_argument("--min-weight", type=float, default=5.0, help="minimum evaluation weight of a valid SCG")
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
    predictions = read_table(args.pred) if args.pred else None
    result = audit_table(
        frame, args.id_col, args.label_col, descriptors, subgroup_col=args.subgroup_col, split_col=args.split_col,
        train_split=args.train_split, eval_split=args.eval_split, predictions=predictions, pred_col=args.pred_col,
        min_weight=args.min_weight, n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed, mode=args.mode,
        error=args.error, source=str(args.table), predictions_source=str(args.pred),
    )
    write_audit(result, args.out, figures=not args.no_figures)
    s = result["summary"]
    line = f"audit of {args.table}: {s['n_scgs']} SCGs, {s['n_valid_scgs']} valid"
    if s["has_predictions"]:
        line += f", CDI {_fmt(s['cdi'])} [{_fmt(s['cdi_ci_low'])}, {_fmt(s['cdi_ci_high'])}]"
    print(f"{line}\nreport: {Path(args.out) / 'report.md'}")
    return 0


__all__ = ["AuditError", "add_arguments", "audit_table", "read_table", "render_report", "run", "write_audit"]
