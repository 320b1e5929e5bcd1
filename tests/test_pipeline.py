"""The notebook pipeline: profiles, per-profile executed folders, timing table, README splicing."""

from __future__ import annotations

import shutil
import subprocess
import threading

import nbformat
import pandas as pd
import pytest

from semcov_lib import pipeline
from semcov_lib import profiles
from semcov_lib.paths import REPO_ROOT


def test_unknown_profile_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--profile", "nope"])
    message = str(exc.value)
    assert "\n" not in message and "'nope'" in message
    for name in ("default", "paper", "smoke"):
        assert name in message


def write_notebook(path, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, path)


def test_notebook_parameters_reads_annotated_cells(tmp_path):
    write_notebook(tmp_path / "a.ipynb", 'seeds: list[int] = [0]  # seeds\nprofile = "smoke"\nn: int = 3\nx[0] = 1')
    assert pipeline.notebook_parameters(tmp_path / "a.ipynb") == {"seeds", "profile", "n"}


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """Two notebooks and two profiles in a temporary tree; execution copies the notebook."""
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    write_notebook(tmp_path / "notebooks" / "01_a.ipynb", "seed: int = 0\nprofile = 'smoke'")
    write_notebook(tmp_path / "notebooks" / "02_b.ipynb", "jobs: int = 1")
    (tmp_path / "notebooks" / "params" / "default.yaml").write_text("seed: 3\noutput_subdir: ''\n")
    (tmp_path / "notebooks" / "params" / "smoke.yaml").write_text("seed: 1\noutput_subdir: smoke\n")
    calls = []

    def fake_execute(nb, target, given):
        calls.append((nb.name, dict(given)))
        shutil.copy(nb, target)

    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(profiles, "PARAMS_DIR", tmp_path / "notebooks" / "params")
    monkeypatch.setattr(pipeline, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(pipeline, "report_root", lambda sub="": tmp_path / "reports" / sub if sub else tmp_path / "reports")
    monkeypatch.setattr(pipeline, "_execute", fake_execute)
    monkeypatch.setattr(pipeline, "train_grid", lambda params, jobs: calls.append(("grid", params["seed"], jobs)))
    return tmp_path, calls


def test_profiles_get_their_own_executed_folder_and_timing(fake_repo, capsys):
    root, calls = fake_repo
    pipeline.run_notebooks("smoke", jobs=2)
    pipeline.run_notebooks("default", jobs=1, only=["02"])
    assert sorted(p.name for p in (root / "reports" / "executed" / "smoke").iterdir()) == ["01_a.ipynb", "02_b.ipynb"]
    assert [p.name for p in (root / "reports" / "executed" / "default").iterdir()] == ["02_b.ipynb"]
    assert calls[0] == ("grid", 1, 2)  # the whole grid is trained first, then the notebooks re-plot
    # only declared parameters are passed (the two notebooks run side by side, in either order)
    assert sorted(calls[1:3]) == [("01_a.ipynb", {"seed": 1}), ("02_b.ipynb", {"jobs": 2})]
    assert ("grid", 3, 1) not in calls  # a partial run (--only) trains nothing up front
    smoke = pd.read_csv(root / "reports" / "smoke" / "tables" / "pipeline_timing.csv")
    assert list(smoke.columns) == ["profile", "notebook", "seconds"]
    assert list(smoke["notebook"]) == ["training grid", "01_a.ipynb", "02_b.ipynb", "total"]
    assert (smoke["seconds"] >= 0).all() and smoke["seconds"].iloc[-1] >= smoke["seconds"].iloc[0]
    default = pd.read_csv(root / "reports" / "tables" / "pipeline_timing.csv")
    assert list(default["notebook"]) == ["02_b.ipynb", "total"] and set(default["profile"]) == {"default"}
    out = capsys.readouterr().out
    assert "[smoke 1/2] 01_a.ipynb done in" in out and "elapsed" in out


def test_notebooks_run_side_by_side_and_the_summary_last(fake_repo, monkeypatch):
    root, calls = fake_repo
    write_notebook(root / "notebooks" / "05_paper_figures.ipynb", "seed: int = 0")
    both_running = threading.Barrier(2, timeout=10)  # breaks (and fails the run) unless 01 and 02 overlap
    order = []

    def execute(nb, target, given):
        if nb.name != "05_paper_figures.ipynb":
            both_running.wait()
        order.append(nb.name)

    monkeypatch.setattr(pipeline, "_execute", execute)
    timing = pipeline.run_notebooks("default", jobs=2)
    assert order[-1] == "05_paper_figures.ipynb" and sorted(order[:2]) == ["01_a.ipynb", "02_b.ipynb"]
    assert list(timing["notebook"]) == ["training grid", "01_a.ipynb", "02_b.ipynb", "05_paper_figures.ipynb", "total"]


def test_timing_is_written_when_a_notebook_fails(fake_repo, monkeypatch):
    root, _ = fake_repo

    def failing(nb, target, given):
        if nb.name.startswith("02"):
            raise SystemExit("02_b.ipynb failed in cell 2")

    monkeypatch.setattr(pipeline, "_execute", failing)
    with pytest.raises(SystemExit, match="02_b"):
        pipeline.run_notebooks("default")
    assert list(pd.read_csv(root / "reports" / "tables" / "pipeline_timing.csv")["notebook"]) == ["training grid",
                                                                                                 "01_a.ipynb", "total"]


README = "# T\n\nintro\n<!-- results:start -->\nold\n<!-- results:end -->\n\n## After\n"


def test_splice_section_replaces_only_the_marked_part():
    text = pipeline.splice_section(README, "new *table*\n")
    assert text == "# T\n\nintro\n<!-- results:start -->\nnew *table*\n<!-- results:end -->\n\n## After\n"
    assert pipeline.splice_section(text, "new *table*") == text  # idempotent
    with pytest.raises(ValueError, match="results:start"):
        pipeline.splice_section("# no markers", "x")
    with pytest.raises(ValueError):
        pipeline.splice_section("<!-- results:end -->\n<!-- results:start -->", "x")


def test_update_readme_results(tmp_path):
    readme, source = tmp_path / "README.md", tmp_path / "readme_results.md"
    readme.write_text(README)
    with pytest.raises(SystemExit, match="make paper-figures"):
        pipeline.update_readme_results(source, readme)
    source.write_text("| a |\n|---|\n| 1 |\n")
    pipeline.update_readme_results(source, readme)
    assert "| 1 |\n<!-- results:end -->" in readme.read_text() and "old" not in readme.read_text()


def test_repository_readme_has_the_markers():
    text = (REPO_ROOT / "README.md").read_text()
    assert pipeline.splice_section(text, "x").count("<!-- results:start -->") == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_help_prints_no_colour_codes_into_a_pipe():
    out = subprocess.run(["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "readme-results" in out and "grid" in out
    assert "\x1b" not in out


def test_every_profile_has_one_parameter_file_and_one_table_entry():
    """The profile name means the same to the generator, the trainer and the notebooks: one
    ``notebooks/params/<name>.yaml`` per entry of ``PROFILES``, naming its own profile."""
    from semcov_lib.data.benchmark import BENCHMARK_PROFILES
    from semcov_lib.experiment.protocol import TRAIN_PROFILES
    from semcov_lib.profiles import param_profiles, profile_params
    from semcov_lib.profiles import PROFILES

    assert param_profiles() == sorted(PROFILES) == sorted(TRAIN_PROFILES) == sorted(BENCHMARK_PROFILES)
    for name in PROFILES:
        assert profile_params(name)["profile"] == name
