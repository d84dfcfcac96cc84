"""Is a sample copied from the training text? Queries of the suffix array (`suffix_array.py`).

`report(text)` gives, per sample: the longest run of its tokens that occurs verbatim in the
training split (length, offset there, the text, and where it lies in the sample), the share of
its `NGRAM`-token n-grams found there, the stretches of the sample covered by copies of at least
`NGRAM` tokens (what the server's page marks), and for a documents index whether the whole
sample is one of the training documents.
All positions are binary-searched at once (numpy, on 16-byte keys, through memory maps: a few
pages of each file per query); matching statistics skip the rest: the match at i is at least
the one at i-1 less a token, so a position whose n-gram is known found and that cannot beat
the longest so far (in a copied sample, every one after the first) needs no search. The
copied stretches are still exact: a skipped position's copy is covered by the first position
searched after it (the match there reaches at least as far).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np

from textgen.core.errors import TextgenError
from textgen.data.corpus import load_index
from textgen.data.suffix_array import (
    ARRAY_DIR,
    BLOCK_BITS,
    KEY_BYTES,
    POPCOUNT,
    SAMPLE_EVERY,
    build,
    code_tables,
    encode_with,
    is_built,
    keys_at,
    map_file,
    window_at,
)  # fmt: skip
from textgen.data.tokenizers import same_vocabulary

NGRAM = 20  # tokens per n-gram (characters for a char run): a copied phrase, not a common word
MAX_MATCH = 1024  # tokens compared per position: a longer copy is reported as this long


class NoveltyIndex:
    """An opened suffix array of an index's training split (see the module docstring).

    Args:
        index: An opened `corpus.Index`.
    """

    def __init__(self, index) -> None:
        self.index = index
        self.directory = Path(index.directory) / ARRAY_DIR
        meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        self.tokens, self.single = meta["tokens"], meta["single"]
        self._lengths, self._codes = code_tables(np.load(self.directory / "rank.npy"), self.single)
        self._files = [open(self.directory / n, "rb") for n in ("text.bin", "sa.bin")]  # noqa: SIM115
        self.text, self._sa = (map_file(f) for f in self._files)  # (bytes,) and (tokens * item,)
        code = "i" if meta["sa_item"] == 4 else "q"
        self._sa_view = memoryview(self._sa).cast(code) if self._sa is not None else ()
        self._sa_ids = np.frombuffer(self._sa_view, f"<{code}")  # (tokens,) the same, for numpy
        self._text_ids = np.frombuffer(self.text or b"", np.uint8)  # (bytes,)
        self._sample = np.load(self.directory / "sample.npy")  # (tokens / SAMPLE_EVERY,) S16 keys
        self._bits = self._blocks = None
        if (self.directory / "starts.bits").is_file():  # multi-byte codes
            self._bits = np.fromfile(self.directory / "starts.bits", np.uint8)  # (bytes / 8,)
            self._blocks = np.load(self.directory / "blocks.npy")  # (blocks + 1,)
        self.eot = index.tokenizer.end_of_text_id
        self._char_lengths = index.tokenizer.token_char_lengths()  # (vocab,) chars per id

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
        coded, starts = encode_with(self._lengths, self._codes, ids)
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
        """`_search` of every `coded[begin:end]` at once, on the first `KEY_BYTES` bytes of each.

        Suffixes and patterns compare as their first `KEY_BYTES` bytes, zero-padded; that order
        agrees with the true one except between equal keys, so a pattern settles unless some
        suffix shares its key (a match of `KEY_BYTES` bytes, or a short pattern followed by zeros).

        Returns:
            (bytes matched, byte offset, settled), each (positions,).
        """
        count = len(self._sa_ids)
        if count == 0:  # an empty training split: nothing matches
            return np.zeros(len(begin), np.int64), np.zeros(len(begin), np.int64), begin >= 0
        where = begin[:, None] + np.arange(KEY_BYTES)  # (positions, KEY_BYTES)
        pattern = coded[np.minimum(where, max(len(coded) - 1, 0))] if len(coded) else where * 0
        pattern = np.where(where < end[:, None], pattern, 0).astype(
            np.uint8
        )  # (positions, KEY_BYTES)
        keys = pattern.view(f"S{KEY_BYTES}")[:, 0]  # (positions,) byte strings compare as memcmp
        after = np.searchsorted(self._sample, keys)  # (positions,) first sampled key >= it
        lo = np.maximum((after - 1) * SAMPLE_EVERY + 1, 0)  # past the sampled suffix below it
        hi = np.minimum(after * SAMPLE_EVERY, count)  # (positions,) at most the one above it
        while np.any(lo < hi):  # the first suffix whose key >= the pattern's
            mid = (lo + hi) >> 1  # (positions,)
            less = keys_at(self._text_ids, self._sa_ids[np.minimum(mid, count - 1)]) < keys
            up = (lo < hi) & less  # (positions,) the pattern is past `mid`
            lo, hi = np.where(up, mid + 1, lo), np.where(less, hi, np.minimum(mid, hi))
        best, best_at = np.full(len(begin), -1), np.zeros(len(begin), np.int64)
        for rank in (lo - 1, lo):
            ok = (rank >= 0) & (rank < count)  # (positions,)
            at = self._sa_ids[np.clip(rank, 0, count - 1)].astype(np.int64)
            differ = window_at(self._text_ids, at) != pattern  # (positions, KEY_BYTES)
            same = np.where(differ.any(axis=1), differ.argmax(axis=1), KEY_BYTES)
            got = np.where(ok, np.minimum(same, np.minimum(end - begin, len(self.text) - at)), -1)
            take = (got > best) | (got == best) & (at > best_at)  # `_search`'s tie: the later
            best, best_at = np.where(take, got, best), np.where(take, at, best_at)
        top = window_at(self._text_ids, self._sa_ids[np.minimum(lo, count - 1)].astype(np.int64))
        shared = (lo < count) & np.all(top == pattern, axis=1)  # a suffix has the same key
        return np.maximum(best, 0), best_at, ~shared

    def _token_offset(self, at: int) -> int:
        """The token offset of the id whose code starts at byte `at` of `text.bin`."""
        if self._bits is None:
            return at
        block, byte = at // (8 * BLOCK_BITS), at >> 3
        before = int(POPCOUNT[self._bits[block * BLOCK_BITS : byte]].sum(dtype=np.int64))
        partial = int(self._bits[byte]) & ((1 << (at & 7)) - 1) if byte < len(self._bits) else 0
        return int(self._blocks[block]) + before + int(POPCOUNT[partial])

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
            sample shorter than an n-gram counts as one, itself), `longest_span` ([start, end)
            of the longest span in the sample, in characters), `copied_spans` (the [start, end)
            character ranges of the sample covered by spans of at least `ngram` tokens found
            verbatim, overlapping ones merged), and for a documents index `in_training`
            (whether the whole sample is a training document).
        """
        ids = np.asarray(self.index.tokenizer.encode(text), np.int64)  # (tokens,)
        n = min(NGRAM, len(ids))
        starts = max(len(ids) - n + 1, 0)  # positions that begin an n-gram
        lengths, best_start, best_at = self._match_lengths(ids, n, starts)
        best = int(lengths.max()) if len(ids) else 0
        found = float(np.mean(lengths[:starts] >= n)) if starts and n else 0.0
        chars = np.concatenate([[0], np.cumsum(self._char_lengths[ids])]).astype(np.int64)
        out = {
            "longest": best,
            "longest_at": self._token_offset(best_at) if best else 0,
            "longest_text": self.index.tokenizer.decode(ids[best_start : best_start + best]),
            "longest_span": [int(chars[best_start]), int(chars[best_start + best])],
            "ngram": NGRAM,
            "ngrams_found": round(found, 4),
            "copied_spans": [[int(chars[a]), int(chars[b])] for a, b in _spans(lengths, NGRAM)],
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
                if not settled[i]:  # a suffix shares its first KEY_BYTES bytes: search the bytes
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


def _spans(lengths: np.ndarray, shortest: int) -> list[tuple[int, int]]:
    """Token ranges covered by matches of at least `shortest` tokens (`lengths[i]`: the match
    starting at token i), overlapping or touching ones merged."""
    spans: list[tuple[int, int]] = []
    for start in np.flatnonzero(lengths >= shortest):
        end = int(start + lengths[start])
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((int(start), end))
    return spans


def _common(a: bytes, b: bytes) -> int:
    """Bytes in the common prefix of two byte strings."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    diff = np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n)  # (n,)
    return int(np.argmax(diff))
