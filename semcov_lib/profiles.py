"""The run profiles in one table: for each name, the benchmark's size and the training protocol.

A profile name is also the name of the notebooks' parameter file (``notebooks/params/<name>.yaml``:
seeds, configurations, bootstrap sizes), so ``smoke``, ``default`` and ``paper`` mean the same
thing to the generator, the trainer and the pipeline (a test checks the files match this table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from semcov_lib.config import ConfigError, load_yaml
from semcov_lib.paths import PARAMS_DIR, REPO_ROOT


@dataclass(frozen=True)
class Profile:
    """What one profile fixes: ``benchmark`` overrides the generator's defaults
    (:class:`~semcov_lib.data.benchmark.BenchmarkConfig`), ``train`` the trainer's
    (:class:`~semcov_lib.experiment.protocol.TrainConfig`)."""

    purpose: str
    benchmark: Mapping[str, Any]
    train: Mapping[str, Any]


PROFILES: Mapping[str, Profile] = MappingProxyType({
    "smoke": Profile(
        "Proves every method and notebook runs: tiny images, the compact CNN trained end to end.",
        # Two skin tones and 6 stress images per SCG, so that even the smoke profile has SCGs that pass
        # the CDI's validity rules (>= 10 training images per (class, subgroup), evaluation weight >= 5).
        benchmark=MappingProxyType(dict(image_size=32, n_train=900, n_val=120, n_test=300, n_stress=504,
                                        n_val_stress=504, n_skin_tones=2, skin_tone_weights=(0.5, 0.5))),
        # shot_scale puts the thresholds at about 30% and 6% of the largest training class, so the
        # benchmark's 6 classes split into head / medium / tail as on ImageNet-LT-style data.
        train=MappingProxyType(dict(image_size=32, backbone="cnn", feature_cache=False, epochs=2, batch_size=64,
                                    lr=2e-3, n_boot=200, shot_scale=0.35)),
    ),
    "default": Profile(
        "Laptop CPU: heads trained on frozen ImageNet EfficientNet-Lite0 features cached once.",
        benchmark=MappingProxyType({}),
        train=MappingProxyType(dict(image_size=64, feature_cache=True, feature_backbone="lite0",
                                    feature_input_size=96, epochs=12, batch_size=128, lr=1e-3, warmup_epochs=1,
                                    n_boot=1000, shot_scale=7.0)),
    ),
    "paper": Profile(
        "As the paper: EfficientNet-Lite0 fine-tuned end to end on larger images (GPU or a long CPU run).",
        benchmark=MappingProxyType(dict(image_size=96, n_train=18000, n_val=2500, n_test=4000, n_stress=6048,
                                        n_val_stress=3024)),
        train=MappingProxyType(dict(image_size=128, backbone="lite0", feature_cache=False, epochs=30,
                                    batch_size=64, lr=3e-4, warmup_epochs=2, n_boot=1000, shot_scale=25.0)),
    ),
})


def param_profiles() -> list[str]:
    """The profiles with a notebook parameter file: one ``notebooks/params/<name>.yaml`` each."""
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def profile_params(profile: str, path: str | Path | None = None) -> dict[str, Any]:
    """The notebooks' parameters of ``profile``: ``path``, else ``notebooks/params/<profile>.yaml``.

    A missing file is one line naming the profiles that have one.
    """
    unknown = "" if path else f"unknown profile {profile!r}: "
    path = Path(path) if path else PARAMS_DIR / f"{profile}.yaml"
    if not path.is_file():
        folder = PARAMS_DIR.relative_to(REPO_ROOT) if PARAMS_DIR.is_relative_to(REPO_ROOT) else PARAMS_DIR
        raise ConfigError(f"{unknown}no notebook parameter file {path}; valid profiles: "
                          f"{', '.join(param_profiles())} (files in {folder}/)")
    return load_yaml(path)
