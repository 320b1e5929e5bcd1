"""Registry of methods usable as ``python -m semcov_lib train --method NAME``.

Each entry names a :class:`Method` subclass as ``"module:ClassName"``, imported on first use so
that listing the names does not import the method modules. Each module exposes
``DEFAULTS`` (its hyper-parameters; ``--set key=value`` overrides them), and each class is built
as ``cls(info: DataInfo, hp: dict)``.
"""

from __future__ import annotations

from importlib import import_module

from semcov_lib.models.methods.base import DataInfo, Method, TrainContext

METHODS: dict[str, str] = {
    "erm": "semcov_lib.models.methods.baselines:ERM",
    "erm_desc": "semcov_lib.models.methods.baselines:ERMWithDescriptors",
    "erm_views": "semcov_lib.models.methods.baselines:ERMWithViews",
    "semcovnet": "semcov_lib.models.methods.semcovnet:SemCovNet",
    "sadcl": "semcov_lib.models.methods.sadcl:SADCL",
    "cmltnet": "semcov_lib.models.methods.cmltnet:CMLTNet",
    "cb": "semcov_lib.models.methods.baselines:ClassBalanced",
    "focal": "semcov_lib.models.methods.baselines:Focal",
    "ldam_drw": "semcov_lib.models.methods.baselines:LDAMDRW",
    "balanced_softmax": "semcov_lib.models.methods.baselines:BalancedSoftmax",
    "logit_adjustment": "semcov_lib.models.methods.baselines:LogitAdjustment",
    "crt": "semcov_lib.models.methods.baselines:ClassifierRetraining",
    "groupdro": "semcov_lib.models.methods.baselines:GroupDROMethod",
}


def _resolve(name: str):
    """(module, class name) of a registered method."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    module_name, class_name = METHODS[name].split(":")
    return import_module(module_name), class_name


def method_defaults(name: str) -> dict:
    """The default hyper-parameters of a registered method."""
    module, _ = _resolve(name)
    return dict(getattr(module, "DEFAULTS", {}))


def build_method(name: str, info: DataInfo, hp: dict | None = None) -> Method:
    """Build a registered method; ``hp`` overrides its ``DEFAULTS``."""
    module, class_name = _resolve(name)
    params = {**method_defaults(name), **(hp or {})}
    return getattr(module, class_name)(info, params)


__all__ = ["METHODS", "DataInfo", "Method", "TrainContext", "build_method", "method_defaults"]
