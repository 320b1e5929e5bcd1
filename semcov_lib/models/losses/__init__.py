"""Loss functions, one concept per module: ``longtail`` (class-imbalance baselines),
``alignment`` (SemCovNet's DVA loss and CDI regulariser), ``contrastive`` (SADCL's SSCL /
PSCL, ASL, and the InfoNCE used by CMLTNet)."""
