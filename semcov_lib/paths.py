"""Project paths derived from the package location, never from the working directory.

In a checkout (``pyproject.toml`` or ``.git`` beside the package) runs, reports and caches
live in the checkout (``reports/``, ``.cache/``, both ignored by git). In a normal install
(site-packages) nothing is ever written beside the package: reports and runs go to the user's
data folder and caches to the user's cache folder (platformdirs: ``~/.local/share/semcov``
and ``~/.cache/semcov`` on Linux). ``SEMCOV_CACHE`` and ``SEMCOV_RUNS`` override either.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() or (REPO_ROOT / ".git").exists()
#: The data manifests ship inside the package (package data), so ``verify`` works when installed.
MANIFESTS_DIR = PACKAGE_DIR / "data" / "manifests"
#: The ordered notebooks and their parameter files, one per profile (``params/<profile>.yaml``).
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOK_DIR / "params"


def _user_dir(kind: str) -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("semcov") if kind == "cache" else platformdirs.user_data_dir("semcov"))


REPORTS_DIR = REPO_ROOT / "reports" if IN_CHECKOUT else _user_dir("data") / "reports"
FIGURES_DIR = REPORTS_DIR / "figures"
TABLES_DIR = REPORTS_DIR / "tables"
RUNS_DIR = Path(os.environ["SEMCOV_RUNS"]) if os.environ.get("SEMCOV_RUNS") else REPORTS_DIR / "runs"


def cache_dir() -> Path:
    """Where generated benchmarks, image caches and feature caches live.

    ``SEMCOV_CACHE`` overrides the default: ``<repo>/.cache`` (ignored by git) in a checkout,
    the user cache folder otherwise.
    """
    default = REPO_ROOT / ".cache" if IN_CHECKOUT else _user_dir("cache")
    path = Path(os.environ.get("SEMCOV_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def report_root(subdir: str = "") -> Path:
    """Where a report set goes: ``reports/`` for the default profile, ``reports/<subdir>/`` otherwise
    (the notebooks' ``output_subdir``, e.g. ``smoke`` so the tests never overwrite paper figures)."""
    return REPORTS_DIR / subdir if subdir else REPORTS_DIR
