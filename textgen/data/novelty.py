"""Is a sample copied from the training text? A suffix array of the training split, on disk.

`build` writes `INDEX/novelty/`: `text.bin`, the training split with each id as a prefix-free
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

`report(text)` gives, per sample: the longest run of its tokens that occurs verbatim in the
training split (length, offset there, the text), the share of its `NGRAM`-token n-grams found
there, and for a documents index whether the whole sample is one of the training documents.
All positions are binary-searched at once (numpy, on 16-byte keys, through memory maps: a few
pages of each file per query); matching statistics skip the rest: the match at i is at least
the one at i-1 less a token, so a position whose n-gram is known found and that cannot beat
the longest so far (in a copied sample, every one after the first) needs no search.
"""

from __future__ import annotations

import bisect
import ctypes
import json
import mmap
import os
from pathlib import Path

import numpy as np

from textgen.core.dirlock import index_dir_lock
from textgen.core.errors import TextgenError
from textgen.core.filewrite import writing
from textgen.data.corpus import load_index
from textgen.data.tokenizers import same_vocabulary

NGRAM = 20  # tokens per n-gram (characters for a char run): a copied phrase, not a common word
MAX_MATCH = 1024  # tokens compared per position: a longer copy is reported as this long
_DIR = "novelty"
_VERSION = 2  # 2: prefix-free codes by frequency, raw sa.bin of byte offsets (1: big-endian ids)
_SLICE = 1 << 22  # ids encoded / array entries compacted per step: 16-32 MB of temporaries
_BLOCK_BITS = 4096  # bytes of `starts.bits` per entry of `blocks.npy`: 32 KiB of text, ~1 ms
_KEY = 16  # bytes per pattern compared at once in the vectorised search: most new text's
# matches are shorter (a 500-char sample's median is ~7), so few positions need `_search`
_SAMPLE = 256  # suffixes per key in `sample.npy` (6 MB for 100 MB): 8 rounds left on the maps
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)  # (256,) set bits


def _single_codes(used: int, where: Path) -> int | None:
    """Ids with 1-byte codes when `used` ids occur (None: every id gets 3 bytes)."""
    if used <= 256:
        return 256
    if used <= 256 + 255 * 255:  # 256 - e one-byte codes and e escapes of 256 codes each
        return 256 - -(-(used - 256) // 255)
    if used > 1 << 24:
        raise TextgenError(f"{used} distinct ids are too many for the novelty index", str(where))
    return None


def _code_tables(rank: np.ndarray, single: int | None) -> tuple[np.ndarray, np.ndarray]:
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


def _encode_with(lengths: np.ndarray, codes: np.ndarray, ids: np.ndarray):
    """(bytes (sum of lengths,), starts (ids + 1,)) of `ids` coded with the tables."""
    size = lengths[ids]  # (ids,)
    starts = np.zeros(len(ids) + 1, np.int64)  # (ids + 1,) byte offset of each id, then the end
    np.cumsum(size, out=starts[1:])
    out = np.empty(int(starts[-1]), np.uint8)  # (bytes,)
    for k in range(3):
        has = size > k  # (ids,)
        out[starts[:-1][has] + k] = codes[ids[has], k]
    return out, starts


class NoveltyIndex:
    """An opened suffix array of an index's training split (see the module docstring).

    Args:
        index: An opened `corpus.Index`.
    """

    def __init__(self, index) -> None:
        self.index = index
        self.directory = Path(index.directory) / _DIR
        meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        self.tokens, self.single = meta["tokens"], meta["single"]
        self._lengths, self._codes = _code_tables(np.load(self.directory / "rank.npy"), self.single)
        self._files = [open(self.directory / n, "rb") for n in ("text.bin", "sa.bin")]  # noqa: SIM115
        self.text, self._sa = (_map(f) for f in self._files)  # (bytes,) and (tokens * item,)
        code = "i" if meta["sa_item"] == 4 else "q"
        self._sa_view = memoryview(self._sa).cast(code) if self._sa is not None else ()
        self._sa_ids = np.frombuffer(self._sa_view, f"<{code}")  # (tokens,) the same, for numpy
        self._text_ids = np.frombuffer(self.text or b"", np.uint8)  # (bytes,)
        self._sample = np.load(self.directory / "sample.npy")  # (tokens / _SAMPLE,) S16 keys
        self._bits = self._blocks = None
        if (self.directory / "starts.bits").is_file():  # multi-byte codes
            self._bits = np.fromfile(self.directory / "starts.bits", np.uint8)  # (bytes / 8,)
            self._blocks = np.load(self.directory / "blocks.npy")  # (blocks + 1,)
        self.eot = index.tokenizer.end_of_text_id

    @classmethod
    def open(cls, index) -> NoveltyIndex:
        """Opens the suffix array of `index`, building it first if it is not there."""
        if not is_built(index):
            build(index)
        return cls(index)

    @classmethod
    def for_run(cls, run) -> NoveltyIndex:
        """The suffix array of a run's index (`data.index_dir` of its config).

        Raises:
            TextgenError: the index is gone or is not the run's (one line saying how to
                rebuild it).
        """
        index_dir = run.load_config().data.index_dir
        how = f"rebuild it with `python -m textgen.index {Path(run.path) / 'config.yaml'}`"
        if not (Path(index_dir) / "meta.json").is_file():
            raise TextgenError(f"novelty needs the run's index, which is gone; {how}", index_dir)
        index = load_index(index_dir)
        if not same_vocabulary(index.tokenizer, run.load_tokenizer()):
            raise TextgenError(f"the index is not the run's (another vocabulary); {how}", index_dir)
        return cls.open(index)

    def close(self) -> None:
        """Unmaps the files."""
        self._sa_ids = self._text_ids = None  # numpy's views of the maps go first
        if isinstance(self._sa_view, memoryview):
            self._sa_view.release()
        for m in (self.text, self._sa):
            if m is not None:
                m.close()
        for f in self._files:
            f.close()

    def _encode(self, ids: np.ndarray) -> tuple[bytes, list[int]]:
        """(codes, byte offset of each id then the end); an id not in the split has no bytes."""
        coded, starts = _encode_with(self._lengths, self._codes, ids)
        return coded.tobytes(), starts.tolist()

    def _search(self, pattern: bytes) -> tuple[int, int]:
        """(bytes, byte offset) of the longest prefix of `pattern` in the training split."""
        sa, text, n = self._sa_view, self.text, len(pattern)
        lo, hi = 0, len(sa)
        while lo < hi:  # the first suffix >= pattern
            mid = (lo + hi) >> 1
            at = sa[mid]
            if text[at : at + n] < pattern:
                lo = mid + 1
            else:
                hi = mid
        best = (0, 0)
        for rank in (lo - 1, lo):  # the longest match is with a neighbour of the insertion point
            if 0 <= rank < len(sa):
                at = sa[rank]
                best = max(best, (_common(pattern, text[at : at + n]), at))
        return best

    def _key_search(self, coded: np.ndarray, begin: np.ndarray, end: np.ndarray):
        """`_search` of every `coded[begin:end]` at once, on the first `_KEY` bytes of each.

        Suffixes and patterns compare as their first `_KEY` bytes, zero-padded; that order
        agrees with the true one except between equal keys, so a pattern settles unless some
        suffix shares its key (a match of `_KEY` bytes, or a short pattern followed by zeros).

        Returns:
            (bytes matched, byte offset, settled), each (positions,).
        """
        count = len(self._sa_ids)
        if count == 0:  # an empty training split: nothing matches
            return np.zeros(len(begin), np.int64), np.zeros(len(begin), np.int64), begin >= 0
        where = begin[:, None] + np.arange(_KEY)  # (positions, _KEY)
        pattern = coded[np.minimum(where, max(len(coded) - 1, 0))] if len(coded) else where * 0
        pattern = np.where(where < end[:, None], pattern, 0).astype(np.uint8)  # (positions, _KEY)
        keys = pattern.view(f"S{_KEY}")[:, 0]  # (positions,) byte strings compare as memcmp
        after = np.searchsorted(self._sample, keys)  # (positions,) first sampled key >= it
        lo = np.maximum((after - 1) * _SAMPLE + 1, 0)  # past the sampled suffix below it
        hi = np.minimum(after * _SAMPLE, count)  # (positions,) at most the one above it
        while np.any(lo < hi):  # the first suffix whose key >= the pattern's
            mid = (lo + hi) >> 1  # (positions,)
            less = _keys(self._text_ids, self._sa_ids[np.minimum(mid, count - 1)]) < keys
            up = (lo < hi) & less  # (positions,) the pattern is past `mid`
            lo, hi = np.where(up, mid + 1, lo), np.where(less, hi, np.minimum(mid, hi))
        best, best_at = np.full(len(begin), -1), np.zeros(len(begin), np.int64)
        for rank in (lo - 1, lo):
            ok = (rank >= 0) & (rank < count)  # (positions,)
            at = self._sa_ids[np.clip(rank, 0, count - 1)].astype(np.int64)
            differ = _window(self._text_ids, at) != pattern  # (positions, _KEY)
            same = np.where(differ.any(axis=1), differ.argmax(axis=1), _KEY)
            got = np.where(ok, np.minimum(same, np.minimum(end - begin, len(self.text) - at)), -1)
            take = (got > best) | (got == best) & (at > best_at)  # `_search`'s tie: the later
            best, best_at = np.where(take, got, best), np.where(take, at, best_at)
        top = _window(self._text_ids, self._sa_ids[np.minimum(lo, count - 1)].astype(np.int64))
        shared = (lo < count) & np.all(top == pattern, axis=1)  # a suffix has the same key
        return np.maximum(best, 0), best_at, ~shared

    def _token_offset(self, at: int) -> int:
        """The token offset of the id whose code starts at byte `at` of `text.bin`."""
        if self._bits is None:
            return at
        block, byte = at // (8 * _BLOCK_BITS), at >> 3
        before = int(_POPCOUNT[self._bits[block * _BLOCK_BITS : byte]].sum(dtype=np.int64))
        partial = int(self._bits[byte]) & ((1 << (at & 7)) - 1) if byte < len(self._bits) else 0
        return int(self._blocks[block]) + before + int(_POPCOUNT[partial])

    def contains(self, ids: np.ndarray) -> bool:
        """Whether the ids occur verbatim in the training split."""
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return True
        if not np.all(self._lengths[ids] > 0):
            return False  # an id that is not in the split
        coded, _ = self._encode(ids)
        return self._search(coded)[0] == len(coded)

    def report(self, text: str) -> dict:
        """What of `text` occurs in the training split.

        Returns:
            `longest` (tokens of the longest span found verbatim, at most `MAX_MATCH`),
            `longest_at` (its token offset in the training split), `longest_text`, `ngram` (the
            n-gram size), `ngrams_found` (the share of the sample's n-grams found there; a
            sample shorter than an n-gram counts as one, itself), and for a documents index
            `in_training` (whether the whole sample is a training document).
        """
        ids = np.asarray(self.index.tokenizer.encode(text), np.int64)  # (tokens,)
        n = min(NGRAM, len(ids))
        starts = max(len(ids) - n + 1, 0)  # positions that begin an n-gram
        lengths, best_start, best_at = self._match_lengths(ids, n, starts)
        best = int(lengths.max()) if len(ids) else 0
        found = float(np.mean(lengths[:starts] >= n)) if starts and n else 0.0
        out = {
            "longest": best,
            "longest_at": self._token_offset(best_at) if best else 0,
            "longest_text": self.index.tokenizer.decode(ids[best_start : best_start + best]),
            "ngram": NGRAM,
            "ngrams_found": round(found, 4),
        }
        if self.eot is not None:
            out["in_training"] = self._is_document(ids)
        return out

    def _match_lengths(self, ids: np.ndarray, n: int, starts: int) -> tuple[np.ndarray, int, int]:
        """(tokens matched from each position (a lower bound where it cannot matter), first
        position of the longest, its byte offset in the split)."""
        known = self._lengths[ids] > 0  # (tokens,) ids that occur in the split at all
        breaks = np.flatnonzero(~known)  # (unknown,) a match stops before each
        stop = np.append(breaks, len(ids))[np.searchsorted(breaks, np.arange(len(ids)))]
        stop = np.minimum(stop, np.arange(len(ids)) + MAX_MATCH).tolist()  # (tokens,) exclusive
        coded, offsets = self._encode(ids)  # unknown ids have no bytes: never in a pattern
        begin, end = np.array(offsets[:-1], np.int64), np.array(offsets, np.int64)[stop]
        got, at, settled = self._key_search(np.frombuffer(coded, np.uint8), begin, end)
        known_at = np.minimum(np.searchsorted(offsets, begin + got, "right") - 1, stop)
        known_len = (known_at - np.arange(len(ids))).tolist()  # (tokens,) where settled
        at, settled = at.tolist(), settled.tolist()
        lengths = [0] * len(ids)
        best, best_start, best_at, lower = 0, 0, 0, 0
        for i in range(len(ids)):
            upper = stop[i] - i  # the most this position can match
            if (lower >= n or i >= starts) and upper <= best:
                lengths[i] = lower  # its n-gram is found, and it cannot be the longest
            elif upper > 0:
                lengths[i] = known_len[i]
                if not settled[i]:  # a suffix shares its first _KEY bytes: search the bytes
                    got_i, at[i] = self._search(coded[offsets[i] : offsets[stop[i]]])
                    lengths[i] = bisect.bisect_right(offsets, offsets[i] + got_i, i, stop[i] + 1)
                    lengths[i] -= 1 + i
                if lengths[i] > best:
                    best, best_start, best_at = lengths[i], i, at[i]
            lower = max(lengths[i] - 1, 0)  # the match at i, less its first token, starts at i+1
        return np.array(lengths, np.int64), best_start, best_at

    def _is_document(self, ids: np.ndarray) -> bool:
        """Whether `ids` is a whole training document (between end-of-text tokens)."""
        eot = np.array([self.eot], np.int64)
        if self.contains(np.concatenate([eot, ids, eot])):
            return True
        first = np.concatenate([ids, eot])  # the first document has no end-of-text before it
        if self.text is None or not np.all(self._lengths[first] > 0):
            return False
        coded, _ = self._encode(first)
        return self.text[: len(coded)] == coded


def _window(text: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(positions, _KEY) bytes of the text from each offset, zeros past its end."""
    where = at[:, None] + np.arange(_KEY)  # (positions, _KEY)
    if len(at) == 0 or at.max() <= len(text) - _KEY:
        return text[where]  # (positions, _KEY)
    out = text[np.minimum(where, len(text) - 1)]  # (positions, _KEY)
    out[where >= len(text)] = 0
    return out


def _keys(text: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(positions,) `_KEY`-byte strings of the text from each offset (zero-padded)."""
    return _window(text, at).view(f"S{_KEY}")[:, 0]


def _common(a: bytes, b: bytes) -> int:
    """Bytes in the common prefix of two byte strings."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    diff = np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n)  # (n,)
    return int(np.argmax(diff))


def _map(f) -> mmap.mmap | None:
    """A read-only map of an open file (None for an empty one)."""
    size = os.fstat(f.fileno()).st_size
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None


def is_built(index) -> bool:
    """Whether `index` has a suffix array of its current training split."""
    path = Path(index.directory) / _DIR / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("version") == _VERSION and meta.get("tokens") == len(index.train)


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
        tmp, out = directory / f".{_DIR}.tmp-{os.getpid()}", directory / _DIR
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
    for start in range(0, tokens, _SLICE):
        counts += np.bincount(index.train[start : start + _SLICE], minlength=index.vocab_size)
    order = np.argsort(-counts, kind="stable")  # (vocab,) most frequent first
    rank = np.full(index.vocab_size, -1, np.int64)  # (vocab,)
    rank[order] = np.arange(index.vocab_size)
    rank[counts == 0] = -1
    single = _single_codes(int(np.count_nonzero(counts)), tmp.parent)
    np.save(tmp / "rank.npy", rank)
    size = _write_text(tmp, index, rank, single)
    item = 4 if size < 1 << 31 else 8
    _sort(tmp, size, item)
    _compact_and_sample(tmp, size, item)
    return {"version": _VERSION, "tokens": tokens, "bytes": size, "single": single, "sa_item": item}


def _write_text(tmp: Path, index, rank: np.ndarray, single: int | None) -> int:
    """Writes `text.bin` (and `starts.bits`, `blocks.npy` for multi-byte codes); its bytes."""
    lengths, codes = _code_tables(rank, single)
    multi = bool(lengths.max(initial=0) > 1)
    size, carry = 0, np.zeros(0, bool)  # carry: start flags not yet packed (< 8)
    with open(tmp / "text.bin", "wb") as text, open(tmp / "starts.bits", "wb") as bits:
        for start in range(0, len(index.train), _SLICE):
            coded, starts = _encode_with(lengths, codes, index.train[start : start + _SLICE])
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
    blocks = np.arange(0, len(packed), _BLOCK_BITS)  # (blocks,)
    per_block = np.add.reduceat(_POPCOUNT[packed], blocks, dtype=np.int64)  # (blocks,)
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
    kept, sample = 0, [np.zeros(0, f"S{_KEY}")]
    with open(tmp / "sa.bin", "r+b") as f:
        for start in range(0, size, _SLICE):
            sa = np.empty(min(_SLICE, size - start), f"<i{item}")  # (slice,) byte offsets
            f.seek(start * item)
            f.readinto(memoryview(sa).cast("B"))
            if bits is not None:
                sa = sa[(bits[sa >> 3] >> (sa & 7)) & 1 == 1]  # (kept,) those at an id's start
                f.seek(kept * item)  # behind the reads: the write never overtakes them
                f.write(memoryview(sa).cast("B"))
            sample.append(_keys(text, sa[-kept % _SAMPLE :: _SAMPLE].astype(np.int64)))
            kept += len(sa)
        f.truncate(kept * item)
    np.save(tmp / "sample.npy", np.concatenate(sample))  # (kept / _SAMPLE,)
