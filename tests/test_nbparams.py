"""Notebook parameters: papermill's strings are coerced to the declared types, or one clear line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from semcov_lib import pipeline
from semcov_lib.profiles import param_profiles, profile_params
from semcov_lib.nbparams import ParameterError, check_parameters, coerce
from semcov_lib.paths import NOTEBOOK_DIR

CELL = '''profile: str = "smoke"  # parameter file name: smoke, default or paper
seeds: list[int] = [0]  # training seeds, one run each
lr: float = 0.01  # learning rate
update: bool = False  # write the README section
options: dict = {}  # loader options
'''
ANNOTATIONS = {"profile": str, "seeds": list[int], "lr": float, "update": bool, "options": dict,
               "limit": int | None, "values": list[float]}


@pytest.mark.parametrize("name, raw, expected", [
    ("seeds", "[1]", [1]), ("seeds", "[0, 1, 2]", [0, 1, 2]), ("seeds", 3, [3]), ("seeds", [1.0], [1]),
    ("lr", "0.5", 0.5), ("lr", 1, 1.0), ("lr", "1e-3", 1e-3), ("update", "true", True), ("update", True, True),
    ("profile", 1, "1"), ("profile", "[not yaml", "[not yaml"), ("options", "{a: 1}", {"a": 1}),
    ("limit", "None", None), ("limit", None, None), ("limit", "7", 7), ("values", "[0.1, 1]", [0.1, 1.0]),
])
def test_coerces_papermill_values(name, raw, expected):
    namespace = {name: raw}
    out = check_parameters(namespace, {name: ANNOTATIONS[name]})
    assert out[name] == expected and namespace[name] == expected
    assert type(namespace[name]) is type(expected)


@pytest.mark.parametrize("name, raw", [
    ("seeds", "[a"), ("seeds", "[1.5]"), ("lr", "fast"), ("update", "1"), ("update", 1), ("options", "[1]"),
    ("limit", "x"), ("seeds", True),
])
def test_bad_values_raise_one_line_naming_the_parameter(name, raw):
    with pytest.raises(ParameterError) as exc:
        check_parameters({name: raw}, {name: ANNOTATIONS[name]})
    message = str(exc.value)
    assert "\n" not in message
    assert f"parameter {name!r} must be" in message and repr(raw) in message


def test_reads_annotations_from_the_namespace_and_skips_unannotated():
    namespace = {"__annotations__": {"seeds": list[int], "missing": int}, "seeds": "[4, 5]", "other": "[1]"}
    assert check_parameters(namespace) == {"seeds": [4, 5]}
    assert namespace["other"] == "[1]"
    assert coerce([1, 2], list) == [1, 2]


def make_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(CELL)
    params.metadata["tags"] = ["parameters"]
    check = nbformat.v4.new_code_cell("from semcov_lib.nbparams import check_parameters\n"
                                      "check_parameters(globals())\nprint(repr(seeds), repr(lr))")
    nb.cells = [params, check]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def papermill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "papermill", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(shutil.which("jupyter") is None and not Path(sys.prefix, "bin", "jupyter").exists(),
                    reason="no Jupyter installation")
def test_papermill_shows_types_and_descriptions_and_the_notebook_coerces(tmp_path):
    make_notebook(tmp_path / "t.ipynb")
    help_text = papermill("--help-notebook", "t.ipynb", cwd=tmp_path).stdout
    assert "seeds: list[int] (default [0])" in help_text
    assert "training seeds, one run each" in help_text
    assert "Unknown type" not in help_text
    run = papermill("t.ipynb", "out.ipynb", "-k", "python3", "-p", "seeds", "[1]", "-p", "lr", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs
    assert outputs[0]["text"].strip() == "[1] 2.0"


NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def parameter_defaults(path: Path) -> dict:
    """A notebook's parameters-cell defaults, run and checked as the notebook itself does."""
    cell = next(c for c in nbformat.read(path, as_version=4).cells
                if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    # dont_inherit: this module's `from __future__ import annotations` would turn the types into strings
    exec(compile(cell.source, path.name, "exec", dont_inherit=True), namespace)  # noqa: S102
    before = {k: v for k, v in namespace.items() if k in namespace["__annotations__"]}
    checked = check_parameters(namespace)
    assert checked == before and all(type(checked[k]) is type(before[k]) for k in before), \
        f"{path.name}: a default does not have its declared type"
    return checked


def test_there_are_notebooks_and_profiles():
    assert len(NOTEBOOKS) >= 6 and "smoke" in param_profiles()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defaults_are_the_smoke_profile(path):
    """nbval runs the notebooks with their own defaults, which must be the smoke profile's values."""
    defaults = parameter_defaults(path)
    assert set(defaults) == pipeline.notebook_parameters(path), "every parameter is annotated"
    smoke = profile_params("smoke")
    shared = sorted(set(defaults) & set(smoke))
    assert "output_subdir" in shared
    assert {k: defaults[k] for k in shared} == {k: smoke[k] for k in shared}


@pytest.mark.parametrize("profile", param_profiles())
def test_profiles_only_set_parameters_some_notebook_declares(profile):
    declared = set().union(*(pipeline.notebook_parameters(p) for p in NOTEBOOKS))
    unused = set(profile_params(profile)) - declared
    assert not unused, f"notebooks/params/{profile}.yaml sets {sorted(unused)}, which no notebook declares"
