"""The lean LSTM kernel: Keras' outputs and gradients, its Keras layer, checkpoints, model.keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.core.config import ModelConfig, load_config
from textgen.core.errors import ConfigError
from textgen.model.build import build_model, lstm_layers
from textgen.model.lstm_kernel import LeanLSTM, lstm_sequence

BATCH, TIME, WIDTH, UNITS, VOCAB = 3, 7, 5, 6, 11
TOL = {"rtol": 1e-5, "atol": 1e-5}


def rand(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def stack(kind: str, layers: int, **kwargs) -> list[keras.layers.LSTM]:
    """`layers` LSTMs returning sequences and states, built, with random non-zero biases."""
    made = []
    for n in range(layers):
        if kind == "keras":
            layer = keras.layers.LSTM(UNITS, return_sequences=True, return_state=True, **kwargs)
        else:
            layer = LeanLSTM(
                UNITS, lstm_kernel="lean", return_sequences=True, return_state=True, **kwargs
            )
        layer.build((None, None, WIDTH if n == 0 else UNITS))
        layer.cell.bias.assign(rand(4 * UNITS, seed=10 + n))
        made.append(layer)
    return made


def copy_weights(source, target) -> None:
    for a, b in zip(source, target, strict=True):
        b.set_weights(a.get_weights())


def outputs_and_grads(layers, x, states, training=False):
    """Runs the stack from carried states; returns outputs, final states and all gradients."""
    weights = [rand(BATCH, TIME, UNITS, seed=20), rand(BATCH, UNITS, seed=21)]
    variables = [v for layer in layers for v in layer.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch([x, *states])
        out, finals, loss = x, [], 0.0
        for n, layer in enumerate(layers):
            out, h, c = layer(out, initial_state=states[2 * n : 2 * n + 2], training=training)
            finals += [h, c]
            loss += tf.reduce_sum(out * weights[0]) + tf.reduce_sum((h + 2 * c) * weights[1])
    grads = tape.gradient(loss, [x, *states, *variables])
    return [out, *finals], grads


@pytest.mark.parametrize("layers, xla", [(1, False), (2, False), (2, True)])
def test_lean_equals_keras_in_outputs_final_states_and_all_gradients(layers, xla):
    x = rand(BATCH, TIME, WIDTH, seed=1)
    states = [rand(BATCH, UNITS, seed=2 + k) for k in range(2 * layers)]  # carried, non-zero
    ref_layers, lean_layers = stack("keras", layers), stack("lean", layers)
    copy_weights(ref_layers, lean_layers)
    for layer in lean_layers:
        layer.jit_min_units = 0 if xla else 2**31  # XLA compiles the loops when training
    ref_out, ref_grads = outputs_and_grads(ref_layers, x, states, training=True)
    lean_out, lean_grads = outputs_and_grads(lean_layers, x, states, training=True)
    for a, b in zip(ref_out, lean_out, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), **TOL)
    # Gradients w.r.t. x, h0 and c0 of every layer, then kernel, recurrent_kernel, bias of each.
    assert len(ref_grads) == 1 + 2 * layers + 3 * layers
    for a, b in zip(ref_grads, lean_grads, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), **TOL)


@pytest.mark.parametrize(
    "unroll, jit, time, known_time",
    [(4, False, 7, True), (4, True, 3, True), (4, True, 5, False)],
)
def test_unrolled_compiled_and_dynamic_length_loops_agree(unroll, jit, time, known_time):
    """Steps per iteration (with a tail of time % unroll), XLA, and a length unknown when traced."""
    x, h0, c0 = rand(BATCH, time, WIDTH, seed=1), rand(BATCH, UNITS, seed=2), rand(BATCH, UNITS)
    weights = [rand(WIDTH, 4 * UNITS, seed=3), rand(UNITS, 4 * UNITS, seed=4), rand(4 * UNITS)]

    def run(x, unroll, jit):
        with tf.GradientTape() as tape:
            tape.watch([x, h0, c0, *weights])
            out, h, c = lstm_sequence(x, *weights, h0, c0, unroll=unroll, jit=jit)
            loss = tf.reduce_sum(out * out) + tf.reduce_sum(h) + tf.reduce_sum(3 * c)
        return [out, h, c, *tape.gradient(loss, [x, h0, c0, *weights])]

    spec = [tf.TensorSpec([BATCH, time if known_time else None, WIDTH])]
    compiled = tf.function(lambda x: run(x, unroll, jit), input_signature=spec)
    for a, b in zip(run(x, 1, False), compiled(x), strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), **TOL)


def test_input_dropout_is_keras_own_mask():
    x = rand(BATCH, TIME, WIDTH, seed=1)
    states = [rand(BATCH, UNITS, seed=2), rand(BATCH, UNITS, seed=3)]
    ref, lean = stack("keras", 1, dropout=0.5, seed=7), stack("lean", 1, dropout=0.5, seed=7)
    copy_weights(ref, lean)
    ref_out, ref_grads = outputs_and_grads(ref, x, states, training=True)
    lean_out, lean_grads = outputs_and_grads(lean, x, states, training=True)
    for a, b in zip([*ref_out, *ref_grads], [*lean_out, *lean_grads], strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), **TOL)
    assert np.any(ref_grads[0].numpy() == 0)  # some inputs were dropped


def test_the_layer_is_a_keras_lstm_and_picks_its_path():
    layer = LeanLSTM(UNITS)
    assert isinstance(layer, keras.layers.LSTM)
    assert layer.uses_lean_kernel == (not tf.config.list_logical_devices("GPU"))
    assert not LeanLSTM(UNITS, lstm_kernel="keras").uses_lean_kernel
    assert not LeanLSTM(UNITS, lstm_kernel="lean", go_backwards=True).uses_lean_kernel
    with pytest.raises(ValueError, match="lstm_kernel"):
        LeanLSTM(UNITS, lstm_kernel="fast")


def test_a_mask_is_refused():
    layer = LeanLSTM(UNITS, lstm_kernel="lean")
    with pytest.raises(ValueError, match="masking"):
        layer(rand(BATCH, TIME, WIDTH), mask=tf.ones([BATCH, TIME], tf.bool))


def test_config_key_is_validated():
    assert load_config(None).model.lstm_kernel == "auto"
    assert load_config(None, ["model.lstm_kernel=lean"]).model.lstm_kernel == "lean"
    with pytest.raises(ConfigError, match=r"model\.lstm_kernel"):
        load_config(None, ["model.lstm_kernel=cudnn"])


def models(dropout=0.0):
    """The same model built with each kernel, equal weights: (keras, lean)."""
    cfg = ModelConfig(embedding_dim=4, units=UNITS, layers=2, dropout=dropout)
    ref = build_model(ModelConfig(**{**vars(cfg), "lstm_kernel": "keras"}), VOCAB)
    lean = build_model(ModelConfig(**{**vars(cfg), "lstm_kernel": "lean"}), VOCAB)
    lean.set_weights(ref.get_weights())
    return ref, lean


def ids(seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, VOCAB, (BATCH, TIME), np.int32))


def test_whole_models_give_the_same_logits_and_loss_gradients():
    ref, lean = models()
    assert [type(layer) for layer in lstm_layers(lean)] == [LeanLSTM, LeanLSTM]
    x, y = ids(1), ids(2)
    results = []
    for model in (ref, lean):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        results.append([logits, *tape.gradient(loss, model.trainable_variables)])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(b), tf.convert_to_tensor(a), **TOL)


@pytest.mark.parametrize("writer", ["keras", "lean"])
def test_checkpoints_restore_across_kernels(tmp_path, writer):
    ref, lean = models()
    source, target = (ref, lean) if writer == "keras" else (lean, ref)
    target.set_weights([np.zeros_like(w) for w in target.get_weights()])
    path = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=target).restore(path).assert_existing_objects_matched()
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_keras_round_trip_keeps_the_lean_layer(tmp_path):
    ref, lean = models()
    lean.save(tmp_path / "lean.keras")
    loaded = keras.models.load_model(tmp_path / "lean.keras", compile=False)
    assert [type(layer) for layer in lstm_layers(loaded)] == [LeanLSTM, LeanLSTM]
    assert lstm_layers(loaded)[0].lstm_kernel == "lean"
    ref.save(tmp_path / "keras.keras")
    plain = keras.models.load_model(tmp_path / "keras.keras", compile=False)
    assert type(lstm_layers(plain)[0]) is keras.layers.LSTM
    x = ids(3)
    for model in (loaded, plain):
        np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), **TOL)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_the_compute_dtype_and_stays_close(policy):
    x, y = ids(4), ids(5)
    ref, _ = models()
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        _, lean = models()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    lean.set_weights(ref.get_weights())
    layer = lstm_layers(lean)[0]
    assert layer.compute_dtype == policy.removeprefix("mixed_")
    assert layer(tf.zeros([BATCH, TIME, 4]))[0].dtype == layer.compute_dtype
    with tf.GradientTape() as tape:
        logits = lean(x, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )
    grads = tape.gradient(loss, lean.trainable_variables)
    assert logits.dtype == tf.float32
    assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
    np.testing.assert_allclose(logits.numpy(), ref(x).numpy(), atol=0.05)
