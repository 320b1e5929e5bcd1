"""Experiments: what a run is (protocol), its data (batches), training it (train, workers),
which runs the pipeline needs (plan, grid, tune) and what is read back from them (results)."""
