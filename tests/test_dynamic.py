"""Dynamic evaluation: the update rule against a hand-written loop, reset, adapting a Generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_lstm_model
from run_fixtures import make_run

from textgen.core.errors import TextgenError
from textgen.evaluation.dynamic import (
    CLIP,
    EPS,
    WARMUP,
    DynamicEvaluator,
    DynamicSettings,
    adapt_generator,
)
from textgen.evaluation.scoring import ArrayTokens, Scorer

VOCAB = 7


@pytest.fixture(scope="module")
def model():
    return tiny_lstm_model(VOCAB, seed=4)


def hand_dynamic(model, ids: np.ndarray, settings: DynamicSettings) -> float:
    """Nats of ids[1:] in one stream: score a segment, then one RMS-normalised step on it."""
    import tensorflow as tf

    from textgen.model.build import stream_model

    stream = stream_model(model)
    variables = stream.trainable_variables
    trained = [v.numpy().astype(np.float64) for v in variables]
    weights = [w.copy() for w in trained]
    mean_square = [np.zeros_like(w) for w in trained]
    states = [tf.zeros((1, 8)) for _ in range(4)]
    nats, seg = 0.0, settings.segment
    for k, first in enumerate(range(0, len(ids) - 1, seg), start=1):
        stop = min(first + seg, len(ids) - 1)
        x, y = ids[None, first:stop], ids[None, first + 1 : stop + 1]
        for variable, w in zip(variables, weights, strict=True):
            variable.assign(w.astype(np.float32))
        with tf.GradientTape() as tape:
            logits, *states = stream([tf.constant(x), *states])
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_mean(losses)
        nats += float(tf.reduce_sum(losses))
        grads = [
            np.asarray(tf.convert_to_tensor(g), np.float64) for g in tape.gradient(loss, variables)
        ]
        for i, g in enumerate(grads):
            mean_square[i] += (g * g - mean_square[i]) / k
            if k > WARMUP:
                step = np.clip(g / (np.sqrt(mean_square[i]) + EPS), -CLIP, CLIP)
                weights[i] -= settings.lr * step
            weights[i] += settings.decay * (trained[i] - weights[i])
    for variable, w in zip(variables, trained, strict=True):
        variable.assign(w.astype(np.float32))
    return nats


def test_dynamic_score_equals_a_hand_written_loop(model) -> None:
    ids = np.random.default_rng(1).integers(0, VOCAB, 63).astype(np.int32)  # 62: 15 segments + 2
    settings = DynamicSettings(lr=0.05, segment=4, decay=0.1)
    expected = hand_dynamic(model, ids, settings)
    static = Scorer(model, np.ones(VOCAB), 4, segment=4).score_streams(ArrayTokens(ids), streams=1)
    evaluator = DynamicEvaluator(model, np.ones(VOCAB), settings)
    score = evaluator.score(ArrayTokens(ids))
    assert (score.method, score.streams, score.tokens) == ("dynamic", 1, 62)
    assert score.nats == pytest.approx(expected, rel=1e-4)
    assert abs(score.nats - static.nats) > 0.1  # the updates changed the later predictions
    evaluator.reset()  # the trained weights are back: the static score again
    again = Scorer(model, np.ones(VOCAB), 4, segment=4).score_streams(ArrayTokens(ids), streams=1)
    assert again.nats == pytest.approx(static.nats, rel=1e-6)


def test_settings_out_of_range_name_the_flag() -> None:
    for settings, flag in [
        (DynamicSettings(lr=0.0), "--dynamic-lr must be > 0"),
        (DynamicSettings(decay=1.0), "--dynamic-decay must be in [0, 1)"),
        (DynamicSettings(segment=0), "--segment must be >= 1"),
        (DynamicSettings(streams=0), "--streams must be >= 1"),
    ]:
        with pytest.raises(TextgenError, match=flag.replace("[", r"\[").replace(")", r"\)")):
            settings.check()


PERIOD = "abcdefgh\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("dyn") / "run", PERIOD * 60, steps=80)


def test_adapted_weights_reach_the_generator_and_not_the_disk(run: Path) -> None:
    from textgen.generation.generate import Generator

    generator = Generator.from_run(run)
    before = generator.generate("a", 40, temperature=0)[0]
    other = "hgfedcba\n" * 30  # the same characters, another order
    ids = np.asarray(generator.tokenizer.encode(other), np.int32)
    lengths = generator.tokenizer.token_char_lengths()
    static = Scorer(generator.model, lengths, 16).score_streams(ArrayTokens(ids), streams=1)
    adapt_generator(generator, ids, DynamicSettings(lr=0.1, segment=16))
    adapted = Scorer(generator.model, lengths, 16).score_streams(ArrayTokens(ids), streams=1)
    assert adapted.bpc < static.bpc - 1  # it learnt the new order
    after = generator.generate("a", 40, temperature=0)[0]
    assert after != before
    assert (
        Generator(generator.model, generator.tokenizer).generate("a", 40, temperature=0)[0] == after
    )
    assert Generator.from_run(run).generate("a", 40, temperature=0)[0] == before  # disk untouched
