"""One look for every figure: a seaborn theme set once and a ``savefig`` writing PDF + PNG.

Figures have fixed sizes (``FIGSIZES``) so regenerated PDFs and PNGs line up in the paper,
and PDF metadata is stable (no creation date) so re-running gives identical files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

import matplotlib.pyplot as plt
import seaborn as sns

FIGSIZES = {
    "single": (3.5, 2.8),
    "wide": (7.2, 2.8),
    "square": (4.0, 4.0),
    "grid": (7.2, 5.0),
    "tall": (7.2, 7.2),
}
STRATUM_COLOURS = {"Tail": "#c0392b", "Middle": "#95a5a6", "Head": "#2c7fb8"}
_THEME_SET = False


def set_theme() -> None:
    """Apply the project's seaborn theme and matplotlib settings (idempotent)."""
    global _THEME_SET
    if _THEME_SET:
        return
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.95)
    matplotlib.rcParams.update(
        {
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "figure.dpi": 110,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            "axes.titlesize": "medium",
            "svg.hashsalt": "semcov",
        }
    )
    _THEME_SET = True


def figure(size: str | tuple[float, float] = "single", **kwargs):
    """``plt.subplots`` with the theme applied and a named fixed size."""
    set_theme()
    figsize = FIGSIZES[size] if isinstance(size, str) else size
    return plt.subplots(figsize=figsize, **kwargs)


def savefig(fig, name: str, out_dir: str | Path, formats: tuple[str, ...] = ("pdf", "png")) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{pdf,png}`` atomically, with stable metadata."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        metadata = {"CreationDate": None, "Creator": "semcov_lib"} if fmt == "pdf" else {"Software": "semcov_lib"}
        fig.savefig(tmp, format=fmt, metadata=metadata)
        tmp.replace(path)
        written.append(path)
    return written
