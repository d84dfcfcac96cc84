"""Tokenizers with one protocol: `encode(str) -> int32 array`, `decode(ids) -> str`, `vocab_size`.

`CharTokenizer` maps Unicode code points to ids with numpy lookups (no per-character Python loop);
`SentencePieceTokenizer` wraps a sentencepiece model trained losslessly (identity normalization,
byte fallback). Id 0 is the unknown token in both.

A documents index (`data.documents` other than `stream`) also reserves an end-of-text id, which
`encode` never returns and `decode` leaves out: the char tokenizer puts it after the last
character (so ids of every character are those of a stream run's tokenizer), sentencepiece
uses its `eos` control piece (id 1). Tokenizer files without one load as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from textgen.core.errors import TextgenError

UNKNOWN_ID = 0  # reserved in every tokenizer for input outside the vocabulary
_MAX_CODE_POINT = 0x10FFFF
_LISTED = 20  # unknown characters named in a message; the rest are counted


def find_unknown_chars(tokenizer: Tokenizer, text: str) -> list[str]:
    """Distinct characters of `text` that encode to the unknown id, in order of appearance."""
    if not (np.asarray(tokenizer.encode(text)) == UNKNOWN_ID).any():
        return []
    return [c for c in dict.fromkeys(text) if UNKNOWN_ID in tokenizer.encode(c)]


def unknown_chars_message(missing: list[str], subject: str = "characters") -> str:
    """The one wording of characters outside a vocabulary (generate, dynamic, the server).

    Args:
        missing: The distinct characters (`find_unknown_chars`, `CharTokenizer.unknown_chars`).
        subject: What they are, e.g. `prompt characters`.
    """
    listed = " ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:_LISTED])
    more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    return f"{subject} outside the model's vocabulary: {listed}{more}"


def code_points(text: str) -> np.ndarray:
    """Returns the Unicode code points of `text` as uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")  # (chars,)


def mark_code_points(seen: np.ndarray, text: str) -> None:
    """Sets seen[c] for every code point c in `text` (seen: bool, 0x110000 entries)."""
    if text.isascii():
        counts = np.bincount(np.frombuffer(text.encode("ascii"), np.uint8), minlength=128)
        seen[:128] |= counts > 0
    else:
        seen[code_points(text)] = True


class Tokenizer(Protocol):
    """What the indexer, trainer and generator need of a tokenizer."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int] | np.ndarray) -> str: ...

    def token_char_lengths(self) -> np.ndarray: ...

    @property
    def end_of_text_id(self) -> int | None: ...

    @property
    def vocabulary_key(self) -> str | bytes: ...

    def save(self, directory: str | Path) -> None: ...


class CharTokenizer:
    """Unicode code points as tokens: é, 中 and an emoji are one token each.

    Args:
        chars: The vocabulary (any order; stored sorted by code point, so it is deterministic).
        end_of_text: Reserve the end-of-text id (the last id, after the characters).
    """

    kind = "char"
    filename = "tokenizer.json"

    def __init__(self, chars: Iterable[str] | str, *, end_of_text: bool = False) -> None:
        points = np.unique(code_points("".join(chars)))  # sorted, distinct
        self._end_of_text = len(points) + 1 if end_of_text else None
        self._points = points.astype(np.int64)
        self._chars = "".join(chr(p) for p in points)
        # ids 1..V for the sorted vocabulary; 0 for every other code point (4.4 MB, so encoding
        # needs no bounds checks and no index copies).
        self._lookup = np.zeros(_MAX_CODE_POINT + 1, np.int32)
        self._lookup[points] = np.arange(1, len(points) + 1, dtype=np.int32)
        self._ascii_lookup = np.ascontiguousarray(self._lookup[:256])
        self._id_to_point = np.concatenate([[0xFFFD], points]).astype("<u4")

    @classmethod
    def from_code_point_mask(cls, seen: np.ndarray, *, end_of_text: bool = False) -> CharTokenizer:
        """Builds the vocabulary from a boolean mask over code points, as the indexer collects."""
        return cls("".join(chr(p) for p in np.flatnonzero(seen)), end_of_text=end_of_text)

    @property
    def vocab_size(self) -> int:
        """Number of ids, including the unknown id 0 (and the end-of-text id, if reserved)."""
        return len(self._chars) + 1 + (self._end_of_text is not None)

    @property
    def end_of_text_id(self) -> int | None:
        """The end-of-text id, or None (a stream index's tokenizer has none)."""
        return self._end_of_text

    @property
    def vocabulary_key(self) -> str:
        """What fixes the id of every token: equal keys, interchangeable ids.

        A NUL marks the end-of-text id: the indexer refuses NUL bytes, so no vocabulary has one.
        """
        return self._chars + ("\x00" if self._end_of_text is not None else "")

    @property
    def chars(self) -> str:
        """The vocabulary in id order (id i is chars[i - 1])."""
        return self._chars

    def encode(self, text: str) -> np.ndarray:
        """Returns int32 ids; characters outside the vocabulary become id 0."""
        if text.isascii():  # O(1) in CPython; one byte per char, no UTF-32 copy
            return np.take(self._ascii_lookup, np.frombuffer(text.encode("ascii"), np.uint8))
        return self._lookup[code_points(text)]  # (chars,)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Returns the text of `ids`; id 0 (unknown) decodes to U+FFFD, end-of-text to nothing."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must be in [0, {self.vocab_size})")
        if self._end_of_text is not None:
            ids = ids[ids != self._end_of_text]
        return self._id_to_point[ids].tobytes().decode("utf-32-le", "surrogatepass")

    def token_char_lengths(self) -> np.ndarray:
        """Characters each id stands for: 1 for every id, the unknown id included.

        An unknown id replaces exactly one character of the text, so bpc counts it as one; the
        end-of-text id stands for the separator between documents, one character too.
        """
        lengths = np.ones(self.vocab_size, dtype=np.float32)
        return lengths

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` that are not in the vocabulary, in order of appearance."""
        ids = self.encode(text)
        missing = np.flatnonzero(ids == UNKNOWN_ID)
        return list(dict.fromkeys(text[i] for i in missing))

    def save(self, directory: str | Path) -> None:
        """Writes `tokenizer.json` into `directory`."""
        data = {"kind": self.kind, "chars": self._chars}
        if self._end_of_text is not None:
            data["end_of_text"] = True  # absent in files of stream runs, which load as before
        text = json.dumps(data, ensure_ascii=True)  # ASCII escapes keep odd code points intact
        (Path(directory) / self.filename).write_text(text, encoding="ascii")

    @classmethod
    def load(cls, directory: str | Path) -> CharTokenizer:
        """Reads `tokenizer.json` from `directory`."""
        data = json.loads((Path(directory) / cls.filename).read_text(encoding="ascii"))
        return cls(data["chars"], end_of_text=bool(data.get("end_of_text", False)))


class SentencePieceTokenizer:
    """A sentencepiece model (bpe, unigram or char), trained losslessly on a sample of lines.

    Args:
        model_proto: The serialized sentencepiece model.
    """

    kind = "sentencepiece"
    filename = "tokenizer.model"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        *,
        vocab_size: int,
        model_type: str = "unigram",
        end_of_text: bool = False,
    ) -> SentencePieceTokenizer:
        """Trains on `lines` (a sample, newline-free); newline is its own piece.

        `end_of_text` reserves id 1 for sentencepiece's `eos` control piece (never encoded,
        decoded to nothing); without it the ids are those of earlier versions.

        Raises:
            TextgenError: the sample cannot support `vocab_size`.
        """
        import io

        import sentencepiece as spm

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=buffer,
                vocab_size=vocab_size,
                model_type=model_type,
                normalization_rule_name="identity",  # lossless: decode(encode(t)) == t
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                split_by_whitespace=True,
                byte_fallback=True,  # any character round-trips through UTF-8 byte pieces
                user_defined_symbols=["\n", "\r", "\t"],
                character_coverage=1.0 if model_type == "char" else 0.9995,
                hard_vocab_limit=True,
                unk_id=UNKNOWN_ID,
                bos_id=-1,
                eos_id=1 if end_of_text else -1,
                pad_id=-1,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as e:
            message = str(e).strip().splitlines()[-1] if str(e).strip() else "training failed"
            message = message.rsplit("] ", 1)[-1]  # drop sentencepiece's source location
            raise TextgenError(
                f"sentencepiece cannot build a vocabulary of {vocab_size}: {message}",
                "data.sp_vocab_size",
            ) from None
        return cls(buffer.getvalue())

    @property
    def vocab_size(self) -> int:
        """Number of pieces, the unknown id 0 included."""
        return self._sp.get_piece_size()

    @property
    def end_of_text_id(self) -> int | None:
        """The `eos` piece's id (1) when reserved, else None."""
        eos = self._sp.eos_id()
        return eos if eos >= 0 else None

    @property
    def vocabulary_key(self) -> bytes:
        """What fixes the id of every piece: the serialized model."""
        return self._proto

    def encode(self, text: str) -> np.ndarray:
        """Returns int32 piece ids of `text`."""
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Returns the text of `ids` (byte pieces are reassembled into characters)."""
        return self._sp.decode([int(i) for i in np.asarray(ids).ravel()])

    def token_char_lengths(self) -> np.ndarray:
        """Characters each piece covers; a byte piece counts 1 if it starts a UTF-8 character."""
        lengths = np.zeros(self.vocab_size, dtype=np.float32)
        for i in range(self.vocab_size):
            piece = self._sp.id_to_piece(i)
            if self._sp.is_byte(i):
                byte = int(piece[3:5], 16)  # "<0xAB>"
                lengths[i] = 0.0 if 0x80 <= byte < 0xC0 else 1.0
            elif self._sp.is_unknown(i) or self._sp.is_control(i):
                lengths[i] = 1.0
            else:
                lengths[i] = len(piece)
        return lengths

    def save(self, directory: str | Path) -> None:
        """Writes `tokenizer.model` into `directory`."""
        (Path(directory) / self.filename).write_bytes(self._proto)

    @classmethod
    def load(cls, directory: str | Path) -> SentencePieceTokenizer:
        """Reads `tokenizer.model` from `directory`."""
        return cls((Path(directory) / cls.filename).read_bytes())


TOKENIZERS: dict[str, type[CharTokenizer] | type[SentencePieceTokenizer]] = {
    "char": CharTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """True when ids mean the same tokens in both (the one comparison used everywhere)."""
    return a.kind == b.kind and a.vocabulary_key == b.vocabulary_key


def load_tokenizer(directory: str | Path, kind: str) -> CharTokenizer | SentencePieceTokenizer:
    """Loads the tokenizer of `kind` saved in `directory`.

    Raises:
        TextgenError: unknown kind, or the tokenizer file is missing or unreadable.
    """
    if kind not in TOKENIZERS:
        raise TextgenError(f"unknown tokenizer '{kind}'", str(directory))
    cls = TOKENIZERS[kind]
    path = Path(directory) / cls.filename
    try:
        return cls.load(directory)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise TextgenError(f"cannot read tokenizer: {e.__class__.__name__}", str(path)) from None
