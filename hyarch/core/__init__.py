"""The shared hybrid core: contract, rollout, training, regularizers, metrics."""
