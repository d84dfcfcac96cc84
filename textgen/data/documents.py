"""Cutting a corpus into documents (`data.documents`) as it streams by, and their length figures.

`lines`: one document per non-empty line (a trailing `\\r` dropped); `paragraphs`: runs of
non-blank lines, split on blank lines (lines of whitespace only); `files`: one per source file,
its trailing line breaks dropped. The indexer encodes each document and appends the end-of-text
id after it, so the text of a document never holds its separator. `stream` is not cut at all.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import numpy as np

from textgen.core.config import DataConfig
from textgen.data.sources import read_text_chunks
from textgen.data.tokenizers import Tokenizer

DOCUMENT_MODES = ("stream", "lines", "paragraphs", "files")
SEPARATORS = {"lines": "\n", "paragraphs": "\n\n", "files": "\n"}  # how documents are printed
QUANTILES = (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)  # the document lengths an index records


class DocumentSplitter:
    """Turns the text chunks of one source file into (text, ends a document) pieces.

    A document may span chunks: its pieces come as they are read, the last with `True`.
    Memory is bounded by the chunk plus the current line (lines and paragraphs modes).

    Args:
        mode: `lines`, `paragraphs` or `files`.
        lengths: Counts each finished document's length in characters.
    """

    def __init__(self, mode: str, lengths: Counter) -> None:
        self.mode, self.lengths = mode, lengths
        self._partial = ""  # the unfinished last line of the previous chunk
        self._open = 0  # characters of the current document given out so far
        self._newlines = 0  # files: line breaks held back (trailing ones are dropped)

    def feed(self, text: str) -> Iterator[tuple[str, bool]]:
        """Yields the pieces of documents in `text` (a chunk of the file)."""
        if self.mode == "files":
            yield from self._file_piece(text)
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            yield from self._line(line)

    def end(self) -> Iterator[tuple[str, bool]]:
        """Yields what is left at the end of the file (the last document's end)."""
        if self.mode != "files":
            if self._partial:
                yield from self._line(self._partial)
            self._partial = ""
            if self.mode == "paragraphs" and self._open:
                yield from self._finish()
            return
        self._newlines = 0  # trailing line breaks are not part of the document
        if self._open:
            yield from self._finish()

    def _line(self, line: str) -> Iterator[tuple[str, bool]]:
        """One complete line (without its newline)."""
        line = line.removesuffix("\r")
        if self.mode == "lines":
            if line.strip():
                self._open = len(line)
                yield from self._finish(line)
            return
        if not line.strip():  # paragraphs: a blank line ends the current one
            if self._open:
                yield from self._finish()
            return
        piece = ("\n" if self._open else "") + line
        self._open += len(piece)
        yield piece, False

    def _file_piece(self, text: str) -> Iterator[tuple[str, bool]]:
        """files: all of it, line breaks at the end held back until more text follows."""
        body = text.rstrip("\n")
        if not body:
            self._newlines += len(text)
            return
        piece = "\n" * self._newlines + body
        self._newlines = len(text) - len(body)
        self._open += len(piece)
        yield piece, False

    def _finish(self, text: str = "") -> Iterator[tuple[str, bool]]:
        """Ends the current document (with `text` as its last piece)."""
        self.lengths[self._open] += 1
        self._open = 0
        yield text, True


def length_figures(lengths: Counter) -> dict:
    """The number of documents and their length quantiles (characters), from exact counts."""
    total = sum(lengths.values())
    if not total:
        return {"count": 0, "length_quantiles": {}}
    ordered = sorted(lengths.items())
    quantiles, seen, it = {}, 0, iter(ordered)
    length, count = next(it)
    for q in QUANTILES:
        rank = min(total - 1, int(q * (total - 1) + 0.5))  # nearest rank
        while seen + count <= rank:
            seen += count
            length, count = next(it)
        quantiles[f"p{round(q * 100)}"] = length
    return {"count": total, "length_quantiles": quantiles}


def document_ids(
    path: str, data_cfg: DataConfig, tokenizer: Tokenizer, lengths: Counter
) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (ids, bytes done) per chunk of `path`: each document's ids, then end-of-text.

    Args:
        path: One source file.
        data_cfg: The data section (`documents`, `encoding_errors`).
        tokenizer: The index's tokenizer, with an end-of-text id.
        lengths: Counts the documents' lengths (characters).
    """
    splitter = DocumentSplitter(data_cfg.documents, lengths)
    eot = tokenizer.end_of_text_id
    chunks = read_text_chunks(path, encoding_errors=data_cfg.encoding_errors)
    for text, done in _with_end(chunks, os.path.getsize(path)):
        pieces = splitter.feed(text) if text is not None else splitter.end()
        yield _encode_pieces(tokenizer, list(pieces), eot), done


def _with_end(chunks, size: int):
    """The chunks, then (None, size): the file's end."""
    yield from chunks
    yield None, size


def _encode_pieces(tokenizer: Tokenizer, pieces: list[tuple[str, bool]], eot: int) -> np.ndarray:
    """Ids of the pieces, the end-of-text id after each that ends a document."""
    if not pieces:
        return np.zeros(0, np.int32)
    if tokenizer.kind == "char":
        # One encode for the chunk: a NUL (never in a corpus, so the unknown id 0 and nothing
        # else, since every corpus character is in the vocabulary) marks each document's end.
        text = "".join(t + ("\x00" if end else "") for t, end in pieces)
        ids = tokenizer.encode(text)  # (chars,)
        return np.where(ids == 0, np.int32(eot), ids).astype(np.int32)
    parts = []
    for text, end in pieces:
        parts.append(tokenizer.encode(text))
        if end:
            parts.append(np.array([eot], np.int32))
    return np.concatenate(parts).astype(np.int32)  # (tokens,)
