"""Dynamic evaluation: the model keeps learning from the text it has just scored.

Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models", in a simple variant. The text
is read as streams (`scoring.stream_layout`, state carried) in segments of `segment` tokens per
stream. Each segment is first scored, then the loss over it (mean nats per scored token) takes one
gradient step, so later text is scored by a model adapted to all text read before it:

    ms <- ms + (g^2 - ms) / k                              running mean of g^2 over segments read
    theta <- theta - lr * clip(g / (sqrt(ms) + eps), -CLIP, CLIP)     (from segment WARMUP + 1 on)
    theta <- theta + decay * (theta_0 - theta)             pulled back towards the trained weights

per parameter. The mean square comes from the text already read (Krause et al. collect it on
training data): the first `WARMUP` segments only gather it; the clip bounds the step of a
parameter whose gradient was rarely non-zero (a rare character's embedding row). Gradients do not
flow into the state carried in from the segment before (truncated back-propagation). Everything
happens on the in-memory model: the run's files are never written. One traced function per
segment length (fixed shapes but the number of streams).

`adapt` reads a text once to gather the mean square (no updates), then once more with the updates,
e.g. to prime a `Generator` with a style before sampling (`adapt_generator`, `sample --adapt`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from textgen.core.errors import TextgenError
from textgen.data.tokenizers import (
    UNKNOWN_ID,
    Tokenizer,
    find_unknown_chars,
    unknown_chars_message,
)  # fmt: skip
from textgen.evaluation.scoring import (
    ArrayTokens,
    Score,
    TokenSource,
    chunks,
    forward,
    stream_layout,
    zero_states,
)

LEARNING_RATE = 3e-4  # tuned on the KJV val split: docs/benchmarks.md, "Dynamic evaluation"
SEGMENT = 64  # tokens per stream between two updates
DECAY = 0.0  # pull back towards the trained weights per update
WARMUP = 10  # segments that only gather the mean square of the gradients
CLIP = 4.0  # largest normalised step, in units of lr
EPS = 1e-8


@dataclass(frozen=True)
class DynamicSettings:
    """How dynamic evaluation adapts the weights.

    Attributes:
        lr: Step size of the RMS-normalised update (> 0).
        segment: Tokens per stream between updates (>= 1).
        decay: Pull towards the trained weights per update, in [0, 1).
        streams: Streams read side by side (>= 1); each update then averages over them, so 1
            adapts to the most recent text only (the slowest, and the best for a single text).
    """

    lr: float = LEARNING_RATE
    segment: int = SEGMENT
    decay: float = DECAY
    streams: int = 1

    def check(self, *, prefix: str = "--dynamic-") -> None:
        """Raises a TextgenError naming the first setting out of range."""
        rules = [
            ("lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "> 0"),
            ("decay", self.decay, 0 <= self.decay < 1, "in [0, 1)"),
            ("segment", self.segment, self.segment >= 1, ">= 1"),
            ("streams", self.streams, self.streams >= 1, ">= 1"),
        ]
        for name, value, ok, must in rules:
            if not ok:
                flag = f"{prefix}{name}" if name in ("lr", "decay") else f"--{name}"
                raise TextgenError(f"{flag} must be {must}, got {value}", flag)


class DynamicEvaluator:
    """Scores (or reads) text while adapting a model's weights to it; `reset` undoes that.

    Args:
        model: ids [batch, time] -> logits from `build_model` (or loaded from a run). Its
            weights change in memory; files are never written.
        char_lengths: Characters each token id covers (`tokenizer.token_char_lengths()`).
        settings: The update rule's settings.
    """

    def __init__(
        self, model, char_lengths: np.ndarray, settings: DynamicSettings | None = None
    ) -> None:
        import tensorflow as tf

        from textgen.model.build import stream_model

        self.model, self.settings = model, settings or DynamicSettings()
        self.settings.check()
        self.stream = stream_model(model)  # (layers shared with `model` unless an old format)
        self.variables = list(self.stream.trainable_variables)
        self.trained = [tf.Variable(v, trainable=False) for v in self.variables]  # theta_0
        self.mean_square = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.updates = tf.Variable(0.0, trainable=False)  # segments read so far
        self.warmup = tf.Variable(float(WARMUP), trainable=False)  # segments before updating
        self.lengths = tf.constant(np.asarray(char_lengths, dtype=np.float32))
        self._step = self._build_step()

    def reset(self) -> None:
        """Puts the trained weights back and forgets the gradient statistics."""
        for variable, trained, ms in zip(
            self.variables, self.trained, self.mean_square, strict=True
        ):
            variable.assign(trained)
            ms.assign(np.zeros(ms.shape, np.float32))
        self.updates.assign(0.0)
        self._sync_model()

    def score(self, tokens: TokenSource) -> Score:
        """Scores every id after the first once, adapting after each segment.

        Returns:
            The score (`method` dynamic). The model stays adapted to the text afterwards.
        """
        s = self.settings
        layout = stream_layout(len(tokens), s.streams, min_length=s.segment)
        states = zero_states(self.stream, layout.streams)  # (2 * layers, streams, units)
        nats = chars = 0.0
        for x, y, weight in chunks(tokens, layout, s.segment):
            n, c, states = self._step(x, y, weight, states)
            nats, chars = nats + float(n), chars + float(c)
        predicted = int(layout.lengths.sum())
        self._sync_model()
        return Score(nats, predicted, chars, method="dynamic", streams=layout.streams)

    def adapt(self, tokens: TokenSource, *, passes: int = 1) -> Score:
        """Adapts the weights to a text: a pass gathering the mean square, then `passes` updating.

        Returns:
            The score of the last pass, read while adapting.
        """
        self.warmup.assign(float("inf"))  # statistics only
        self.score(tokens)
        self.warmup.assign(0.0)
        try:
            for _ in range(passes):
                score = self.score(tokens)
        finally:
            self.warmup.assign(float(WARMUP))
        return score

    def _sync_model(self) -> None:
        """Copies the adapted weights into `model` where `stream_model` had to copy its layers."""
        for layer in self.stream.layers:
            if not layer.weights:
                continue
            own = self.model.get_layer(layer.name)
            if own is not layer:
                own.set_weights(layer.get_weights())

    def _build_step(self):
        """The traced segment: score, gradient, update (fixed time axis: `segment`)."""
        import tensorflow as tf

        s, stream, lengths = self.settings, self.stream, self.lengths
        layers = (len(stream.inputs) - 1) // 2
        units = int(stream.inputs[1].shape[-1])

        @tf.function(
            input_signature=[
                tf.TensorSpec((None, s.segment), tf.int32),  # x (streams, time)
                tf.TensorSpec((None, s.segment), tf.int32),  # y (streams, time)
                tf.TensorSpec((None, s.segment), tf.float32),  # weight: 0 = not scored
                tf.TensorSpec((2 * layers, None, units), tf.float32),  # (h, c) per layer
            ]
        )
        def step(x, y, weight, states):
            with tf.GradientTape() as tape:
                logits, new_states = forward(stream, x, states)  # (streams, time, vocab)
                nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                total = tf.reduce_sum(nats * weight)
                loss = total / tf.maximum(tf.reduce_sum(weight), 1.0)
            grads = tape.gradient(loss, self.variables)
            self._update(grads)
            chars = tf.reduce_sum(tf.gather(lengths, y) * weight)
            return total, chars, tf.stop_gradient(new_states)

        return step

    def _update(self, grads) -> None:
        """One RMS-normalised step, then the decay towards the trained weights (traced)."""
        import tensorflow as tf

        s = self.settings
        self.updates.assign_add(1.0)
        rate = s.lr * tf.cast(self.updates > self.warmup, tf.float32)
        for variable, grad, ms, trained in zip(
            self.variables, grads, self.mean_square, self.trained, strict=True
        ):
            grad = tf.convert_to_tensor(grad)  # the embedding's gradient comes as slices
            ms.assign_add((tf.square(grad) - ms) / self.updates)
            normalised = tf.clip_by_value(grad / (tf.sqrt(ms) + EPS), -CLIP, CLIP)
            variable.assign_sub(rate * normalised)
            if s.decay:
                variable.assign_add(s.decay * (trained - variable))


def adapt_generator(generator, ids: np.ndarray, settings: DynamicSettings | None = None) -> Score:
    """Adapts a `Generator`'s model to a text (`DynamicEvaluator.adapt`), then refreshes it.

    Args:
        generator: A `textgen.generation.generate.Generator`; its model's weights change in memory.
        ids: The text's ids (`encode_text`).
        settings: The update rule's settings (default `DynamicSettings()`).

    Returns:
        The text's score while it was read the last time.
    """
    lengths = generator.tokenizer.token_char_lengths()
    score = DynamicEvaluator(generator.model, lengths, settings).adapt(ArrayTokens(ids))
    generator.refresh()
    return score


def encode_text(tokenizer: Tokenizer, text: str, where: str) -> np.ndarray:
    """A text's ids for adapting to it; characters outside the vocabulary are an error.

    Raises:
        TextgenError: naming the characters (up to 20) and `where`; or a text under 2 tokens.
    """
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)  # (tokens,)
    if (ids == UNKNOWN_ID).any():
        raise TextgenError(unknown_chars_message(find_unknown_chars(tokenizer, text)), where)
    if len(ids) < 2:
        raise TextgenError("too short to adapt to: it needs at least 2 tokens", where)
    return ids
