"""The suffix array of a training split, on disk: its byte codes, its build and its layout.

Is a sample copied from the training text? A suffix array of the training split, on disk.

`build(index)` writes `INDEX/novelty/`: `text.bin`, the training split with each id as a prefix-free
byte code (ids ranked by frequency; up to 256 ids in use, 1 byte each, else the commonest
`single` get 1 byte and the rest an escape byte plus one, or 3 bytes each past 65,281 ids: a
100 MB char corpus of 446 symbols stays ~100 MB); `sa.bin`, the byte offsets of its suffixes
that start at an id, in byte order (int32; int64 past 2^31 bytes), sorted by libdivsufsort
(pydivsufsort's wheel, called directly from the memory-mapped text straight into the
memory-mapped output) and compacted in place, in slices, to the suffixes at an id; `rank.npy`;
`sample.npy` (the first 16 bytes of every 256th suffix: where each search starts);
and with multi-byte codes `starts.bits` (a bit per byte: an id starts there) and `blocks.npy`
(ids before each 32 KiB), which turn a byte offset back into a token offset. Peak memory: the
text plus 4 bytes per byte of it (~500 MB for 100 MB), pages of the two files. Built once, on
first use, under the index dir's lock; a rebuilt index is a new dir, without the old array.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
from pathlib import Path

import numpy as np

from textgen.core.dirlock import index_dir_lock
from textgen.core.errors import TextgenError
from textgen.core.filewrite import writing

ARRAY_DIR = "novelty"
FORMAT_VERSION = (
    2  # 2: prefix-free codes by frequency, raw sa.bin of byte offsets (1: big-endian ids)
)
SLICE = 1 << 22  # ids encoded / array entries compacted per step: 16-32 MB of temporaries
BLOCK_BITS = 4096  # bytes of `starts.bits` per entry of `blocks.npy`: 32 KiB of text, ~1 ms
KEY_BYTES = 16  # bytes per pattern compared at once in the vectorised search: most new text's
# matches are shorter (a 500-char sample's median is ~7), so few positions need `_search`
SAMPLE_EVERY = 256  # suffixes per key in `sample.npy` (6 MB for 100 MB): 8 rounds left on the maps
POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)  # (256,) set bits


def single_codes(used: int, where: Path) -> int | None:
    """Ids with 1-byte codes when `used` ids occur (None: every id gets 3 bytes)."""
    if used <= 256:
        return 256
    if used <= 256 + 255 * 255:  # 256 - e one-byte codes and e escapes of 256 codes each
        return 256 - -(-(used - 256) // 255)
    if used > 1 << 24:
        raise TextgenError(f"{used} distinct ids are too many for the novelty index", str(where))
    return None


def code_tables(rank: np.ndarray, single: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(lengths (vocab,), bytes (vocab, 3)) of each id's code; length 0 for unused ids."""
    used = rank >= 0
    if single is None:
        codes = np.stack([rank >> 16, (rank >> 8) & 255, rank & 255], axis=1)  # (vocab, 3)
        return np.where(used, 3, 0).astype(np.int64), (codes & 255).astype(np.uint8)
    rest = np.maximum(rank - single, 0)  # (vocab,) rank among the 2-byte codes
    one = rank < single
    first = np.where(one, rank, single + rest // 256)  # (vocab,)
    codes = np.stack([first, rest % 256, np.zeros_like(rank)], axis=1)  # (vocab, 3)
    lengths = np.where(used, np.where(one, 1, 2), 0).astype(np.int64)  # (vocab,)
    return lengths, (codes & 255).astype(np.uint8)


def encode_with(lengths: np.ndarray, codes: np.ndarray, ids: np.ndarray):
    """(bytes (sum of lengths,), starts (ids + 1,)) of `ids` coded with the tables."""
    size = lengths[ids]  # (ids,)
    starts = np.zeros(len(ids) + 1, np.int64)  # (ids + 1,) byte offset of each id, then the end
    np.cumsum(size, out=starts[1:])
    out = np.empty(int(starts[-1]), np.uint8)  # (bytes,)
    for k in range(3):
        has = size > k  # (ids,)
        out[starts[:-1][has] + k] = codes[ids[has], k]
    return out, starts


def window_at(text: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(positions, KEY_BYTES) bytes of the text from each offset, zeros past its end."""
    where = at[:, None] + np.arange(KEY_BYTES)  # (positions, KEY_BYTES)
    if len(at) == 0 or at.max() <= len(text) - KEY_BYTES:
        return text[where]  # (positions, KEY_BYTES)
    out = text[np.minimum(where, len(text) - 1)]  # (positions, KEY_BYTES)
    out[where >= len(text)] = 0
    return out


def keys_at(text: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(positions,) `KEY_BYTES`-byte strings of the text from each offset (zero-padded)."""
    return window_at(text, at).view(f"S{KEY_BYTES}")[:, 0]


def map_file(f) -> mmap.mmap | None:
    """A read-only map of an open file (None for an empty one)."""
    size = os.fstat(f.fileno()).st_size
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None


def is_built(index) -> bool:
    """Whether `index` has a suffix array of its current training split."""
    path = Path(index.directory) / ARRAY_DIR / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("version") == FORMAT_VERSION and meta.get("tokens") == len(index.train)


def build(index) -> None:
    """Builds `INDEX/novelty/` (under the index dir's lock; a temp dir renamed into place).

    Peak memory: the coded text plus 4 bytes per byte of it (8 past 2^31 bytes), as pages of
    the two files being written; the rest is bounded slices.
    """
    import shutil

    directory = Path(index.directory)
    with index_dir_lock(directory).acquire(wait=True):
        if is_built(index):
            return  # built by a process this one waited for
        tmp, out = directory / f".{ARRAY_DIR}.tmp-{os.getpid()}", directory / ARRAY_DIR
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with writing("the novelty index", directory):
                tmp.mkdir()
                meta = _build_into(tmp, index)
                (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _build_into(tmp: Path, index) -> dict:
    """Writes the files of `INDEX/novelty/` into `tmp`; returns its meta.json."""
    tokens = len(index.train)
    counts = np.zeros(index.vocab_size, np.int64)  # (vocab,) occurrences in the split
    for start in range(0, tokens, SLICE):
        counts += np.bincount(index.train[start : start + SLICE], minlength=index.vocab_size)
    order = np.argsort(-counts, kind="stable")  # (vocab,) most frequent first
    rank = np.full(index.vocab_size, -1, np.int64)  # (vocab,)
    rank[order] = np.arange(index.vocab_size)
    rank[counts == 0] = -1
    single = single_codes(int(np.count_nonzero(counts)), tmp.parent)
    np.save(tmp / "rank.npy", rank)
    size = _write_text(tmp, index, rank, single)
    item = 4 if size < 1 << 31 else 8
    _sort(tmp, size, item)
    _compact_and_sample(tmp, size, item)
    return {
        "version": FORMAT_VERSION,
        "tokens": tokens,
        "bytes": size,
        "single": single,
        "sa_item": item,
    }


def _write_text(tmp: Path, index, rank: np.ndarray, single: int | None) -> int:
    """Writes `text.bin` (and `starts.bits`, `blocks.npy` for multi-byte codes); its bytes."""
    lengths, codes = code_tables(rank, single)
    multi = bool(lengths.max(initial=0) > 1)
    size, carry = 0, np.zeros(0, bool)  # carry: start flags not yet packed (< 8)
    with open(tmp / "text.bin", "wb") as text, open(tmp / "starts.bits", "wb") as bits:
        for start in range(0, len(index.train), SLICE):
            coded, starts = encode_with(lengths, codes, index.train[start : start + SLICE])
            text.write(coded)
            size += len(coded)
            if multi:
                flags = np.zeros(len(coded), bool)  # (bytes,) an id starts here
                flags[starts[:-1]] = True
                flags = np.concatenate([carry, flags])
                whole = len(flags) // 8 * 8
                bits.write(np.packbits(flags[:whole], bitorder="little").tobytes())
                carry = flags[whole:]
        bits.write(np.packbits(carry, bitorder="little").tobytes())
    if not multi:
        (tmp / "starts.bits").unlink()
        return size
    packed = np.fromfile(tmp / "starts.bits", np.uint8)  # (bytes / 8,)
    blocks = np.arange(0, len(packed), BLOCK_BITS)  # (blocks,)
    per_block = np.add.reduceat(POPCOUNT[packed], blocks, dtype=np.int64)  # (blocks,)
    np.save(tmp / "blocks.npy", np.concatenate([[0], np.cumsum(per_block)]))  # (blocks + 1,)
    return size


def _sort(tmp: Path, size: int, item: int) -> None:
    """libdivsufsort of memory-mapped `text.bin` straight into memory-mapped `sa.bin`."""
    from pydivsufsort.dll import libdivsufsort, libdivsufsort64

    with open(tmp / "sa.bin", "wb") as f:
        f.truncate(size * item)
    if size == 0:
        return
    text = np.memmap(tmp / "text.bin", np.uint8, "r", shape=(size,))  # (bytes,)
    sa = np.memmap(tmp / "sa.bin", f"<i{item}", "r+", shape=(size,))  # (bytes,)
    sort = libdivsufsort.divsufsort if item == 4 else libdivsufsort64.divsufsort64
    count = ctypes.c_int32 if item == 4 else ctypes.c_int64
    status = sort(ctypes.c_void_p(text.ctypes.data), ctypes.c_void_p(sa.ctypes.data), count(size))
    sa.flush()
    del text, sa
    if status:
        raise TextgenError(f"libdivsufsort failed ({status})", str(tmp))


def _compact_and_sample(tmp: Path, size: int, item: int) -> None:
    """Drops the suffixes inside a code from `sa.bin` (in place, in slices); `sample.npy`."""
    bits = np.fromfile(tmp / "starts.bits", np.uint8) if (tmp / "starts.bits").is_file() else None
    text = np.memmap(tmp / "text.bin", np.uint8, "r") if size else None  # (bytes,)
    kept, sample = 0, [np.zeros(0, f"S{KEY_BYTES}")]
    with open(tmp / "sa.bin", "r+b") as f:
        for start in range(0, size, SLICE):
            sa = np.empty(min(SLICE, size - start), f"<i{item}")  # (slice,) byte offsets
            f.seek(start * item)
            f.readinto(memoryview(sa).cast("B"))
            if bits is not None:
                sa = sa[(bits[sa >> 3] >> (sa & 7)) & 1 == 1]  # (kept,) those at an id's start
                f.seek(kept * item)  # behind the reads: the write never overtakes them
                f.write(memoryview(sa).cast("B"))
            sample.append(keys_at(text, sa[-kept % SAMPLE_EVERY :: SAMPLE_EVERY].astype(np.int64)))
            kept += len(sa)
        f.truncate(kept * item)
    np.save(tmp / "sample.npy", np.concatenate(sample))  # (kept / SAMPLE_EVERY,)
