"""``make paper-figures``: train the grid, then execute the notebooks with papermill.

Each notebook gets the parameters of ``notebooks/params/<profile>.yaml`` (only the keys its
``parameters`` cell declares) and is stored executed in ``reports/executed/<profile>/``, so a
smoke run never overwrites the default's. The notebooks that only read run folders execute
side by side (``--jobs`` at a time), then the summary notebook. Progress is printed per notebook
with the elapsed time, and ``reports/tables/pipeline_timing.csv`` records (profile, notebook,
seconds) and the total. A failing notebook stops the pipeline with the notebook and cell that failed.

The README's results section is not touched here: ``make readme-results`` (``--readme-results``)
splices the Markdown that the last notebook writes (``tables/readme_results.md``) into README.md
between ``<!-- results:start -->`` and ``<!-- results:end -->``, as an explicit step.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from semcov_lib.config import ConfigError
from semcov_lib.profiles import param_profiles, profile_params
from semcov_lib.paths import NOTEBOOK_DIR, REPO_ROOT, REPORTS_DIR, TABLES_DIR, report_root
from semcov_lib.files import write_text_atomic

README = REPO_ROOT / "README.md"
README_RESULTS = "readme_results.md"
TIMING_TABLE = "pipeline_timing.csv"


def _params(profile: str) -> dict:
    """The parameters of a profile, or SystemExit with one line naming the valid profiles."""
    try:
        return profile_params(profile)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None


def notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` (plain or annotated assignments)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            names = set()
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            return names
    return set()


def _duration(seconds: float) -> str:
    seconds = round(seconds)  # 1079.6 s is 18 min 00 s, not 17 min 60 s
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def _execute(nb: Path, target: Path, given: dict) -> None:
    import papermill as pm

    try:
        pm.execute_notebook(str(nb), str(target), parameters=given, kernel_name="python3",
                            cwd=str(NOTEBOOK_DIR), progress_bar=False, shutdown_kernel="immediate")
    except pm.PapermillExecutionError as exc:
        raise SystemExit(f"{nb.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}); "
                         f"the executed copy with the traceback is {target}") from None


def train_grid(params: dict, jobs: int) -> int:
    """Train every run the notebooks need before they execute, one progress line per finished run
    in the terminal (inside the notebooks, runs are then only read back). Two passes: the second
    adds the runs chosen from finished ones (the rebalancing baseline chosen on validation)."""
    from semcov_lib.experiment.plan import pipeline_configs
    from semcov_lib.experiment.train import train_many

    for attempt in range(2):
        configs = pipeline_configs(params)
        print(f"[{params['profile']}] training grid, pass {attempt + 1}: {len(configs)} runs (finished ones are reused)",
              flush=True)
        train_many(configs, jobs=jobs, progress=True)
    return len(configs)


#: Notebooks that read the tables the others write: they run once all the others have finished.
SUMMARY_NOTEBOOKS = ("05_paper_figures.ipynb",)


def run_notebooks(profile: str = "default", jobs: int = 2, only: list[str] | None = None) -> pd.DataFrame:
    """Execute ``notebooks/[0-9][0-9]_*.ipynb``; returns the timing table it also writes.

    The grid is trained first, so the notebooks only read run folders: all but the summary ones
    (:data:`SUMMARY_NOTEBOOKS`) run ``jobs`` at a time, then the summary. The table has one row per
    notebook (its own seconds, in notebook order) and a last ``total`` row (the wall clock).
    """
    params = dict(_params(profile), jobs=jobs)
    out_dir = REPORTS_DIR / "executed" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in only)]
    rows, start = [], time.perf_counter()
    if not only:
        train_grid(params, jobs)
        rows.append({"profile": profile, "notebook": "training grid", "seconds": round(time.perf_counter() - start, 1)})
    os.environ.setdefault("TQDM_DISABLE", "1")  # the notebooks' own output stays quiet
    waves = [[nb for nb in notebooks if nb.name not in SUMMARY_NOTEBOOKS],
             [nb for nb in notebooks if nb.name in SUMMARY_NOTEBOOKS]]
    label = {nb: f"[{profile} {i}/{len(notebooks)}] {nb.name}" for i, nb in enumerate(notebooks, 1)}

    def execute(nb: Path) -> dict:
        given = {k: v for k, v in params.items() if k in notebook_parameters(nb)}
        print(f"{label[nb]} ...", flush=True)
        t0 = time.perf_counter()
        _execute(nb, out_dir / nb.name, given)
        seconds = round(time.perf_counter() - t0, 1)
        print(f"{label[nb]} done in {_duration(seconds)} (elapsed {_duration(time.perf_counter() - start)})",
              flush=True)
        return {"profile": profile, "notebook": nb.name, "seconds": seconds}

    try:
        for wave in waves:
            with ThreadPoolExecutor(max(1, min(jobs, len(wave) or 1))) as pool:  # each notebook has its own kernel
                futures = [pool.submit(execute, nb) for nb in wave]
            rows += [f.result() for f in futures if f.exception() is None]
            failed = [f.exception() for f in futures if f.exception() is not None]
            if failed:
                raise failed[0]
    finally:
        rows.append({"profile": profile, "notebook": "total", "seconds": round(time.perf_counter() - start, 1)})
        timing = pd.DataFrame(rows, columns=["profile", "notebook", "seconds"])
        write_timing(timing, profile)
    return timing


def write_timing(timing: pd.DataFrame, profile: str) -> Path:
    """Write the timing table under the profile's tables folder (``reports/tables`` for default)."""
    folder = report_root(str(_params(profile).get("output_subdir", "") or "")) / "tables"
    return write_text_atomic(folder / TIMING_TABLE, timing.to_csv(index=False))


def splice_section(text: str, body: str, marker: str = "results") -> str:
    """``text`` with everything between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` replaced."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected one '{start}' followed by one '{end}' line; add them where the results go")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def update_readme_results(source: str | Path = TABLES_DIR / README_RESULTS, readme: str | Path = README) -> Path:
    """Splice ``source`` (Markdown written by the last notebook) into the README's results section."""
    source, readme = Path(source), Path(readme)
    if not source.is_file():
        raise SystemExit(f"{source} does not exist; run `make paper-figures` first (the last notebook writes it)")
    try:
        text = splice_section(readme.read_text(), source.read_text())
    except ValueError as exc:
        raise SystemExit(f"{readme}: {exc}") from None
    return write_text_atomic(readme, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default",
                        help=f"parameter file notebooks/params/<profile>.yaml ({', '.join(param_profiles())})")
    parser.add_argument("--jobs", type=int, default=2, help="parallel training processes")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 03")
    parser.add_argument("--readme-results", action="store_true",
                        help="only splice the profile's tables/readme_results.md into README.md, then exit")
    args = parser.parse_args(argv)
    if args.readme_results:
        subdir = str(_params(args.profile).get("output_subdir", "") or "")
        path = update_readme_results(report_root(subdir) / "tables" / README_RESULTS)
        print(f"updated the results section of {path}", flush=True)
        return 0
    timing = run_notebooks(args.profile, args.jobs, args.only)
    print(timing.to_string(index=False), flush=True)
    print(f"paper-figures ({args.profile}) finished in {_duration(timing['seconds'].iloc[-1])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
