"""The trained layers as a one-token step, and the sampling rule; used inside `Generator`'s graph.

`StepModel` folds the Embedding into the first LSTM's input kernel (a `[vocab, 4 * units]` table,
so that input costs a gather) and folds each other LSTM's bias into its recurrent term.

The step is software-pipelined: each layer's recurrent term `h @ recurrent_kernel (+ bias)` for
the *next* token is computed as soon as this token's `h` exists, and carried. The chain from one
sampled token to the next then holds one matmul per layer above the first plus the logits; the
recurrent matmuls run beside it on another core (TensorFlow runs independent ops of a graph in
parallel). docs/benchmarks.md has the figures (one stream at the base size, 2 cores).
The sampling helpers below take per-row tensors: every row of a batch has its own temperature,
top-k, top-p and random stream.
Its tensors are variables, so `refresh` loads newer weights into a compiled sampler without
retracing.
"""

from __future__ import annotations

import numpy as np

from textgen.core.errors import TextgenError
from textgen.data.tokenizers import UNKNOWN_ID

CARRY_PER_LAYER = 3  # h, c and the recurrent term for the next token


class StepModel:
    """The trained layers as one-token-at-a-time tensors: a gather, matmuls, the LSTM gates.

    A carry is a tuple of `(h, c, r)` per layer, bottom first, each `(samples, units)` but `r`
    `(samples, 4 * units)`: `r = h @ recurrent_kernel (+ bias above the first layer)`.
    """

    def __init__(self, model) -> None:
        import tensorflow as tf

        from textgen.model.build import lstm_layers

        embedding = model.get_layer("embedding").embeddings  # (vocab, embedding_dim)
        cells = [layer.cell for layer in lstm_layers(model)]
        if not cells:
            raise TextgenError("the model has no LSTM layer", model.name)
        dense = model.get_layer("logits")

        # Variables, not constants: `refresh` can load newer weights without retracing.
        self._cells, self._embedding, self._dense = cells, embedding, dense
        folded = self._fold()
        self.table, self.dense_kernel, self.dense_bias = (
            tf.Variable(folded[k], trainable=False) for k in ("table", "dense_kernel", "dense_bias")
        )
        self.recurrent = [tf.Variable(k, trainable=False) for k in folded["recurrent"]]
        self.kernels = [tf.Variable(k, trainable=False) for k in folded["kernels"]]
        self.biases = [tf.Variable(b, trainable=False) for b in folded["biases"]]
        self.activations = [(c.activation, c.recurrent_activation) for c in cells]
        self.layers, self.units = len(cells), int(cells[0].units)

    def refresh(self) -> None:
        """Reloads the folded weights from the model (e.g. after more training)."""
        folded = self._fold()
        for name in ("table", "dense_kernel", "dense_bias"):
            getattr(self, name).assign(folded[name])
        for name in ("recurrent", "kernels", "biases"):
            for variable, value in zip(getattr(self, name), folded[name], strict=True):
                variable.assign(value)

    def _fold(self) -> dict:
        """The step tensors from the model's current weights."""
        import tensorflow as tf

        def f32(x):
            return tf.cast(tf.convert_to_tensor(x), tf.float32)

        cells, dense = self._cells, self._dense
        zeros = tf.zeros([4 * int(cells[0].units)], tf.float32)
        return {
            "table": tf.matmul(f32(self._embedding), f32(cells[0].kernel))
            + (f32(cells[0].bias) if cells[0].use_bias else zeros),  # (vocab, 4 * units)
            "recurrent": [f32(c.recurrent_kernel) for c in cells],  # (units, 4 * units) each
            "kernels": [f32(c.kernel) for c in cells[1:]],  # (units, 4 * units) each
            "biases": [f32(c.bias) if c.use_bias else zeros for c in cells[1:]],  # (4 * units,)
            "dense_kernel": f32(dense.kernel),  # (units, vocab)
            # -inf at the unknown id: it is never sampled, and the loop needs no mask op.
            "dense_bias": tf.tensor_scatter_nd_update(
                f32(dense.bias) if dense.use_bias else tf.zeros([dense.units]),
                [[UNKNOWN_ID]],
                [-np.inf],
            ),  # (vocab,)
        }

    def zero_states(self, samples: int) -> np.ndarray:
        """Zero (h, c) of every layer: (2 * layers, samples, units)."""
        return np.zeros((2 * self.layers, samples, self.units), np.float32)

    def carry_of(self, states) -> tuple:
        """The carry for states `(2 * layers, samples, units)` of (h, c) per layer."""
        import tensorflow as tf

        hc = tf.unstack(states, 2 * self.layers)
        carry = ()
        for layer in range(self.layers):
            h, c = hc[2 * layer], hc[2 * layer + 1]
            carry += (h, c, self._recurrent_term(layer, h))
        return carry

    def states_of(self, carry: tuple):
        """(h, c) per layer of a carry, stacked: (2 * layers, samples, units)."""
        import tensorflow as tf

        hc = [carry[CARRY_PER_LAYER * layer + j] for layer in range(self.layers) for j in (0, 1)]
        return tf.stack(hc)

    def _recurrent_term(self, layer: int, h):
        """h @ recurrent_kernel, plus the bias above the first layer: (samples, 4 * units)."""
        import tensorflow as tf

        term = tf.matmul(h, self.recurrent[layer])
        return term if layer == 0 else term + self.biases[layer - 1]

    def advance(self, token, carry: tuple) -> tuple:
        """Reads one token per sample (`(samples,)` int32) and returns the next carry."""
        import tensorflow as tf

        new, below = (), None
        for layer in range(self.layers):
            c, r = carry[CARRY_PER_LAYER * layer + 1 : CARRY_PER_LAYER * layer + 3]
            if layer == 0:
                z = tf.gather(self.table, token) + r  # (samples, 4 * units)
            else:
                z = tf.matmul(below, self.kernels[layer - 1]) + r  # (samples, 4 * units)
            act, rec_act = self.activations[layer]
            z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)  # (samples, units) each
            c = rec_act(z_f) * c + rec_act(z_i) * act(z_c)
            h = rec_act(z_o) * act(c)
            # The next token's recurrent term: it runs beside the rest of this step.
            new += (h, c, self._recurrent_term(layer, h))
            below = h
        return new

    def logits(self, carry: tuple):
        """Next-token logits from the top layer's h, -inf at the unknown id: (samples, vocab)."""
        import tensorflow as tf

        top_h = carry[CARRY_PER_LAYER * (self.layers - 1)]
        return tf.matmul(top_h, self.dense_kernel) + self.dense_bias

    def warm_up(self, feed, feed_length, carry: tuple) -> tuple:
        """Reads prompts of several lengths side by side from their carries.

        Args:
            feed: (prompts, block) int32 tokens, zero-padded.
            feed_length: (prompts,) int32, how many of each row's tokens are real.
            carry: The carry of each prompt's row, (prompts, ...) each.

        Returns:
            The carry after each prompt's own tokens (a row stops at its length).
        """
        import tensorflow as tf

        def body(t, *old):
            new = self.advance(feed[:, t], old)
            live = (t < feed_length)[:, None]  # (prompts, 1)
            return (t + 1, *(tf.where(live, n, o) for n, o in zip(new, old, strict=True)))

        longest = tf.reduce_max(feed_length)  # int32 min for no prompt: the loop does not run
        loop = tf.while_loop(lambda t, *_: t < longest, body, (tf.constant(0), *carry))
        return tuple(loop[1:])


GREEDY, PLAIN, FILTERED = 0, 1, 2  # the sampling rules; the sampler compiles a loop for each
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's finalizer multipliers
SEED_MODULUS = 1 << 62  # seeds are taken modulo this, in Python and in the graph alike


def sampling_rule(temperature, top_k, top_p):
    """The sampling rule for a batch of rows, chosen once per call (no branch per token).

    Args:
        temperature: (rows,) float32; 0 is greedy.
        top_k: (rows,) int32; 0 is off.
        top_p: (rows,) float32; 1 is off.

    Returns:
        A scalar int32 tensor: GREEDY when every row has temperature 0; PLAIN when every row
        samples without top-k or top-p; else FILTERED (greedy rows of a mixed batch keep only
        their likeliest token there).
    """
    import tensorflow as tf

    greedy = temperature <= 0  # (rows,)
    filtering = (top_k > 0) | (top_p < 1.0)  # (rows,)
    plain = tf.where(tf.reduce_any(filtering | greedy), FILTERED, PLAIN)
    return tf.where(tf.reduce_all(greedy), GREEDY, plain)


def row_settings(temperature, top_k, top_p):
    """Per-row factors for `pick_tokens`: (inverse temperature, top-k, top-p), each (rows, 1).

    A greedy row (temperature 0) gets inverse temperature 1 and top-k 1: its only candidate
    is its likeliest token, so a draw returns the argmax.
    """
    import tensorflow as tf

    greedy = temperature <= 0
    inverse = tf.where(greedy, 1.0, 1.0 / tf.where(greedy, 1.0, temperature))  # (rows,)
    top_k = tf.where(greedy, 1, top_k)
    return inverse[:, None], top_k[:, None], top_p[:, None]


def _mix64(z):
    """splitmix64's finalizer: a bijective, well-mixed uint64 hash (elementwise)."""
    import tensorflow as tf

    bits = tf.bitwise
    for shift, factor in ((30, _MIX[0]), (27, _MIX[1])):
        z = bits.bitwise_xor(z, bits.right_shift(z, tf.constant(shift, tf.uint64)))
        z = z * tf.constant(factor, tf.uint64)
    return bits.bitwise_xor(z, bits.right_shift(z, tf.constant(31, tf.uint64)))


def row_keys(seed, sample):
    """One uint64 random key per row from its seed and its sample number.

    Args:
        seed: (rows,) int64, taken modulo 2^62 (as `generate.seed_value` does in Python).
        sample: (rows,) int32, the row's number among the samples of its request: rows with
            one seed but other numbers draw other text.

    Returns:
        (rows,) uint64.
    """
    import tensorflow as tf

    seed = tf.bitcast(tf.math.floormod(seed, SEED_MODULUS), tf.uint64)
    sample = tf.cast(tf.cast(sample, tf.int64) + 1, tf.uint64)
    return _mix64(seed + sample * tf.constant(_GOLDEN, tf.uint64))


def uniforms(keys, position, count):
    """Uniform draws in (0, 1), one per row per token: a counter-based stream per row.

    Token t of a row draws `mix(key + (t + 1) * golden)` (splitmix64), so the text depends on
    the row's seed, sample number and position only: not on the blocks, nor on what else is
    in the batch.

    Args:
        keys: (rows,) uint64 from `row_keys`.
        position: (rows,) int32, tokens the row sampled before this call.
        count: Scalar int32, tokens to draw for.

    Returns:
        (count, rows) float32, strictly inside (0, 1).
    """
    import tensorflow as tf

    step = tf.cast(tf.range(count), tf.uint64)[:, None]  # (count, 1)
    t = tf.cast(position, tf.uint64)[None, :] + step + 1  # (count, rows)
    z = _mix64(keys[None, :] + t * tf.constant(_GOLDEN, tf.uint64))
    top23 = tf.cast(tf.bitwise.right_shift(z, tf.constant(41, tf.uint64)), tf.float32)
    return (top23 + 1.0) / (2.0**23 + 2.0)  # (count, rows)


def pick_tokens(rule: int, logits, *, inverse_temperature, top_k, top_p, uniform):
    """One token per row by `rule`: the argmax, or a draw after temperature (and top-k, top-p).

    The draw inverts the cumulative distribution at the row's uniform: a token of probability
    0 (the unknown id, anything filtered out) is never returned. Ties at the top-k / top-p
    cut-off are all kept.

    Args:
        rule: GREEDY, PLAIN or FILTERED (a Python int).
        logits: (rows, vocab) float32, -inf where a token must never be drawn (the unknown id).
        inverse_temperature, top_k, top_p: (rows, 1) each, from `row_settings`.
        uniform: (rows,) float32 in (0, 1), from `uniforms`.

    Returns:
        (rows,) int32 token ids.
    """
    import tensorflow as tf

    if rule == GREEDY:
        return tf.argmax(logits, axis=1, output_type=tf.int32)
    scaled = logits * inverse_temperature  # (rows, vocab)
    if rule == FILTERED:
        scaled = top_k_top_p(scaled, top_k, top_p)
    cdf = tf.cumsum(tf.nn.softmax(scaled), axis=1)  # (rows, vocab), non-decreasing
    target = uniform[:, None] * cdf[:, -1:]  # (rows, 1), strictly inside (0, total)
    return tf.searchsorted(cdf, target, side="left", out_type=tf.int32)[:, 0]


def top_k_top_p(logits, top_k, top_p):
    """Sets to -inf every logit outside the top k, then outside the top-p mass of what is left.

    Args:
        logits: (rows, vocab) float32, already divided by the temperature.
        top_k: (rows, 1) int32; 0 keeps all.
        top_p: (rows, 1) float32 in (0, 1]; 1 keeps all. The likeliest token always stays.

    Returns:
        (rows, vocab) float32.
    """
    import tensorflow as tf

    vocab = tf.shape(logits)[1]
    ordered = tf.sort(logits, axis=1, direction="DESCENDING")  # (rows, vocab)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)  # (rows, 1)
    in_k = tf.range(vocab)[None, :] < k  # (rows, vocab)
    probs = tf.nn.softmax(tf.where(in_k, ordered, -np.inf))  # (rows, vocab)
    before = tf.cumsum(probs, axis=1, exclusive=True)  # mass of the likelier tokens
    keep = in_k & ((before < top_p) | (top_p >= 1.0))  # a prefix; rank 0 always kept
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)  # (rows,) >= 1
    cutoff = tf.gather(ordered, count - 1, batch_dims=1)[:, None]  # (rows, 1)
    return tf.where(logits >= cutoff, logits, -np.inf)
