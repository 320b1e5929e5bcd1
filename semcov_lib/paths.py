"""Project paths derived from the package location, never from the working directory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
REPORTS_DIR = REPO_ROOT / "reports"
FIGURES_DIR = REPORTS_DIR / "figures"
TABLES_DIR = REPORTS_DIR / "tables"
RUNS_DIR = REPORTS_DIR / "runs"
MANIFESTS_DIR = REPO_ROOT / "data_manifests"


def cache_dir() -> Path:
    """Where generated benchmarks, image caches and feature caches live.

    ``SEMCOV_CACHE`` overrides the default ``<repo>/.cache`` (ignored by git).
    """
    path = Path(os.environ.get("SEMCOV_CACHE", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def report_root(subdir: str = "") -> Path:
    """Where a report set goes: ``reports/`` for the default profile, ``reports/<subdir>/`` otherwise
    (the notebooks' ``output_subdir``, e.g. ``smoke`` so the tests never overwrite paper figures)."""
    return REPORTS_DIR / subdir if subdir else REPORTS_DIR
