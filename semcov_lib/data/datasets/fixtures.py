"""Tiny copies of every supported dataset, written in the exact real on-disk formats.

Used by the tests and by the datasets notebook, so every loader runs end to end without the
real data (which the package never downloads). Each dataset module writes its own copy
(``write_<dataset>`` next to its loader, following the published release, see the data manifests
in ``semcov_lib/data/manifests/``), including the irregularities a real copy has: multi-space
alignment and the trailing space after ``Young`` (CelebA), a 6-token line and top-level
``attributes.txt`` (CUB), Windows backslash paths and tab-separated tag matrices (NUS-WIDE),
leading ``/`` and ±1 ingredient labels (VireoFood-172), empty CSV fields (ISIC-DICM-17K,
MILK10k), double-nested folders (MILK10k). Images are tiny real JPEG files (Pillow).

Each fixture has at least two classes with samples in every split its loader produces.
Content is fully deterministic (no randomness), so tests can assert exact values.

``write_fixture(name, dest, **options) -> Path`` returns the folder to pass as ``root`` to the
dataset's loader. Options per dataset:

* ``milk10k``: ``nested=False`` (True: ``MILK10k_Training_Input/MILK10k_Training_Input/...``),
  ``lesions_per_class=10``, ``supplement=True``.
* ``celeba``: ``layout="flat"`` (torchvision's ``celeba/`` folder) or ``"official"``
  (``CelebA/{Anno,Eval,Img}``).
* ``cub_200_2011``: ``attributes_in="top"`` (next to ``CUB_200_2011/``, as in the tarball) or
  ``"attributes"`` (``CUB_200_2011/attributes/attributes.txt``, as the README says).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from types import MappingProxyType

from semcov_lib.data.datasets._common import jpeg_bytes

__all__ = ["FIXTURES", "jpeg_bytes", "write_fixture"]

#: dataset name -> (module of semcov_lib.data.datasets, its fixture writer)
FIXTURES = MappingProxyType({
    "milk10k": ("milk10k", "write_milk10k"),
    "milk10k_clinical": ("milk10k", "write_milk10k"),
    "isic_dicm_17k": ("isic_dicm", "write_isic_dicm_17k"),
    "celeba": ("celeba", "write_celeba"),
    "cub_200_2011": ("cub", "write_cub"),
    "nus_wide": ("nuswide", "write_nus_wide"),
    "vireofood172": ("vireofood", "write_vireofood172"),
})


def write_fixture(name: str, dest: str | Path, **options) -> Path:
    """Write the fixture copy of dataset ``name`` under ``dest``; return the loader root."""
    if name not in FIXTURES:
        raise ValueError(f"no fixture for dataset {name!r}; available: {sorted(FIXTURES)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    module, writer = FIXTURES[name]
    return getattr(import_module(f"semcov_lib.data.datasets.{module}"), writer)(dest, **options)
