"""The run's tokenizer in core TensorFlow ops, for the SavedModel (`export.py`): text <-> ids.

`PieceSpec` reads what the graph needs from a `Tokenizer` (no TensorFlow); `graph_tokenizer_class`
builds a `tf.Module` whose `encode` and `decode` reproduce the Python tokenizer exactly (the tests
compare them text by text). Only core ops are used, so `saved_model_cli` and TF Serving load it.

- char: a code-point lookup; characters outside the vocabulary become the unknown id.
- sentencepiece unigram (and char) models: sentencepiece's Viterbi best path over every piece
  that starts at each character, with its scores (a user-defined symbol gets its bonus, a
  character that no piece covers gets the unknown score, ties go to the longest piece).
- sentencepiece bpe: merges the best-scoring adjacent pair (the leftmost on ties) until no pair
  is a piece; user-defined symbols never merge.
- both: an unknown character becomes its UTF-8 byte pieces (byte fallback), and spaces are
  sentencepiece's U+2581 inside the encoder.

Decoding gathers each id's bytes and joins them; bytes that are not UTF-8 (a character cut
off by the length) become U+FFFD.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from textgen.core.errors import TextgenError
from textgen.data.tokenizers import UNKNOWN_ID, Tokenizer

SPACE = "\u2581"  # sentencepiece's escaped space
UNKNOWN_PENALTY = 10.0  # sentencepiece's kUnkPenalty: the unknown score is min score - 10
FLT_MIN = float(np.finfo(np.float32).tiny)  # sentencepiece starts its max score here
MAX_CHAR_BYTES = 4  # UTF-8


@dataclasses.dataclass(frozen=True)
class PieceSpec:
    """What the graph needs of a tokenizer.

    Attributes:
        kind: `char`, `unigram` or `bpe` (the encoder the graph runs).
        piece_bytes: Each id's bytes when decoded.
        pieces: The matchable pieces' text (spaces as U+2581), `ids`, `scores` alongside.
        ids: Each matchable piece's id.
        scores: Each matchable piece's score in the encoder (user-defined bonus included).
        frozen: Each matchable piece is a user-defined symbol (bpe never merges those).
        byte_ids: The piece id of each byte value (byte fallback), or None.
        unknown_score: The score of a character no piece covers (unigram).
    """

    kind: str
    piece_bytes: tuple[bytes, ...]
    pieces: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    frozen: tuple[bool, ...] = ()
    byte_ids: tuple[int, ...] | None = None
    unknown_score: float = 0.0

    @property
    def longest_piece(self) -> int:
        """Characters in the longest matchable piece (at least 1)."""
        return max((len(p) for p in self.pieces), default=1)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> PieceSpec:
        """The spec of a char or sentencepiece tokenizer.

        Raises:
            TextgenError: a sentencepiece model with settings textgen never trains with.
        """
        if tokenizer.kind == "char":
            pieces = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
            chars = tuple(tokenizer.chars)  # ids 1..len(chars); end-of-text (if any) decodes to b""
            return cls("char", tuple(p.encode("utf-8") for p in pieces), chars)
        return _sentencepiece_spec(tokenizer.vocabulary_key)


def _sentencepiece_spec(model_proto: bytes) -> PieceSpec:
    """Reads a serialized sentencepiece model into a `PieceSpec`."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto.FromString(model_proto)
    kinds = pb.ModelProto.SentencePiece
    types = pb.TrainerSpec.ModelType
    model_type = {types.UNIGRAM: "unigram", types.CHAR: "unigram", types.BPE: "bpe"}.get(
        model.trainer_spec.model_type
    )
    norm = model.normalizer_spec
    unsupported = [
        (model_type is None, "word models"),
        (norm.add_dummy_prefix or norm.remove_extra_whitespaces, "whitespace rewriting"),
        (model.trainer_spec.treat_whitespace_as_suffix, "whitespace as a suffix"),
        (not norm.escape_whitespaces, "unescaped spaces"),
        (norm.name != "identity" or len(norm.precompiled_charsmap) > 0, "normalization rules"),
        (any(p.type == kinds.UNUSED for p in model.pieces), "unused pieces"),
        (model.pieces[UNKNOWN_ID].type != kinds.UNKNOWN, "an unknown id other than 0"),
    ]
    unsupported += [
        (p.type == kinds.USER_DEFINED and len(p.piece) > 1, "multi-character user symbols")
        for p in model.pieces
    ]
    for bad, what in unsupported:
        if bad:
            raise TextgenError(f"this sentencepiece model cannot be exported: {what}", "tokenizer")
    normal = [p.score for p in model.pieces if p.type == kinds.NORMAL]
    max_score = max([FLT_MIN, *normal])  # as sentencepiece: starts at FLT_MIN, not at -inf
    piece_bytes, pieces, ids, scores, frozen = [], [], [], [], []
    byte_ids = [UNKNOWN_ID] * 256
    for i, p in enumerate(model.pieces):
        if p.type == kinds.BYTE:
            value = int(p.piece[3:5], 16)  # "<0xAB>"
            byte_ids[value] = i
            piece_bytes.append(bytes([value]))
        elif p.type == kinds.UNKNOWN:
            piece_bytes.append(" \u2047 ".encode())  # what sentencepiece decodes it to
        elif p.type in (kinds.NORMAL, kinds.USER_DEFINED):
            piece_bytes.append(p.piece.replace(SPACE, " ").encode("utf-8"))
            user = p.type == kinds.USER_DEFINED
            pieces.append(p.piece)
            ids.append(i)
            scores.append(len(p.piece.encode()) * max_score - 0.1 if user else p.score)
            frozen.append(user)
        else:
            piece_bytes.append(b"")  # control pieces decode to nothing
    fallback = model.trainer_spec.byte_fallback and UNKNOWN_ID not in byte_ids
    return PieceSpec(
        model_type,
        tuple(piece_bytes),
        tuple(pieces),
        tuple(ids),
        tuple(float(np.float32(s)) for s in scores),
        tuple(frozen),
        tuple(byte_ids) if fallback else None,
        float(np.float32(min(normal, default=0.0) - UNKNOWN_PENALTY)),
    )


@functools.cache
def graph_tokenizer_class():
    """`GraphTokenizer`, defined on first use so that importing this module needs no TensorFlow."""
    import tensorflow as tf

    class GraphTokenizer(tf.Module):
        """Encode and decode in graph ops (see the module docstring).

        Args:
            spec: The tokenizer's `PieceSpec`.
        """

        def __init__(self, spec: PieceSpec) -> None:
            super().__init__(name="tokenizer")
            self.kind = spec.kind
            self.piece_bytes = tf.constant(list(spec.piece_bytes), tf.string)  # (vocab,)
            self.longest = spec.longest_piece
            if spec.kind == "char":  # code point -> id; ids 1..V-1 are the characters
                values = list(range(1, len(spec.pieces) + 1))
                key_tensor = tf.constant([ord(p) for p in spec.pieces], tf.int64)
            else:
                key_tensor, values = tf.constant(list(spec.pieces), tf.string), list(spec.ids)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(key_tensor, tf.constant(values, tf.int32)),
                default_value=-1,
            )
            vocab = len(spec.piece_bytes)
            scores, frozen = np.zeros(vocab, np.float32), np.zeros(vocab, bool)
            scores[list(spec.ids)], frozen[list(spec.ids)] = spec.scores, spec.frozen
            self.scores, self.frozen = tf.constant(scores), tf.constant(frozen)  # (vocab,)
            self.unknown_score = spec.unknown_score
            self.byte_ids = None if spec.byte_ids is None else tf.constant(spec.byte_ids, tf.int32)

        def encode(self, text):
            """string (B,) -> ids, a ragged int32 (B, None)."""
            if self.kind == "char":
                points = tf.strings.unicode_decode(text, "UTF-8", errors="replace")  # (B, None)
                return tf.ragged.map_flat_values(
                    lambda p: tf.maximum(self.table.lookup(tf.cast(p, tf.int64)), UNKNOWN_ID),
                    points,
                )
            chars = tf.strings.unicode_split(text, "UTF-8", errors="replace")  # (B, None)
            chars = tf.ragged.map_flat_values(
                lambda c: tf.where(c == " ", SPACE, c), chars
            )  # sentencepiece's escaped spaces
            dense = chars.to_tensor("")  # (B, N)
            lengths = tf.cast(chars.row_lengths(), tf.int32)  # (B,)
            if self.kind == "bpe":
                symbols = self._merge_pairs(dense)  # (B, N), left-aligned, "" after the end
                found = self.table.lookup(symbols)  # (B, N)
                ids = tf.where(found >= 0, found, UNKNOWN_ID)
                counts = tf.reduce_sum(tf.cast(symbols != "", tf.int32), axis=1)  # (B,)
            else:
                ids, symbols, counts = self._best_path(dense, lengths)
            ids = tf.RaggedTensor.from_tensor(ids, lengths=counts)  # (B, None)
            symbols = tf.RaggedTensor.from_tensor(symbols, lengths=counts)  # (B, None)
            return self._byte_fallback(ids, symbols)

        def decode(self, ids):
            """int32 (B, T) -> string (B,): each row's text; ids < 0 are left out."""
            pieces = tf.gather(self.piece_bytes, tf.maximum(ids, 0))  # (B, T)
            joined = tf.strings.reduce_join(tf.where(ids >= 0, pieces, ""), axis=1)  # (B,)
            return tf.strings.unicode_transcode(
                joined, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
            )

        def _piece_scores(self, strings, valid):
            """Ids and encoder scores of `strings` (-1 and -inf where not a piece or not valid)."""
            ids = self.table.lookup(strings)
            ids = tf.where(valid, ids, -1)
            scores = tf.where(ids >= 0, tf.gather(self.scores, tf.maximum(ids, 0)), -np.inf)
            return ids, scores

        def _best_path(self, dense, lengths):
            """Unigram Viterbi: ids (B, N), their text (B, N) and counts (B,), left-aligned."""
            rows, size = tf.shape(dense)[0], tf.shape(dense)[1]
            longest = self.longest
            position = tf.range(size)[None, :]  # (1, N)
            # Every piece ending at each position j, by length: ids and scores (B, N + 1, longest).
            text, end_ids, end_scores, end_text = dense, [], [], []
            for length in range(1, longest + 1):
                if length > 1:
                    padded = tf.concat([dense, tf.fill([rows, length - 1], "")], 1)
                    tail = padded[:, length - 1 : length - 1 + size]  # (B, N), also when N < length
                    text = tf.strings.join([text, tail])  # (B, N): the `length` chars from each
                valid = position + length <= lengths[:, None]  # (B, N)
                ids, scores = self._piece_scores(text, valid)
                if length == 1:  # a character no piece covers is the unknown piece
                    ids = tf.where(valid & (ids < 0), UNKNOWN_ID, ids)
                    scores = tf.where(valid & (ids == UNKNOWN_ID), self.unknown_score, scores)
                shift = [[0, 0], [length, 0]]  # index by end position: start + length
                end_ids.append(tf.pad(ids, shift, constant_values=-1)[:, : size + 1])
                end_scores.append(tf.pad(scores, shift, constant_values=-np.inf)[:, : size + 1])
                end_text.append(tf.pad(text, shift, constant_values="")[:, : size + 1])
            end_ids = tf.stack(end_ids, axis=2)  # (B, N + 1, longest)
            end_scores = tf.stack(end_scores, axis=2)  # (B, N + 1, longest)
            end_text = tf.stack(end_text, axis=2)  # (B, N + 1, longest)
            piece_length = tf.range(1, longest + 1)  # (longest,)

            def forward(j, recent, chosen):
                before = tf.reverse(recent, axis=[1])  # (B, longest): best path to j - length
                total = before + end_scores[:, j]  # (B, longest)
                top = tf.reduce_max(total, axis=1, keepdims=True)  # (B, 1)
                ties = tf.where(total == top, piece_length[None, :], 0)  # the longest wins ties
                recent = tf.concat([recent[:, 1:], top], axis=1)
                return j + 1, recent, chosen.write(j, tf.reduce_max(ties, axis=1))

            start = tf.concat([tf.fill([rows, longest - 1], -np.inf), tf.zeros([rows, 1])], 1)
            chosen = tf.TensorArray(tf.int32, size=size + 1).write(0, tf.ones([rows], tf.int32))
            _, _, chosen = tf.while_loop(
                lambda j, *_: j <= size, forward, (1, start, chosen)
            )  # chosen[j]: the length of the best path's last piece ending at j
            chosen = tf.transpose(chosen.stack())  # (B, N + 1)
            return self._backtrack(chosen, end_ids, end_text, lengths)

        def _backtrack(self, chosen, end_ids, end_text, lengths):
            """The best path's pieces, first to last: ids (B, N), text (B, N), counts (B,)."""
            rows = tf.shape(chosen)[0]

            def back(end, ids, text, count):
                length = tf.gather(chosen, end, batch_dims=1)  # (B,)
                at = tf.stack([tf.range(rows), end, length - 1], axis=1)  # (B, 3)
                live = end > 0
                ids = ids.write(count, tf.where(live, tf.gather_nd(end_ids, at), -1))
                text = text.write(count, tf.where(live, tf.gather_nd(end_text, at), ""))
                return tf.where(live, end - length, 0), ids, text, count + 1

            ids = tf.TensorArray(tf.int32, 0, True).write(0, -tf.ones([rows], tf.int32))
            text = tf.TensorArray(tf.string, 0, True).write(0, tf.fill([rows], ""))
            loop = tf.while_loop(
                lambda end, *_: tf.reduce_any(end > 0), back, (lengths, ids, text, 1)
            )  # element 0 is a placeholder, so that stacking never meets an empty array
            ids = tf.transpose(loop[1].stack()[1:])  # (B, T): last piece first
            text = tf.transpose(loop[2].stack()[1:])  # (B, T)
            counts = tf.reduce_sum(tf.cast(ids >= 0, tf.int32), axis=1)  # (B,)
            step = tf.range(tf.shape(ids)[1])[None, :]  # (1, T)
            order = tf.where(step < counts[:, None], counts[:, None] - 1 - step, step)  # (B, T)
            return tf.gather(ids, order, batch_dims=1), tf.gather(text, order, batch_dims=1), counts

        def _merge_pairs(self, symbols):
            """BPE: merges the best pair per row until none is a piece: (B, N) symbols."""
            rows, size = tf.shape(symbols)[0], tf.shape(symbols)[1]
            index = tf.range(size)[None, :]  # (1, N)
            blank = tf.fill([rows, 1], "")  # (B, 1)

            def scored(symbols):
                left, right = symbols[:, :-1], symbols[:, 1:]  # (B, N - 1) each
                pairs = tf.strings.join([left, right])
                single = self.table.lookup(symbols)  # (B, N)
                frozen = tf.gather(self.frozen, tf.maximum(single, 0)) & (single >= 0)
                valid = (left != "") & (right != "") & ~frozen[:, :-1] & ~frozen[:, 1:]
                return pairs, self._piece_scores(pairs, valid)[1]  # (B, N - 1) each

            def body(symbols, _):
                pairs, scores = scored(symbols)  # (B, N - 1) each
                top = tf.reduce_max(scores, axis=1, keepdims=True)  # (B, 1); -inf: no merge
                found = tf.math.is_finite(top[:, 0])  # (B,)
                first = tf.where(scores == top, index[:, :-1], size)  # the leftmost wins ties
                at = tf.where(found, tf.reduce_min(first, axis=1), size)[:, None]  # (B, 1)
                padded = tf.concat([symbols, blank], axis=1)  # (B, N + 1)
                shifted = tf.gather(padded, tf.where(index > at, index + 1, index), batch_dims=1)
                pairs = tf.concat([pairs, blank], axis=1)  # (B, N): row `at` exists
                last = tf.shape(pairs)[1] - 1  # >= 0, also for empty texts
                merged = tf.gather(pairs, tf.minimum(at, last), batch_dims=1)  # (B, 1)
                return tf.where(index == at, merged, shifted), tf.reduce_any(found)

            return tf.while_loop(lambda _, more: more, body, (symbols, tf.constant(True)))[0]

        def _byte_fallback(self, ids, symbols):
            """Unknown pieces -> the UTF-8 byte pieces of their text (ragged (B, None))."""
            if self.byte_ids is None:
                return ids
            flat_ids, text = ids.flat_values, symbols.flat_values  # (F,): text escaped, as sp
            raw = tf.io.decode_raw(text, tf.uint8, fixed_length=MAX_CHAR_BYTES)  # (F, 4)
            byte_pieces = tf.gather(self.byte_ids, tf.cast(raw, tf.int32))  # (F, 4)
            unknown = flat_ids == UNKNOWN_ID
            width = tf.where(unknown, tf.strings.length(text), 1)  # (F,)
            options = tf.where(unknown[:, None], byte_pieces, flat_ids[:, None])  # (F, 4)
            keep = tf.range(MAX_CHAR_BYTES)[None, :] < width[:, None]  # (F, 4)
            expanded = tf.ragged.boolean_mask(options, keep)  # (F, None)
            return ids.with_flat_values(expanded).merge_dims(1, 2)  # (B, None)

    return GraphTokenizer
