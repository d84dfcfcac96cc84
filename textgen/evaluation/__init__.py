"""How good a model is: streamed, windowed and dynamic scoring, and `evaluate`."""

from textgen.evaluation.evaluate import evaluate

__all__ = ["evaluate"]
