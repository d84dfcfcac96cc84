"""Text from a model: the compiled sampler (sampling rule, seeds) and `Generator`."""

from textgen.generation.generate import Generator

__all__ = ["Generator"]
