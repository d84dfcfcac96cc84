"""How a token is picked: the sampling rule, per-row settings and counter-based random numbers.

Every helper takes per-row tensors: each row of a batch has its own temperature, top-k, top-p
and random stream. A row's uniforms are splitmix64 of (seed, sample number, position), so a seed
gives the same text whatever else is in the batch.
"""

from __future__ import annotations

import numpy as np

from textgen.core.sampling_settings import SEED_MODULUS

GREEDY, PLAIN, FILTERED = 0, 1, 2  # the sampling rules; the sampler compiles a loop for each
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's finalizer multipliers


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
        seed: (rows,) int64, taken modulo 2^62 (as `sampling_settings.seed_value` does in Python).
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
