"""`build_model`: Embedding (or one-hot input) -> LSTM x layers -> Dense logits.

With `model.residual`, every layer above the first adds its input to its output (`residual_i`, a
Keras `Add`): layer i's output is `h_i + output_{i-1}`. Code that rebuilds the forward pass
(`stream_model`, `StepModel`) finds those layers by name, so a saved model says what it is.

The LSTMs keep Keras' defaults that make them cuDNN-eligible on a GPU: tanh/sigmoid activations,
`recurrent_dropout=0`, `unroll=False`, biases on. Logits stay float32 under mixed precision.
"""

from __future__ import annotations

from typing import Literal

import keras

from textgen.core.config import ModelConfig
from textgen.model.lstm_kernel import LeanLSTM


def build_model(
    model_cfg: ModelConfig,
    vocab_size: int,
    inputs: Literal["ids", "onehot"] = "ids",
    *,
    name: str = "textgen_lstm",
) -> keras.Model:
    """Builds the character model.

    Args:
        model_cfg: The model section of the config.
        vocab_size: Number of token ids (the unknown id 0 included).
        inputs: `ids`: int32 ids `[batch, time]` into an Embedding (textgen's pipeline);
            `onehot`: float one-hot vectors `[batch, time, vocab]` (the classic example's input).
        name: The Keras model name.

    Returns:
        A model mapping its inputs to logits `[batch, time, vocab]` (float32).
    """
    if inputs == "ids":
        token_ids = keras.Input(shape=(None,), dtype="int32", name="ids")  # (batch, time)
        hidden = keras.layers.Embedding(vocab_size, model_cfg.embedding_dim, name="embedding")(
            token_ids
        )  # (batch, time, embedding_dim)
        model_inputs = token_ids
    elif inputs == "onehot":
        model_inputs = keras.Input(shape=(None, vocab_size), name="onehot")  # (batch, time, vocab)
        hidden = model_inputs
    else:
        raise ValueError(f"inputs must be 'ids' or 'onehot', got {inputs!r}")
    for i in range(model_cfg.layers):
        # Each layer also returns its last (h, c), unused here: `stream_model` shares the
        # same layers to carry state from one call to the next.
        output, _, _ = lstm_layer(model_cfg, name=f"lstm_{i}")(hidden)  # (batch, time, units)
        if model_cfg.residual and i > 0:  # same width below and above: a plain sum
            output = keras.layers.Add(name=f"residual_{i}")([output, hidden])
        hidden = output
    logits = keras.layers.Dense(vocab_size, dtype="float32", name="logits")(
        hidden
    )  # (batch, time, vocab)
    return keras.Model(model_inputs, logits, name=name)


def float32_copy(model: keras.Model, model_cfg: ModelConfig) -> keras.Model:
    """The model itself when it computes in float32, else a float32 twin holding its weights.

    Mixed precision is how a run trains, not what its model is: model.keras is saved in float32
    so that it evaluates, samples and fine-tunes alike on any machine (the weights are float32
    masters either way).

    Args:
        model: A `build_model` model (ids input), under any dtype policy.
        model_cfg: Its model section.
    """
    policies = {layer.dtype_policy.name for layer in model.layers}
    if policies <= {"float32"}:
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        twin = build_model(model_cfg, model.output_shape[-1], name=model.name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    twin.set_weights(model.get_weights())
    return twin


def lstm_layer(model_cfg: ModelConfig, *, name: str) -> keras.layers.LSTM:
    """One LSTM of the stack: `keras.layers.LSTM`, or `LeanLSTM` (same weights) by lstm_kernel."""
    if model_cfg.dropout == "auto":  # training resolves it (training/regularisation.py)
        raise ValueError("model.dropout auto must be resolved to a number before a model is built")
    kwargs = {
        "return_sequences": True,
        "return_state": True,
        "dropout": model_cfg.dropout,
        "name": name,
    }
    if model_cfg.lstm_kernel == "keras":
        return keras.layers.LSTM(model_cfg.units, **kwargs)
    return LeanLSTM(model_cfg.units, lstm_kernel=model_cfg.lstm_kernel, **kwargs)


def stream_model(model: keras.Model) -> keras.Model:
    """The same layers with their state carried in and out, for text read as streams.

    Args:
        model: A model from `build_model` (ids) or loaded from a run.

    Returns:
        A model mapping `[ids (batch, time), h_0, c_0, h_1, c_1, ...]` (each state
        `(batch, units)`, layer by layer) to `[logits (batch, time, vocab), h_0, c_0, ...]` (the
        states after the last step). Its weights are the model's own (shared, not copied), unless
        the model's layers predate state outputs: then they are copied once into new layers.
    """
    layers = lstm_layers(model)
    if not all(layer.return_state for layer in layers):
        model = _with_state_outputs(model)
        layers = lstm_layers(model)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="ids")  # (batch, time)
    states_in = [
        keras.Input(shape=(layer.units,), name=f"{layer.name}_{part}")  # (batch, units)
        for layer in layers
        for part in ("h", "c")
    ]
    hidden = model.get_layer("embedding")(token_ids)  # (batch, time, embedding_dim)
    residuals = residual_layers(model)
    states_out = []
    for i, layer in enumerate(layers):
        output, h, c = layer(hidden, initial_state=states_in[2 * i : 2 * i + 2])
        states_out += [h, c]  # (batch, units) each
        hidden = residuals[i]([output, hidden]) if residuals[i] else output  # (batch, time, units)
    logits = model.get_layer("logits")(hidden)  # (batch, time, vocab)
    return keras.Model([token_ids, *states_in], [logits, *states_out], name=f"{model.name}_stream")


def _with_state_outputs(model: keras.Model) -> keras.Model:
    """A copy of an older model (LSTMs without state outputs) built by `build_model`."""
    layers = lstm_layers(model)
    embedding = model.get_layer("embedding")
    model_cfg = ModelConfig(
        embedding_dim=embedding.output_dim, units=layers[0].units, layers=len(layers),
        lstm_kernel="keras" if type(layers[0]) is keras.layers.LSTM else "auto",
        residual=False,  # such models predate residual sums
    )  # fmt: skip
    copy = build_model(model_cfg, embedding.input_dim, name=model.name)
    copy.set_weights(model.get_weights())
    return copy


def lstm_layers(model: keras.Model) -> list[keras.layers.LSTM]:
    """The model's LSTM layers, bottom first."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def residual_layers(model: keras.Model) -> list[keras.layers.Add | None]:
    """Per LSTM layer, bottom first: the `Add` of its input to its output, or None."""
    names = {layer.name: layer for layer in model.layers}
    return [names.get(f"residual_{i}") for i in range(len(lstm_layers(model)))]


def train_flops_per_token(model_cfg: ModelConfig, vocab_size: int) -> float:
    """Training FLOPs per predicted token: ~3x forward (forward + two backward matmuls)."""
    units, width, forward = model_cfg.units, model_cfg.embedding_dim, 0.0
    for _ in range(model_cfg.layers):
        forward += 2 * 4 * units * (width + units)  # 4 gates, a multiply-add each
        width = units
    forward += 2 * units * vocab_size
    return 3 * forward
