"""`Generator`: sampling correctness, determinism, no retracing, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_text
from run_fixtures import make_run, remove_checkpoints

from textgen.core.errors import TextgenError
from textgen.generation.generate import Generator, UnknownCharsWarning
from textgen.model.stepmodel import StepModel
from textgen.run.rundir import RunDir

PERIOD = "abcdé東😀xyz\n"  # each character has one successor: a deterministic pattern
PATTERN = PERIOD * 60


def continuation(prompt_last: str, length: int) -> str:
    """The pattern's text after a prompt ending in `prompt_last`."""
    start = PERIOD.index(prompt_last) + 1
    return (PERIOD * (length // len(PERIOD) + 2))[start : start + length]


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory) -> Path:
    """A run trained to continue PATTERN (char tokenizer)."""
    return make_run(tmp_path_factory.mktemp("gen") / "pattern", PATTERN, steps=150)


@pytest.fixture(scope="module")
def pattern(pattern_run: Path) -> Generator:
    return Generator.from_run(pattern_run)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Generator:
    """A barely trained run on varied text: broad next-char distributions."""
    text = synthetic_text(lines=200, seed=3)
    path = make_run(tmp_path_factory.mktemp("gen") / "noisy", text, steps=10, layers=2)
    return Generator.from_run(path)


def full_model_logits(model, ids: list[int]) -> np.ndarray:
    """The Keras model's next-token logits after `ids`, computed by the whole model."""
    return np.array(model(np.array([ids], np.int32)))[0, -1]  # (vocab,)


def test_greedy_continues_the_pattern(pattern: Generator) -> None:
    assert pattern.generate("abc", length=30, temperature=0.0) == [continuation("c", 30)]


def test_unicode_prompt_continues_the_pattern(pattern: Generator) -> None:
    assert pattern.generate("yzabcdé東", length=15, temperature=0.0) == [continuation("東", 15)]


def test_prompt_longer_than_a_block_is_read_whole(pattern: Generator) -> None:
    prompt = PATTERN[: 3 * pattern.block + 5]
    text = pattern.generate(prompt, length=12, temperature=0.0)[0]
    assert text == continuation(prompt[-1], 12)


def test_empty_prompt_starts_after_a_newline(pattern: Generator) -> None:
    assert pattern.generate("", 20, temperature=0.0) == pattern.generate("\n", 20, temperature=0.0)
    assert pattern.generate("", 11, temperature=0.0) == [PERIOD]


def test_greedy_equals_the_full_models_argmax(noisy: Generator) -> None:
    ids = list(noisy.tokenizer.encode("Café au"))
    start = len(ids)
    for _ in range(25):
        logits = full_model_logits(noisy.model, ids)
        logits[0] = -np.inf  # the unknown id is never produced
        ids.append(int(np.argmax(logits)))
    expected = noisy.tokenizer.decode(ids[start:])
    assert noisy.generate("Café au", 25, temperature=0.0) == [expected]


@pytest.mark.parametrize("layers, residual", [(1, False), (3, False), (3, True)])
def test_step_model_logits_equal_the_full_models(
    tmp_path: Path, layers: int, residual: bool
) -> None:
    # The step model folds and pipelines each layer's weights. With every weight random (no two
    # biases or kernels alike), its logits token by token must equal the whole Keras model's,
    # also where layers add their input to their output (model.residual).
    text = synthetic_text(lines=60, seed=layers)
    overrides = (f"model.residual={str(residual).lower()}",)
    run = RunDir(make_run(tmp_path / "run", text, steps=1, layers=layers, overrides=overrides))
    model, tokenizer = run.load_model(), run.load_tokenizer()
    rng = np.random.default_rng(layers)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.weights])
    step = StepModel(model)
    ids = np.asarray(tokenizer.encode(text[:24]), np.int32)  # (tokens,)
    carry = step.carry_of(step.zero_states(1))
    for t in range(len(ids)):
        carry = step.advance(ids[t : t + 1], carry)
        expected = full_model_logits(model, list(ids[: t + 1]))
        expected[0] = -np.inf  # the step model never offers the unknown id
        np.testing.assert_allclose(step.logits(carry)[0], expected, rtol=1e-4, atol=1e-4)


def test_same_seed_same_text_and_seeds_differ(noisy: Generator) -> None:
    a = noisy.generate("The ", 80, temperature=1.0, seed=7)
    assert a == noisy.generate("The ", 80, temperature=1.0, seed=7)
    assert a != noisy.generate("The ", 80, temperature=1.0, seed=8)
    assert len(a[0]) == 80


def test_greedy_is_deterministic_whatever_the_seed(noisy: Generator) -> None:
    first = noisy.generate("so ", 40, temperature=0.0, seed=1)
    assert first == noisy.generate("so ", 40, temperature=0.0, seed=2)
    assert first == noisy.generate("so ", 40, temperature=0.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_top_k_1_and_a_tiny_top_p_equal_greedy(noisy: Generator, seed: int) -> None:
    greedy = noisy.generate("It ", 40, temperature=0.0)
    assert noisy.generate("It ", 40, temperature=1.5, top_k=1, seed=seed) == greedy
    assert noisy.generate("It ", 40, temperature=1.5, top_p=1e-6, seed=seed) == greedy


def test_samples_stay_inside_top_k_and_top_p(noisy: Generator) -> None:
    for kwargs in ({"top_k": 3}, {"top_p": 0.6}):
        text = noisy.generate("We ", 30, temperature=1.0, seed=11, **kwargs)[0]
        ids = list(noisy.tokenizer.encode("We "))
        for token in noisy.tokenizer.encode(text):
            logits = full_model_logits(noisy.model, ids)
            logits[0] = -np.inf
            order = np.argsort(-logits)
            if "top_k" in kwargs:
                allowed = order[:3]
            else:
                probs = np.exp(logits[order] - logits[order[0]])
                probs /= probs.sum()
                before = np.cumsum(probs) - probs
                allowed = order[before < kwargs["top_p"] - 1e-5]
            assert token in allowed, kwargs
            ids.append(int(token))


def test_the_unknown_id_is_never_sampled(tmp_path: Path) -> None:
    run = RunDir(make_run(tmp_path / "run", "abcabc\n" * 20, steps=1))
    model, tokenizer = run.load_model(), run.load_tokenizer()
    bias = model.get_layer("logits").bias
    bias.assign(bias.numpy() + np.eye(len(bias.numpy()), 1)[:, 0] * 1e4)  # id 0 dominates
    gen = Generator(model, tokenizer)
    rules = [{"temperature": t} for t in (0.0, 1.0, 50.0)]
    rules += [{"temperature": 50.0, "top_k": 1000}, {"temperature": 50.0, "top_p": 0.999}]
    for kwargs in rules:
        text = gen.generate("ab", 200, seed=0, **kwargs)[0]
        assert "\ufffd" not in text and len(text) == 200, kwargs


def test_num_samples_batch(noisy: Generator) -> None:
    texts = noisy.generate("A", 30, temperature=1.2, num_samples=3, seed=5)
    assert len(texts) == 3 and all(len(t) == 30 for t in texts)
    assert len(set(texts)) == 3


def test_stream_chunks_join_to_generate(noisy: Generator) -> None:
    whole = noisy.generate("x", 150, temperature=0.9, num_samples=2, seed=3)
    chunks = list(noisy.stream("x", 150, temperature=0.9, num_samples=2, seed=3, chunk_size=7))
    assert len(chunks) == math.ceil(150 / 7)
    assert ["".join(parts) for parts in zip(*chunks, strict=True)] == whole


def test_no_retracing_across_varied_calls(tmp_path: Path) -> None:
    gen = Generator.from_run(make_run(tmp_path / "run", PATTERN, steps=1))
    past_a_block = gen.block + 9  # two compiled calls
    calls = [
        dict(prompt="", length=1),
        dict(prompt="abc", length=70, temperature=0.0),
        dict(prompt="é東😀" * 30, length=5, temperature=0.3, top_k=2, seed=1),
        dict(prompt="x", length=past_a_block, top_p=0.5, num_samples=3, seed=2),
        dict(prompt="yz", length=9, temperature=2.0, top_k=50, top_p=0.9, num_samples=5),
    ]
    for kwargs in calls:
        gen.generate(**kwargs)
    list(gen.stream("ab", 40, chunk_size=3, num_samples=2))
    assert gen.trace_count == 1
    assert gen._sampler.experimental_get_tracing_count() == 1


def test_refresh_follows_new_weights_without_retracing(tmp_path: Path) -> None:
    import keras

    # Two layers: the variables of the upper layer (input kernel, bias, recurrent) refresh too.
    before = make_run(tmp_path / "before", PATTERN, steps=1, layers=2)
    untrained = RunDir(before).load_model()
    after = RunDir(make_run(tmp_path / "after", PATTERN, steps=150, layers=2))
    trained, tokenizer = after.load_model(), after.load_tokenizer()
    model = keras.models.clone_model(untrained)
    model.set_weights(untrained.get_weights())
    gen = Generator(model, tokenizer)
    before = gen.generate(prompt="abc", length=40, temperature=0.0)[0]
    model.set_weights(trained.get_weights())  # what the trainer does between epochs
    gen.refresh()
    after = gen.generate(prompt="abc", length=40, temperature=0.0)[0]
    assert (
        after == Generator(trained, tokenizer).generate(prompt="abc", length=40, temperature=0)[0]
    )
    assert after != before
    assert gen.trace_count == 1


def test_unknown_prompt_characters(pattern: Generator) -> None:
    with pytest.raises(TextgenError, match=r"'Q' \(U\+0051\).*'ß' \(U\+00DF\)"):
        pattern.generate("aQbßQ", 5)
    with pytest.warns(UnknownCharsWarning, match="U\\+0051"):
        text = pattern.generate("aQ", 5, on_unknown="warn")
    assert len(text[0]) == 5


@pytest.mark.parametrize(
    "kwargs, where",
    [
        ({"length": 0}, "length"),
        ({"length": -3}, "length"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_bad_arguments(pattern: Generator, kwargs: dict, where: str) -> None:
    with pytest.raises(TextgenError, match=f"\\({where}\\)$"):
        pattern.generate("ab", **{"length": 5, **kwargs})


def test_checkpoints_best_latest_and_path(pattern_run: Path, pattern: Generator) -> None:
    greedy = pattern.generate("ab", 20, temperature=0.0)
    ckpt = str(pattern_run / "checkpoints" / "ckpt-1")
    for name in ("latest", ckpt):
        assert Generator.from_run(pattern_run, name).generate("ab", 20, temperature=0.0) == greedy


def test_bad_runs_and_checkpoints(pattern_run: Path, tmp_path: Path) -> None:
    with pytest.raises(TextgenError, match="run dir not found"):
        Generator.from_run(tmp_path / "nope")
    with pytest.raises(TextgenError, match="unknown checkpoint"):
        Generator.from_run(pattern_run, "bestest")
    empty = remove_checkpoints(make_run(tmp_path / "untrained", "abab\n", steps=1))
    for name in ("best", "latest"):
        with pytest.raises(TextgenError, match="no checkpoint yet"):
            Generator.from_run(empty, name)


def test_sentencepiece_run(tmp_path: Path, sp_tokenizer) -> None:
    text = synthetic_text(lines=150, seed=4)
    gen = Generator.from_run(make_run(tmp_path / "sp", text, tokenizer=sp_tokenizer, steps=20))
    ids = list(sp_tokenizer.encode("Zürich "))
    start = len(ids)
    for _ in range(15):
        logits = full_model_logits(gen.model, ids)
        logits[0] = -np.inf
        ids.append(int(np.argmax(logits)))
    assert gen.generate("Zürich ", 15, temperature=0.0) == [sp_tokenizer.decode(ids[start:])]
    whole = gen.generate("東京", 60, temperature=1.0, seed=9, num_samples=2)
    chunks = list(gen.stream("東京", 60, temperature=1.0, seed=9, num_samples=2, chunk_size=5))
    assert ["".join(parts) for parts in zip(*chunks, strict=True)] == whole


def test_xla_compiled_generator(pattern_run: Path, pattern: Generator) -> None:
    gen = Generator(pattern.model, pattern.tokenizer, jit_compile=True)
    assert gen.generate("abc", 30, temperature=0.0) == [continuation("c", 30)]
    texts = gen.generate("é" * 70, 20, temperature=0.8, top_p=0.9, seed=1)
    assert len(texts[0]) == 20 and gen.trace_count == 1
    again = gen.generate("é" * 70, 20, temperature=0.8, top_p=0.9, seed=1)
    assert again == texts  # XLA draws its own way, but a seed still fixes the text
