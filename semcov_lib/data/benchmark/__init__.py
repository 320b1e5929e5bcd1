"""The embedded procedural dermatology benchmark, with Semantic Coverage Imbalance by construction.

Real dermatology data (MILK10k, ...) cannot be downloaded by tests, so the package generates a
dermoscopy-like benchmark whose coverage imbalance is known:

* a skin background whose tone is the subgroup (``skin_tone_class`` 0 = very dark .. 5 = very
  light) and a lesion whose shape, border, size, colour and internal pattern depend on the class;
* the 7 MILK10k MONET concepts drawn visibly (crust, hair, vessels, erythema, pigment network,
  gel bubbles, purple pen marks);
* long-tailed class priors, and for every (class, subgroup) a long-tailed (Zipf-like) profile of
  concept probabilities, so most (class, concept, subgroup) groups (SCGs) are rare;
* the SCI mechanism, in two separate knobs scaled by how rare the concept is for the class:
  ``concept_variant`` (default 1.0, *reducible*): a rare concept gives the lesion a variant look
  of its own (a pattern the class never shows, a colour and size change), the same for every
  lesion of that (class, concept), which a model learns once it has seen enough of them;
  ``concept_mimicry`` (default 0.1, *irreducible*): the lesion is pulled towards the class in
  which the concept is common, a confusion more data cannot remove (``strong_mimicry``: 0.6).
  Plain ERM therefore errs more on samples carrying rare concepts (negative coverage-error
  correlation);
* an oracle: ``train_coverage="balanced"`` draws the training split's concepts with flat
  coverage (every concept equally likely for every (class, subgroup); same size, same random
  draws, same appearance rules) and also writes the natural training rows as
  ``coverage_reference`` (evaluate the oracle against their coverage); all other splits are
  byte-identical to the natural benchmark, so ``CDI(ERM) - CDI(oracle)`` is the SCI more coverage
  would remove;
* evaluation splits: iid ``val`` and ``test``, the coverage-balanced ``stress`` split (every
  (class, concept, subgroup) group equally often, one concept per image; sized so one run's CDI
  bootstrap standard error is about 0.03) and its validation twin ``val_stress`` (for tuning);
* MONET-like scores: noisy, miscalibrated probabilities of each concept that also react to
  look-alike lesion colours (``descriptor_kind="hard"``: the same detector thresholded to 0/1
  annotations, CelebA-like); the true presence is stored in ``gt_<column>``.

Everything is drawn from ``numpy.random.Generator`` streams derived from ``(config, seed)`` and
rendered with vectorised NumPy in fixed-size batches, so the same seed gives byte-identical files
on the same machine, whatever the number of worker threads. The files follow the MILK10k layout,
so :func:`semcov_lib.data.datasets.milk10k.load_milk10k` reads them unchanged.

Modules: :mod:`.config` (BenchmarkConfig, profiles, named configurations, config hash),
:mod:`.design` (who gets which class, concepts, split, appearance and scores; no pixels),
:mod:`.render` (one painter per pattern and concept) and :mod:`.generate` (files, cache, the
``generate`` command). Everything public is re-exported here.
"""

from semcov_lib.data.benchmark.config import (
    APPEARANCE_FIELDS, ARTEFACT_CONCEPTS, BENCHMARK_CONFIGS, BENCHMARK_PROFILES, CLASS_APPEARANCE, CLASS_PRIORITY,
    CONCEPTS, DESCRIPTOR_KINDS, DIAGNOSTIC_CONCEPTS, GENERATOR_VERSION, REFERENCE_SPLIT, SKIN_TONES, SPLIT_ORDER,
    TRAIN_COVERAGES, BenchmarkConfig, BenchmarkError, NamedConfiguration, benchmark_config, config_hash,
    configuration_overrides,
)
from semcov_lib.data.benchmark.design import (
    CONCEPT_RANKS, SITES, balanced_profile, base_concept_profile, class_priors, concept_profile,
    sample_benchmark_metadata,
)
from semcov_lib.data.benchmark.generate import (
    CONFIG_FILE, add_arguments, available_memory, check_memory, ensure_benchmark, estimated_memory,
    generate_benchmark, load_benchmark, run,
)
from semcov_lib.data.benchmark.render import render_images
from semcov_lib.data.datasets.milk10k import (  # re-exported, as the single module did
    GROUNDTRUTH_FILE, INPUT_DIR, METADATA_FILE, MILK10K_CLASSES, MONET_COLUMNS,
)

__all__ = [
    "APPEARANCE_FIELDS", "ARTEFACT_CONCEPTS", "BENCHMARK_CONFIGS", "BENCHMARK_PROFILES", "CLASS_APPEARANCE",
    "CLASS_PRIORITY", "CONCEPTS", "CONCEPT_RANKS", "CONFIG_FILE", "DESCRIPTOR_KINDS", "DIAGNOSTIC_CONCEPTS",
    "GENERATOR_VERSION", "GROUNDTRUTH_FILE", "INPUT_DIR", "METADATA_FILE", "MILK10K_CLASSES", "MONET_COLUMNS",
    "REFERENCE_SPLIT", "SITES", "SKIN_TONES", "SPLIT_ORDER", "TRAIN_COVERAGES", "BenchmarkConfig", "BenchmarkError",
    "NamedConfiguration", "add_arguments", "available_memory", "balanced_profile", "base_concept_profile",
    "benchmark_config", "check_memory", "class_priors", "concept_profile", "config_hash", "configuration_overrides",
    "ensure_benchmark", "estimated_memory", "generate_benchmark", "load_benchmark", "render_images", "run",
    "sample_benchmark_metadata",
]
