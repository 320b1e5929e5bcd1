"""Which runs exist: the experiment grid of the paper pipeline.

Notebooks call these so they hold no method code: the main comparison (every method x seeds), the
SemCovNet ablation ladder and leave-one-out, the descriptor-source and descriptor-learner runs, the
named benchmark configurations with their oracles, and the validation tuning grid. Each returns
:class:`~semcov_lib.experiment.protocol.TrainConfig` objects; :func:`~semcov_lib.experiment.train.train_many`
trains or reuses them and :mod:`~semcov_lib.experiment.results` reads them back.
:func:`pipeline_configs` lists every run the notebooks need for one parameter file, so
``python -m semcov_lib grid`` can train them first (on a cluster) and the notebooks then only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from semcov_lib.config import ConfigError
from semcov_lib.data.benchmark import configuration_overrides
from semcov_lib.experiment.protocol import TrainConfig, is_finished, run_dir_for, train_config
from semcov_lib.experiment.results import results_frame
from semcov_lib.experiment.tune import TuneSearch, tune_configs
from semcov_lib.models.methods import METHODS

#: Registered methods the pipeline does not train: controls run on demand (bench/diagnostic_configurations.py).
CONTROL_METHODS = ("erm_views",)
MAIN_METHODS = tuple(m for m in METHODS if m not in CONTROL_METHODS)  # erm, semcovnet, sadcl, cmltnet, baselines


SEMCOVNET_SWITCHES = ("use_sdm", "use_dam", "use_dva", "use_cdi_reg")


ABLATION_LADDER = {
    "backbone": dict(use_sdm=False, use_dam=False, use_dva=False, use_cdi_reg=False),
    "+SDM": dict(use_sdm=True, use_dam=False, use_dva=False, use_cdi_reg=False),
    "+SDM+DAM": dict(use_sdm=True, use_dam=True, use_dva=False, use_cdi_reg=False),
    "+SDM+DAM+DVA": dict(use_sdm=True, use_dam=True, use_dva=True, use_cdi_reg=False),
    "full": dict(use_sdm=True, use_dam=True, use_dva=True, use_cdi_reg=True),
    "backbone + correction": dict(use_sdm=False, use_dam=False, use_dva=False, use_cdi_reg=True),
}


LEAVE_ONE_OUT = {
    "full - DAM": dict(use_sdm=True, use_dam=False, use_dva=True, use_cdi_reg=True),
    "full - DVA": dict(use_sdm=True, use_dam=True, use_dva=False, use_cdi_reg=True),
    "full - CDI-reg": dict(use_sdm=True, use_dam=True, use_dva=True, use_cdi_reg=False),
}


def main_configs(profile: str, seeds: Iterable[int], methods: Iterable[str] = MAIN_METHODS,
                 overrides: dict[str, Any] | None = None) -> list[TrainConfig]:
    """Every method x seed with the profile's protocol and each method's defaults."""
    return [train_config(m, profile, s, overrides) for m in methods for s in seeds]


def ablation_configs(profile: str, seeds: Iterable[int], leave_one_out: bool = True) -> dict[str, list[TrainConfig]]:
    """SemCovNet variants by name: the ladder, then (optionally) leave-one-out."""
    variants = dict(ABLATION_LADDER, **(LEAVE_ONE_OUT if leave_one_out else {}))
    return {name: [train_config("semcovnet", profile, s, {"hp": hp}) for s in seeds] for name, hp in variants.items()}


def sensitivity_configs(profile: str, seeds: Iterable[int], lambda_dva: Iterable[float],
                        lambda_cdi: Iterable[float]) -> dict[tuple[str, float], list[TrainConfig]]:
    """Full SemCovNet with one λ changed at a time (the other at its default)."""
    out: dict[tuple[str, float], list[TrainConfig]] = {}
    for key, values in (("lambda_dva", lambda_dva), ("lambda_cdi", lambda_cdi)):
        for value in values:
            out[(key, float(value))] = [train_config("semcovnet", profile, s, {"hp": {key: value}}) for s in seeds]
    return out


def tail_sweep_configs(profile: str, seeds: Iterable[int], exponents: Iterable[float],
                       methods: Iterable[str] = ("erm", "semcovnet"),
                       exponent_key: str = "coverage_tail_exponent") -> dict[tuple[str, float], list[TrainConfig]]:
    """ERM and SemCovNet on benchmarks generated with different coverage tail exponents."""
    return {
        (m, float(e)): [train_config(m, profile, s, {"benchmark_overrides": {exponent_key: e}}) for s in seeds]
        for m in methods for e in exponents
    }


def flatten(groups: dict[Any, list[TrainConfig]] | list[TrainConfig]) -> list[TrainConfig]:
    """All configurations of a grid, in order, without duplicates."""
    configs = groups if isinstance(groups, list) else [c for cs in groups.values() for c in cs]
    seen, out = set(), []
    for c in configs:
        key = run_dir_for(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def descriptor_learner_configs(profile: str, seeds: Iterable[int]) -> list[TrainConfig]:
    """SADCL as a multi-label descriptor learner (the descriptors are its labels)."""
    return [train_config("sadcl", profile, s, {"hp": {"sadcl_task": "descriptors"}}) for s in seeds]


#: Methods compared on every benchmark configuration (plus the rebalancing baseline chosen on
#: validation and the balanced-coverage oracle).
CONFIGURATION_METHODS = ("erm", "erm_desc", "semcovnet", "groupdro")


#: The long-tail rebalancing baselines; the one compared across configurations is chosen on validation.
REBALANCING_METHODS = ("cb", "focal", "ldam_drw", "balanced_softmax", "logit_adjustment", "crt")


def configuration_configs(profile: str, seeds: Iterable[int], configurations: Iterable[str],
                          methods: Iterable[str]) -> dict[tuple[str, str], list[TrainConfig]]:
    """(configuration, method) -> runs on that named benchmark configuration; ``oracle`` is ERM
    trained on the same configuration drawn with balanced concept coverage (the SCI that no
    coverage fix removes), evaluated against the natural training coverage."""
    out: dict[tuple[str, str], list[TrainConfig]] = {}
    for name in configurations:
        overrides = configuration_overrides(name, profile)
        for method in methods:
            out[(name, method)] = [train_config(method, profile, s, {"benchmark_overrides": overrides}) for s in seeds]
        oracle = {**overrides, "train_coverage": "balanced"}
        out[(name, "oracle")] = [train_config("erm", profile, s, {"benchmark_overrides": oracle}) for s in seeds]
    return out


def best_rebalancing(profile: str, seeds: Iterable[int], root: str | Path | None = None) -> str | None:
    """The rebalancing baseline with the lowest mean validation ``cdi_within`` (the coverage-balanced
    validation part when present), or None while its runs are unfinished. Test splits choose nothing."""
    configs = main_configs(profile, seeds, methods=REBALANCING_METHODS)
    if any(not is_finished(run_dir_for(c, root)) for c in configs):
        return None
    frame = results_frame(configs, root=root)
    column = "val_stress_cdi_within" if frame["val_stress_cdi_within"].notna().any() else "cdi_within"
    return str(frame.groupby("method")[column].mean().idxmin())


#: Keys of a notebook parameter file that decide which runs exist.
PIPELINE_KEYS = ("profile", "seeds", "ablation_seeds", "configurations", "tune_configurations")


def pipeline_configs(params: dict[str, Any], root: str | Path | None = None) -> list[TrainConfig]:
    """Every run the notebooks train for one parameter file (``notebooks/params/<profile>.yaml``).

    The main comparison, the SADCL descriptor learner, the ablations (their ``full`` rung is also
    notebook 02's full-architecture row), the validation tuning grid (on ``tune_configurations``)
    and the benchmark configurations, in that order, each run folder once. The configurations include the rebalancing baseline chosen
    on validation only once the main runs it is chosen from have finished (run the grid again).
    """
    missing = [k for k in PIPELINE_KEYS if k not in params]
    if missing:
        raise ConfigError(f"notebook parameters lack {missing}; a parameter file needs {list(PIPELINE_KEYS)}")
    profile, seeds = params["profile"], params["seeds"]
    rebalancing = best_rebalancing(profile, seeds, root)
    methods = CONFIGURATION_METHODS + ((rebalancing,) if rebalancing else ())
    grids = [
        main_configs(profile, seeds),
        descriptor_learner_configs(profile, seeds),
        ablation_configs(profile, seeds, leave_one_out=False)["full"],  # notebook 02's full-architecture row
        flatten(ablation_configs(profile, params["ablation_seeds"])),
        tune_configs(profile, seeds, TuneSearch(configurations=tuple(params["tune_configurations"]))),
        flatten(configuration_configs(profile, seeds, params["configurations"], methods)),
    ]
    return flatten([c for grid in grids for c in grid])
