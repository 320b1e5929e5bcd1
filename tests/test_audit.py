"""The audit command end to end on small synthetic tables, and its error messages."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from semcov_lib.report.audit import AuditColumns, AuditError, audit_table  # noqa: E402
from semcov_lib.sci.cdi import Resampling, SCGReference, compute_cdi  # noqa: E402
from semcov_lib.cli import main  # noqa: E402
from semcov_lib.sci.coverage import coverage_array  # noqa: E402

COLUMNS = AuditColumns(id="img", label="dx", descriptors=("hair", "ruler", "blue"))

DESCRIPTORS = ["hair", "ruler", "blue"]
CLASSES = ["BCC", "MEL", "NV"]  # sorted order used by the audit


def synthetic(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    tone = rng.integers(0, 2, n)
    a = np.clip(0.2 + 0.25 * y[:, None] + rng.normal(0, 0.2, (n, 3)), 0, 1)
    a[rng.random((n, 3)) < 0.1] = np.nan
    frame = pd.DataFrame({"img": [f"s{i}" for i in range(n)], "dx": np.array(CLASSES)[y],
                          "tone": np.array(["dark", "light"])[tone],
                          "part": np.where(rng.random(n) < 0.5, "train", "test")})
    for k, name in enumerate(DESCRIPTORS):
        frame[name] = a[:, k]
    wrong = rng.random(n) < np.clip(0.6 - 0.5 * np.nan_to_num(a[:, 0], nan=0.5), 0.05, 0.9)
    pred = np.where(wrong, (y + 1) % 3, y)
    preds = pd.DataFrame({"img": frame["img"], "pred": np.array(CLASSES)[pred]})
    return frame, preds, (y, tone, a, pred)


def run_cli(tmp_path, frame, preds=None, extra=(), name="out"):
    table = tmp_path / "table.csv"
    frame.to_csv(table, index=False)
    args = ["audit", "--table", str(table), "--id", "img", "--label", "dx", "--descriptors", ",".join(DESCRIPTORS),
            "--n-boot", "100", "--n-perm", "50", "--out", str(tmp_path / name), *extra]
    if preds is not None:
        preds.to_csv(tmp_path / "pred.csv", index=False)
        args += ["--pred", str(tmp_path / "pred.csv")]
    return main(args)


def test_cli_end_to_end_matches_compute_cdi(tmp_path):
    frame, preds, (y, tone, a, pred) = synthetic()
    rc = run_cli(tmp_path, frame, preds, ["--subgroup", "tone", "--split", "part"])
    assert rc == 0
    out = tmp_path / "out"
    for name in ("coverage.csv", "coverage_class.csv", "per_scg_error.csv", "permutation_test.json", "report.md",
                 "summary.json", "coverage_long_tail.png", "coverage_heatmap.pdf", "permutation_null.png",
                 "coverage_vs_error.png"):
        assert (out / name).is_file(), name
    assert not list(tmp_path.glob(".out.tmp-*"))  # temporary folder cleaned up
    summary = json.loads((out / "summary.json").read_text())
    for key in ("n_samples", "n_scgs", "n_valid_scgs", "cdi", "cdi_ci_low", "cdi_ci_high", "cdi_signed_rho"):
        assert key in summary
    train, test = frame["part"].to_numpy() == "train", frame["part"].to_numpy() == "test"
    cov = coverage_array(y[train], tone[train], a[train], 3, 2)
    reference = SCGReference.from_training(y[train], tone[train], a[train], CLASSES, DESCRIPTORS, ["dark", "light"])
    ref = compute_cdi(reference, y[test], pred[test], tone[test], a[test],
                      resampling=Resampling(n_boot=100, n_perm=50, seed=0))
    assert summary["cdi"] == pytest.approx(ref.cdi)
    assert summary["cdi_ci_low"] == pytest.approx(ref.ci_low)
    assert summary["cdi_signed_rho"] == pytest.approx(ref.signed_rho)
    assert summary["n_valid_scgs"] == ref.n_valid
    assert summary["cdi_within"] == pytest.approx(ref.cdi_within) and summary["cdi_p"] == pytest.approx(ref.cdi_p)
    assert summary["n_samples"] == len(frame) and summary["n_scgs"] == 18
    cov_csv = pd.read_csv(out / "coverage.csv")
    np.testing.assert_allclose(cov_csv["coverage"], cov.ravel(), equal_nan=True)
    report = (out / "report.md").read_text()
    assert "CDI" in report and "same rows" not in report


def test_without_split_or_predictions_report_says_so(tmp_path):
    frame, preds, _ = synthetic(seed=1)
    assert run_cli(tmp_path, frame, preds, ["--no-figures"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "same rows" in report
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["same_rows"] is True and summary["n_subgroups"] == 1
    assert run_cli(tmp_path, frame, None, ["--no-figures"], name="nopred") == 0
    summary = json.loads((tmp_path / "nopred" / "summary.json").read_text())
    assert summary["has_predictions"] is False and "cdi" not in summary
    assert "No predictions" in (tmp_path / "nopred" / "report.md").read_text()


def test_parquet_and_library_call(tmp_path):
    frame, preds, (y, tone, a, pred) = synthetic(seed=2)
    frame.to_parquet(tmp_path / "t.parquet")
    assert main(["audit", "--table", str(tmp_path / "t.parquet"), "--id", "img", "--label", "dx", "--descriptors",
                 "hair,ruler,blue", "--n-perm", "20", "--no-figures", "--out", str(tmp_path / "pq")]) == 0
    res = audit_table(frame, COLUMNS, preds, resampling=Resampling(n_boot=0, n_perm=10))
    assert res["classes"] == CLASSES and res["cdi"] is not None
    assert res["summary"]["n_valid_scgs"] == res["cdi"].n_valid


@pytest.mark.parametrize("change, message", [
    (lambda f, p: (f.drop(columns="ruler"), p), "missing column"),
    (lambda f, p: (f.assign(hair=f["hair"] * 2 - 1), p), r"hair.*outside \[0, 1\].*\(a \+ 1\) / 2"),
    (lambda f, p: (f.assign(img=["dup"] * len(f)), p), "duplicated id 'dup'"),
    (lambda f, p: (f, pd.concat([p, p.iloc[:1]])), r"pred.csv: column 'img' has duplicated id '\w+' \(1 duplicates\)"),
    (lambda f, p: (f, p.assign(pred=p["pred"].replace("NV", "SCC"))), r"\['SCC'\] not among"),
    (lambda f, p: (f, pd.concat([p, pd.DataFrame({"img": ["ghost"], "pred": ["NV"]})])), "not in the table"),
])
def test_clear_errors(tmp_path, capsys, change, message):
    frame, preds, _ = synthetic(n=60, seed=3)
    frame, preds = change(frame, preds)
    assert run_cli(tmp_path, frame, preds, ["--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_unknown_split_value_and_library_errors():
    frame, preds, _ = synthetic(n=60, seed=4)
    with pytest.raises(AuditError, match="no rows with value 'holdout'"):
        audit_table(frame, AuditColumns("img", "dx", tuple(DESCRIPTORS), split="part", eval_split="holdout"),
                    resampling=Resampling(n_perm=5))
    bad = frame.copy()
    bad["hair"] = bad["hair"].astype(object)
    bad.loc[3, "hair"] = "high"
    with pytest.raises(AuditError, match="non-numeric 'high'"):
        audit_table(bad, COLUMNS, resampling=Resampling(n_perm=5))


def test_classes_option_descriptor_tests_groups_and_recall(tmp_path):
    frame, preds, (y, tone, a, pred) = synthetic(n=600, seed=5)
    preds.loc[:4, "pred"] = "SCC"  # a class without rows in the table
    assert run_cli(tmp_path, frame, preds, ["--no-figures"]) == 2  # not among the table's labels
    extra = ["--no-figures", "--classes", "BCC,MEL,NV,SCC", "--subgroup", "tone", "--split", "part"]
    assert run_cli(tmp_path, frame, preds, extra) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_classes"] == 4
    tests = pd.read_csv(out / "descriptor_tests.csv")
    assert list(tests["descriptor"]) == DESCRIPTORS
    # BH: q = min over j >= i of p_(j) * m / j, in p order
    p = tests["p_value"].to_numpy()
    order = np.argsort(p)
    q = np.minimum.accumulate((p[order] * 3 / np.arange(1, 4))[::-1])[::-1]
    np.testing.assert_allclose(tests["q_value"].to_numpy()[order], np.minimum(q, 1))
    assert tests["p_value"].min() < 0.05  # coverage depends on the class by construction
    groups = pd.read_csv(out / "group_accuracy.csv")
    test = frame["part"].to_numpy() == "test"
    pred_idx = np.array([["BCC", "MEL", "NV", "SCC"].index(v) for v in preds["pred"]])
    for _, row in groups.iterrows():
        m = test & (y == row["class"]) & (tone == row["subgroup"])
        assert row["n"] == m.sum() and row["accuracy"] == pytest.approx(np.mean(pred_idx[m] == y[m]))
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    recall = pd.read_csv(out / "class_recall.csv")
    assert list(recall["class"]) == ["BCC", "MEL", "NV", "SCC"] and recall.loc[3, "n_eval"] == 0
    for key in ("worst_group", "worst_group_n", "worst_group_ci_low", "worst_class", "tail_recall", "cdi_within",
                "cdi_within_p", "n_removed_train_n", "n_removed_weight"):
        assert key in summary
    with pytest.raises(AuditError, match=r"not in --classes"):
        audit_table(frame, AuditColumns("img", "dx", tuple(DESCRIPTORS), classes=("BCC", "MEL")),
                    resampling=Resampling(n_perm=5))


def test_header_only_table_and_stale_outputs(tmp_path, capsys):
    frame, preds, _ = synthetic(n=200, seed=6)
    assert run_cli(tmp_path, frame.iloc[:0], None, ["--no-figures"]) == 2
    err = capsys.readouterr().err
    first, *rest = err.strip().splitlines()  # one error line, at most one hint line
    assert first.startswith("error:") and "no rows" in first and len(rest) <= 1
    out = tmp_path / "out"
    assert run_cli(tmp_path, frame, preds, []) == 0
    assert (out / "per_scg_error.csv").is_file() and (out / "coverage_vs_error.png").is_file()
    (out / "my_notes.txt").write_text("keep me")
    assert run_cli(tmp_path, frame, None, ["--no-figures"]) == 0  # same --out, no predictions, no figures
    left = {p.name for p in out.iterdir()}
    assert not left & {"per_scg_error.csv", "group_accuracy.csv", "class_recall.csv", "coverage_vs_error.png",
                       "coverage_heatmap.pdf"}
    assert "my_notes.txt" in left and json.loads((out / "summary.json").read_text())["has_predictions"] is False


def test_descriptor_tests_use_the_reference_membership_rule():
    """With a hard rule at the training medians, the per-descriptor tests binarise the scores at
    those medians, as the coverage tables and the overall test do (not at the default tau 0.5)."""
    from semcov_lib.sci.coverage import Membership, descriptor_permutation_tests

    frame, _, (y, _, a, _) = synthetic(seed=3)
    rs = Resampling(n_boot=0, n_perm=30, seed=1)
    res = audit_table(frame, COLUMNS, reference_options={"mode": "hard", "thresholds": "median"}, resampling=rs)
    assert res["summary"]["same_rows"]  # COLUMNS names no split or subgroup: every row, one subgroup
    rule = Membership("hard", 0.5, np.nanmedian(a, axis=0))
    args = (y, np.zeros(len(y), int), a, 3, 1, rs)
    expected = descriptor_permutation_tests(*args, rule, descriptors=DESCRIPTORS)
    at_half = descriptor_permutation_tests(*args, Membership("hard", 0.5), descriptors=DESCRIPTORS)
    got = res["descriptor_tests"].set_index("descriptor")["statistic"]
    np.testing.assert_allclose(got.to_numpy(), expected.set_index("descriptor")["statistic"].to_numpy())
    assert not np.allclose(got.to_numpy(), at_half.set_index("descriptor")["statistic"].to_numpy())
