"""``verify`` command: check a local dataset copy against its manifest (``data/manifests/<name>.yaml``).

Nothing is downloaded. For every file the manifest lists, the check reports whether it is present
(under its path or one of its ``alternatives``, below the first of ``base_dirs`` that holds the
copy), and compares what the manifest knows: size in bytes, SHA-256 and/or MD5 (hashed in 1 MiB
chunks), number of non-blank lines, number of files in a folder. Files whose expected hash is
unknown are reported as *unchecked* (present, content not verified), never as verified.

    python -m semcov_lib verify celeba --root /data/celeba [--no-hash] [--manifest FILE]

Exit code 0 when every required entry is present and matches, 1 otherwise.

Known problems of a dataset's release are flagged after the file checks (``FLAG`` lines; they do
not change the exit code, since a faithful copy has them too, and the loaders handle them) by the
``manifest_flags(base)`` function of the dataset's module, where it has one: NUS-WIDE label values
other than 0/1 (file, line, value), and ISIC-DICM-17K valid rows that share a lesion or patient
with the train file.

Manifest schema (keys used here; the manifests also document source, licence, citation, ...)::

    name: celeba
    base_dirs: [".", "celeba"]          # candidate dataset folders below --root (default ["."])
    files:
      - path: list_attr_celeba.txt      # relative to the dataset folder
        alternatives: [Anno/list_attr_celeba.txt]
        type: file                      # or "directory"
        required: true                  # false: absence is reported but is not a failure
        size: null                      # bytes, null = unknown
        sha256: null                    # null = unknown
        md5: 75e246fa4810816ffd6ee81facbd244c
        lines: 202601                   # non-blank lines, null = unknown
      - path: img_align_celeba
        type: directory
        glob: "*.jpg"                   # counted recursively
        count: 202599
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import MappingProxyType
from typing import Any

from semcov_lib.config import ConfigError, load_yaml
from semcov_lib.paths import MANIFESTS_DIR

CHUNK = 1 << 20
FAILURES = ("missing", "size_mismatch", "hash_mismatch", "lines_mismatch", "count_mismatch", "not_a_file",
            "not_a_directory")
LABELS = MappingProxyType({
    "ok": "OK", "unchecked": "UNCHECKED", "absent_optional": "ABSENT (optional)", "missing": "MISSING",
    "size_mismatch": "SIZE MISMATCH", "hash_mismatch": "HASH MISMATCH", "lines_mismatch": "LINES MISMATCH",
    "count_mismatch": "COUNT MISMATCH", "not_a_file": "NOT A FILE", "not_a_directory": "NOT A FOLDER",
})


class ManifestError(ValueError):
    """A manifest file is missing or malformed (the message names the file and entry)."""


@dataclass
class EntryResult:
    """The outcome for one manifest entry."""

    path: str
    status: str  # ok | unchecked | absent_optional | missing | size_mismatch | hash_mismatch | ...
    detail: str = ""
    found: str | None = None
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.status in FAILURES


@dataclass
class VerifyReport:
    """All entry outcomes of one ``verify_dataset`` call."""

    name: str
    root: Path
    base: Path
    manifest: Path
    check_hashes: bool
    entries: list[EntryResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # known problems of the release found in the copy

    @property
    def ok(self) -> bool:
        return not any(e.failed for e in self.entries)

    def by_status(self, *statuses: str) -> list[EntryResult]:
        return [e for e in self.entries if e.status in statuses]

    @property
    def missing(self) -> list[EntryResult]:
        return self.by_status("missing")

    @property
    def mismatched(self) -> list[EntryResult]:
        return [e for e in self.entries if e.failed and e.status != "missing"]

    @property
    def unchecked(self) -> list[EntryResult]:
        return self.by_status("unchecked")

    def format(self) -> str:
        """Human-readable report: one line per entry, then a summary line."""
        lines = [f"verify {self.name}: dataset folder {self.base}",
                 f"  manifest {self.manifest}{'' if self.check_hashes else ' (hashes not computed: --no-hash)'}"]
        width = max(len(LABELS[e.status]) for e in self.entries) if self.entries else 0
        for e in self.entries:
            shown = e.found and e.found != e.path and e.status not in ("missing", "absent_optional")
            where = f" (found as {e.found})" if shown else ""
            detail = f"  [{e.detail}]" if e.detail else ""
            lines.append(f"  {LABELS[e.status]:<{width}}  {e.path}{where}{detail}")
        lines += [f"  FLAG  {flag}" for flag in self.flags]
        n_ok, n_un = len(self.by_status("ok")), len(self.unchecked)
        if self.ok:
            lines.append(f"result: OK ({n_ok} verified, {n_un} present but unchecked, "
                         f"{len(self.by_status('absent_optional'))} optional absent)")
        else:
            lines.append(f"result: NOT OK ({len(self.missing)} missing, {len(self.mismatched)} different; "
                         f"{n_ok} verified, {n_un} unchecked)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- manifests
def manifest_path(name: str, manifest_dir: str | Path | None = None) -> Path:
    """``<manifest_dir>/<name>.yaml`` (default: the manifests shipped in the package)."""
    directory = Path(manifest_dir) if manifest_dir is not None else MANIFESTS_DIR
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
        raise ManifestError(f"no manifest for dataset {name!r}: {path} does not exist; available: {known}")
    return path


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a manifest (schema in the module docstring)."""
    path = Path(path)
    try:
        data = load_yaml(path)
    except ConfigError as exc:  # absent, invalid YAML or not a mapping: the same one line, as a manifest error
        raise ManifestError(str(exc).replace("config file", "manifest", 1)) from None
    files = data.get("files")
    if not isinstance(files, list) or not files:
        raise ManifestError(f"manifest {path}: 'files' must be a non-empty list of entries")
    for i, entry in enumerate(files):
        where = f"manifest {path}, files[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ManifestError(f"{where}: each entry needs a 'path' string")
        kind = entry.get("type", "file")
        if kind not in ("file", "directory"):
            raise ManifestError(f"{where} ({entry['path']}): type must be 'file' or 'directory', got {kind!r}")
        for key in ("size", "lines", "count"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ManifestError(f"{where} ({entry['path']}): {key} must be a non-negative integer or null, "
                                    f"got {value!r}")
        for key, n in (("sha256", 64), ("md5", 32)):
            value = entry.get(key)
            if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{n}}}", value)):
                raise ManifestError(f"{where} ({entry['path']}): {key} must be {n} hex digits or null, got {value!r}")
        alternatives = entry.get("alternatives", [])
        if not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives):
            raise ManifestError(f"{where} ({entry['path']}): alternatives must be a list of paths")
    bases = data.get("base_dirs", ["."])
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise ManifestError(f"manifest {path}: base_dirs must be a non-empty list of folder names")
    return data


# --------------------------------------------------------------------------- checks
def file_digests(path: Path, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, reading it once in 1 MiB chunks."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def count_lines(path: Path) -> int:
    """Number of non-blank lines (any line ending)."""
    n = 0
    with open(path, "rb") as handle:
        for raw in handle:
            n += sum(1 for part in raw.split(b"\r") if part.strip())
    return n


def _candidates(entry: dict) -> list[str]:
    return [entry["path"], *entry.get("alternatives", [])]


def _choose_base(root: Path, manifest: dict) -> Path:
    """The candidate dataset folder below ``root`` holding the most manifest entries (first on ties)."""
    best, best_hits = None, -1
    for sub in manifest.get("base_dirs", ["."]):
        base = (root / sub) if sub not in (".", "") else root
        hits = sum(any((base / rel).exists() for rel in _candidates(e)) for e in manifest["files"])
        if hits > best_hits:
            best, best_hits = base, hits
    return best.resolve() if best is not None and best.exists() else (best or root)


def _check_entry(base: Path, entry: dict, check_hashes: bool) -> EntryResult:
    kind = entry.get("type", "file")
    required = bool(entry.get("required", True))
    rels = _candidates(entry)
    found = next((base / r for r in rels if (base / r).exists()), None)
    result = EntryResult(path=entry["path"], status="ok", required=required,
                         found=str(found.relative_to(base)) if found is not None else None)
    if found is None:
        tried = ", ".join(rels)
        result.status = "missing" if required else "absent_optional"
        result.detail = f"looked for {tried}" if len(rels) > 1 else ""
        return result
    if kind == "directory":
        if not found.is_dir():
            result.status, result.detail = "not_a_directory", "expected a folder"
            return result
        pattern = entry.get("glob", "*")
        n = sum(1 for p in found.rglob(pattern) if p.is_file())
        expected = entry.get("count")
        if expected is None:
            result.status, result.detail = "unchecked", f"{n} files matching {pattern!r}; expected count unknown"
        elif n != expected:
            result.status, result.detail = "count_mismatch", f"{n} files matching {pattern!r}, expected {expected}"
        else:
            result.detail = f"{n} files matching {pattern!r}"
        return result
    if not found.is_file():
        result.status, result.detail = "not_a_file", "expected a file, found a folder"
        return result
    done = []
    size = found.stat().st_size
    if entry.get("size") is not None:
        if size != entry["size"]:
            result.status, result.detail = "size_mismatch", f"{size} bytes, expected {entry['size']}"
            return result
        done.append("size ok")
    if entry.get("lines") is not None:
        n = count_lines(found)
        if n != entry["lines"]:
            result.status, result.detail = "lines_mismatch", f"{n} non-blank lines, expected {entry['lines']}"
            return result
        done.append(f"{n} lines ok")
    known = [a for a in ("sha256", "md5") if entry.get(a)]
    if check_hashes and known:
        digests = file_digests(found, tuple(known))
        for algorithm in known:
            if digests[algorithm].lower() != entry[algorithm].lower():
                result.status = "hash_mismatch"
                result.detail = f"{algorithm} {digests[algorithm]}, expected {entry[algorithm].lower()}"
                return result
            done.append(f"{algorithm} ok")
    if not known:
        result.status = "unchecked"
        done.append(f"{size} bytes; expected hash unknown")
    elif not check_hashes:
        result.status = "unchecked"
        done.append("hash not computed (--no-hash)")
    result.detail = ", ".join(done)
    return result


def verify_dataset(name: str, root: str | Path, manifest_dir: str | Path | None = None, check_hashes: bool = True,
                   manifest: str | Path | None = None) -> VerifyReport:
    """Check the local copy under ``root`` against the manifest of dataset ``name``.

    ``manifest`` (a file) overrides the lookup of ``<manifest_dir>/<name>.yaml``.
    """
    path = Path(manifest) if manifest is not None else manifest_path(name, manifest_dir)
    data = load_manifest(path)
    root = Path(root).expanduser()
    base = _choose_base(root, data) if root.is_dir() else root
    report = VerifyReport(name=str(data.get("name", name)), root=root, base=base, manifest=path,
                          check_hashes=check_hashes)
    for entry in data["files"]:
        report.entries.append(_check_entry(base, entry, check_hashes) if root.is_dir() else
                              EntryResult(entry["path"], "missing" if entry.get("required", True) else
                                          "absent_optional", f"root {root} does not exist",
                                          required=bool(entry.get("required", True))))
    if root.is_dir():
        report.flags = content_flags(report.name, base)
    return report


# --------------------------------------------------------------------------- known release problems
def content_flags(name: str, base: Path) -> list[str]:
    """Known problems of the release found in the copy: ``manifest_flags(base)`` of the dataset's module."""
    from semcov_lib.data.datasets import LOADERS

    spec = LOADERS.get(name)
    check = getattr(import_module(spec.module), "manifest_flags", None) if spec is not None else None
    return check(base) if check is not None else []


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m semcov_lib verify``."""
    parser.add_argument("dataset", help="dataset name (one of the shipped data manifests), e.g. celeba")
    parser.add_argument("--root", required=True, help="folder holding the local copy of the dataset")
    parser.add_argument("--no-hash", action="store_true", help="skip hashing (sizes, line and file counts only)")
    parser.add_argument("--manifest", default=None, help="use this manifest file instead of the shipped one")


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 when the copy matches its manifest, 1 otherwise."""
    report = verify_dataset(args.dataset, args.root, check_hashes=not args.no_hash, manifest=args.manifest)
    print(report.format())
    return 0 if report.ok else 1
