"""`evaluation.scoring`: the stream layout, and streamed scores against hand-computed loops."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_lstm_model

from textgen.evaluation.scoring import ArrayTokens, Scorer, stream_layout

VOCAB = 7


@pytest.fixture(scope="module")
def model():
    """A tiny untrained 2-layer model (the state of both layers must be carried)."""
    return tiny_lstm_model(VOCAB, seed=3)


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, 61).astype(np.int32)  # (61,)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())


def one_token_at_a_time(model, ids: np.ndarray) -> float:
    """Nats of ids[1:], feeding one token per call through `stream_model`, states carried."""
    from textgen.model.build import stream_model

    stream = stream_model(model)
    states = [np.zeros((1, 8), np.float32) for _ in range(4)]
    nats = 0.0
    for t in range(len(ids) - 1):
        logits, *states = (np.array(x) for x in stream([ids[None, t : t + 1], *states]))
        nats -= log_softmax(logits[0, -1])[ids[t + 1]]
    return nats


def growing_prefixes(model, ids: np.ndarray, start: int, stop: int) -> float:
    """Nats of ids[start + 1 : stop + 1], each predicted by the plain model from ids[start:t]."""
    nats = 0.0
    for t in range(start + 1, stop + 1):
        nats -= log_softmax(np.array(model(ids[None, start:t]))[0, -1])[ids[t]]
    return nats


def test_one_stream_equals_feeding_one_token_at_a_time(model, ids) -> None:
    scorer = Scorer(model, np.ones(VOCAB), maxlen=4, segment=7)  # 60 = 8 chunks + a ragged one
    score = scorer.score_streams(ArrayTokens(ids), streams=1)
    assert (score.method, score.streams, score.tokens, score.chars) == ("streamed", 1, 60, 60)
    assert score.nats == pytest.approx(one_token_at_a_time(model, ids), rel=1e-5)


def test_streams_predict_every_id_after_the_first_once(model, ids) -> None:
    layout = stream_layout(len(ids), 4, min_length=7)
    np.testing.assert_array_equal(layout.lengths, [15, 15, 15, 15])
    np.testing.assert_array_equal(layout.starts, [0, 15, 30, 45])  # each starts one id early
    scorer = Scorer(model, np.ones(VOCAB), maxlen=4, segment=7)
    score = scorer.score_streams(ArrayTokens(ids), streams=4)
    expected = sum(growing_prefixes(model, ids, a, a + 15) for a in (0, 15, 30, 45))
    assert score.streams == 4 and score.tokens == 60
    assert score.nats == pytest.approx(expected, rel=1e-5)


def test_layout_of_short_texts_and_remainders() -> None:
    assert stream_layout(61, 64, min_length=7).streams == 8  # each stream predicts >= 7 ids
    assert stream_layout(5, 64, min_length=7).streams == 1
    layout = stream_layout(12, 3, min_length=1)  # 11 predictions: 4 + 4 + 3
    np.testing.assert_array_equal(layout.lengths, [4, 4, 3])
    np.testing.assert_array_equal(layout.starts, [0, 4, 8])
    with pytest.raises(ValueError):
        stream_layout(1, 4)


def test_bounded_sample_scores_spans_after_a_warm_up(model, ids) -> None:
    layout = stream_layout(1000, 8, min_length=10, limit=80, warmup=5)
    assert layout.streams == 8
    assert set(layout.lengths) == {15} and set(layout.skip) == {5}
    assert layout.starts[0] == 0 and layout.starts[-1] == 999 - 15  # evenly spread to the end
    scorer = Scorer(model, np.ones(VOCAB), maxlen=4, segment=7)
    score = scorer.score_streams(ArrayTokens(ids), streams=2, limit_tokens=20, warmup=3)
    # 2 streams of 3 unscored + 10 scored inputs, at 0 and 60 - 13 = 47.
    expected = sum(
        growing_prefixes(model, ids, a, a + 13) - growing_prefixes(model, ids, a, a + 3)
        for a in (0, 47)
    )
    assert score.tokens == 20 and score.nats == pytest.approx(expected, rel=1e-5)


def test_one_trace_for_any_number_of_streams(model, ids) -> None:
    scorer = Scorer(model, np.ones(VOCAB), maxlen=4, segment=5)
    scorer.warm_up()
    for streams in (1, 3, 6):
        scorer.score_streams(ArrayTokens(ids), streams=streams)
    scorer.score_streams(ArrayTokens(ids), streams=4, limit_tokens=12)
    assert scorer._stream_totals.experimental_get_tracing_count() == 1
