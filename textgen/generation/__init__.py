"""Text from a model: the compiled sampler (sampling rule, seeds) and `Generator`."""
