"""Nats and bits per character of a model over a token sequence.

Shared by the trainer (val_loss, val_bpc), `evaluate` and `dynamic`. Two methods:

- **streamed** (`Scorer.score_streams`, the default): the text is read as S contiguous streams
  side by side, the LSTM state carried from one chunk of `segment` tokens to the next, as
  `sample` carries it. Every id after the first is predicted exactly once, with all the text
  before it in its stream as context. Stream s reads ids `[a_s, a_{s+1})` as inputs and predicts
  `[a_s + 1, a_{s+1} + 1)`: each stream after the first starts one id early (that id, the last
  target of the stream before it, is context only). See `stream_layout`.
- **windowed** (`score_windows`, `score_all`): consecutive windows of `maxlen` inputs, each from
  the zero state; each id after the first is predicted once with 1 to maxlen ids of context.

Both read the text a chunk at a time (`read(starts, span)`), never the whole split, and each runs
one traced function with fixed shapes but the batch (the streamed one: `segment` tokens per call,
the ragged last chunk padded with weight 0), so any number of windows or streams shares one trace.
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
    """Totals over the predicted tokens, and how they were scored."""

    nats: float
    tokens: int
    chars: float
    method: str = "windowed"  # windowed | streamed | dynamic
    streams: int = 0  # streams read side by side (streamed and dynamic)

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


@dataclass(frozen=True)
class StreamLayout:
    """Streams over a text: stream s feeds ids `[starts[s], starts[s] + lengths[s])` as inputs.

    Input position j of a stream predicts the id after it; positions `j < skip[s]` are warm-up
    context, read but not scored.
    """

    starts: np.ndarray  # (streams,) int64
    lengths: np.ndarray  # (streams,) int64: inputs per stream
    skip: np.ndarray  # (streams,) int64: unscored warm-up inputs at the start of each stream

    @property
    def streams(self) -> int:
        """Number of streams."""
        return len(self.starts)

    def weights(self, first: int, span: int) -> np.ndarray:
        """1 where input positions `first .. first + span - 1` are scored: (streams, span)."""
        pos = first + np.arange(span)[None, :]  # (1, span)
        scored = (pos >= self.skip[:, None]) & (pos < self.lengths[:, None])
        return scored.astype(np.float32)


def stream_layout(
    tokens: int,
    streams: int,
    *,
    min_length: int = 1,
    limit: int | None = None,
    warmup: int = 0,
) -> StreamLayout:
    """Where S streams read a text of `tokens` ids.

    Args:
        tokens: Ids in the text (N); N - 1 of them can be predicted.
        streams: Most streams (S); fewer when the text is short, so that each stream
            predicts at least `min_length` ids.
        min_length: Fewest predictions per stream.
        limit: None (or >= N - 1): the whole text, every id after the first predicted once,
            stream s starting one id before its first target. Else a bounded sample: S spans of
            `limit // S` predictions at evenly spaced places, each after `warmup` unscored ids
            of context (fewer where the text is too short for them).
        warmup: Unscored context ids before each sampled span.

    Returns:
        The layout.
    """
    predictions = tokens - 1
    if predictions < 1:
        raise ValueError("a text needs at least 2 tokens to be scored")
    if limit is None or limit >= predictions:
        count = max(1, min(streams, predictions // max(min_length, 1)))
        lengths = np.full(count, predictions // count, np.int64)
        lengths[: predictions % count] += 1  # the remainder: one more for the first streams
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return StreamLayout(starts, lengths, np.zeros(count, np.int64))
    count = max(1, min(streams, limit // max(min_length, 1)))
    scored = max(limit // count, 1)
    warmup = max(0, min(warmup, predictions - scored))
    span = warmup + scored  # inputs per stream
    starts = np.linspace(0, predictions - span, count).round().astype(np.int64)
    return StreamLayout(starts, np.full(count, span, np.int64), np.full(count, warmup, np.int64))


def read_padded(tokens: TokenSource, starts: np.ndarray, span: int) -> np.ndarray:
    """ids[s : s + span] for each start, zero-padded where a row runs past the end."""
    n = len(tokens)
    rows = np.zeros((len(starts), span), np.int32)  # (rows, span)
    inside = starts + span <= n
    if inside.any():
        rows[inside] = tokens.read(starts[inside], span)
    for i in np.flatnonzero(~inside & (starts < n)):
        available = int(n - starts[i])
        rows[i, :available] = tokens.read(starts[i : i + 1], available)[0]
    return rows


def zero_states(stream, streams: int) -> np.ndarray:
    """Zero (h, c) of every layer of a `stream_model`: (2 * layers, streams, units)."""
    units = [int(t.shape[-1]) for t in stream.inputs[1:]]
    return np.zeros((len(units), streams, units[0]), np.float32)


def chunks(tokens: TokenSource, layout: StreamLayout, segment: int):
    """Yields (x, y, weight) per chunk of `segment` inputs per stream, in reading order."""
    longest = int(layout.lengths.max())
    for first in range(0, longest, segment):
        rows = read_padded(tokens, layout.starts + first, segment + 1)  # (streams, segment + 1)
        yield rows[:, :-1], rows[:, 1:], layout.weights(first, segment)


class Scorer:
    """Scores a text with a model: streamed (state carried) or in zero-state windows.

    Args:
        model: ids [batch, time] -> logits [batch, time, vocab] (from `build_model`).
        char_lengths: Characters each token id covers (`tokenizer.token_char_lengths()`).
        maxlen: Window length (the run's `windows.maxlen`).
        batch_size: Windows per forward pass (windowed scoring).
        segment: Tokens per stream per call (streamed scoring; default `maxlen`). The score
            does not depend on it, only the cost does (and each stream predicts at least
            `segment` ids).
    """

    def __init__(
        self,
        model,
        char_lengths: np.ndarray,
        maxlen: int,
        batch_size: int = 64,
        *,
        segment: int | None = None,
    ) -> None:
        import tensorflow as tf

        self.model, self.maxlen, self.batch_size = model, maxlen, batch_size
        self.segment = segment or maxlen
        self.lengths = tf.constant(np.asarray(char_lengths, dtype=np.float32))
        self._totals = self._windows_fn()
        self._stream, self._stream_totals = None, None  # built on first use

    def _windows_fn(self):
        import tensorflow as tf

        model, lengths, maxlen = self.model, self.lengths, self.maxlen

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

        return totals

    @property
    def stream(self):
        """The model's `stream_model` (same layers, state carried in and out)."""
        if self._stream is None:
            from textgen.model.build import stream_model

            self._stream = stream_model(self.model)
            self._stream_totals = stream_totals_fn(self._stream, self.lengths, self.segment)
        return self._stream

    def warm_up(self) -> None:
        """Traces both forward passes now, so that later scoring is timed without the tracing."""
        zeros = np.zeros((1, self.maxlen), np.int32)
        self._totals(zeros, zeros, np.zeros((1, self.maxlen), np.float32))
        zeros = np.zeros((1, self.segment), np.int32)
        states = zero_states(self.stream, 1)
        self._stream_totals(zeros, zeros, np.zeros((1, self.segment), np.float32), states)

    def score_windows(self, tokens: TokenSource, starts: np.ndarray) -> Score:
        """Scores full windows at `starts` (each reads maxlen + 1 ids), each from zero state."""
        nats = chars = 0.0
        count = 0
        for i in range(0, len(starts), self.batch_size):
            rows = tokens.read(starts[i : i + self.batch_size], self.maxlen + 1)
            x, y = rows[:, :-1], rows[:, 1:]
            n, c = self._totals(x, y, np.ones(y.shape, np.float32))
            nats, chars, count = nats + float(n), chars + float(c), count + y.size
        return Score(nats, count, chars)

    def score_all(self, tokens: TokenSource) -> Score:
        """Scores the whole sequence in zero-state windows: every id after the first once."""
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

    def score_streams(
        self,
        tokens: TokenSource,
        *,
        streams: int = 64,
        limit_tokens: int | None = None,
        warmup: int | None = None,
    ) -> Score:
        """Scores the text as streams with the LSTM state carried (see `stream_layout`).

        Args:
            tokens: The text's ids.
            streams: Most streams side by side; each predicts at least `segment` ids (fewer
                streams for a short text, one at the least).
            limit_tokens: None: the whole text, each id after the first once. Else a bounded
                sample of about this many predictions (the trainer's periodic evaluation).
            warmup: Unscored context ids before each sampled span (default `maxlen`).

        Returns:
            The score (`method` streamed, `streams` S).
        """
        layout = stream_layout(
            len(tokens), streams, min_length=self.segment, limit=limit_tokens,
            warmup=self.maxlen if warmup is None else warmup,
        )  # fmt: skip
        states = zero_states(self.stream, layout.streams)  # (2 * layers, streams, units)
        nats = chars = 0.0
        for x, y, weight in chunks(tokens, layout, self.segment):
            n, c, states = self._stream_totals(x, y, weight, states)
            nats, chars = nats + float(n), chars + float(c)
        predicted = int((layout.lengths - layout.skip).sum())
        return Score(nats, predicted, chars, method="streamed", streams=layout.streams)


def stream_totals_fn(stream, lengths, segment: int):
    """One traced function: (x, y, weight, states) -> (nats, chars, states after the chunk).

    Chunks are `segment` tokens long; the number of streams is left open (one trace for all).
    """
    import tensorflow as tf

    layers = (len(stream.inputs) - 1) // 2
    units = int(stream.inputs[1].shape[-1])

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, segment), tf.int32),  # x (streams, time)
            tf.TensorSpec((None, segment), tf.int32),  # y (streams, time)
            tf.TensorSpec((None, segment), tf.float32),  # weight (streams, time): 0 = not scored
            tf.TensorSpec((2 * layers, None, units), tf.float32),  # (h, c) per layer
        ]
    )
    def totals(x, y, weight, states):
        logits, new_states = forward(stream, x, states)
        nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        chars = tf.gather(lengths, y)  # (streams, time)
        return tf.reduce_sum(nats * weight), tf.reduce_sum(chars * weight), new_states

    return totals


def forward(stream, x, states, *, training: bool = False):
    """Logits (float32, (streams, time, vocab)) and the stacked states after `x`."""
    import tensorflow as tf

    outputs = stream([x, *tf.unstack(states)], training=training)
    logits = tf.cast(outputs[0], tf.float32)  # (streams, time, vocab)
    return logits, tf.stack([tf.cast(s, tf.float32) for s in outputs[1:]])
