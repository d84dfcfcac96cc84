"""The trained layers as a one-token step; used inside `Generator`'s graph.

`StepModel` folds the Embedding into the first LSTM's input kernel (a `[vocab, 4 * units]` table,
so that input costs a gather) and folds each other LSTM's bias into its recurrent term.

The step is software-pipelined: each layer's recurrent term `h @ recurrent_kernel (+ bias)` for
the *next* token is computed as soon as this token's `h` exists, and carried. The chain from one
sampled token to the next then holds one matmul per layer above the first plus the logits; the
recurrent matmuls run beside it on another core (TensorFlow runs independent ops of a graph in
parallel). docs/benchmarks.md has the figures (one stream at the base size, 2 cores).
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

        from textgen.model.build import lstm_layers, residual_layers

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
        # Per layer: does it add its input to its output (model.residual)?
        self.residual = [layer is not None for layer in residual_layers(model)]

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
            below = h + below if self.residual[layer] else h  # (samples, units)
        return new

    def logits(self, carry: tuple):
        """Next-token logits from the top output, -inf at the unknown id: (samples, vocab)."""
        import tensorflow as tf

        output = None
        for layer in range(self.layers):  # the top h, plus the ones below it that residuals add
            h = carry[CARRY_PER_LAYER * layer]  # (samples, units)
            output = h + output if self.residual[layer] else h
        return tf.matmul(output, self.dense_kernel) + self.dense_bias

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
