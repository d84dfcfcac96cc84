"""`build_sampler`: rows of one call each get what they ask, whatever else is in the batch.

An untrained 2 x 8 LSTM model over 20 characters, its output layer scaled up so that the logits
spread over a few nats: the distributions are broad but uneven, so a sampling row and a greedy row
part at once, and top-k / top-p cut real candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from conftest import tiny_lstm_model

from textgen.data.tokenizers import UNKNOWN_ID, CharTokenizer
from textgen.generation.generate import Generator
from textgen.generation.sampler import build_sampler
from textgen.model.stepmodel import StepModel

CHARS = "abcdefghijklmnopqr \n"
BLOCK = 32  # a small block: the sampler's shapes are (rows, BLOCK)
LENGTH = 24  # tokens each row samples


@dataclass(frozen=True)
class Row:
    """One row of a sampler call: its prompt and its settings."""

    prompt: str
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    sample: int = 0


GREEDY = Row("ab", temperature=0.0, seed=99)
PLAIN = Row("ab", seed=11)
TOP_K = Row("cd", top_k=3, seed=12)
TOP_P = Row("ef ", temperature=0.7, top_p=0.5, seed=13)
BOTH = Row("gh", temperature=2.0, top_k=5, top_p=0.9, seed=14, sample=2)
MIXED = [GREEDY, PLAIN, TOP_K, TOP_P, BOTH]


@pytest.fixture(scope="module")
def setup():
    """(model, tokenizer, sampler) built once: the sampler traces once for every call."""
    tokenizer = CharTokenizer(CHARS)
    model = tiny_lstm_model(tokenizer.vocab_size, seed=2)
    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel * 1000.0)  # untrained logits differ by ~1e-3 only
    return model, tokenizer, build_sampler(StepModel(model), BLOCK)


def sample_rows(setup, rows: list[Row]) -> list[list[int]]:
    """One sampler call: each distinct prompt read once, then LENGTH tokens for every row."""
    model, tokenizer, sampler = setup
    prompts = list(dict.fromkeys(r.prompt for r in rows))
    feed = np.zeros((len(prompts), BLOCK), np.int32)  # (prompts, block)
    for i, prompt in enumerate(prompts):
        feed[i, : len(prompt)] = tokenizer.encode(prompt)
    step = StepModel(model)
    tokens, _ = sampler(
        feed,
        np.array([len(p) for p in prompts], np.int32),  # (prompts,)
        np.array([prompts.index(r.prompt) for r in rows], np.int32),  # (rows,)
        step.zero_states(len(rows)),  # (2 * layers, rows, units)
        np.int32(LENGTH),
        np.zeros(len(rows), np.int32),  # (rows,) positions
        np.array([r.temperature for r in rows], np.float32),
        np.array([r.top_k for r in rows], np.int32),
        np.array([r.top_p for r in rows], np.float32),
        np.array([r.seed for r in rows], np.int64),
        np.array([r.sample for r in rows], np.int32),
    )  # (rows, block)
    return [list(row[:LENGTH]) for row in tokens.numpy()]


def full_model_logits(setup, prompt: str, tokens: list[int]) -> np.ndarray:
    """The whole Keras model's logits before each of `tokens` after `prompt`: (LENGTH, vocab)."""
    model, tokenizer, _ = setup
    ids = [*tokenizer.encode(prompt), *tokens]
    logits = np.array(model(np.array([ids], np.int32)))[0, len(prompt) - 1 : -1]  # (len, vocab)
    logits[:, UNKNOWN_ID] = -np.inf  # never sampled
    return logits


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_rows_of_one_call_each_get_their_own_settings(setup):
    out = dict(zip(MIXED, sample_rows(setup, MIXED), strict=True))
    for row, tokens in out.items():
        logits = full_model_logits(setup, row.prompt, tokens)  # (LENGTH, vocab)
        chosen = logits[np.arange(LENGTH), tokens]  # (LENGTH,)
        assert UNKNOWN_ID not in tokens
        if row.temperature == 0:  # the argmax at every step
            np.testing.assert_array_less(logits.max(axis=1) - 1e-5, chosen + 1e-12)
            continue
        if row.top_k:  # one of the k likeliest (ties at the cut-off kept)
            kth = np.sort(logits, axis=1)[:, -row.top_k]  # (LENGTH,)
            assert np.all(chosen >= kth - 1e-5), row
        if row.top_p < 1:  # inside the top-p mass of the tempered (and top-k) distribution
            scaled = logits / row.temperature
            if row.top_k:
                scaled = np.where(logits >= kth[:, None] - 1e-5, scaled, -np.inf)
            probs = softmax(scaled)  # (LENGTH, vocab)
            likelier = np.where(probs > probs[np.arange(LENGTH), tokens][:, None], probs, 0)
            assert np.all(likelier.sum(axis=1) < row.top_p + 1e-5), row
    assert out[PLAIN] != out[GREEDY][:LENGTH]  # the sampling row beside it really samples
    assert len({tuple(t) for t in out.values()}) == len(MIXED)


def test_a_sampling_row_is_the_argmax_only_where_asked(setup):
    greedy_like = [Row("ab", top_k=1, seed=5), Row("ab", top_p=1e-6, seed=6), GREEDY]
    first, second, greedy = sample_rows(setup, [*greedy_like, PLAIN])[:3]
    assert first == second == greedy  # top-k 1 and a tiny top-p leave only the argmax


@pytest.mark.parametrize("row", MIXED)
def test_a_rows_text_does_not_depend_on_the_rest_of_the_batch(setup, row):
    alone = sample_rows(setup, [row])[0]
    others = [r for r in MIXED if r != row]
    beside = sample_rows(setup, [*others[:2], row, *others[2:]])[2]
    reversed_batch = sample_rows(setup, [row, *others[::-1]])[0]
    assert alone == beside == reversed_batch


def test_seed_and_sample_number_pick_the_text(setup):
    texts = sample_rows(setup, [PLAIN, Row("ab", seed=12), Row("ab", seed=11, sample=1), PLAIN])
    assert texts[0] == texts[3]  # the same seed and sample number: the same text
    assert texts[0] != texts[1] and texts[0] != texts[2]


def test_the_generator_uses_the_same_sampler(setup):
    model, tokenizer, _ = setup
    generator = Generator(model, tokenizer)
    greedy = generator.generate("ab", LENGTH, temperature=0.0)[0]
    assert greedy == tokenizer.decode(sample_rows(setup, [GREEDY])[0])
    kwargs = dict(temperature=0.9, top_k=4, seed=7)
    one = generator.generate("ab", LENGTH, num_samples=1, **kwargs)
    three = generator.generate("ab", LENGTH, num_samples=3, **kwargs)
    assert one[0] == three[0]  # sample 0 of a seed is the same text alone or beside others
    assert one[0] == tokenizer.decode(sample_rows(setup, [Row("ab", 0.9, 4, seed=7)])[0])
    assert generator.trace_count == 1
