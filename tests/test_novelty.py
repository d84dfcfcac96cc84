"""The novelty suffix array against brute force: long copies, ids not in the split, wide codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_corpus

from textgen.core.config import load_config
from textgen.data.corpus import index_corpus
from textgen.data.novelty import MAX_MATCH, NGRAM, NoveltyIndex


def _open(tmp_path: Path, body: str, *more: str):
    corpus = write_corpus(tmp_path, body)
    words = [f"data.path={corpus}", f"data.index_dir={tmp_path / 'index'}"]
    index = index_corpus(load_config(None, [*words, "data.val_fraction=0.1", *more]).data)[0]
    train = index.tokenizer.decode(np.asarray(index.train[:]))
    return NoveltyIndex.open(index), train


def _brute_lengths(train: str, sample: str) -> list[int]:
    """The longest match starting at each position, capped at MAX_MATCH, by `in`."""
    out = []
    for i in range(len(sample)):
        j = i
        while j < len(sample) and j - i < MAX_MATCH and sample[i : j + 1] in train:
            j += 1
        out.append(j - i)
    return out


def _check(novelty: NoveltyIndex, train: str, sample: str) -> dict:
    """Asserts the report agrees with brute force; returns it."""
    report = novelty.report(sample)
    lengths = _brute_lengths(train, sample)
    n = min(NGRAM, len(sample))
    starts = len(sample) - n + 1
    assert report["longest"] == max(lengths)
    assert report["ngrams_found"] == round(float(np.mean(np.array(lengths[:starts]) >= n)), 4)
    at, longest = report["longest_at"], report["longest"]
    assert train[at : at + longest] == report["longest_text"]
    assert report["longest_text"] == sample[lengths.index(longest) :][:longest]
    start, end = report["longest_span"]  # where it lies in the sample (characters)
    assert end - start == longest and sample[start:end] == report["longest_text"]
    assert report["copied_spans"] == _brute_spans(lengths)
    return report


def _brute_spans(lengths: list[int]) -> list[list[int]]:
    """The positions covered by a match of at least NGRAM chars, as merged [start, end) runs."""
    covered = np.zeros(len(lengths) + 1, bool)
    for i, n in enumerate(lengths):
        if n >= NGRAM:
            covered[i : i + n] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[False], covered]).astype(int)))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _random_text(rng, letters: str, size: int, *, p=None) -> str:
    return "".join(rng.choice(list(letters), size=size, p=p))


def test_long_copied_spans_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    novelty, train = _open(tmp_path, _random_text(rng, "abcde", 4000))
    whole = _check(novelty, train, train[200:1700])  # longer than MAX_MATCH
    assert whole["longest"] == MAX_MATCH and whole["ngrams_found"] == 1.0
    assert whole["longest_text"] == train[200 : 200 + MAX_MATCH]
    for start, span in ((700, 300), (10, 60), (3000, 25)):  # a copy inside new text
        novel = _random_text(rng, "abcde", 200)
        report = _check(novelty, train, novel[:90] + train[start : start + span] + novel[90:])
        assert report["longest"] >= span
    novelty.close()


def test_a_longer_copy_starting_inside_a_shorter_one_is_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a, q, r = (_random_text(rng, "ABCDEFGH", k) for k in (10, 30, 120))  # a+q and q+r copied
    noise = [_random_text(rng, "abcdefgh", 500) for _ in range(3)]
    novelty, train = _open(tmp_path, noise[0] + a + q + noise[1] + q + r + noise[2] + "x" * 200)
    report = _check(novelty, train, a + q + r)  # its first match (a+q) covers the n-grams of q
    assert report["longest"] == 150 and report["longest_text"] == q + r
    novelty.close()


@pytest.mark.parametrize("vocab", ["abc", "".join(chr(0x4E00 + i) for i in range(300))])
def test_samples_at_the_ends_of_the_training_text(tmp_path: Path, vocab: str) -> None:
    rng = np.random.default_rng(7)
    novelty, train = _open(tmp_path, _random_text(rng, vocab, 2000))
    new = _random_text(rng, vocab, 30)
    for sample in (train[-3:], train[-12:] + new, train[-40:] + new, train[:5], new + train[:30]):
        _check(novelty, train, sample)
    assert novelty.report(train[-25:])["longest_at"] == len(train) - 25
    novelty.close()


def test_ids_not_in_the_training_split_break_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    body = _random_text(rng, "abcdef", 2700) + "Z" + _random_text(rng, "abcdef", 299)  # Z: val
    novelty, train = _open(tmp_path, body)
    assert "Z" not in train
    report = _check(novelty, train, train[100:150] + "Z" + train[500:540] + "ZZ")
    assert report["longest"] == 50 and report["longest_text"] == train[100:150]
    assert novelty.report("Z")["longest"] == 0
    novelty.close()


@pytest.mark.parametrize("symbols", [300, 600])
def test_skewed_wide_vocabularies_use_short_and_long_codes(tmp_path: Path, symbols: int) -> None:
    rng = np.random.default_rng(3)
    letters = "".join(chr(0x4E00 + i) for i in range(symbols))
    p = 1 / np.arange(1, symbols + 1)  # Zipf: some ids get 1-byte codes, the rare ones 2 bytes
    body = _random_text(rng, letters, 6000, p=p / p.sum())
    novelty, train = _open(tmp_path, body)
    assert novelty.single < 256
    for _ in range(4):
        at = int(rng.integers(0, len(train) - 80))
        sample = _random_text(rng, letters, 30, p=p / p.sum()) + train[at : at + 50]
        _check(novelty, train, sample)
        assert novelty.report(train[at : at + 50])["longest_at"] == train.find(train[at : at + 50])
    novelty.close()


def test_more_ids_than_two_byte_codes_hold_use_three_bytes(tmp_path: Path) -> None:
    letters = [chr(0x10000 + i) for i in range(66_000)]  # past 65,281: every id is 3 bytes
    rng = np.random.default_rng(4)
    body = "".join(letters) + "".join(rng.choice(letters, size=4000))
    novelty, train = _open(tmp_path, body, "data.val_fraction=0.01")
    assert novelty.single is None
    for start in (5, 65_990, len(train) - 200):
        sample = "".join(rng.choice(letters, size=20)) + train[start : start + 40]
        _check(novelty, train, sample)
    novelty.close()


def test_a_build_in_many_slices_writes_the_same_files(tmp_path: Path, monkeypatch) -> None:
    from textgen.data import suffix_array

    rng = np.random.default_rng(6)
    letters = "".join(chr(0x4E00 + i) for i in range(400))
    p = 1 / np.arange(1, 401)
    body = _random_text(rng, letters, 5000, p=p / p.sum())
    whole, _ = _open(tmp_path / "whole", body)
    monkeypatch.setattr(suffix_array, "SLICE", 333)  # odd: bit flags carried across slices
    sliced, train = _open(tmp_path / "sliced", body)
    for name in (
        "text.bin",
        "sa.bin",
        "starts.bits",
        "blocks.npy",
        "rank.npy",
        "sample.npy",
        "meta.json",
    ):
        assert (whole.directory / name).read_bytes() == (sliced.directory / name).read_bytes()
    _check(sliced, train, train[1000:1100] + train[20:60])
    whole.close()
    sliced.close()


@pytest.mark.parametrize("every", [1, 2, 3])
def test_a_dense_key_sample_narrows_every_search_correctly(
    tmp_path: Path, monkeypatch, every: int
) -> None:
    from textgen.data import novelty, suffix_array

    for module in (novelty, suffix_array):  # the build writes it, the search reads by it
        monkeypatch.setattr(module, "SAMPLE_EVERY", every)  # searches start between sampled keys
    rng = np.random.default_rng(8)
    novelty, train = _open(tmp_path, _random_text(rng, "abcd", 1500))
    for _ in range(6):
        at = int(rng.integers(0, len(train) - 40))
        _check(novelty, train, _random_text(rng, "abcd", 30) + train[at : at + 40])
    novelty.close()
