"""A run as a TensorFlow SavedModel: the sampling loop and the tokenizer inside the graph.

`ExportModule` holds the step model's variables, the tokenizer as lookup tables, and four
functions, all traced once with fixed input signatures:

- `generate` (the `serving_default` signature): `prompt` string[B], `length` int32[B],
  `temperature` float32[B], `top_k` int32[B], `top_p` float32[B], `seed` int64[B],
  `stop` string[B, S] (each row's stop strings, "" padding; at most 8 of at most 64
  characters), `stop_at_end` bool[B] (stop at the end-of-text token; a documents run's only)
  -> `text` string[B] (the continuation, cut before its first stop string and at the
  end-of-text token), `tokens` int32[B] (the stop string's or end-of-text token included),
  `stopped` string[B] (`stop`, `end` or `length`). Each row is its own request; the loop ends
  once every row has stopped. The rule is `Generator.samples`' (`graph_stops.py`).
- `sampler`: `generate.build_sampler`'s function, the one compiled loop that `Generator` runs
  too (the server calls it block by block, so rows can join and leave a running batch).
- `encode`: string[B] -> `ids` int32[B, N] (zero-padded) and `lengths` int32[B].
- `metadata`: the tokenizer kind, every token's bytes (an end-of-text token reads as the run's
  document separator), the block, layers and units, the start and end-of-text ids and every
  token's length in characters (what the server's batcher needs to stop rows itself).

The tokenizer, char or sentencepiece, is `graph_tokenizer.GraphTokenizer`: core ops only, so
loading needs TensorFlow alone (`tf.saved_model.load`, `saved_model_cli`, TF Serving).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from pathlib import Path

from textgen.core.errors import TextgenError
from textgen.core.sampling_settings import MAX_TEMPERATURE, MIN_TEMPERATURE
from textgen.data.documents import SEPARATORS
from textgen.data.tokenizers import Tokenizer
from textgen.generation.generate import BLOCK
from textgen.generation.sampler import build_sampler
from textgen.model.stepmodel import StepModel
from textgen.run.rundir import RunDir
from textgen.serving.graph_stops import check_stop_inputs, row_ends, stop_patterns
from textgen.serving.graph_tokenizer import PieceSpec, graph_tokenizer_class

SAVED_MODEL_FILE = "saved_model.pb"


def is_export(path: str | Path) -> bool:
    """Whether `path` is a SavedModel dir (as `export` writes)."""
    return (Path(path) / SAVED_MODEL_FILE).is_file()


@functools.cache
def module_class():
    """`ExportModule`, defined on first use so that importing this module needs no TensorFlow."""
    import tensorflow as tf

    class ExportModule(tf.Module):
        """The exportable module; see the module docstring.

        Args:
            model: ids [batch, time] -> logits [batch, time, vocab] from `build_model`.
            tokenizer: The run's tokenizer (char or sentencepiece).
            block: Most tokens per sampler call.
            separator: What an end-of-text token reads as when a row goes on past it (the
                run's document separator, as `Generator` prints it).
        """

        def __init__(
            self, model, tokenizer: Tokenizer, *, block: int = BLOCK, separator: str = "\n"
        ) -> None:
            super().__init__(name="textgen")
            step = StepModel(model)
            self.step_variables = [step.table, step.dense_kernel, step.dense_bias]
            self.step_variables += [*step.recurrent, *step.kernels, *step.biases]
            self.block, self.layers, self.units = block, step.layers, step.units
            spec = PieceSpec.from_tokenizer(tokenizer)
            eot = tokenizer.end_of_text_id
            self.end_of_text = -1 if eot is None else int(eot)
            if eot is not None:  # decoded as the separator, as `Generator._decode` does
                pieces = list(spec.piece_bytes)
                pieces[eot] = separator.encode("utf-8")
                spec = dataclasses.replace(spec, piece_bytes=tuple(pieces))
            self.tokenizer = graph_tokenizer_class()(spec)
            self.piece_bytes = list(spec.piece_bytes)  # id -> bytes
            self.char_lengths = [float(x) for x in tokenizer.token_char_lengths()]  # id -> chars
            newline = tokenizer.encode("\n")
            self.newline = int(newline[0]) if len(newline) == 1 and newline[0] else -1
            # An empty prompt starts after a line break, or a documents run's new document.
            self.start = self.newline if eot is None else self.end_of_text
            self.kind = tokenizer.kind
            self.sampler = build_sampler(step, block)
            self._step = step

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompt")])
        def encode(self, prompt):
            """Prompt ids, zero-padded: {ids: int32 (B, N), lengths: int32 (B,)}."""
            ids = self.tokenizer.encode(prompt)  # (B, None) int32
            return {"ids": ids.to_tensor(0), "lengths": tf.cast(ids.row_lengths(), tf.int32)}

        @tf.function(input_signature=[])
        def metadata(self):
            """What a server needs: kind, pieces (id -> bytes), block, layers, units, newline,
            start (the id an empty prompt starts with, -1: none), end_of_text (-1: none) and
            char_lengths (id -> characters, to count the tokens up to a stop string)."""
            return {
                "kind": tf.constant(self.kind),
                "pieces": tf.constant(self.piece_bytes, tf.string),
                "block": tf.constant(self.block, tf.int32),
                "layers": tf.constant(self.layers, tf.int32),
                "units": tf.constant(self.units, tf.int32),
                "newline": tf.constant(self.newline, tf.int32),
                "start": tf.constant(self.start, tf.int32),
                "end_of_text": tf.constant(self.end_of_text, tf.int32),
                "char_lengths": tf.constant(self.char_lengths, tf.float32),
            }

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="prompt"),
                tf.TensorSpec([None], tf.int32, name="length"),
                tf.TensorSpec([None], tf.float32, name="temperature"),
                tf.TensorSpec([None], tf.int32, name="top_k"),
                tf.TensorSpec([None], tf.float32, name="top_p"),
                tf.TensorSpec([None], tf.int64, name="seed"),
                tf.TensorSpec([None, None], tf.string, name="stop"),
                tf.TensorSpec([None], tf.bool, name="stop_at_end"),
            ]
        )
        def generate(self, prompt, length, temperature, top_k, top_p, seed, stop, stop_at_end):
            """One continuation per row: {text: string (B,), tokens: int32 (B,), stopped:
            string (B,)}."""
            prompt, length, temperature, top_k, top_p, seed, stop, stop_at_end = _check_inputs(
                prompt, length, temperature, top_k, top_p, seed, stop, stop_at_end
            )
            encoded = self.encode(prompt)
            ids, lengths = _with_start(encoded["ids"], encoded["lengths"], self.start)
            rows = tf.shape(prompt)[0]
            settings = {
                "temperature": temperature,
                "top_k": tf.minimum(top_k, len(self.piece_bytes)),
                "top_p": top_p,
                "seed": seed,
                "sample": tf.zeros([rows], tf.int32),
            }
            states = tf.zeros([2 * self.layers, rows, self.units])  # (2 * layers, B, units)
            states = self._read(ids, lengths, states, settings)
            patterns = stop_patterns(stop)  # (B,)

            def ends(tokens):  # how each row ends, from its tokens so far
                return row_ends(
                    tokens, length, stop_at_end, patterns, end_of_text=self.end_of_text,
                    tokenizer=self.tokenizer,
                )  # fmt: skip

            def more(done, tokens):  # rows that stopped need no more tokens
                return tf.reduce_any((ends(tokens)["stopped"] == "length") & (length > done))

            total = tf.reduce_max(tf.maximum(length, 0))
            return ends(self._sample(total, states, settings, more))

        def _read(self, ids, lengths, states, settings):
            """States after each row's prompt, read `block` tokens per sampler call."""
            block, rows = self.block, tf.shape(ids)[0]
            padded = tf.pad(ids, [[0, 0], [0, block]])  # (B, N + block): any slice is full

            def body(offset, states):
                feed = padded[:, offset : offset + block]  # (B, block)
                feed_length = tf.clip_by_value(lengths - offset, 0, block)  # (B,)
                _, states = self.sampler(
                    feed, feed_length, tf.range(rows), states, 0, tf.zeros([rows], tf.int32),
                    **settings,
                )  # fmt: skip
                return offset + block, states

            longest = tf.reduce_max(lengths)
            return tf.while_loop(lambda offset, _: offset < longest, body, (0, states))[1]

        def _sample(self, total, states, settings, more):
            """(B, <= total) tokens, `block` per sampler call, states carried, while
            `more(done, tokens)` (some row still needs tokens) and fewer than `total`."""
            block, rows = self.block, tf.shape(states)[1]
            no_feed = (tf.zeros([0, block], tf.int32), tf.zeros([0], tf.int32))

            def body(done, states, out):
                size = tf.minimum(block, total - done)
                tokens, states = self.sampler(
                    *no_feed, -tf.ones([rows], tf.int32), states, size, tf.fill([rows], done),
                    **settings,
                )  # (B, block)  # fmt: skip
                return done + size, states, tf.concat([out, tokens[:, :size]], axis=1)

            out = tf.zeros([rows, 0], tf.int32)  # (B, tokens so far)

            loop = tf.while_loop(
                lambda done, _, out: (done < total) & more(done, out),
                body,
                (0, states, out),
                shape_invariants=(tf.TensorShape([]), states.shape, tf.TensorShape([None, None])),
            )
            return loop[2]  # (B, <= total)

    return ExportModule


def _check_inputs(*inputs) -> tuple:
    """Graph-side checks: the inputs, usable only after the checks pass (else an
    InvalidArgumentError naming the input). The rule is `core.sampling_settings`', in the
    graph's own dtypes; top-k above the vocabulary is clamped (by `generate`)."""
    import tensorflow as tf

    prompt, length, temperature, top_k, top_p, _, stop, stop_at_end = inputs
    rows = tf.shape(prompt)[0]
    names = ("length", "temperature", "top_k", "top_p", "seed")
    checks = [
        tf.debugging.assert_equal(tf.shape(value)[0], rows, f"{name} must have one per prompt")
        for name, value in zip(names, inputs[1:6], strict=True)
    ]
    checks += check_stop_inputs(stop, stop_at_end, rows)
    checks += [
        tf.debugging.assert_non_negative(length, "length must be >= 0"),
        tf.debugging.assert_greater_equal(temperature, 0.0, "temperature must be >= 0"),
        tf.debugging.Assert(
            tf.reduce_all(
                (temperature == 0)
                | ((temperature >= MIN_TEMPERATURE) & (temperature <= MAX_TEMPERATURE))
            ),
            [f"temperature must be 0 or in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"],
        ),
        tf.debugging.assert_non_negative(top_k, "top_k must be >= 0"),
        tf.debugging.assert_greater(top_p, 0.0, "top_p must be in (0, 1]"),
        tf.debugging.assert_less_equal(top_p, 1.0, "top_p must be in (0, 1]"),
    ]
    with tf.control_dependencies([c for c in checks if c is not None]):
        return tuple(tf.identity(x) for x in inputs)


def _with_start(ids, lengths, start: int):
    """An empty prompt starts after a line break (when the vocabulary has one), or for a
    documents run after an end-of-text token, as `Generator`."""
    import tensorflow as tf

    if start < 0:
        return ids, lengths
    empty = lengths == 0  # (B,)
    ids = tf.pad(ids, [[0, 0], [0, 1]])  # (B, N + 1): room for the start token
    first = tf.where(empty, start, ids[:, 0])
    ids = tf.concat([first[:, None], ids[:, 1:]], axis=1)
    return ids, tf.where(empty, 1, lengths)


def build_module(run_dir: str | Path, checkpoint: str = "best", *, block: int = BLOCK):
    """The exportable module of a run's weights and tokenizer (in memory).

    Raises:
        TextgenError: a missing run or checkpoint, or a tokenizer that cannot be exported.
    """
    run = RunDir(run_dir)
    run.resolve_checkpoint(checkpoint)
    tokenizer = run.load_tokenizer()
    PieceSpec.from_tokenizer(tokenizer)  # refuses what the graph cannot hold, before TF work
    separator = SEPARATORS.get(run.load_config().data.documents, "\n")
    return module_class()(run.load_model(checkpoint), tokenizer, block=block, separator=separator)


def export(
    run_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "best", force: bool = False
) -> Path:
    """Writes a run's SavedModel to `out_dir` (built in a temporary sibling, then renamed).

    Args:
        run_dir: The run dir.
        out_dir: Where the SavedModel goes; must not exist unless `force`. Missing parent
            dirs are created.
        checkpoint: `best`, `latest` or a checkpoint path prefix.
        force: Replace an existing `out_dir`.

    Returns:
        `out_dir`.

    Raises:
        TextgenError: a bad run, checkpoint or output path.
    """
    import tensorflow as tf

    out = Path(out_dir)
    if out.exists() and not force:
        raise TextgenError("the output dir exists (use --force to replace it)", str(out))
    if out.exists() and not (out.is_dir() and (is_export(out) or not any(out.iterdir()))):
        raise TextgenError("refusing to replace something that is not an export", str(out))
    module = build_module(run_dir, checkpoint)
    try:  # `export runs/base exported/base` on a fresh checkout: exported/ is made here
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TextgenError(f"cannot create the output dir's parent: {e.strerror or e}",
                           str(out)) from None  # fmt: skip
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        signatures = {"serving_default": module.generate.get_concrete_function()}
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as e:
        raise TextgenError(f"cannot write the export: {e.strerror or e}", str(out)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
