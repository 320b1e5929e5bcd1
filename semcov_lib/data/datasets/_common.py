"""Shared helpers of the dataset loaders: tolerant text parsing, file lookup, images, splits,
the common tail every loader ends with, and the file writers of the fixture copies.

The real dataset files are irregular (multiple-space alignment, trailing spaces, ``\\r``,
blank trailing lines, the odd 6-token line, double-nested folders), so every loader reads
them through these helpers, which

* split on runs of whitespace, strip ``\\r`` and skip blank lines;
* look for a file in several candidate places and, when none exists, raise an error that
  lists every path tried;
* read large numeric tables with pandas' C parser and, when that fails, re-scan the file in
  Python to report the exact file, line number and content of the first bad line;
* resolve image files (direct path first, then a recursive search by file name);
* make seeded, class-stratified (optionally group-aware) hold-out splits;
* end every loader the same way (:func:`resolve_images`: image index and missing-image policy;
  :func:`finish_table`: frame assembly into an :class:`SCITable`).

Errors are :class:`DatasetError` (a ``ValueError``); missing files raise
:class:`MissingFileError`, which is also a ``FileNotFoundError``. Irregularities that are
known to occur in a real release are reported as counted :class:`DatasetWarning` warnings and
recorded in the table's ``meta["warnings"]``, never silently absorbed.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semcov_lib.data.table import NO_SUBGROUP, SCITable, TableError

MISSING_IMAGE_POLICIES = ("error", "drop", "keep")


class DatasetError(TableError):
    """A dataset file is malformed or inconsistent (the message names file, line, value)."""


class MissingFileError(DatasetError, FileNotFoundError):
    """An expected dataset file or folder is absent (the message lists the paths tried)."""


class DatasetWarning(UserWarning):
    """A known irregularity of a real dataset release was tolerated (the message counts it)."""


# --------------------------------------------------------------------------- reporting
def warn(message: str, meta: dict | None = None, stacklevel: int = 3) -> None:
    """Emit a :class:`DatasetWarning` and record its message in ``meta["warnings"]``.

    The default ``stacklevel`` reports the warning at the caller of the function calling ``warn``
    (a loader's own warnings at the loader's caller); a helper the loader delegates to passes
    ``stacklevel=4`` to report at that same place.
    """
    warnings.warn(message, DatasetWarning, stacklevel=stacklevel)
    if meta is not None:
        meta.setdefault("warnings", []).append(message)


def line_error(path: Path, lineno: int, line: str, problem: str) -> DatasetError:
    """An error naming the file, the 1-based line number, the problem and the line content."""
    shown = line if len(line) <= 200 else line[:200] + "..."
    return DatasetError(f"{path}, line {lineno}: {problem}: {shown!r}")


def preview(items: Sequence, n: int = 5) -> str:
    """The first ``n`` items as a short comma-separated string (for error messages)."""
    shown = ", ".join(repr(str(x)) for x in list(items)[:n])
    return shown + (", ..." if len(items) > n else "")


# --------------------------------------------------------------------------- files
def find_file(candidates: Iterable[Path], what: str) -> Path:
    """The first existing file among ``candidates``; otherwise an error listing them all."""
    return _first_existing(candidates, Path.is_file, f"{what} not found; looked for:")


def find_dir(candidates: Iterable[Path], what: str) -> Path:
    """The first existing folder among ``candidates``; otherwise an error listing them all."""
    return _first_existing(candidates, Path.is_dir, f"{what} not found; looked for the folder:")


def _first_existing(candidates: Iterable[Path], exists: Callable[[Path], bool], problem: str) -> Path:
    tried = [Path(c) for c in candidates]
    for path in tried:
        if exists(path):
            return path
    listed = "\n  ".join(str(p) for p in tried)
    raise MissingFileError(f"{problem}\n  {listed}")


def find_base(root: str | Path, subdirs: Sequence[str], markers: Sequence[str], what: str) -> Path:
    """The first of ``root/<subdir>`` holding any of ``markers`` (relative paths).

    Lets a loader accept the dataset folder itself or its parent (and double-nested copies).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingFileError(f"{what}: root folder {root} does not exist")
    if not root.is_dir():
        raise MissingFileError(f"{what}: root {root} is not a folder")
    tried = []
    for sub in subdirs:
        base = root / sub if sub not in ("", ".") else root
        for marker in markers:
            tried.append(base / marker)
            if (base / marker).exists():
                return base
    listed = "\n  ".join(str(p) for p in tried)
    raise MissingFileError(f"{what}: no dataset found under {root}; looked for:\n  {listed}")


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as ``(line_number, text)``, ``\\r``/``\\n`` and BOM removed."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(i, line.rstrip()) for i, line in enumerate(lines, start=1) if line.strip()]


def parse_int(token: str, path: Path, lineno: int, line: str, what: str) -> int:
    """``int(token)``, or an error naming the file, line and the field that is not an integer."""
    try:
        return int(token)
    except ValueError:
        try:
            value = float(token)
        except ValueError:
            value = None
        if value is not None and value.is_integer():
            return int(value)
        raise line_error(path, lineno, line, f"{what} {token!r} is not an integer") from None


def read_id_table(path: Path, n_tokens: int, names: Sequence[str], rest_as_text: bool = False) -> pd.DataFrame:
    """Read a small ``<int id> <value> ...`` file (CUB style) with per-line checks.

    Each non-blank line must have ``n_tokens`` whitespace-separated tokens; with
    ``rest_as_text`` the last field takes the remainder of the line (names with spaces).
    The first column is parsed as an integer id; a ``line`` column keeps the line numbers.
    Duplicated ids raise an error naming both lines.
    """
    rows, seen = [], {}
    for lineno, line in read_lines(path):
        if rest_as_text:
            parts = line.split(None, n_tokens - 1)
            ok = len(parts) == n_tokens
        else:
            parts = line.split()
            ok = len(parts) == n_tokens
        if not ok:
            raise line_error(path, lineno, line, f"expected {n_tokens} whitespace-separated fields "
                             f"({' '.join(names)}), found {len(parts)}")
        key = parse_int(parts[0], path, lineno, line, names[0])
        if key in seen:
            raise line_error(path, lineno, line, f"duplicated {names[0]} {key} (first on line {seen[key]})")
        seen[key] = lineno
        rows.append([key, *parts[1:], lineno])
    if not rows:
        raise DatasetError(f"{path} is empty (expected lines of: {' '.join(names)})")
    return pd.DataFrame(rows, columns=[*names, "line"])


def _non_blank_lines(path: Path, skip_lines: int = 0) -> Iterator[tuple[int, str]]:
    """``(lineno, line)`` of the non-blank lines after the first ``skip_lines`` of them, streamed."""
    seen = 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.strip():
                seen += 1
                if seen > skip_lines:
                    yield lineno, line


def first_bad_line(path: Path, check: Callable[[list[str]], str | None], skip_lines: int = 0
                   ) -> tuple[int, str, str] | None:
    """Scan ``path`` (after ``skip_lines`` non-blank lines) for the first line whose tokens fail ``check``.

    ``check(tokens)`` returns a problem description or None. Returns ``(lineno, line, problem)``.
    """
    for lineno, line in _non_blank_lines(path, skip_lines):
        problem = check(line.split())
        if problem:
            return lineno, line, problem
    return None


def first_data_line(path: Path, skip_lines: int = 0) -> tuple[int, str] | None:
    """The first non-blank line after ``skip_lines`` non-blank lines, as ``(lineno, text)``."""
    return next(_non_blank_lines(path, skip_lines), None)


def line_number_of_row(path: Path, row: int, skip_lines: int = 0) -> tuple[int, str]:
    """Line number and content of the ``row``-th (0-based) data line after ``skip_lines`` non-blank lines."""
    return next(_non_blank_lines(path, skip_lines + row), (-1, ""))


def numeric_checker(n_min: int, n_max: int, text_cols: Sequence[int] = (), int_cols: Sequence[int] | None = None,
                    allowed: set[int] | None = None) -> Callable[[list[str]], str | None]:
    """A ``check(tokens)`` for :func:`first_bad_line`: token count and numeric fields."""
    def check(tokens: list[str]) -> str | None:
        if not n_min <= len(tokens) <= n_max:
            expected = str(n_min) if n_min == n_max else f"{n_min} to {n_max}"
            return f"expected {expected} whitespace-separated fields, found {len(tokens)}"
        for i, tok in enumerate(tokens):
            if i in text_cols:
                continue
            try:
                value = float(tok)
            except ValueError:
                return f"field {i + 1} {tok!r} is not a number"
            if int_cols is not None and i in int_cols and not value.is_integer():
                return f"field {i + 1} {tok!r} is not an integer"
            if allowed is not None and (int_cols is None or i in int_cols) and value not in allowed:
                return f"field {i + 1} {tok!r} is not one of {sorted(allowed)}"
        return None
    return check


def read_numeric_table(path: Path, n_cols: int, *, dtype: dict | type, skip_lines: int = 0,
                       checker: Callable[[list[str]], str | None] | None = None) -> pd.DataFrame:
    """Fast whitespace-separated table reader (pandas C parser), exact diagnostics on failure.

    Columns are named ``0..n_cols-1``; lines with fewer tokens leave NaN in the last columns
    (so ``dtype`` decides whether that is allowed). When pandas fails, the file is re-scanned
    with ``checker`` to name the first bad line; ``skip_lines`` non-blank lines are skipped first.
    """
    skip = _physical_lines_to_skip(path, skip_lines)
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, names=list(range(n_cols)), dtype=dtype,
                            skiprows=skip, engine="c", skip_blank_lines=True, comment=None,
                            na_filter=False if isinstance(dtype, type) else True)
    except (ValueError, pd.errors.ParserError, OverflowError) as exc:
        found = first_bad_line(path, checker, skip_lines) if checker else None
        if found:
            lineno, line, problem = found
            raise line_error(path, lineno, line, problem) from None
        raise DatasetError(f"{path}: cannot be parsed as a whitespace-separated table of {n_cols} "
                           f"columns ({exc})") from None
    return frame


def _physical_lines_to_skip(path: Path, non_blank: int) -> int:
    """How many physical lines cover the first ``non_blank`` non-blank lines."""
    if non_blank <= 0:
        return 0
    seen = 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if raw.strip():
                seen += 1
                if seen == non_blank:
                    return lineno
    return seen


def check_no_duplicates(values: Sequence[str], path: Path | str, what: str) -> None:
    """Raise naming the first duplicated value of ``what`` in ``path`` and the count."""
    series = pd.Series(list(values), dtype=object)
    dup = series[series.duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: duplicated {what} {dup.iloc[0]!r} ({len(dup)} duplicate rows)")


def unique_names(names: Sequence[str], path: Path, what: str, meta: dict | None,
                 reserved: Iterable[str] = ()) -> list[str]:
    """Make column names unique and distinct from ``reserved`` (suffix ``_2``...), with a counted warning."""
    reserved = set(reserved)
    out, used, renamed = [], set(reserved), []
    for name in names:
        new, k = name, 2
        while new in used or not new:
            new = f"{name or what}_{k}"
            k += 1
        if new != name:
            renamed.append(f"{name!r}->{new!r}")
        used.add(new)
        out.append(new)
    if renamed:
        warn(f"{path}: {len(renamed)} {what} name(s) duplicated, empty or reserved were renamed: "
             f"{', '.join(renamed[:5])}{', ...' if len(renamed) > 5 else ''}", meta)
    return out


# --------------------------------------------------------------------------- values
def to_binary(values: np.ndarray, path: Path, what: str, allow_pm1: bool = True) -> tuple[np.ndarray, str]:
    """Map a ±1 or 0/1 integer matrix to 0/1 ``int8``; return it and the coding found ("pm1"/"01").

    Anything else (2, a mix of -1 and 0, ...) raises naming the file and value.
    """
    values = np.asarray(values)
    present = set(np.unique(values).tolist())
    if present <= {0, 1}:
        return values.astype(np.int8), "01"
    if allow_pm1 and present <= {-1, 1}:
        return ((values + 1) // 2).astype(np.int8), "pm1"
    if allow_pm1 and present <= {-1, 0, 1}:
        raise DatasetError(f"{path}: {what} mixes -1, 0 and 1; expected either -1/+1 (absent/present) "
                           "or 0/1 coding, not both")
    bad = sorted(present - ({-1, 0, 1} if allow_pm1 else {0, 1}))
    expected = "-1/+1 or 0/1" if allow_pm1 else "0/1"
    hint = "; the values look -1/+1 coded (absent/present)" if not allow_pm1 and present <= {-1, 0, 1} else ""
    raise DatasetError(f"{path}: {what} holds value {bad[0]!r}; expected {expected}{hint}")


def check_unit_interval(frame: pd.DataFrame, columns: Sequence[str], path: Path | str, id_column: str) -> None:
    """Raise when a descriptor column is non-numeric or leaves [0, 1]; flag a -1/+1 coding explicitly."""
    for name in columns:
        values = pd.to_numeric(frame[name], errors="coerce")
        not_numeric = frame[name][values.isna() & frame[name].notna()]
        if len(not_numeric):
            row = not_numeric.index[0]
            raise DatasetError(f"{path}: column {name!r} holds non-numeric {not_numeric.iloc[0]!r} "
                               f"({id_column} {frame.loc[row, id_column]!r})")
        outside = values[(values < 0) | (values > 1)]
        if len(outside):
            row = outside.index[0]
            finite = values.dropna()
            distinct = set(finite.unique().tolist())
            hint = ""
            if distinct <= {-1.0, 0.0, 1.0} and -1.0 in distinct:
                hint = ("; the column looks -1/+1 coded (absent/present), but descriptors must be "
                        "0/1 or probabilities: map -1 to 0")
            elif finite.min() >= 0 and finite.max() <= 100 and (finite > 1).mean() >= 0.5:
                hint = "; it looks like a percentage: divide by 100"
            raise DatasetError(f"{path}: column {name!r} holds {float(outside.iloc[0])!r} "
                               f"({id_column} {frame.loc[row, id_column]!r}), outside [0, 1] "
                               f"({len(outside)} such values){hint}")


# --------------------------------------------------------------------------- images
class ImageIndex:
    """Resolve image files under a folder: the listed relative path first, then by file name anywhere below.

    Folder listings are cached, so checking 200k images costs one listing per sub-folder.
    A file name found more than once below the folder is ambiguous and never used; a lookup
    that failed only because of that is recorded in ``ambiguous`` (name -> every copy), so
    errors can name the copies instead of calling the image absent.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._listings: dict[Path, set[str]] = {}
        self._by_name: dict[str, Path | None] | None = None
        self._copies: dict[str, list[Path]] = {}
        self.ambiguous: dict[str, list[Path]] = {}

    def _listing(self, folder: Path) -> set[str]:
        if folder not in self._listings:
            try:
                self._listings[folder] = {e.name for e in os.scandir(folder) if not e.is_dir()}
            except (FileNotFoundError, NotADirectoryError):
                self._listings[folder] = set()
        return self._listings[folder]

    def direct(self, rel: str) -> Path | None:
        """``directory/rel`` when that file exists."""
        path = self.directory / rel
        return path if path.name in self._listing(path.parent) else None

    def by_name(self, name: str) -> Path | None:
        """The unique file called ``name`` anywhere below the folder, else None."""
        if self._by_name is None:
            index: dict[str, Path | None] = {}
            for folder, dirs, files in os.walk(self.directory, followlinks=True):
                dirs.sort()
                for fname in files:
                    if fname in index:
                        first = index[fname]
                        if first is not None:
                            self._copies[fname] = [first]
                        self._copies[fname].append(Path(folder) / fname)
                        index[fname] = None
                    else:
                        index[fname] = Path(folder) / fname
            self._by_name = index
        return self._by_name.get(name)

    def find(self, *candidates: str) -> Path | None:
        """The first candidate found directly, else the first found by file name, else None."""
        for rel in candidates:
            if rel:
                hit = self.direct(rel)
                if hit is not None:
                    return hit
        for rel in candidates:
            if rel:
                hit = self.by_name(Path(rel).name)
                if hit is not None:
                    return hit
        copied = [Path(rel).name for rel in candidates if rel and Path(rel).name in self._copies]
        if copied:
            self.ambiguous[copied[0]] = self._copies[copied[0]]
        return None


def relative_to(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` as a POSIX string when below it, else absolute."""
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return str(Path(path).resolve())


@dataclass(frozen=True)
class ImageSource:
    """Where a loader's listed images are, and what to do when some are absent."""

    directory: Path  # the image folder searched
    base: Path  # ``image_path`` is stored relative to this folder
    where: str  # names the listing in messages, e.g. "CUB-200-2011 (<images.txt>)"
    missing_images: str = "error"  # one of MISSING_IMAGE_POLICIES


def resolve_images(source: ImageSource, listed: Sequence[str], meta: dict,
                   find: Callable[[ImageIndex, int], Path | None] | None = None) -> tuple[list[str], np.ndarray]:
    """The shared image step of every loader: each listed image's stored path and the rows to keep.

    ``find(index, i)`` locates row ``i`` (default: ``index.find(listed[i])``); an absent image keeps
    the path it would have (``directory/<listed>``) so ``missing_images="keep"`` rows still name it.
    """
    index = ImageIndex(source.directory)
    found = [index.find(name) if find is None else find(index, i) for i, name in enumerate(listed)]
    keep = apply_missing_images(found, listed, source, meta, index)
    paths = [relative_to(p if p is not None else source.directory / name, source.base)
             for p, name in zip(found, listed)]
    return paths, keep


def apply_missing_images(found: Sequence[Path | None], listed: Sequence[str], source: ImageSource, meta: dict,
                         index: ImageIndex | None = None) -> np.ndarray:
    """Apply the ``missing_images`` policy; return the mask of rows to keep.

    When ``index`` saw the absent names more than once below ``images_dir`` (a second copy of
    the images), the error says so and names both copies instead of calling them absent.

    ``"error"`` (default) raises naming the first few absent images and the count;
    ``"drop"`` drops those rows with a counted warning; ``"keep"`` keeps them (the table can still be
    used for label/descriptor analysis without pixels) with a counted warning.
    """
    images_dir, policy = source.directory, source.missing_images
    if policy not in MISSING_IMAGE_POLICIES:
        raise DatasetError(f"missing_images must be one of {MISSING_IMAGE_POLICIES}, got {policy!r}")
    missing = np.array([p is None for p in found], dtype=bool)
    n_missing = int(missing.sum())
    meta.setdefault("counts", {})["missing_images"] = n_missing
    if not n_missing:
        return np.ones(len(found), dtype=bool)
    names = [listed[i] for i in np.flatnonzero(missing)]
    dupes = sorted(index.ambiguous) if index is not None else []
    if dupes:
        meta.setdefault("counts", {})["duplicated_images"] = len(dupes)
        copies = " and ".join(relative_to(p, images_dir) for p in index.ambiguous[dupes[0]][:3])
        raise DatasetError(f"{source.where}: {len(dupes)} of {len(found)} listed images exist more than once under "
                           f"{images_dir}, e.g. {dupes[0]} at {copies}; delete the extra copy or pass "
                           "images_dir= pointing at one copy")
    text = (f"{source.where}: {n_missing} of {len(found)} listed images are absent under {images_dir}, "
            f"e.g. {preview(names)}")
    if policy == "error":
        error = MissingFileError(text + " (pass missing_images='drop' to drop them or 'keep' to keep "
                                 "the rows without pixels)")
        error.hint = "on the command line: train ... --missing-images drop (or keep)"
        raise error
    if policy == "drop":  # stacklevel 4: reported in the loader (the caller of resolve_images)
        warn(text + "; dropped those rows", meta, stacklevel=4)
        return ~missing
    warn(text + "; kept those rows (their image_path does not exist)", meta, stacklevel=4)
    return np.ones(len(found), dtype=bool)


# --------------------------------------------------------------------------- splits
def connected_groups(*keys: Sequence) -> np.ndarray:
    """Group index per row: rows sharing any non-empty key value (e.g. lesion or patient id) are joined."""
    n = len(keys[0]) if keys else 0
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in keys:
        first: dict = {}
        for i, value in enumerate(column):
            if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("", "nan", "<NA>"):
                continue
            if value in first:
                a, b = root(i), root(first[value])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[value] = i
    roots = [root(i) for i in range(n)]
    _, codes = np.unique(np.asarray(roots), return_inverse=True)
    return codes.astype(np.int64)


def holdout_mask(labels: Sequence[int], fraction: float, seed: int, groups: Sequence | None = None) -> np.ndarray:
    """Seeded, class-stratified, group-aware hold-out: True for rows moved to the held-out part.

    For each class (a group's class is that of its first row), groups are shuffled with
    ``numpy.random.default_rng(seed)`` and taken until ``round(fraction * n_class)`` rows are held
    out. A class with at least two groups always keeps one group and, when ``fraction > 0``,
    gives at least one; a class with a single group stays entirely in the remaining part.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise DatasetError(f"hold-out fraction must be in [0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    n = len(labels)
    group_ids = np.arange(n) if groups is None else np.asarray(groups)
    _, first_index, inverse = np.unique(group_ids, return_index=True, return_inverse=True)
    order = np.argsort(first_index, kind="stable")  # groups in order of first appearance
    members: dict[int, list[int]] = {}
    for i, g in enumerate(inverse.ravel()):
        members.setdefault(int(g), []).append(i)
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    if fraction == 0 or n == 0:
        return mask
    group_label = {int(g): labels[members[int(g)][0]] for g in order}
    for label in sorted(set(group_label.values()), key=lambda v: str(v)):
        gs = [int(g) for g in order if group_label[int(g)] == label]
        size = sum(len(members[g]) for g in gs)
        target = int(np.floor(fraction * size + 0.5))
        if len(gs) < 2:
            continue
        target = max(target, 1)
        taken = 0
        for k in rng.permutation(len(gs))[:-1]:
            if taken >= target:
                break
            rows = members[gs[k]]
            mask[rows] = True
            taken += len(rows)
    return mask


def check_fraction(name: str, value: float) -> float:
    """Validate a split fraction in [0, 1)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise DatasetError(f"{name} must be in [0, 1), got {value!r}")
    return value


def assemble_frame(columns: dict[str, Sequence], descriptors: np.ndarray | None = None,
                   descriptor_names: Sequence[str] = (), extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Build the table frame in one go (no column-by-column inserts): base columns, descriptors, metadata."""
    parts = [pd.DataFrame(columns)]
    if descriptor_names:
        parts.append(pd.DataFrame(np.asarray(descriptors, dtype=np.float64), columns=list(descriptor_names)))
    if extra is not None and len(extra.columns):
        parts.append(extra.reset_index(drop=True))
    return pd.concat(parts, axis=1)


def finish_table(columns: dict[str, Sequence], descriptors: np.ndarray, names: Sequence[str],
                 extra: pd.DataFrame | None, keep: np.ndarray, **table) -> SCITable:
    """The shared last step of every loader: assemble the frame, keep the ``keep`` rows, wrap it.

    ``columns`` are the base columns (sample_id, image_path, label, subgroup, split),
    ``descriptors``/``names`` the (N, D) descriptor values and their column names, ``extra`` the
    metadata columns; ``table`` holds the other :class:`SCITable` fields (classes, name, root, ...).
    """
    frame = assemble_frame(columns, descriptors, names, extra)
    return SCITable(frame=frame[keep].reset_index(drop=True), descriptors=list(names), **table)


def choose(value: str, allowed: Sequence[str], what: str) -> str:
    """Validate an option against its allowed values, naming them in the error."""
    if value not in allowed:
        raise DatasetError(f"unknown {what} {value!r}; expected one of {list(allowed)}")
    return value


def subgroup_option(subgroup: str | None) -> str:
    """A subgroup option with None / "" meaning no subgroup."""
    return NO_SUBGROUP if subgroup in (None, "", NO_SUBGROUP) else subgroup


def attribute_groups(matrix: np.ndarray, subgroup: str, column: int | None) -> np.ndarray:
    """Subgroup levels from 0/1 attribute ``column`` of ``matrix``: ``"<attr>"`` where it is 1, else
    ``"not_<attr>"``; every row ``"none"`` when ``subgroup`` is ``"none"`` (``column`` unused)."""
    if subgroup == NO_SUBGROUP:
        return np.full(len(matrix), NO_SUBGROUP, dtype=object)
    return np.where(matrix[:, column] == 1, subgroup, f"not_{subgroup}").astype(object)


# --------------------------------------------------------------------------- fixture files
# The tiny on-disk copies (``fixtures.write_fixture``) are written by each dataset module with these.
def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    """A small real JPEG image of one colour with a darker square in the middle."""
    from PIL import Image

    w, h = size
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:] = color
    pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = [c // 2 for c in color]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def fixture_color(i: int) -> tuple[int, int, int]:
    """The deterministic colour of fixture image ``i``."""
    return (40 + (i * 53) % 200, 40 + (i * 97) % 200, 40 + (i * 31) % 200)


def write_image(path: Path, i: int, size: tuple[int, int] = (8, 8)) -> None:
    """Fixture image ``i`` as a JPEG file (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(fixture_color(i), size))


def write_text(path: Path, content: str) -> None:
    """A fixture text file with exactly these bytes (folders created, no newline translation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        handle.write(content)


def fixture_score(*keys: int) -> float:
    """A deterministic pseudo-random value in [0, 1] with two decimals."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + k * 7919 + 12345) % 2_147_483_647
    return round((h % 101) / 100.0, 2)
