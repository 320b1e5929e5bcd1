"""The package's shape, checked: imports run one way (report -> experiment -> models -> sci/data),
functions stay short and take few parameters, so a newcomer can read any module on its own."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "semcov_lib"
#: Lower layers never import higher ones. data/ sits below sci/ (sci reads the common table).
LAYERS = {"errors": 0, "paths": 0, "config": 0, "files": 0, "profiles": 0, "nbparams": 0, "memory": 0,
          "data": 1, "sci": 2, "models": 3, "experiment": 4, "report": 5, "cli": 6, "pipeline": 6, "__main__": 6}
#: The one function allowed to be long: the training driver, read top to bottom with banner comments.
LONG_ALLOWED = {("experiment/train.py", "_train_locked")}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _layer(dotted: str) -> int | None:
    parts = dotted.split(".")
    if parts[0] != "semcov_lib" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)


def test_every_module_has_a_layer():
    for path in _modules():
        dotted = "semcov_lib." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        assert _layer(dotted) is not None, f"{path} is in no layer of LAYERS"


def _upward(source: str, own: int) -> list[str]:
    return [f"line {line}: {module}" for line, module in _imports(ast.parse(source)) if (_layer(module) or 0) > own]


def _long_and_wide(source: str, rel: str) -> tuple[list[str], list[str]]:
    long, wide = [], []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = node.args
        params = [a for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        if node.end_lineno - node.lineno + 1 > 60 and (rel, node.name) not in LONG_ALLOWED:
            long.append(f"{rel}:{node.lineno} {node.name}")
        if len(params) + bool(args.vararg) + bool(args.kwarg) > 8:
            wide.append(f"{rel}:{node.lineno} {node.name}")
    return long, wide


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward_only(path):
    own = _layer("semcov_lib." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    upward = _upward(path.read_text(), own)
    assert not upward, f"{path.relative_to(PACKAGE)} imports a higher layer: {upward}"


def test_functions_are_short_and_take_few_parameters():
    long, wide = [], []
    for path in _modules():
        more_long, more_wide = _long_and_wide(path.read_text(), str(path.relative_to(PACKAGE)))
        long, wide = long + more_long, wide + more_wide
    assert not long, f"functions over 60 lines: {long}"
    assert not wide, f"functions with more than 8 parameters: {wide}"


def test_the_checks_can_fail():
    """The rules above catch what they claim to: an upward import, a long and a wide function."""
    source = "def f(a, b, c, d, e, f, g, h, i):\n    from semcov_lib.report import figures\n" + "    x = 1\n" * 60
    assert _upward(source, LAYERS["sci"]) == ["line 2: semcov_lib.report"]
    assert _upward(source, LAYERS["report"]) == []
    assert _long_and_wide(source, "sci/x.py") == (["sci/x.py:1 f"], ["sci/x.py:1 f"])
    assert _long_and_wide(source.replace("def f", "def _train_locked"), "experiment/train.py")[0] == []
