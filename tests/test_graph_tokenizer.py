"""`graph_tokenizer`: the SavedModel's encoder and decoder give the Python tokenizer's results."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import synthetic_text

from textgen.core.errors import TextgenError
from textgen.data.tokenizers import CharTokenizer, SentencePieceTokenizer
from textgen.serving.graph_tokenizer import PieceSpec, graph_tokenizer_class

FIXED_TEXTS = [
    "",
    " ",
    "a",
    "The lord said",
    "  two  spaces  and a trailing one ",
    "tabs\tand\nnew\r\nlines\n\n",
    "café naïve Zürich 東京 😀 É",
    "unseen: ∮ ⅋ Ω ß 𝄞 and \u2581 itself",  # characters no piece covers: byte fallback
    "x" * 300,
]


def random_texts(seed: int, count: int = 120) -> list[str]:
    """Random strings over the corpus's characters plus some it never saw."""
    rng = random.Random(seed)
    alphabet = list(synthetic_text(lines=50, seed=seed)) + list("∮ßΩ\t\r  \n😀")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(count)]


@pytest.fixture(scope="module", params=["unigram", "bpe", "char"])
def sp_model(request, sp_lines):
    """A sentencepiece tokenizer of each model type textgen trains."""
    size = 300 if request.param == "char" else 400
    return SentencePieceTokenizer.train(sp_lines, vocab_size=size, model_type=request.param)


def graph_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """The graph encoder's ids for each text."""
    import tensorflow as tf

    graph = graph_tokenizer_class()(PieceSpec.from_tokenizer(tokenizer))
    return graph.encode(tf.constant(texts)).to_list()


def graph_text(tokenizer, rows: list[np.ndarray]) -> list[str]:
    """The graph decoder's text for each row of ids."""
    import tensorflow as tf

    graph = graph_tokenizer_class()(PieceSpec.from_tokenizer(tokenizer))
    width = max(len(r) for r in rows)
    padded = np.array([np.pad(r, (0, width - len(r)), constant_values=-1) for r in rows])
    return [t.decode("utf-8") for t in graph.decode(tf.constant(padded, tf.int32)).numpy()]


def test_sentencepiece_encoding_equals_sentencepiece(sp_model) -> None:
    texts = FIXED_TEXTS + random_texts(seed=7) + synthetic_text(lines=40, seed=9).splitlines()
    got = graph_ids(sp_model, texts)
    for text, ids in zip(texts, got, strict=True):
        assert ids == sp_model.encode(text).tolist(), repr(text)
    for text in ["", "a", "The ", "∮"]:  # a batch of one short text: shorter than most pieces
        assert graph_ids(sp_model, [text]) == [sp_model.encode(text).tolist()]


def test_sentencepiece_decoding_equals_sentencepiece(sp_model) -> None:
    texts = FIXED_TEXTS + random_texts(seed=8, count=40)
    rows = [sp_model.encode(t) for t in texts]
    assert graph_text(sp_model, rows) == [sp_model.decode(r) for r in rows]
    lossless = [t.replace("\u2581", " ") for t in texts]  # sentencepiece's space mark is a space
    assert graph_text(sp_model, rows) == lossless


def test_a_cut_multibyte_character_decodes_to_the_replacement_character(sp_tokenizer) -> None:
    ids = sp_tokenizer.encode("∮")  # three byte pieces
    assert len(ids) == 3
    assert graph_text(sp_tokenizer, [ids[:2], ids]) == ["\ufffd", "∮"]


def test_char_encoding_and_decoding_equal_the_char_tokenizer() -> None:
    tokenizer = CharTokenizer(synthetic_text(lines=50, seed=2))
    texts = FIXED_TEXTS + random_texts(seed=3)
    for text, ids in zip(texts, graph_ids(tokenizer, texts), strict=True):
        assert ids == tokenizer.encode(text).tolist(), repr(text)  # unknown chars: id 0
    rows = [tokenizer.encode(t) for t in texts]
    assert graph_text(tokenizer, rows) == [tokenizer.decode(r) for r in rows]


def test_sentencepiece_models_textgen_never_trains_are_refused(foreign_sp_tokenizer) -> None:
    with pytest.raises(TextgenError, match="cannot be exported"):
        PieceSpec.from_tokenizer(foreign_sp_tokenizer)
