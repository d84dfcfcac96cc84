"""A lean LSTM for CPU training: Keras' weights, few ops per time step, a hand-written backward.

On a CPU the cost of `keras.layers.LSTM` is TensorFlow's per-op work inside the time loop (and in
the autodiff of that loop), not arithmetic. This kernel keeps Keras' weights and math exactly
(kernel `(input_dim, 4 * units)`, recurrent_kernel `(units, 4 * units)`, bias `(4 * units,)`,
gates in the order i, f, c, o; sigmoid gates, tanh cell) and cuts the ops:

- forward: the input projection of all steps is one matmul before the loop; each step is one
  matmul with the recurrent kernel and one fused gate computation (one sigmoid over all four
  gate columns, a tanh on the cell column), and writes one record `[i, f, g, o, c, h]`;
- backward (`tf.custom_gradient`): everything that does not depend on the backward recurrence
  (gate derivatives, tanh(c), the upstream gradient) is computed for all steps at once; the
  backward loop then does one matmul with the transposed recurrent kernel and a few products per
  step; the recurrent kernel's gradient is one matmul after the loop; the input kernel's and the
  input's gradients are one matmul each (autodiff of the projection).

Both loops run `unroll` steps per `tf.while_loop` iteration, which divides the loop's own
per-iteration ops (Merge/Switch/NextIteration per loop variable) by `unroll`. With `jit`, the two
loops (not the big matmuls around them, which TensorFlow's oneDNN kernels do better) are compiled
by XLA: no per-op overhead at all inside them, and a faster small matmul per step.

Under mixed precision the matmuls run in the compute dtype; gate sums, gates and the cell state c
stay float32 (two casts per step). `LeanLSTM` (a `keras.layers.LSTM`) uses this kernel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

DEFAULT_UNROLL = 4  # steps per loop iteration: the fastest of 1, 2, 4, 8 (docs/benchmarks.md)


def lstm_sequence(
    inputs, kernel, recurrent_kernel, bias, h0, c0, *, unroll=DEFAULT_UNROLL, jit=False
):
    """Runs an LSTM over a batch of sequences, Keras' math, with the lean backward pass.

    Args:
        inputs: (batch, time, input_dim) in the compute dtype.
        kernel: (input_dim, 4 * units) tensor (not a variable), compute dtype.
        recurrent_kernel: (units, 4 * units) tensor, compute dtype.
        bias: (4 * units,) tensor, or None.
        h0: (batch, units) initial output state.
        c0: (batch, units) initial cell state.
        unroll: Time steps per `tf.while_loop` iteration.
        jit: Compile the forward and the backward loop with XLA.

    Returns:
        (outputs (batch, time, units), h_T (batch, units), c_T (batch, units)), in the dtype
        of `inputs` (c_T in float32 when that is wider).
    """
    dtype = inputs.dtype
    units = recurrent_kernel.shape[0]
    x = tf.transpose(inputs, [1, 0, 2])  # (time, batch, input_dim)
    shape = tf.shape(x)
    xz = tf.matmul(tf.reshape(x, [-1, shape[2]]), kernel)  # (time * batch, 4 * units)
    xz = tf.cast(xz, tf.float32)
    if bias is not None:
        xz += tf.cast(bias, tf.float32)
    xz = tf.reshape(xz, [shape[0], shape[1], 4 * units])  # (time, batch, 4 * units)
    h_seq, h_last, c_last = _recurrence(
        xz, tf.cast(h0, dtype), tf.cast(c0, tf.float32), recurrent_kernel, unroll, jit
    )
    return tf.transpose(h_seq, [1, 0, 2]), h_last, c_last


def _recurrence(xz, h0, c0, recurrent_kernel, unroll, jit):
    """The time loop with its hand-written gradient (xz float32, h0 and U in the compute dtype)."""
    forward, backward = (_forward_xla, _backward_xla) if jit else (_forward, _backward)

    @tf.custom_gradient
    def recurrence(xz, h0, c0, recurrent_kernel):
        # stop_gradient: an eager tape must not record the loop itself (its gradient is `grad`).
        inputs = [tf.stop_gradient(t) for t in (xz, h0, c0, recurrent_kernel)]
        records = forward(*inputs, unroll)  # (time, batch, 6 * units)
        units = recurrent_kernel.shape[0]
        h_seq = tf.cast(records[:, :, 5 * units :], h0.dtype)  # (time, batch, units)

        def grad(d_h_seq, d_h_last, d_c_last):
            h0, c0, u = inputs[1:]
            d_z, dh0, dc0 = backward(records, h0, c0, u, d_h_seq, d_h_last, d_c_last, unroll)
            # dU: one matmul over all steps, (units, time * batch) @ (time * batch, 4 * units).
            h_prev = tf.concat([h0[None], h_seq[:-1]], axis=0)  # (time, batch, units)
            d_u = tf.matmul(
                tf.reshape(h_prev, [-1, units]),
                tf.cast(tf.reshape(d_z, [-1, 4 * units]), h0.dtype),
                transpose_a=True,
            )  # (units, 4 * units)
            return d_z, dh0, dc0, d_u

        return (h_seq, h_seq[-1], records[-1, :, 4 * units : 5 * units]), grad

    return recurrence(xz, h0, c0, recurrent_kernel)


def _cell(z, c):
    """One step's gates and state update from the gate sums z (batch, 4 * units), float32."""
    s = tf.sigmoid(z)  # (batch, 4 * units); the cell column is recomputed as tanh below
    i, f, _, o = tf.split(s, 4, axis=1)  # (batch, units) each
    units = c.shape[1]
    g = tf.tanh(z[:, 2 * units : 3 * units])  # (batch, units)
    c = f * c + i * g
    h = o * tf.tanh(c)
    return c, h, tf.concat([i, f, g, o, c, h], axis=1)  # record: (batch, 6 * units)


def _forward(xz, h0, c0, recurrent_kernel, unroll):
    """Forward loop; returns the records [i, f, g, o, c, h] of every step (time, batch, 6u)."""
    dtype = h0.dtype

    def step(z_x, h, c):
        z = z_x + _as_f32(tf.matmul(h, recurrent_kernel))  # (batch, 4 * units)
        c, h32, record = _cell(z, c)
        return (tf.cast(h32, dtype) if dtype != tf.float32 else h32), c, record

    return _time_loop(step, xz, (h0, c0), 6 * c0.shape[1], unroll, reverse=False)[0]


def _backward_pack(records, c0, d_h_seq):
    """What the backward loop reads per step, for all steps at once: (time, batch, 7 * units).

    Per step: q (4 * units) with dz = [dc * q_i, dc * q_f, dc * q_g, dh * q_o], where dc is
    the total cell gradient; dh_to_dc = o * tanh'(c) (units); f (units); the upstream dh (units).
    """
    i, f, g, o, c, h = tf.split(records, 6, axis=2)  # (time, batch, units) each
    c_prev = tf.concat([c0[None], c[:-1]], axis=0)  # (time, batch, units)
    tanh_c = tf.tanh(c)
    q = tf.concat(
        [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], axis=2
    )  # (time, batch, 4 * units)
    dh_to_dc = o * (1 - tanh_c * tanh_c)  # (time, batch, units)
    d_h_seq = _as_f32(_zeros_if_none(d_h_seq, h))
    return tf.concat([q, dh_to_dc, f, d_h_seq], axis=2)  # (time, batch, 7 * units)


def _backward(records, h0, c0, recurrent_kernel, d_h_seq, d_h_last, d_c_last, unroll):
    """The backward loop: gradients w.r.t. xz (time, batch, 4 * units), h0 and c0."""
    pack = _backward_pack(records, c0, d_h_seq)  # (time, batch, 7 * units)
    units = recurrent_kernel.shape[0]
    dtype = h0.dtype
    u_t = tf.transpose(recurrent_kernel)  # (4 * units, units)

    def step(p, dh_rec, dc):
        q_t, dh_to_dc_t, f_t, dh_out = tf.split(p, [4 * units, units, units, units], axis=1)
        dh = dh_out + dh_rec  # (batch, units)
        dc = dc + dh * dh_to_dc_t
        d_z = tf.concat([dc, dc, dc, dh], axis=1) * q_t  # (batch, 4 * units)
        d_z_c = tf.cast(d_z, dtype) if dtype != tf.float32 else d_z
        return _as_f32(tf.matmul(d_z_c, u_t)), dc * f_t, d_z

    dh_last = _as_f32(_zeros_if_none(d_h_last, h0))
    dc_last = _as_f32(_zeros_if_none(d_c_last, c0))
    d_z, dh0, dc0 = _time_loop(step, pack, (dh_last, dc_last), 4 * units, unroll, reverse=True)
    return d_z, tf.cast(dh0, dtype), dc0


_forward_xla = tf.function(_forward, jit_compile=True)
_backward_xla = tf.function(_backward, jit_compile=True)


def _time_loop(step, seq, carry, width, unroll, *, reverse):
    """Runs `step(x_t, *carry) -> (*carry, out_t)` over `seq` (time, batch, ...), `unroll` steps
    per iteration; out_t is (batch, width).

    Returns (outs (time, batch, width), *carry). Runs backwards in time when `reverse`. The last
    `time % unroll` steps run in a second loop, one step per iteration; a length unknown when
    tracing runs one step per iteration.
    """
    time, batch = seq.shape[0], seq.shape[1]
    if unroll == 1 or time is None:
        count = tf.shape(seq)[0] if time is None else time
        return _loop(step, seq, carry, count, [batch, width], reverse)
    full = time // unroll

    def block(xs, *carry):
        outs = [None] * unroll
        xs = tf.unstack(xs, unroll)
        for j in reversed(range(unroll)) if reverse else range(unroll):
            *carry, outs[j] = step(xs[j], *carry)
        return (*carry, tf.stack(outs))

    main = tf.reshape(seq[: full * unroll], [full, unroll, *_rest_shape(seq)])
    parts = [
        (block, main, full, [unroll, batch, width]),
        (step, seq[full * unroll :], time % unroll, [batch, width]),
    ]
    outs = [None, None]
    for k in (1, 0) if reverse else (0, 1):
        fn, xs, count, out_shape = parts[k]
        if count:
            outs[k], *carry = _loop(fn, xs, carry, count, out_shape, reverse)
    if outs[0] is not None:
        outs[0] = tf.reshape(outs[0], [full * unroll, *_rest_shape(outs[0])[1:]])
    out = [x for x in outs if x is not None]
    return (out[0] if len(out) == 1 else tf.concat(out, axis=0), *carry)


def _loop(step, seq, carry, count, out_shape, reverse):
    """One tf.while_loop of `step` over the first `count` rows of `seq`: (outs, *carry)."""
    outs = tf.TensorArray(tf.float32, size=count, element_shape=out_shape)
    start = count - 1 if reverse else 0

    def cond(t, *_):
        return t >= 0 if reverse else t < count

    def body(t, *state):
        *carry, outs = state
        *carry, out = step(tf.gather(seq, t), *carry)
        return (t - 1 if reverse else t + 1, *carry, outs.write(t, out))

    _, *carry, outs = tf.while_loop(cond, body, (start, *carry, outs))
    return (outs.stack(), *carry)


def _rest_shape(x):
    shape = x.shape.as_list()[1:]
    dynamic = tf.shape(x)[1:]
    return [d if d is not None else dynamic[k] for k, d in enumerate(shape)]


def _as_f32(x):
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _zeros_if_none(grad, like):
    return tf.zeros_like(like) if grad is None else grad


KERNELS = ("auto", "keras", "lean")


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (Keras' LSTM then takes its cuDNN path)."""
    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="textgen")
class LeanLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` that trains with the lean kernel on a CPU; same weights, same math.

    The variables are Keras' own (`cell.kernel`, `cell.recurrent_kernel`, `cell.bias`, same
    objects and checkpoint paths), so a checkpoint or weights move freely between this layer
    and `keras.layers.LSTM`. Input dropout is applied exactly as Keras applies it (the cell's
    cached mask, one per sequence, times the inputs), so the same seed drops the same units.
    The lean kernel is not used (Keras' own path runs) for masks (an error under `lean`),
    recurrent dropout, `go_backwards`, `unroll=True` or activations other than tanh/sigmoid.

    Args:
        units: Width of the state.
        lstm_kernel: `lean`, `keras`, or `auto` (lean unless a GPU is visible, where Keras'
            path is cuDNN).
        **kwargs: Everything `keras.layers.LSTM` takes.
    """

    steps_per_iteration = DEFAULT_UNROLL  # time steps per loop iteration (benchmarks set it)
    # Training compiles the two loops with XLA from this width on: faster per update at 256 units
    # (docs/benchmarks.md), for a compile of a few seconds per shape (too dear for tiny models).
    jit_min_units = 128

    def __init__(self, units, lstm_kernel: str = "auto", **kwargs):
        super().__init__(units, **kwargs)
        if lstm_kernel not in KERNELS:
            raise ValueError(f"lstm_kernel must be one of {KERNELS}, got {lstm_kernel!r}")
        self.lstm_kernel = lstm_kernel

    def get_config(self):
        return {**super().get_config(), "lstm_kernel": self.lstm_kernel}

    @property
    def uses_lean_kernel(self) -> bool:
        """Whether `call` runs the lean kernel (else Keras' own path)."""
        if self.lstm_kernel == "keras" or (self.lstm_kernel == "auto" and gpu_visible()):
            return False
        cell = self.cell
        return (
            cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and not cell.recurrent_dropout
            and not self.go_backwards
            and not self.unroll
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.uses_lean_kernel:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if mask is not None:
            raise ValueError(f"{self.name}: the lean LSTM kernel does not support masking")
        cell, dtype = self.cell, sequences.dtype
        if training and 0.0 < cell.dropout < 1.0:
            # Keras' mask: made once per call from the first step, cached by the cell.
            sequences = sequences * cell.get_dropout_mask(sequences[:, 0, :])[:, None, :]
        # Tensors, not variables: a variable read inside tf.custom_gradient would make TF demand
        # a `variables` argument of the gradient function.
        outputs, h_last, c_last = lstm_sequence(
            sequences,
            tf.cast(cell.kernel, dtype),
            tf.cast(cell.recurrent_kernel, dtype),
            tf.convert_to_tensor(cell.bias) if cell.use_bias else None,
            initial_state[0],
            initial_state[1],
            unroll=self.steps_per_iteration,
            jit=training is True and self.units >= self.jit_min_units,
        )
        return h_last, outputs, [h_last, c_last]
