"""The indexer: corpus files -> an index dir of int32 `.npy` memmaps, built atomically.

Two streaming passes over the sources: a scan (hash, validate, collect the character set or a
line sample for sentencepiece) and an encode pass that appends ids straight to `train.npy`.
The last `val_fraction` of the stream then moves to `val.npy`. Everything is written into a
temporary sibling dir that is renamed into place, so a half-written index never exists; a caller
can inspect the new index there first (`accept`) and refuse it, leaving the old one in place.
One process builds at a time (`dirlock.index_dir_lock`): a second one waits, then finds the index
current. A full disk is one line (`filewrite.writing`), and temporary dirs of killed builds are
removed by the next one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textgen.core.config import DataConfig
from textgen.core.dirlock import index_dir_lock
from textgen.core.errors import TextgenError
from textgen.core.filewrite import writing
from textgen.core.memory import pin_mmap_threshold
from textgen.data.documents import document_ids, length_figures
from textgen.data.indexdir import (
    check_index_dir,
    make_temp_dir,
    remove_stale_temp_dirs,
    replace_dir,
)
from textgen.data.npywriter import HEADER_BYTES, BackgroundWriter, npy_header, split_tail
from textgen.data.sources import (
    ReplacementCounter,
    SourceFile,
    find_sources,
    hash_file,
    read_text_chunks,
)
from textgen.data.tokenfile import TokenFile
from textgen.data.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    mark_code_points,
)

FORMAT_VERSION = 1  # documents indexes add keys (settings.documents, meta.documents) only
_SP_MAX_LINE = 4096  # sentencepiece skips longer sentences; longer lines are cut for training

IndexProgress = Callable[[int, int], None]  # (bytes done, bytes total) over both passes
IndexCheck = Callable[["Index"], None]  # raises to refuse a new index before it replaces the old


@dataclass
class Index:
    """An opened index: its two splits (read by `pread`), the tokenizer and meta.json."""

    directory: Path
    train: TokenFile  # (train_tokens,) int32
    val: TokenFile  # (val_tokens,) int32
    tokenizer: Tokenizer
    meta: dict[str, Any]

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return self.tokenizer.vocab_size


def index_corpus(
    data_cfg: DataConfig,
    *,
    min_split_tokens: int = 2,
    progress: IndexProgress | None = None,
    force: bool = False,
    accept: IndexCheck | None = None,
    on_wait: Callable[[int | None], None] | None = None,
    base: Tokenizer | None = None,
) -> tuple[Index, bool]:
    """Indexes `data_cfg.path` into `data_cfg.index_dir` unless an up-to-date index is there.

    Args:
        data_cfg: The data section of the config.
        min_split_tokens: Each split must hold at least this many tokens (one window + 1).
        progress: Called with (bytes done, bytes total) while building.
        force: Rebuild even when the index is current.
        accept: Called with a newly built index before it replaces the old one; raising
            refuses it (the old index stays as it was).
        on_wait: Called with the PID of the process building this index, if this one waits.
        base: A tokenizer to extend instead of building one (fine-tuning: the source run's). A
            char tokenizer gains the corpus's characters it lacks; a sentencepiece one is used
            as it is (byte fallback leaves nothing unknown). Its kind must be data.tokenizer's.

    Returns:
        The opened index and whether it was (re)built.

    Raises:
        TextgenError: a bad path, corpus, setting, a full disk or an unwritable index dir.
    """
    index_dir = Path(data_cfg.index_dir)
    # An index dir inside a corpus directory is not part of the corpus.
    sources = [s for s in find_sources(data_cfg.path) if not _is_inside(s.path, index_dir)]
    if not sources:
        raise TextgenError("no text files outside data.index_dir", data_cfg.path)
    check_index_dir(index_dir)
    if not force:
        with index_dir_lock(index_dir).acquire(shared=True, wait=True, on_wait=on_wait):
            remove_stale_temp_dirs(index_dir)  # no build runs while a shared lock is held
            current = _open_if_current(index_dir, sources, data_cfg, min_split_tokens, base)
        if current is not None:
            return current, False
    with index_dir_lock(index_dir).acquire(wait=True, on_wait=on_wait):
        remove_stale_temp_dirs(index_dir)
        current = None if force else _open_if_current(index_dir, sources, data_cfg,
                                                      min_split_tokens, base)  # fmt: skip
        if current is not None:
            return current, False  # built by the process this one waited for
        _build_in_place(data_cfg, sources, index_dir, min_split_tokens, progress, accept, base)
        return load_index(index_dir), True


def _open_if_current(
    index_dir: Path,
    sources: list[SourceFile],
    data_cfg: DataConfig,
    min_split_tokens: int,
    base: Tokenizer | None = None,
) -> Index | None:
    """The index, opened, when it is current for these sources and settings; else None."""
    if not _is_current(index_dir, sources, data_cfg, base):
        return None
    index = load_index(index_dir)
    _check_split_sizes(index.meta["counts"], min_split_tokens, index_dir)
    return index


def _build_in_place(
    data_cfg: DataConfig,
    sources: list[SourceFile],
    index_dir: Path,
    min_split_tokens: int,
    progress: IndexProgress | None,
    accept: IndexCheck | None,
    base: Tokenizer | None = None,
) -> None:
    """Builds into a temp dir, checks it, then renames it over the old index (under the lock)."""
    tmp = make_temp_dir(index_dir)
    try:
        with writing("the index", index_dir):
            meta = _build(data_cfg, sources, tmp, progress, base)
        _check_split_sizes(meta["counts"], min_split_tokens, data_cfg.path)
        if accept is not None:
            accept(load_index(tmp))
        replace_dir(tmp, index_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_index(directory: str | Path) -> Index:
    """Opens an index dir read-only.

    Raises:
        TextgenError: no index there, or one of an unknown format.
    """
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        train, val = TokenFile(directory / "train.npy"), TokenFile(directory / "val.npy")
    except (OSError, ValueError) as e:
        raise TextgenError(f"corrupt index split: {e}", str(directory)) from None
    tokenizer = load_tokenizer(directory, meta["tokenizer"]["kind"])
    return Index(directory, train, val, tokenizer, meta)


def read_meta(directory: Path) -> dict[str, Any]:
    """The index's meta.json, checked to be of this format (the one place that parses it).

    Raises:
        TextgenError: no index there, an unreadable file, or an outdated format.
    """
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise TextgenError("no index here (run `python -m textgen.index CONFIG`)", str(directory))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TextgenError(f"unreadable index metadata: {e}", str(meta_path)) from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise TextgenError("index format is outdated; re-index", str(directory))
    return meta


def index_settings(data_cfg: DataConfig, base: Tokenizer | None = None) -> dict[str, Any]:
    """The settings that shape an index; a change in any of them means a rebuild."""
    settings: dict[str, Any] = {
        "tokenizer": data_cfg.tokenizer,
        "val_fraction": data_cfg.val_fraction,
        "encoding_errors": data_cfg.encoding_errors,
    }
    if data_cfg.tokenizer == "sentencepiece":
        settings |= {
            "sp_vocab_size": data_cfg.sp_vocab_size,
            "sp_model_type": data_cfg.sp_model_type,
        }
    if data_cfg.documents != "stream":  # absent for a stream: indexes of earlier versions stay
        settings["documents"] = data_cfg.documents
    if base is not None:  # extended from a fine-tuning source: which vocabulary it extended
        key = base.vocabulary_key
        key = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
        settings["base_vocabulary"] = hashlib.sha256(key).hexdigest()[:16]
    return settings


def _is_current(
    index_dir: Path, sources: list[SourceFile], data_cfg: DataConfig, base: Tokenizer | None
) -> bool:
    """True when index_dir holds an index of exactly these sources and settings."""
    try:
        meta = read_meta(index_dir)
    except TextgenError:
        return False  # no index, or an unreadable or outdated one: build it
    if meta.get("settings") != index_settings(data_cfg, base):
        return False
    recorded = [SourceFile(**s) for s in meta.get("sources", [])]
    if [s.path for s in recorded] != [s.path for s in sources]:
        return False
    for old, new in zip(recorded, sources, strict=True):
        if old.same_stat(new):
            continue
        # Touched but maybe unchanged: only the content hash decides.
        if old.size != new.size or old.sha256 != hash_file(new.path):
            return False
    return True


def _is_inside(path: str, directory: Path) -> bool:
    return Path(os.path.abspath(directory)) in Path(os.path.abspath(path)).parents


def _check_split_sizes(counts: dict[str, int], min_tokens: int, where: str | Path) -> None:
    for split in ("train", "val"):
        if counts[f"{split}_tokens"] < min_tokens:
            raise TextgenError(
                f"the {split} split has {counts[f'{split}_tokens']} tokens, fewer than one window "
                f"needs ({min_tokens}); use a larger corpus, a larger data.val_fraction "
                "or a smaller windows.maxlen",
                str(where),
            )


def _build(
    data_cfg: DataConfig,
    sources: list[SourceFile],
    out: Path,
    progress: IndexProgress | None,
    base: Tokenizer | None = None,
) -> dict[str, Any]:
    """Writes the index files into `out` (two passes over the sources) and returns the meta."""
    pin_mmap_threshold()  # chunk buffers go back to the OS: RSS does not grow with the corpus
    report = _ProgressOffset(progress, 2 * sum(s.size for s in sources))
    counter = ReplacementCounter()
    hashed, chars, tokenizer = _scan(data_cfg, sources, counter, report, base)

    # Pass 2: encode and append ids to train.npy; the tail becomes val.npy afterwards.
    train_path = out / "train.npy"
    lengths: Counter = Counter()  # document length (chars) -> documents of that length
    with open(train_path, "wb") as f, BackgroundWriter(f) as writer:
        f.write(npy_header(0))
        for src in sources:
            if data_cfg.documents == "stream":
                for text_piece, done in _encodable_pieces(src.path, data_cfg, tokenizer):
                    writer.put(tokenizer.encode(text_piece))
                    report(done)
            else:
                for ids, done in document_ids(src.path, data_cfg, tokenizer, lengths):
                    writer.put(ids)
                    report(done)
            report.next_file(src.size)
    if data_cfg.documents != "stream" and not lengths:
        raise TextgenError(
            f"no documents: the corpus has no non-blank text (data.documents={data_cfg.documents})",
            data_cfg.path,
        )
    tokens = (train_path.stat().st_size - HEADER_BYTES) // 4
    val_tokens = max(1, round(tokens * data_cfg.val_fraction))
    split_tail(train_path, out / "val.npy", tokens - val_tokens, val_tokens)

    tokenizer.save(out)
    meta = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": index_settings(data_cfg, base),
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        "sources": [asdict(s) for s in hashed],
        "counts": {
            "chars": chars,
            "tokens": tokens,
            "train_tokens": tokens - val_tokens,
            "val_tokens": val_tokens,
            "replaced_chars": counter.count,
        },
    }
    if data_cfg.documents != "stream":
        meta["documents"] = {"mode": data_cfg.documents, **length_figures(lengths),
                             "end_of_text_id": tokenizer.end_of_text_id}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def _scan(
    data_cfg: DataConfig,
    sources: list[SourceFile],
    counter: ReplacementCounter,
    report: _ProgressOffset,
    base: Tokenizer | None = None,
) -> tuple[list[SourceFile], int, Tokenizer]:
    """Pass 1: hashes and validates the sources and builds the tokenizer from what it saw."""
    seen = np.zeros(0x110000, dtype=bool)  # code points present in the corpus
    if isinstance(base, CharTokenizer):
        mark_code_points(seen, base.chars)  # the base's characters stay, new ones join them
    sampling = data_cfg.tokenizer != "char" and base is None  # a given sentencepiece stays
    sampler = _LineSampler(data_cfg.sp_sample_lines) if sampling else None
    hashed, chars = [], 0
    for src in sources:
        digest = hashlib.sha256()
        for text, done in read_text_chunks(
            src.path, encoding_errors=data_cfg.encoding_errors, counter=counter, hasher=digest
        ):
            if sampler is not None:
                sampler.add(text)
            elif data_cfg.tokenizer == "char":
                mark_code_points(seen, text)
            chars += len(text)
            report(done)
        if sampler is not None:
            sampler.end_file()
        hashed.append(SourceFile(src.path, src.size, src.mtime_ns, digest.hexdigest()))
        report.next_file(src.size)
    if chars == 0:
        raise TextgenError("the corpus is empty", data_cfg.path)
    end_of_text = data_cfg.documents != "stream"
    if data_cfg.tokenizer == "char":
        return hashed, chars, CharTokenizer.from_code_point_mask(seen, end_of_text=end_of_text)
    if sampler is None:
        return hashed, chars, base
    tokenizer = SentencePieceTokenizer.train(
        sampler.lines, vocab_size=data_cfg.sp_vocab_size, model_type=data_cfg.sp_model_type,
        end_of_text=end_of_text,
    )  # fmt: skip
    return hashed, chars, tokenizer


def _encodable_pieces(path: str, data_cfg: DataConfig, tokenizer: Tokenizer):
    """Yields (text, bytes done); sentencepiece text is cut after newlines (no piece spans)."""
    carry = ""
    for text, done in read_text_chunks(path, encoding_errors=data_cfg.encoding_errors):
        if tokenizer.kind == "char":
            yield text, done
            continue
        text = carry + text
        cut = text.rfind("\n") + 1
        carry = text[cut:]
        if cut:
            yield text[:cut], done
    if carry:
        yield carry, os.path.getsize(path)


class _ProgressOffset:
    """Turns per-file byte counts into bytes done over the whole build."""

    def __init__(self, progress: IndexProgress | None, total: int) -> None:
        self.progress, self.total, self.base = progress, total, 0

    def __call__(self, done_in_file: int) -> None:
        if self.progress is not None:
            self.progress(self.base + done_in_file, self.total)

    def next_file(self, size: int) -> None:
        self.base += size


class _LineSampler:
    """Reservoir sample of at most `capacity` lines, for training sentencepiece in bounded RAM."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.lines, self.seen, self.partial = capacity, [], 0, ""
        self._rng = random.Random(0)  # fixed: the same corpus gives the same tokenizer

    def add(self, text: str) -> None:
        parts = (self.partial + text).split("\n")
        self.partial = parts.pop()
        for line in parts:
            self._offer(line)

    def end_file(self) -> None:
        if self.partial:
            self._offer(self.partial)
        self.partial = ""

    def _offer(self, line: str) -> None:
        if not line.strip():
            return
        line = line[:_SP_MAX_LINE]
        self.seen += 1
        if len(self.lines) < self.capacity:
            self.lines.append(line)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.capacity:
                self.lines[j] = line
