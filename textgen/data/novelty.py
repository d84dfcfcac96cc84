"""Is a sample copied from the training text? A suffix array of the training split, on disk.

`NoveltyIndex.build` writes `INDEX/novelty/`: `text.bin`, the training split's ids as big-endian
integers of the narrowest width that holds the vocabulary (1, 2 or 4 bytes, so comparing bytes
compares ids in order), and `sa.npy`, its suffix array (int32, int64 past 2^31 bytes). The array
is built by libdivsufsort (`pydivsufsort`: a wheel, C speed, 5n bytes for n bytes of text) over
the bytes; with wider ids, the suffixes that start inside an id are dropped. It is built once,
on first use, under the index dir's lock; a rebuilt index is a new dir, so the array goes with
the old one. Queries memory-map both files and binary-search them, so they touch a few pages of
each, never the whole array (a 100 MB corpus does not need its 400 MB array in memory).

`report(text)` gives, per sample: the longest run of its tokens that occurs verbatim in the
training split (length, offset there, the text, and where it lies in the sample), the share of
its `NGRAM`-token n-grams found there, the stretches of the sample covered by copies of at least
`NGRAM` tokens (what the server's page marks), and for a documents index whether the whole
sample is one of the training documents.
"""

from __future__ import annotations

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
_VERSION = 1


def _width(vocab_size: int) -> int:
    """Bytes per id in `text.bin`."""
    return 1 if vocab_size <= 1 << 8 else 2 if vocab_size <= 1 << 16 else 4


class NoveltyIndex:
    """An opened suffix array of an index's training split (see the module docstring).

    Args:
        index: An opened `corpus.Index`.
    """

    def __init__(self, index) -> None:
        self.index = index
        self.directory = Path(index.directory) / _DIR
        meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        self.width, self.tokens = meta["width"], meta["tokens"]
        self._text_file = open(self.directory / "text.bin", "rb")  # noqa: SIM115 (kept open)
        self._sa_file = open(self.directory / "sa.npy", "rb")  # noqa: SIM115 (kept open)
        self.text = _map(self._text_file)  # (tokens * width,) bytes
        sa = np.load(self.directory / "sa.npy", mmap_mode="r")  # header only; the data is mapped
        self._sa_offset, self._sa_item = sa.offset, sa.dtype.itemsize
        self._sa = _map(self._sa_file)
        self._sa_code = "<i" if self._sa_item == 4 else "<q"
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
        for m in (self.text, self._sa):
            if m is not None:
                m.close()
        self._text_file.close()
        self._sa_file.close()

    def _suffix(self, rank: int) -> int:
        """The token offset of the suffix of this rank."""
        at = self._sa_offset + rank * self._sa_item
        return int.from_bytes(self._sa[at : at + self._sa_item], "little", signed=True)

    def _bytes(self, offset: int, tokens: int) -> bytes:
        """Up to `tokens` ids from token `offset` of the training split, as stored."""
        return self.text[offset * self.width : (offset + tokens) * self.width]

    def _search(self, pattern: bytes) -> tuple[int, int]:
        """(length in tokens, offset) of the longest prefix of `pattern` in the training split."""
        lo, hi, tokens = 0, self.tokens, len(pattern) // self.width
        while lo < hi:  # the first suffix >= pattern
            mid = (lo + hi) // 2
            if self._bytes(self._suffix(mid), tokens) < pattern:
                lo = mid + 1
            else:
                hi = mid
        best = (0, 0)
        for rank in (lo - 1, lo):  # the longest match is with a neighbour of the insertion point
            if 0 <= rank < self.tokens:
                offset = self._suffix(rank)
                best = max(best, (self._common(pattern, self._bytes(offset, tokens)), offset))
        return best

    def _common(self, a: bytes, b: bytes) -> int:
        """Tokens in the common prefix of two byte strings of ids."""
        n = min(len(a), len(b))
        if a[:n] == b[:n]:
            return n // self.width
        diff = np.frombuffer(a[:n], np.uint8) != np.frombuffer(b[:n], np.uint8)  # (n,)
        return int(np.argmax(diff)) // self.width

    def _encode(self, ids: np.ndarray) -> bytes:
        """Ids as stored in `text.bin` (big-endian)."""
        return np.asarray(ids).astype(f">u{self.width}").tobytes()

    def contains(self, ids: np.ndarray) -> bool:
        """Whether the ids occur verbatim in the training split."""
        return len(ids) == 0 or self._search(self._encode(ids))[0] == len(ids)

    def report(self, text: str) -> dict:
        """What of `text` occurs in the training split.

        Returns:
            `longest` (tokens of the longest span found verbatim), `longest_at` (its token
            offset in the training split), `longest_text`, `ngram` (the n-gram size),
            `ngrams_found` (the share of the sample's n-grams found there; a sample shorter
            than an n-gram counts as one, itself), `longest_span` ([start, end) of the longest
            span in the sample, in characters), `copied_spans` (the [start, end) character
            ranges of the sample covered by spans of at least `ngram` tokens found verbatim,
            overlapping ones merged), and for a documents index `in_training` (whether the
            whole sample is a training document).
        """
        ids = np.asarray(self.index.tokenizer.encode(text), np.int64)  # (tokens,)
        stored = self._encode(ids)
        lengths = np.zeros(len(ids), np.int64)  # (tokens,) longest match starting at each
        best, best_at, best_start = 0, 0, 0
        for i in range(len(ids)):
            if i and lengths[i - 1] > MAX_MATCH // 2:  # inside a long copy: one token less
                lengths[i] = lengths[i - 1] - 1
                continue
            end = min(len(ids), i + MAX_MATCH) * self.width
            lengths[i], offset = self._search(stored[i * self.width : end])
            if lengths[i] > best:
                best, best_at, best_start = int(lengths[i]), offset, i
        n = min(NGRAM, len(ids))
        starts = max(len(ids) - n + 1, 0)
        found = float(np.mean(lengths[:starts] >= n)) if starts and n else 0.0
        chars = np.concatenate([[0], np.cumsum(self._char_lengths[ids])]).astype(np.int64)
        out = {
            "longest": best,
            "longest_at": best_at,
            "longest_text": self.index.tokenizer.decode(ids[best_start : best_start + best]),
            "longest_span": [int(chars[best_start]), int(chars[best_start + best])],
            "ngram": NGRAM,
            "ngrams_found": round(found, 4),
            "copied_spans": [[int(chars[a]), int(chars[b])] for a, b in _spans(lengths, NGRAM)],
        }
        if self.eot is not None:
            out["in_training"] = self._is_document(ids)
        return out

    def _is_document(self, ids: np.ndarray) -> bool:
        """Whether `ids` is a whole training document (between end-of-text tokens)."""
        eot = np.array([self.eot], np.int64)
        if self.contains(np.concatenate([eot, ids, eot])):
            return True
        first = np.concatenate([ids, eot])  # the first document has no end-of-text before it
        return self._bytes(0, len(first)) == self._encode(first)


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

    Peak memory: the training split as bytes plus its suffix array (5 bytes per byte of text,
    with 1-byte ids), freed when done.
    """
    import shutil

    from pydivsufsort import divsufsort

    directory = Path(index.directory)
    with index_dir_lock(directory).acquire(wait=True):
        if is_built(index):
            return  # built by a process this one waited for
        tmp, out = directory / f".{_DIR}.tmp-{os.getpid()}", directory / _DIR
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with writing("the novelty index", directory):
                tmp.mkdir()
                width = _width(index.vocab_size)
                tokens = len(index.train)
                text = np.empty(tokens * width, np.uint8)  # (bytes,) big-endian ids
                step = 1 << 24  # ids per slice: bounded temporaries
                for start in range(0, tokens, step):
                    ids = index.train[start : start + step]  # (step,) int32
                    text[start * width : (start + len(ids)) * width] = np.frombuffer(
                        ids.astype(f">u{width}").tobytes(), np.uint8
                    )
                text.tofile(tmp / "text.bin")
                sa = divsufsort(text) if tokens else np.zeros(0, np.int32)  # (bytes,)
                del text
                if width > 1:  # keep the suffixes that start at an id
                    sa = sa[sa % width == 0] // width
                np.save(tmp / "sa.npy", sa)
                del sa
                meta = {"version": _VERSION, "width": width, "tokens": tokens}
                (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
