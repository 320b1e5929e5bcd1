"""Data: the common table every dataset becomes, the embedded benchmark generator, the real-dataset
loaders with their fixtures and manifests, the image cache and the ``verify`` command."""
