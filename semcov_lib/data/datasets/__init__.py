"""Dataset loaders: each turns a local copy of a dataset into the common :class:`SCITable`.

``load_dataset(name, root, **options)`` dispatches through :data:`LOADERS`; loader modules are
imported only when used. Nothing is ever downloaded: ``root`` is a folder the user obtained
(see ``data/manifests/<name>.yaml`` for where to get each dataset and the expected layout, and
``python -m semcov_lib verify <name> --root DIR`` to check a copy).

=====================  ==============================================  ==============================
name                   loader                                          fixed options
=====================  ==============================================  ==============================
milk10k                datasets.milk10k.load_milk10k                   (dermoscopic images)
milk10k_clinical       datasets.milk10k.load_milk10k                   image_type="clinical: close-up"
isic_dicm_17k          datasets.isic_dicm.load_isic_dicm_17k
celeba                 datasets.celeba.load_celeba
cub_200_2011           datasets.cub.load_cub_200_2011
nus_wide               datasets.nuswide.load_nus_wide
vireofood172           datasets.vireofood.load_vireofood172
=====================  ==============================================  ==============================

Shared error types (all ``ValueError``): :class:`DatasetError`, :class:`MissingFileError` (also a
``FileNotFoundError``); tolerated irregularities emit :class:`DatasetWarning`.

Each dataset module holds its loader, the writer of its fixture copy (:mod:`.fixtures` dispatches
to it) and, where a real release has known problems, the ``manifest_flags`` check ``verify`` runs.
Loaders with many options group them in a frozen dataclass (``LoaderSpec.options``) whose fields
are still accepted one by one as keyword options.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from semcov_lib.data.datasets._common import DatasetError, DatasetWarning, MissingFileError
from semcov_lib.data.table import SCITable

__all__ = ["LOADERS", "LoaderSpec", "DatasetError", "DatasetWarning", "MissingFileError", "UnknownDatasetError",
           "available_datasets", "get_loader", "load_dataset"]


class UnknownDatasetError(DatasetError, KeyError):
    """``load_dataset`` was given a name that is not in :data:`LOADERS`."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LoaderSpec:
    """Where a loader lives and the options the registry entry fixes.

    ``options`` names the loader's options dataclass in ``module`` when it has one (the loader then
    takes ``(root, options=None, **overrides)``); its fields are the valid keyword options.
    """

    module: str
    function: str
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    options: str = ""


LOADERS: dict[str, LoaderSpec] = {
    "milk10k": LoaderSpec("semcov_lib.data.datasets.milk10k", "load_milk10k", {},
                          "MILK10k (ISIC 2025), dermoscopic images, MONET descriptors"),
    "milk10k_clinical": LoaderSpec("semcov_lib.data.datasets.milk10k", "load_milk10k",
                                   {"image_type": "clinical: close-up"},
                                   "MILK10k, clinical close-up images, MONET descriptors"),
    "isic_dicm_17k": LoaderSpec("semcov_lib.data.datasets.isic_dicm", "load_isic_dicm_17k", {},
                                "ISIC-DICM-17K, melanoma vs other, user-supplied MONET descriptors", "IsicOptions"),
    "celeba": LoaderSpec("semcov_lib.data.datasets.celeba", "load_celeba", {},
                         "CelebA, target attribute vs the other attributes"),
    "cub_200_2011": LoaderSpec("semcov_lib.data.datasets.cub", "load_cub_200_2011", {},
                               "CUB-200-2011, 200 bird classes, 312 attributes", "CubOptions"),
    "nus_wide": LoaderSpec("semcov_lib.data.datasets.nuswide", "load_nus_wide", {},
                           "NUS-WIDE, single-concept images, 1k tags as descriptors"),
    "vireofood172": LoaderSpec("semcov_lib.data.datasets.vireofood", "load_vireofood172", {},
                               "VireoFood-172, 172 dishes, 353 ingredients"),
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(LOADERS)


def _spec(name: str) -> LoaderSpec:
    if name not in LOADERS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return LOADERS[name]


def get_loader(name: str) -> Callable[..., SCITable]:
    """The loader function of dataset ``name`` (imports its module)."""
    spec = _spec(name)
    return getattr(_module(name, spec), spec.function)


def _module(name: str, spec: LoaderSpec) -> ModuleType:
    """The loader module of registry entry ``name``; a DatasetError when it is not installed."""
    try:
        return import_module(spec.module)
    except ModuleNotFoundError as exc:
        if exc.name == spec.module:
            raise DatasetError(f"dataset {name!r}: loader module {spec.module} is not available") from exc
        raise


def _option_names(name: str, spec: LoaderSpec, loader: Callable[..., SCITable]) -> list[str] | None:
    """The keyword options the loader accepts (None: any), in declaration order."""
    if spec.options:
        return [f.name for f in fields(getattr(_module(name, spec), spec.options))]
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [p for p in params if p != "root"]


def load_dataset(name: str, root: str | Path, **options: Any) -> SCITable:
    """Load dataset ``name`` from the local folder ``root`` into the common table.

    ``options`` go to the loader (see its docstring); an unknown option raises a
    ``DatasetError`` listing the valid ones, and options fixed by the registry entry (e.g.
    ``image_type`` of ``milk10k_clinical``) cannot be overridden.
    """
    spec = _spec(name)
    clash = sorted(set(options) & set(spec.fixed))
    if clash:
        raise DatasetError(f"dataset {name!r} fixes option(s) {clash} to {[spec.fixed[k] for k in clash]}; "
                           f"use another registry entry or call {spec.module}.{spec.function} directly")
    loader = get_loader(name)
    accepted = _option_names(name, spec, loader)
    if accepted is not None:
        valid = [p for p in accepted if p not in spec.fixed]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise DatasetError(f"dataset {name!r}: unknown option(s) {unknown}; valid options: {valid}")
    return loader(root, **{**spec.fixed, **options})
