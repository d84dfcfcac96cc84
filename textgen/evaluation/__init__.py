"""How good a model is: streamed, windowed and dynamic scoring, and `evaluate`."""
