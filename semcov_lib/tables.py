"""Result tables as files and text: CSV + LaTeX for the paper, Markdown for reports and the README.

Kept free of torch so the audit command and the notebooks share it cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from semcov_lib.runs import write_text_atomic


def write_table(frame: pd.DataFrame, name: str, out_dir: str | Path, float_digits: int = 3) -> list[Path]:
    """Write a table as ``name.csv`` and ``name.tex`` (LaTeX), atomically."""
    out_dir = Path(out_dir)
    csv = write_text_atomic(out_dir / f"{name}.csv", frame.to_csv(index=False))
    latex = frame.to_latex(index=False, float_format=lambda x: f"{x:.{float_digits}f}", na_rep="--")
    return [csv, write_text_atomic(out_dir / f"{name}.tex", latex)]


def markdown_table(frame: pd.DataFrame, fmt: Callable[[Any], str] = str) -> str:
    """A GitHub Markdown table; ``fmt`` renders each cell (pandas' ``to_markdown`` needs tabulate)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
