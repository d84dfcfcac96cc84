"""`build_model`: shapes and dtypes, cuDNN-eligible LSTMs, parameter counts, save and load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from textgen.core.config import ModelConfig
from textgen.model.build import build_model, lstm_layers, train_flops_per_token

VOCAB = 23
TINY = ModelConfig(embedding_dim=8, units=16, layers=2, dropout=0.1)


def random_ids(batch: int, time: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, time), dtype=np.int32)


def test_ids_model_maps_int32_batch_time_to_float32_logits():
    model = build_model(TINY, VOCAB)
    assert model.inputs[0].dtype == "int32"
    for batch, time in [(3, 7), (1, 1), (2, 40)]:  # any window length
        logits = model(random_ids(batch, time), training=False)
        assert tuple(logits.shape) == (batch, time, VOCAB)
        assert logits.dtype == "float32"
        assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()


def test_onehot_model_maps_batch_time_vocab_to_logits():
    model = build_model(TINY, VOCAB, inputs="onehot")
    assert tuple(model.inputs[0].shape) == (None, None, VOCAB)
    onehot = np.eye(VOCAB, dtype=np.float32)[random_ids(4, 9)]  # (batch, time, vocab)
    logits = model(onehot, training=False)
    assert tuple(logits.shape) == (4, 9, VOCAB)
    assert logits.dtype == "float32"
    # Same LSTM and Dense sizes as the ids model; only the Embedding is missing.
    ids_model = build_model(TINY, VOCAB)
    assert ids_model.count_params() - model.count_params() == (
        VOCAB * TINY.embedding_dim + 4 * TINY.units * (TINY.embedding_dim - VOCAB)
    )


def test_onehot_model_agrees_with_ids_model_given_the_embedding_as_input():
    """One-hot rows times the embedding table are the embeddings: both variants compute alike."""
    cfg = ModelConfig(embedding_dim=VOCAB, units=16, layers=1, dropout=0.0)
    ids_model, onehot_model = build_model(cfg, VOCAB), build_model(cfg, VOCAB, inputs="onehot")
    ids_model.get_layer("embedding").set_weights([np.eye(VOCAB, dtype=np.float32)])
    for name in ("lstm_0", "logits"):
        onehot_model.get_layer(name).set_weights(ids_model.get_layer(name).get_weights())
    ids = random_ids(2, 11, seed=4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(onehot_model(np.eye(VOCAB, dtype=np.float32)[ids])),
        keras.ops.convert_to_numpy(ids_model(ids)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_unknown_input_kind_is_refused():
    with pytest.raises(ValueError, match="inputs"):
        build_model(TINY, VOCAB, inputs="bytes")


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_lstm_layers_keep_cudnn_eligible_settings(layers):
    cfg = ModelConfig(embedding_dim=8, units=16, layers=layers, dropout=0.25)
    lstms = lstm_layers(build_model(cfg, VOCAB))
    assert [layer.name for layer in lstms] == [f"lstm_{i}" for i in range(layers)]
    for layer in lstms:
        assert layer.activation is keras.activations.tanh
        assert layer.recurrent_activation is keras.activations.sigmoid
        assert layer.recurrent_dropout == 0
        assert layer.dropout == 0.25
        assert layer.unroll is False
        assert layer.use_bias is True
        assert layer.return_sequences is True
        assert layer.units == 16


@pytest.mark.parametrize(
    "cfg, vocab",
    [
        (ModelConfig(embedding_dim=16, units=32, layers=1), 40),
        (ModelConfig(embedding_dim=8, units=16, layers=2), VOCAB),
        (ModelConfig(embedding_dim=64, units=24, layers=3), 300),
        (ModelConfig(embedding_dim=1, units=1, layers=1), 2),
    ],
)
def test_count_params_equals_the_built_models_count(cfg, vocab):
    assert cfg.count_params(vocab) == build_model(cfg, vocab).count_params()


def test_train_flops_grow_with_width_and_depth():
    small = train_flops_per_token(ModelConfig(embedding_dim=8, units=16, layers=1), VOCAB)
    wider = train_flops_per_token(ModelConfig(embedding_dim=8, units=32, layers=1), VOCAB)
    deeper = train_flops_per_token(ModelConfig(embedding_dim=8, units=16, layers=2), VOCAB)
    assert 0 < small < wider and small < deeper
    # ~6 FLOPs per weight of the matmuls (2 forward, 4 backward) for a one-layer model.
    matmul_weights = 4 * 16 * (8 + 16) + 16 * VOCAB
    assert small == 6 * matmul_weights


def test_get_config_round_trip_gives_the_same_model():
    model = build_model(TINY, VOCAB)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    clone.set_weights(model.get_weights())
    ids = random_ids(2, 13, seed=1)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(clone(ids, training=False)),
        keras.ops.convert_to_numpy(model(ids, training=False)),
    )


def test_model_keras_save_and_load_gives_identical_outputs(tmp_path):
    model = build_model(TINY, VOCAB)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.name == "textgen_lstm"
    assert loaded.inputs[0].dtype == "int32"
    assert [layer.name for layer in lstm_layers(loaded)] == ["lstm_0", "lstm_1"]
    ids = random_ids(3, 21, seed=2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(ids, training=False)),
        keras.ops.convert_to_numpy(model(ids, training=False)),
    )


def test_logits_stay_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(TINY, VOCAB)
        logits = model(random_ids(2, 5), training=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert logits.dtype == "float32"
    assert model.get_layer("lstm_0").compute_dtype == "float16"


@pytest.mark.parametrize("kernel", ["auto", "keras", "lean"])
def test_lstm_kernel_picks_the_layer_class_with_the_same_weights(kernel):
    from textgen.model.lstm_kernel import LeanLSTM

    cfg = ModelConfig(embedding_dim=8, units=16, layers=2, lstm_kernel=kernel)
    model = build_model(cfg, VOCAB)
    lstms = lstm_layers(model)
    assert all(isinstance(layer, LeanLSTM) == (kernel != "keras") for layer in lstms)
    paths = [v.path for v in model.weights]
    assert paths == [v.path for v in build_model(TINY, VOCAB).weights]


def test_a_bf16_model_is_saved_as_a_float32_twin_with_the_same_weights():
    from textgen.model.build import float32_copy

    cfg = ModelConfig(embedding_dim=8, units=16, layers=2)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model(cfg, 20)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    twin = float32_copy(trained, cfg)
    assert {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    for a, b in zip(trained.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)  # (batch, time)
    np.testing.assert_allclose(twin(ids), trained(ids), atol=0.05)  # bf16 rounding apart
    plain = build_model(cfg, 20)
    assert float32_copy(plain, cfg) is plain  # a float32 model is saved as it is
