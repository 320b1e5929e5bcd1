"""The grid command: exact train commands, submitit's local executor, reuse of finished runs."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from semcov_lib.experiment import grid, plan, results
from semcov_lib.cli import build_parser
from semcov_lib.config import ConfigError, parse_overrides
from semcov_lib.experiment.protocol import run_dir_for, train_config
from semcov_lib.profiles import profile_params


def _config_from_command(line: str):
    """What ``python -m semcov_lib train`` builds from a printed line (as the train command does)."""
    argv = shlex.split(line)
    assert argv[:4] == ["python", "-m", "semcov_lib", "train"]
    args = build_parser(argv[3:]).parse_args(argv[3:])
    config = train_config(args.method, args.profile, args.seed, parse_overrides(args.set), args.config)
    return config, args.out


def test_print_commands_round_trip_to_the_same_run_folders(capsys):
    expected = plan.pipeline_configs(profile_params("smoke"))
    args = build_parser(["grid", "--profile", "smoke", "--print-commands"]).parse_args(
        ["grid", "--profile", "smoke", "--print-commands"])
    assert grid.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected)
    for line, config in zip(lines, expected):
        rebuilt, _ = _config_from_command(line)
        assert rebuilt == config and run_dir_for(rebuilt) == run_dir_for(config), line


def test_train_command_keeps_value_types(tmp_path):
    """Floats without a dot (1e-05), nested lists, strings and hp keys named like training keys survive."""
    config = train_config("sadcl", "smoke", 3, {
        "lr": 1e-05, "warmup_epochs": 1, "augment": False, "selection_metric": "last",
        "hp": {"warmup_epochs": 2, "warmup_frac": 0.25, "sadcl_task": "descriptors", "cnn_widths": [8, 8, 16, 16]},
        "benchmark_overrides": {"coverage_tail_exponent": 2.0},
    })
    line = grid.train_command(config, root=tmp_path)
    rebuilt, out = _config_from_command(line)
    assert rebuilt == config and rebuilt.hp["warmup_epochs"] == 2 and rebuilt.warmup_epochs == 1
    assert out == str(run_dir_for(config, tmp_path))
    assert grid._yaml_value(1e-05) == "1.0e-05" and yaml.safe_load(grid._yaml_value(1e-05)) == 1e-05
    assert grid.train_command(train_config("erm", "smoke", 0)) == \
        "python -m semcov_lib train --method erm --profile smoke --seed 0"


def test_unknown_profile_parameters_give_one_line_error():
    with pytest.raises(ConfigError, match="no notebook parameter file .*nope.yaml"):
        profile_params("nope")


def test_local_grid_trains_through_submitit_then_reuses(tmp_path, capsys, monkeypatch):
    """Two tiny runs as submitit local jobs (real subprocesses), then nothing left to train."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # progress lines on (they honour TQDM_DISABLE)
    fast = {"epochs": 1, "max_steps": 2, "n_boot": 10}
    configs = [train_config("erm", "smoke", 0, fast), train_config("erm_desc", "smoke", 0, fast)]
    failures = grid.run_local(configs, root=tmp_path, jobs=2, progress=True)
    assert failures == []
    out = capsys.readouterr().out
    assert "2 runs: 0 finished already, 2 to train" in out
    assert "[1/2]" in out and "[2/2]" in out and "0 left" in out
    stamps = {}
    for config in configs:
        folder = run_dir_for(config, tmp_path)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["method"] == config.method
        stamps[folder] = (folder / "metrics.json").stat().st_mtime_ns
    assert list((tmp_path / "_submitit").glob("*_log.err"))  # submitit kept each job's log
    # the notebooks' path: every run is found finished, nothing is trained
    runs_frame = results.results_frame(configs, root=tmp_path)
    assert list(runs_frame["method"]) == ["erm", "erm_desc"]
    assert list(runs_frame["sees_descriptors_at_test"]) == [False, True]
    assert list(runs_frame["selection_metric"]) == ["macro_f1", "macro_f1"]
    summary = results.summarise(runs_frame, metrics=["macro_f1"]).set_index("method")
    assert bool(summary.loc["erm_desc", "sees_descriptors_at_test"]) and summary.loc["erm", "n_seeds"] == 1
    assert grid.run_local(configs, root=tmp_path, jobs=2, progress=True) == []
    assert "to train" not in capsys.readouterr().out
    assert all((folder / "metrics.json").stat().st_mtime_ns == t for folder, t in stamps.items())


def test_local_grid_reports_a_failed_run(tmp_path):
    # an absurd learning rate: the loss turns non-finite and training stops with an error
    bad = train_config("erm", "smoke", 0, {"epochs": 1, "max_steps": 5, "n_boot": 10, "lr": 1e38})
    failures = grid.run_local([bad], root=tmp_path, jobs=1, progress=False)
    assert len(failures) == 1 and failures[0].startswith("erm seed 0:") and "log:" in failures[0]


def test_slurm_submission_is_one_throttled_array(tmp_path, monkeypatch):
    """With stand-in ``srun``/``sbatch`` on PATH: one job array, the resources asked for, no run trained."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", "echo 'Submitted batch job 4242'")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    configs = [train_config("erm", "smoke", s) for s in (0, 1, 2)]
    options = grid.SlurmOptions(partition="gpu", time_min=90, gpus_per_node=1, cpus_per_task=4)
    jobs = grid.submit_slurm(configs, options, root=tmp_path / "runs", jobs=2, log_dir=tmp_path / "logs")
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = next((tmp_path / "logs").rglob("*submission.sh")).read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --array=0-2%2"):
        assert line in script, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_notebook_only_replots_the_runs_a_grid_trained(tmp_path):
    """Runs trained by the grid (submitit's local executor) are what notebook 02 reads: executing it
    afterwards trains nothing (no new run folder, no finished folder rewritten)."""
    import papermill as pm

    from semcov_lib.paths import REPO_ROOT, RUNS_DIR
    from semcov_lib.experiment.protocol import COMPLETE_MARKER

    groups = [plan.main_configs("smoke", [0], [m]) for m in ("erm", "erm_desc", "semcovnet")]
    groups.append(plan.ablation_configs("smoke", [0], leave_one_out=False)["full"])
    configs = [c for g in groups for c in g]
    assert grid.run_local(configs, jobs=2, progress=False) == []
    before = {p: p.stat().st_mtime_ns for p in RUNS_DIR.glob(f"*/*/{COMPLETE_MARKER}")}
    assert {run_dir_for(c) / COMPLETE_MARKER for c in configs} <= set(before)
    notebook = REPO_ROOT / "notebooks" / "02_train_semcovnet.ipynb"
    pm.execute_notebook(str(notebook), str(tmp_path / notebook.name), parameters={"output_subdir": "test_grid_replot"}, kernel_name="python3",
                        cwd=str(notebook.parent), progress_bar=False, log_output=False)
    after = {p: p.stat().st_mtime_ns for p in RUNS_DIR.glob(f"*/*/{COMPLETE_MARKER}")}
    assert after == before
