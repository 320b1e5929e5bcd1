"""``make paper-figures``: execute the notebooks in order with papermill.

Each notebook gets the parameters of ``notebooks/params/<profile>.yaml`` (only the keys its
``parameters`` cell declares) and is stored executed in ``reports/executed/``. A failing
notebook stops the pipeline with the notebook and cell that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from semcov_lib.config import load_yaml
from semcov_lib.paths import REPO_ROOT, REPORTS_DIR

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOK_DIR / "params"


def notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)}
    return set()


def run_notebooks(profile: str = "default", jobs: int = 2, only: list[str] | None = None) -> list[Path]:
    """Execute ``notebooks/[0-9][0-9]_*.ipynb`` in order with the profile's parameters."""
    import papermill as pm

    params = load_yaml(PARAMS_DIR / f"{profile}.yaml")
    params["jobs"] = jobs
    out_dir = REPORTS_DIR / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
    written = []
    os.environ.setdefault("TQDM_DISABLE", "1")
    for nb in notebooks:
        declared = notebook_parameters(nb)
        given = {k: v for k, v in params.items() if k in declared}
        target = out_dir / nb.name
        start = time.perf_counter()
        print(f"[{profile}] {nb.name} ...", flush=True)
        try:
            pm.execute_notebook(str(nb), str(target), parameters=given, kernel_name="python3",
                                cwd=str(NOTEBOOK_DIR), progress_bar=False, shutdown_kernel="immediate")
        except pm.PapermillExecutionError as exc:
            raise SystemExit(
                f"{nb.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
                f"the executed copy with the traceback is {target}"
            ) from None
        print(f"[{profile}] {nb.name} done in {time.perf_counter() - start:.0f} s", flush=True)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", help="parameter file notebooks/params/<profile>.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 03")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run_notebooks(args.profile, args.jobs, args.only)
    print(f"paper-figures ({args.profile}) finished in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
