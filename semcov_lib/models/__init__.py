"""Models: backbones, descriptor-text embeddings, losses and the methods (SemCovNet, its peers and
the baselines) behind one registry."""
