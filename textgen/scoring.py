"""Nats and bits per character of a model over a token sequence, with one compiled forward pass.

Shared by the trainer (val_loss, val_bpc) and `textgen.evaluate`. The sequence is cut into
consecutive windows of `maxlen` inputs; each id after the first is predicted exactly once, with
the ids before it in its window as context (1 to maxlen of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class TokenSource(Protocol):
    """Anything that reads ids[s : s + span] for several starts (a TokenFile, ArrayTokens)."""

    def __len__(self) -> int: ...

    def read(self, starts: np.ndarray, span: int) -> np.ndarray: ...


class ArrayTokens:
    """An in-memory id array with the TokenFile reading interface."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, starts: np.ndarray, span: int) -> np.ndarray:
        """Returns ids[s : s + span] for each start s."""
        return self.ids[np.asarray(starts)[:, None] + np.arange(span)]  # (windows, span)


@dataclass(frozen=True)
class Score:
    """Totals over the predicted tokens."""

    nats: float
    tokens: int
    chars: float

    @property
    def nats_per_token(self) -> float:
        """Mean cross-entropy per predicted token."""
        return self.nats / max(self.tokens, 1)

    @property
    def nats_per_char(self) -> float:
        """Cross-entropy per character of text covered by the predicted tokens."""
        return self.nats / max(self.chars, 1e-9)

    @property
    def bpc(self) -> float:
        """Bits per character."""
        return self.nats_per_char / math.log(2)


class Scorer:
    """Scores windows with a model; the forward pass is traced once per window length.

    Args:
        model: ids [batch, time] -> logits [batch, time, vocab].
        char_lengths: Characters each token id covers (`tokenizer.token_char_lengths()`).
        maxlen: Window length (the run's `windows.maxlen`).
        batch_size: Windows per forward pass.
    """

    def __init__(self, model, char_lengths: np.ndarray, maxlen: int, batch_size: int = 64) -> None:
        import tensorflow as tf

        self.maxlen, self.batch_size = maxlen, batch_size
        lengths = tf.constant(np.asarray(char_lengths, dtype=np.float32))

        @tf.function(
            input_signature=[
                tf.TensorSpec((None, maxlen), tf.int32),  # x (batch, time)
                tf.TensorSpec((None, maxlen), tf.int32),  # y (batch, time)
                tf.TensorSpec((None, maxlen), tf.float32),  # weight (batch, time): 0 = padding
            ]
        )
        def totals(x, y, weight):
            logits = tf.cast(model(x, training=False), tf.float32)  # (batch, time, vocab)
            nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            chars = tf.gather(lengths, y)  # (batch, time)
            return tf.reduce_sum(nats * weight), tf.reduce_sum(chars * weight)

        self._totals = totals

    def warm_up(self) -> None:
        """Traces the forward pass now, so that later scoring is timed without the tracing."""
        zeros = np.zeros((1, self.maxlen), np.int32)
        self._totals(zeros, zeros, np.zeros((1, self.maxlen), np.float32))

    def score_windows(self, tokens: TokenSource, starts: np.ndarray) -> Score:
        """Scores full windows at `starts` (each reads maxlen + 1 ids)."""
        nats = chars = 0.0
        count = 0
        for i in range(0, len(starts), self.batch_size):
            rows = tokens.read(starts[i : i + self.batch_size], self.maxlen + 1)
            x, y = rows[:, :-1], rows[:, 1:]
            n, c = self._totals(x, y, np.ones(y.shape, np.float32))
            nats, chars, count = nats + float(n), chars + float(c), count + y.size
        return Score(nats, count, chars)

    def score_all(self, tokens: TokenSource) -> Score:
        """Scores the whole sequence: every id after the first is predicted once."""
        n = len(tokens)
        full = np.arange(0, max(n - self.maxlen - 1, -1) + 1, self.maxlen, dtype=np.int64)
        full = full[full + self.maxlen + 1 <= n]
        score = self.score_windows(tokens, full)
        tail_start = int(full[-1]) + self.maxlen if len(full) else 0
        tail = n - tail_start  # ids left over: tail - 1 more predictions
        if tail >= 2:
            rows = tokens.read(np.array([tail_start]), tail)  # (1, tail)
            x = np.zeros((1, self.maxlen), np.int32)
            y = np.zeros((1, self.maxlen), np.int32)
            weight = np.zeros((1, self.maxlen), np.float32)
            x[0, : tail - 1], y[0, : tail - 1], weight[0, : tail - 1] = rows[0, :-1], rows[0, 1:], 1
            nats, chars = self._totals(x, y, weight)
            score = Score(
                score.nats + float(nats), score.tokens + tail - 1, score.chars + float(chars)
            )
        return score
