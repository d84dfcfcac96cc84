"""The streaming `.npy` writer: a fixed header rewritten at the end, appends on a thread, and
`split_tail` cutting the file in two."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from textgen.data.npywriter import HEADER_BYTES, BackgroundWriter, npy_header, split_tail


def stream(path: Path, chunks: list[np.ndarray], *, buffers: int = 3) -> int:
    """Writes `chunks` as the indexer does: placeholder header, appends, header rewritten."""
    with open(path, "wb") as f:
        f.write(npy_header(0))
        with BackgroundWriter(f, buffers=buffers) as writer:
            for chunk in chunks:
                writer.put(chunk)
        length = (f.tell() - HEADER_BYTES) // 4
        f.seek(0)
        f.write(npy_header(length))
    return length


def random_chunks(count: int, seed: int) -> list[np.ndarray]:
    """Chunks of irregular sizes (0 to ~2,000 ids): they outgrow and reuse the ring's buffers."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 2000, size=count)
    sizes[::7] = 1  # small after large: a buffer reused for less than it holds
    return [rng.integers(-(2**31), 2**31 - 1, size=n, dtype=np.int64) for n in sizes]


@pytest.mark.parametrize("length", [0, 1, 7, 10**9, 2**31 - 1])
def test_the_header_has_a_fixed_size_and_numpy_reads_the_shape(tmp_path, length):
    header = npy_header(length)
    assert len(header) == HEADER_BYTES
    path = tmp_path / "h.npy"
    path.write_bytes(header)
    with open(path, "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        assert f.tell() == HEADER_BYTES  # the ids start right after it
    assert (shape, fortran, dtype) == ((length,), False, np.dtype("<i4"))


def test_the_streamed_file_loads_memory_mapped_with_its_shape_and_dtype(tmp_path):
    path = tmp_path / "train.npy"
    ids = np.arange(1000, dtype=np.int32)
    assert stream(path, [ids[:300], ids[300:301], ids[301:]]) == 1000
    loaded = np.load(path, mmap_mode="r")
    assert loaded.shape == (1000,) and loaded.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(loaded, ids)
    assert path.stat().st_size == HEADER_BYTES + 4 * 1000


def test_many_appends_across_buffer_boundaries_give_exactly_the_concatenation(tmp_path):
    path = tmp_path / "train.npy"
    chunks = random_chunks(200, seed=4)
    expected = np.concatenate(chunks).astype(np.int32)  # (total,)
    assert stream(path, chunks, buffers=2) == len(expected)
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), expected)


def test_a_chunk_changed_after_put_is_written_as_it_was(tmp_path):
    path = tmp_path / "train.npy"
    chunk = np.arange(50, dtype=np.int32)
    with open(path, "wb") as f:
        f.write(npy_header(100))
        with BackgroundWriter(f) as writer:
            writer.put(chunk)
            chunk[:] = -1  # the caller reuses its array at once
            writer.put(chunk)
    np.testing.assert_array_equal(np.load(path), np.r_[np.arange(50), np.full(50, -1)])


def test_no_appends_give_an_empty_array(tmp_path):
    path = tmp_path / "empty.npy"
    assert stream(path, []) == 0
    assert np.load(path, mmap_mode="r").shape == (0,)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_on_the_writer_thread_reaches_the_producer_with_its_errno():
    # /dev/full fails every write with ENOSPC; chunks larger than Python's write buffer.
    with open("/dev/full", "wb") as f, pytest.raises(OSError) as e, BackgroundWriter(f) as writer:
        for _ in range(20):
            writer.put(np.arange(10_000, dtype=np.int32))
    assert e.value.errno == errno.ENOSPC


@pytest.mark.parametrize("val_tokens", [1, 250, 999])
def test_split_tail_moves_the_last_ids_and_both_files_load(tmp_path, val_tokens):
    train, val = tmp_path / "train.npy", tmp_path / "val.npy"
    chunks = random_chunks(30, seed=val_tokens)
    ids = np.concatenate(chunks).astype(np.int32)[:1000]  # (1000,)
    stream(train, [ids])
    split_tail(train, val, 1000 - val_tokens, val_tokens)
    head, tail = np.load(train, mmap_mode="r"), np.load(val, mmap_mode="r")
    assert head.shape == (1000 - val_tokens,) and tail.shape == (val_tokens,)
    assert head.dtype == tail.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(head, ids[: 1000 - val_tokens])
    np.testing.assert_array_equal(tail, ids[1000 - val_tokens :])
    assert train.stat().st_size == HEADER_BYTES + 4 * (1000 - val_tokens)  # truncated
