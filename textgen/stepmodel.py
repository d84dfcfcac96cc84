"""The trained layers as a one-token step, and the sampling rule; used inside `Generator`'s graph.

`StepModel` folds the Embedding into the first LSTM's input kernel (a `[vocab, 4 * units]` table,
so that input costs a gather) and stacks each other LSTM's kernels into one matmul. Its tensors are
variables, so `refresh` loads newer weights into a compiled sampler without retracing.
"""

from __future__ import annotations

import numpy as np

from textgen.errors import TextgenError
from textgen.tokenizers import UNKNOWN_ID


class StepModel:
    """The trained layers as one-token-at-a-time tensors: a gather, matmuls, the LSTM gates."""

    def __init__(self, model) -> None:
        import tensorflow as tf

        from textgen.model import lstm_layers

        embedding = model.get_layer("embedding").embeddings  # (vocab, embedding_dim)
        cells = [layer.cell for layer in lstm_layers(model)]
        if not cells:
            raise TextgenError("the model has no LSTM layer", model.name)
        dense = model.get_layer("logits")

        # Variables, not constants: `refresh` can load newer weights without retracing.
        self._cells, self._embedding, self._dense = cells, embedding, dense
        folded = self._fold()
        self.table, self.recurrent0, self.dense_kernel, self.dense_bias = (
            tf.Variable(folded[k], trainable=False)
            for k in ("table", "recurrent0", "dense_kernel", "dense_bias")
        )
        self.kernels = [tf.Variable(k, trainable=False) for k in folded["kernels"]]
        self.biases = [tf.Variable(b, trainable=False) for b in folded["biases"]]
        self.activations = [(c.activation, c.recurrent_activation) for c in cells]
        self.layers, self.units = len(cells), int(cells[0].units)

    def refresh(self) -> None:
        """Reloads the folded weights from the model (e.g. after more training)."""
        folded = self._fold()
        for name in ("table", "recurrent0", "dense_kernel", "dense_bias"):
            getattr(self, name).assign(folded[name])
        for variable, value in zip(self.kernels, folded["kernels"], strict=True):
            variable.assign(value)
        for variable, value in zip(self.biases, folded["biases"], strict=True):
            variable.assign(value)

    def _fold(self) -> dict:
        """The step tensors from the model's current weights."""
        import tensorflow as tf

        def f32(x):
            return tf.cast(tf.convert_to_tensor(x), tf.float32)

        cells, dense = self._cells, self._dense
        first = cells[0]
        zeros = tf.zeros([4 * int(first.units)], tf.float32)
        # Kernels are stored transposed, (outputs, inputs): a row-major matrix-vector product
        # is ~10% faster than x @ W for one sample on CPU, and as fast for a batch.
        return {
            "table": tf.matmul(f32(self._embedding), f32(first.kernel))
            + (f32(first.bias) if first.use_bias else zeros),  # (vocab, 4 * units)
            "recurrent0": tf.transpose(f32(first.recurrent_kernel)),  # (4 * units, units)
            "kernels": [  # (4 * units, 2 * units): [input; h] stacked, transposed
                tf.transpose(tf.concat([f32(c.kernel), f32(c.recurrent_kernel)], axis=0))
                for c in cells[1:]
            ],
            "biases": [f32(c.bias) if c.use_bias else zeros for c in cells[1:]],  # (4 * units,)
            "dense_kernel": tf.transpose(f32(dense.kernel)),  # (vocab, units)
            "dense_bias": f32(dense.bias) if dense.use_bias else tf.zeros([dense.units]),
        }

    def zero_states(self, samples: int) -> np.ndarray:
        """Zero (h, c) of every layer: (2 * layers, samples, units)."""
        return np.zeros((2 * self.layers, samples, self.units), np.float32)

    def advance(self, token, carry: tuple) -> list:
        """Reads one token per sample; carry is (h0, c0, h1, c1, ...), each (samples, units)."""
        import tensorflow as tf

        new = []
        below = None
        for layer in range(self.layers):
            h, c = carry[2 * layer], carry[2 * layer + 1]
            if layer == 0:
                z = tf.gather(self.table, token) + _times(h, self.recurrent0)
            else:
                joined = tf.concat([below, h], axis=1)  # (samples, 2 * units)
                z = _times(joined, self.kernels[layer - 1]) + self.biases[layer - 1]
            act, rec_act = self.activations[layer]
            z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)  # (samples, units) each
            c = rec_act(z_f) * c + rec_act(z_i) * act(z_c)
            h = rec_act(z_o) * act(c)
            new += [h, c]
            below = h
        return new

    def logits(self, carry) -> object:
        """Next-token logits from the top layer's h: (samples, vocab)."""
        return _times(carry[-2], self.dense_kernel) + self.dense_bias

    def warm_up(self, feed, feed_length, states):
        """Reads the prompt once for all samples (they share the state at the start)."""
        import tensorflow as tf

        samples = tf.shape(states)[1]
        first = tuple(tf.unstack(states[:, :1], 2 * self.layers))  # (1, units) each

        def body(t, *carry):
            return (t + 1, *self.advance(feed[t][None], carry))

        loop = tf.while_loop(lambda t, *_: t < feed_length, body, (tf.constant(0), *first))
        return tf.tile(tf.stack(loop[1:]), [1, samples, 1])  # (2 * layers, samples, units)


def _times(x, kernel_t):
    """x @ kernel for a transposed kernel: (rows, in) x (out, in) -> (rows, out)."""
    import tensorflow as tf

    return tf.transpose(tf.matmul(kernel_t, x, transpose_b=True))


def sample_logits(logits, temperature, top_k, top_p, seed):
    """One token per row: greedy at temperature 0, else temperature, top-k, top-p, then sample.

    The unknown id is never drawn. Ties at the top-k / top-p cut-off are all kept.

    Args:
        logits: (rows, vocab) float32.
        temperature, top_k, top_p: Scalars (0, 0 and 1 switch each off).
        seed: (2,) int32 for the stateless draw.

    Returns:
        (rows,) int32 token ids.
    """
    import tensorflow as tf

    ranks = tf.range(tf.shape(logits)[1])  # (vocab,)
    logits = tf.where(ranks == UNKNOWN_ID, -np.inf, logits)  # (rows, vocab)

    def draw():
        scaled = logits / temperature
        filtered = tf.cond(
            (top_k > 0) | (top_p < 1.0), lambda: top_k_top_p(scaled, top_k, top_p), lambda: scaled
        )  # (rows, vocab)
        return tf.random.stateless_categorical(filtered, 1, seed, dtype=tf.int32)[:, 0]

    return tf.cond(temperature > 0, draw, lambda: tf.argmax(logits, axis=1, output_type=tf.int32))


def top_k_top_p(logits, top_k, top_p):
    """Sets to -inf every logit outside the top k, then outside the top-p mass of what is left.

    Args:
        logits: (rows, vocab) float32, already divided by the temperature.
        top_k: Scalar; 0 keeps all.
        top_p: Scalar in (0, 1]; 1 keeps all. The likeliest token always stays.

    Returns:
        (rows, vocab) float32.
    """
    import tensorflow as tf

    vocab = tf.shape(logits)[1]
    ordered = tf.sort(logits, axis=1, direction="DESCENDING")  # (rows, vocab)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    in_k = tf.range(vocab) < k  # (vocab,)
    probs = tf.nn.softmax(tf.where(in_k, ordered, -np.inf))  # (rows, vocab)
    before = tf.cumsum(probs, axis=1, exclusive=True)  # mass of the likelier tokens
    keep = in_k & ((before < top_p) | (top_p >= 1.0))  # a prefix; rank 0 always kept
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)  # (rows,) >= 1
    cutoff = tf.gather(ordered, count - 1, batch_dims=1)[:, None]  # (rows, 1)
    return tf.where(logits >= cutoff, logits, -np.inf)
