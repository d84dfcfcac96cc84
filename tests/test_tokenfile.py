"""An index split as numpy users reach for it: dtype, shape, len, np.asarray, ints and slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, synthetic_text, write_corpus

from textgen.core.config import load_config
from textgen.data import tokenfile
from textgen.data.corpus import index_corpus, load_index
from textgen.data.tokenfile import TokenFile

SLICES = [
    slice(None), slice(5, 17), slice(-30, None), slice(None, -990), slice(3, 3), slice(900, 2000),
    slice(-5000, 10), slice(None, None, 7), slice(10, 500, 33), slice(None, None, -1),
    slice(600, 100, -9), slice(-1, -40, -3), slice(0, 1000, 1000), slice(999, None, 2),
]  # fmt: skip


@pytest.fixture
def split(tmp_path: Path) -> tuple[np.ndarray, TokenFile]:
    """1,000 random ids saved as a split, and the split opened."""
    values = np.random.default_rng(3).integers(0, 2**31 - 1, size=1000, dtype=np.int32)
    np.save(tmp_path / "train.npy", values)
    return values, TokenFile(tmp_path / "train.npy")


def test_looks_like_a_1d_int32_array(split):
    values, ids = split
    assert (ids.dtype, ids.shape, ids.ndim, ids.size, len(ids)) == (
        values.dtype, values.shape, 1, 1000, 1000,
    )  # fmt: skip
    assert ids.dtype == np.int32 and "shape=(1000,)" in repr(ids)
    whole = np.asarray(ids)
    assert whole.dtype == np.int32 and whole.shape == (1000,)
    np.testing.assert_array_equal(whole, values)
    np.testing.assert_array_equal(np.asarray(ids, dtype=np.int64), values.astype(np.int64))
    np.testing.assert_array_equal(np.array(ids), values)
    assert list(ids) == values.tolist()
    with pytest.raises(ValueError, match="new array"):
        np.asarray(ids, copy=False)  # numpy 2: a copy that cannot be avoided must say so


@pytest.mark.parametrize("chunk", [1 << 20, 64, 1])
@pytest.mark.parametrize("where", SLICES, ids=str)
def test_slices_equal_numpy_slices(split, monkeypatch, chunk, where):
    monkeypatch.setattr(tokenfile, "_CHUNK_IDS", chunk)  # many bounded reads, not one
    values, ids = split
    got = ids[where]
    assert isinstance(got, np.ndarray) and got.dtype == np.int32
    np.testing.assert_array_equal(got, values[where])


def test_ints_equal_numpy_ints_and_out_of_range_is_an_index_error(split):
    values, ids = split
    for i in (0, 1, 500, 999, -1, -1000, np.int64(7), np.int32(-2)):
        assert ids[i] == values[i] and isinstance(ids[i], np.int32)
    for i in (1000, -1001, 10**12):
        with pytest.raises(IndexError, match="out of bounds"):
            ids[i]
    for bad in (1.5, "3", [1, 2], (1,)):
        with pytest.raises(TypeError, match="int or a slice"):
            ids[bad]


def test_an_empty_split(tmp_path):
    np.save(tmp_path / "val.npy", np.zeros(0, np.int32))
    ids = TokenFile(tmp_path / "val.npy")
    assert len(ids) == 0 and ids.shape == (0,)
    assert np.asarray(ids).shape == (0,) and ids[:].shape == (0,) and ids[::-2].shape == (0,)
    assert list(ids) == []
    with pytest.raises(IndexError):
        ids[0]


def test_load_index_splits_are_token_files_that_decode_to_the_corpus(tmp_path):
    text = synthetic_text(lines=40, seed=2)
    corpus = write_corpus(tmp_path, text)
    cfg = load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [f"data.path={corpus}", f"data.index_dir={tmp_path / 'index'}"],
    )
    index_corpus(cfg.data, min_split_tokens=2)
    ix = load_index(tmp_path / "index")
    assert isinstance(ix.train, TokenFile) and isinstance(ix.val, TokenFile)
    assert ix.train.dtype == ix.val.dtype == np.int32
    assert len(ix.train) + len(ix.val) == len(text)  # a char index: one id per character
    whole = np.concatenate([np.asarray(ix.train), ix.val[:]])  # (chars,)
    assert ix.tokenizer.decode(whole.tolist()) == text
    assert ix.tokenizer.decode(ix.train[:12].tolist()) == text[:12]
    assert ix.tokenizer.decode([int(ix.val[-1])]) == text[-1]
