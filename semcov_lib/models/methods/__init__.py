"""Registry of methods usable as ``python -m semcov_lib train --method NAME``.

Builders are imported lazily (``"module:function"``) so listing names is cheap.
Each builder has the signature ``build(info: DataInfo, hp: dict) -> Method`` and each
module exposes ``DEFAULTS`` (its hyper-parameters; ``--set key=value`` overrides them).
"""

from __future__ import annotations

from importlib import import_module

from semcov_lib.models.methods.base import DataInfo, Method, TrainContext

METHODS: dict[str, str] = {
    "erm": "semcov_lib.models.methods.baselines:build_erm",
    "erm_desc": "semcov_lib.models.methods.baselines:build_erm_desc",
    "semcovnet": "semcov_lib.models.methods.semcovnet:build_semcovnet",
    "sadcl": "semcov_lib.models.methods.sadcl:build_sadcl",
    "cmltnet": "semcov_lib.models.methods.cmltnet:build_cmltnet",
    "cb": "semcov_lib.models.methods.baselines:build_cb",
    "focal": "semcov_lib.models.methods.baselines:build_focal",
    "ldam_drw": "semcov_lib.models.methods.baselines:build_ldam_drw",
    "balanced_softmax": "semcov_lib.models.methods.baselines:build_balanced_softmax",
    "logit_adjustment": "semcov_lib.models.methods.baselines:build_logit_adjustment",
    "crt": "semcov_lib.models.methods.baselines:build_crt",
    "groupdro": "semcov_lib.models.methods.baselines:build_groupdro",
}


def _resolve(name: str):
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(METHODS)}")
    module_name, func_name = METHODS[name].split(":")
    return import_module(module_name), func_name


def method_defaults(name: str) -> dict:
    """The default hyper-parameters of a registered method."""
    module, _ = _resolve(name)
    return dict(getattr(module, "DEFAULTS", {}))


def build_method(name: str, info: DataInfo, hp: dict | None = None) -> Method:
    """Build a registered method; ``hp`` overrides its ``DEFAULTS``."""
    module, func_name = _resolve(name)
    params = {**method_defaults(name), **(hp or {})}
    return getattr(module, func_name)(info, params)


__all__ = ["METHODS", "DataInfo", "Method", "TrainContext", "build_method", "method_defaults"]
