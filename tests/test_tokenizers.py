"""CharTokenizer and SentencePieceTokenizer: lossless round trips, unknowns, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textgen.core.errors import TextgenError
from textgen.data.tokenizers import (
    UNKNOWN_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    same_vocabulary,
)

MIXED = "Café naïve Zürich — 東京の猫 😀👍🏽 e\u0301 ñ\r\nline two\ttab\n\n"


def test_char_round_trip_of_accents_cjk_emoji_crlf():
    tok = CharTokenizer(MIXED)
    ids = tok.encode(MIXED)
    assert ids.dtype == np.int32
    assert len(ids) == len(MIXED)  # one token per code point
    assert tok.decode(ids) == MIXED


@pytest.mark.parametrize("char", ["é", "中", "😀", "\U0010fffd"])
def test_char_one_token_per_code_point(char):
    tok = CharTokenizer("ab" + char)
    assert len(tok.encode(char)) == 1
    assert tok.encode(char)[0] != UNKNOWN_ID
    assert tok.decode(tok.encode(char)) == char


def test_combining_mark_stays_two_tokens_and_lossless():
    decomposed = "e\u0301"  # 'e' + COMBINING ACUTE ACCENT, not normalized to 'é'
    tok = CharTokenizer(decomposed + "é")
    ids = tok.encode(decomposed)
    assert len(ids) == 2
    assert tok.decode(ids) == decomposed
    assert tok.decode(tok.encode("é")) == "é"  # precomposed stays precomposed
    assert tok.encode("é")[0] not in ids


def test_crlf_is_kept():
    text = "a\r\nb\rc\n"
    tok = CharTokenizer(text)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("\r\n")) == 2


def test_unknown_chars_become_id_zero_and_decode_to_replacement_char():
    tok = CharTokenizer("abc")
    ids = tok.encode("axb😀c\U0010ffff")
    assert ids.tolist()[0] != UNKNOWN_ID
    assert ids.tolist()[1] == UNKNOWN_ID  # 'x' is inside the lookup's range, not in the vocab
    assert ids.tolist()[3] == UNKNOWN_ID  # beyond the largest code point seen
    assert ids.tolist()[5] == UNKNOWN_ID
    assert tok.decode(ids) == "a\ufffdb\ufffdc\ufffd"
    assert tok.unknown_chars("axb😀cx") == ["x", "😀"]


def test_vocab_size_counts_the_unknown_id():
    tok = CharTokenizer("hello")
    assert tok.vocab_size == len(set("hello")) + 1
    assert set(tok.encode("hello").tolist()) <= set(range(1, tok.vocab_size))


def test_vocabulary_order_is_deterministic():
    a = CharTokenizer("the cat sat on the mat 東京")
    b = CharTokenizer("東京 mat the on sat cat the")
    assert a.chars == b.chars
    text = "cat on the mat"
    assert a.encode(text).tolist() == b.encode(text).tolist()
    assert list(a.chars) == sorted(a.chars)  # ids follow code point order


def test_decode_rejects_out_of_range_ids():
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError):
        tok.decode([-1])


def test_empty_text_and_empty_vocab():
    tok = CharTokenizer("ab")
    assert tok.encode("").shape == (0,)
    assert tok.decode([]) == ""
    empty = CharTokenizer("")
    assert empty.vocab_size == 1
    assert empty.encode("xy").tolist() == [UNKNOWN_ID, UNKNOWN_ID]


def test_char_save_load_round_trip(tmp_path):
    tok = CharTokenizer(MIXED + "\x00\u2028\ufeff")
    tok.save(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="ascii"))
    assert data["kind"] == "char"
    again = CharTokenizer.load(tmp_path)
    assert again.chars == tok.chars
    assert again.vocab_size == tok.vocab_size
    assert again.encode(MIXED).tolist() == tok.encode(MIXED).tolist()
    assert load_tokenizer(tmp_path, "char").chars == tok.chars


def test_char_encode_large_input():
    text = ("The quick brown fox 東京 😀\n" * 40_000)[:1_000_000]
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    assert ids.shape == (len(text),)
    assert tok.decode(ids) == text


def test_char_token_lengths_are_one():
    tok = CharTokenizer("abc")
    lengths = tok.token_char_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert np.all(lengths == 1)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(TextgenError, match="unknown tokenizer"):
        load_tokenizer(tmp_path, "bpe")
    with pytest.raises(TextgenError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path, "char")  # no tokenizer.json there
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="ascii")
    with pytest.raises(TextgenError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path, "char")


# SentencePiece -------------------------------------------------------------------------------


SP_TEXTS = [
    "Hello there, naïve café.\nSecond line\n",
    "windows\r\nline endings\r\n",
    "  leading and   inner   spaces, trailing  \n\n\n",
    "tab\tseparated\tvalues\n",
    "unseen: Ωμέγα ∑ 🦄 ﷽ e\u0301 \U0001f600\n",
    "no newline at the end",
]


def test_sentencepiece_trains_to_the_requested_size(sp_tokenizer):
    assert sp_tokenizer.vocab_size == 400
    assert sp_tokenizer.kind == "sentencepiece"


@pytest.mark.parametrize("text", SP_TEXTS)
def test_sentencepiece_round_trip_is_lossless(sp_tokenizer, text):
    ids = sp_tokenizer.encode(text)
    assert ids.dtype == np.int32
    assert UNKNOWN_ID not in ids.tolist()  # byte fallback: nothing is unknown
    assert sp_tokenizer.decode(ids) == text


def test_sentencepiece_concatenated_pieces_decode_to_concatenated_text(sp_tokenizer):
    # The indexer encodes a corpus piece by piece and decodes ids of many pieces at once.
    ids = np.concatenate([sp_tokenizer.encode(t) for t in SP_TEXTS])
    assert sp_tokenizer.decode(ids) == "".join(SP_TEXTS)


@pytest.mark.parametrize("text", SP_TEXTS)
def test_sentencepiece_token_char_lengths_sum_to_text_length(sp_tokenizer, text):
    lengths = sp_tokenizer.token_char_lengths()
    assert lengths.shape == (sp_tokenizer.vocab_size,)
    assert lengths[sp_tokenizer.encode(text)].sum() == len(text)


def test_sentencepiece_compresses_text_like_its_training_data(sp_tokenizer, sp_lines):
    text = "\n".join(sp_lines[:200])
    assert len(sp_tokenizer.encode(text)) < 0.9 * len(text)  # pieces span several chars


def test_sentencepiece_save_load_round_trip(sp_tokenizer, tmp_path):
    sp_tokenizer.save(tmp_path)
    again = SentencePieceTokenizer.load(tmp_path)
    assert again.vocab_size == sp_tokenizer.vocab_size
    for text in SP_TEXTS:
        assert again.encode(text).tolist() == sp_tokenizer.encode(text).tolist()
    loaded = load_tokenizer(tmp_path, "sentencepiece")
    assert loaded.decode(loaded.encode(SP_TEXTS[4])) == SP_TEXTS[4]


def test_sentencepiece_training_is_deterministic(sp_lines):
    a = SentencePieceTokenizer.train(sp_lines[:1500], vocab_size=400, model_type="bpe")
    b = SentencePieceTokenizer.train(sp_lines[:1500], vocab_size=400, model_type="bpe")
    text = "\n".join(sp_lines[1500:1600])
    assert a.encode(text).tolist() == b.encode(text).tolist()
    assert a.decode(a.encode(text)) == text


def test_same_vocabulary_compares_what_fixes_the_ids(sp_lines):
    # Two sentencepiece models of the same size from different text: ids mean other pieces.
    a = SentencePieceTokenizer.train(sp_lines[:1500], vocab_size=400, model_type="bpe")
    b = SentencePieceTokenizer.train(sp_lines[1500:3000], vocab_size=400, model_type="bpe")
    assert a.vocab_size == b.vocab_size
    assert same_vocabulary(a, a) and not same_vocabulary(a, b)
    assert same_vocabulary(CharTokenizer("abc"), CharTokenizer("abc"))
    assert not same_vocabulary(CharTokenizer("abc"), CharTokenizer("abd"))  # same size
    assert not same_vocabulary(CharTokenizer("abc"), a)


def test_sentencepiece_vocab_too_large_names_the_key(sp_lines):
    with pytest.raises(TextgenError) as e:
        SentencePieceTokenizer.train(sp_lines[:200], vocab_size=50_000)
    assert "data.sp_vocab_size" in str(e.value)
    assert "50000" in str(e.value)
    assert "\n" not in str(e.value)  # one line for `textgen: error:`


def test_corrupt_sentencepiece_model_file(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(TextgenError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path, "sentencepiece")
