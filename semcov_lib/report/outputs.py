"""Every file a notebook or command writes for a reader: one look for every figure (a seaborn theme
set once, ``savefig`` writing PDF + PNG atomically), the table writers (CSV + LaTeX, Markdown) and
the notebooks' output folders (:func:`notebook_setup`).

Figures have fixed sizes (``FIGSIZES``) so regenerated PDFs and PNGs line up in the paper,
and PDF metadata is stable (no creation date) so re-running gives identical files.
Every method has one display name and one colour (``METHOD_STYLE``), every descriptor one
display name (``descriptor_label``), so all figures and tables agree; SemCovNet is the
highlighted colour, ERM a dark grey used for reference lines.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import matplotlib

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from semcov_lib.files import atomic_path, write_text_atomic
from semcov_lib.paths import report_root

# The look tables below are read-only (MappingProxyType): one name and colour per key for every
# figure and table of a process, which nothing may change in between.
FIGSIZES = MappingProxyType({
    "single": (3.5, 2.8),
    "wide": (7.2, 2.8),
    "square": (4.0, 4.0),
    "grid": (7.2, 5.0),
    "tall": (7.2, 7.2),
})  # inches; "single" fits one column, "wide" the page width
STRATUM_COLOURS = MappingProxyType({"Tail": "#c0392b", "Middle": "#95a5a6", "Head": "#2c7fb8"})
# set_theme's last rcParams entry; finding it means the theme is already applied (matplotlib holds
# the state, so no flag of our own can disagree with it)
_THEME_MARK = ("svg.hashsalt", "semcov")

HIGHLIGHT = "semcovnet"
REFERENCE = "erm"
#: method key -> (display name, colour); colour-blind-safe (Okabe-Ito / seaborn "colorblind").
METHOD_STYLE: Mapping[str, tuple[str, str]] = MappingProxyType({
    "erm": ("ERM", "#4d4d4d"),
    "erm_desc": ("ERM + descriptors", "#a6a6a6"),
    "semcovnet": ("SemCovNet", "#d55e00"),
    "semcovnet_full": ("SemCovNet (full architecture)", "#f0a070"),
    "sadcl": ("SADCL", "#0173b2"),
    "cmltnet": ("CMLTNet", "#029e73"),
    "cb": ("Class-balanced", "#de8f05"),
    "focal": ("Focal", "#cc78bc"),
    "ldam_drw": ("LDAM-DRW", "#ca9161"),
    "balanced_softmax": ("Balanced softmax", "#56b4e9"),
    "logit_adjustment": ("Logit adjustment", "#7b3294"),
    "crt": ("cRT", "#8c8c00"),
    "groupdro": ("GroupDRO", "#e7298a"),
    "oracle": ("Oracle (balanced coverage)", "#000000"),
})
_FALLBACK_COLOUR = "#7f7f7f"

#: descriptor column -> display name (MILK10k MONET columns; other names are cleaned generically)
DESCRIPTOR_NAMES = MappingProxyType({
    "MONET_ulceration_crust": "ulceration/crust",
    "MONET_hair": "hair",
    "MONET_vasculature_vessels": "vessels",
    "MONET_erythema": "erythema",
    "MONET_pigmented": "pigmented",
    "MONET_gel_water_drop_fluid_dermoscopy_liquid": "gel/fluid",
    "MONET_skin_markings_pen_ink_purple_pen": "pen marking",
    # the benchmark's short concept names, and first words of the MONET columns
    "ulcer": "ulceration/crust", "ulceration": "ulceration/crust", "vasculature": "vessels",
    "pigment": "pigmented", "gel": "gel/fluid", "pen": "pen marking", "skin": "pen marking",
})

SEED_SD = "error bars: SD over seeds"
BOOTSTRAP_CI = "error bars: 95% bootstrap CI over evaluation samples"


#: metric column -> axis label (arrows say which direction is better)
METRIC_LABELS = MappingProxyType({
    "cdi": "CDI (↓)", "stress_cdi": "stress CDI (↓)", "cdi_within": "within-class CDI (↓)",
    "stress_cdi_within": "stress within-class CDI (↓)", "macro_f1": "macro-F1 (↑)",
    "balanced_accuracy": "balanced accuracy (↑)", "accuracy": "accuracy (↑)", "auroc": "AUROC (↑)",
    "sens_at_95spec": "Sens@95%Spec (↑)", "ece": "ECE (↓)", "worst_group_accuracy": "worst-group accuracy (↑)",
    "tail_error": "Tail-stratum error (↓)", "middle_error": "Middle-stratum error (↓)",
    "head_error": "Head-stratum error (↓)", "tail_accuracy": "tail-class accuracy (↑)",
})


def metric_label(name: str) -> str:
    """Axis label of a metric column (unknown names: underscores become spaces)."""
    return METRIC_LABELS.get(str(name), str(name).replace("_", " "))


def method_label(name: str) -> str:
    """Display name of a method key (unknown keys are returned unchanged)."""
    return METHOD_STYLE.get(str(name), (str(name), ""))[0]


def method_colour(name: str) -> str:
    """Fixed colour of a method key (grey for keys not in ``METHOD_STYLE``)."""
    return METHOD_STYLE.get(str(name), ("", _FALLBACK_COLOUR))[1]


def descriptor_label(name: str) -> str:
    """Readable descriptor name: ``MONET_ulceration_crust`` -> ``ulceration/crust``."""
    name = str(name)
    if name in DESCRIPTOR_NAMES:
        return DESCRIPTOR_NAMES[name]
    for prefix in ("gt_", "pred_"):
        if name.startswith(prefix) and name[len(prefix):] in DESCRIPTOR_NAMES:
            return DESCRIPTOR_NAMES[name[len(prefix):]]
    return name.removeprefix("MONET_").replace("_", " ")


def format_p(p: float | None) -> str:
    """``p < 0.001`` below a thousandth, else ``p = 0.012``; NaN/None -> ``p n/a``."""
    if p is None or not p == p:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def add_note(fig, text: str) -> None:
    """A small caption under the figure (e.g. what the error bars are), wrapped to its width."""
    # ~17 x-small characters per inch of figure width; at least 40 so narrow figures stay readable
    text = textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 17)))
    fig.text(0.0, 0.0, text, ha="left", va="top", fontsize="x-small", color="#333333",
             transform=fig.transFigure)


def set_theme() -> None:
    """Apply the project's seaborn theme and matplotlib settings (idempotent: a second call would
    reset rcParams a caller changed after the first)."""
    if matplotlib.rcParams[_THEME_MARK[0]] == _THEME_MARK[1]:
        return
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.95)
    matplotlib.rcParams.update(
        {
            "pdf.fonttype": 42,  # TrueType fonts in PDF/PS: editable text, accepted by publishers
            "ps.fonttype": 42,
            "figure.dpi": 110,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            "axes.titlesize": "medium",
            _THEME_MARK[0]: _THEME_MARK[1],  # fixed SVG ids, so re-saved SVGs are identical
        }
    )


def notebook_setup(output_subdir: str, wide_display: bool = False) -> tuple[Path, Path]:
    """The notebooks' common first step: the theme, and their (figures, tables) folders under
    ``reports/<output_subdir>/`` (``reports/`` when empty). ``wide_display`` shows up to 40
    DataFrame columns in 200 characters, for the results tables."""
    set_theme()
    if wide_display:
        pd.set_option("display.max_columns", 40, "display.width", 200)
    root = report_root(output_subdir)
    return root / "figures", root / "tables"


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
        # no creation date and a fixed creator/software: a re-run writes byte-identical files
        metadata = {"CreationDate": None, "Creator": "semcov_lib"} if fmt == "pdf" else {"Software": "semcov_lib"}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=metadata)
        written.append(path)
    return written


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
