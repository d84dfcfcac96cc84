"""`Generator`: samples text from a run with one compiled loop over tokens, traced once.

The trained layers are folded into a step model (`stepmodel.py`): Embedding times the first
LSTM's input kernel (plus bias) becomes one `[vocab, 4 * units]` table, so that input costs a
gather, and each layer's recurrent matmul for the next token runs beside the token-to-token chain.
One `tf.function` (`build_sampler`, shared with the export and the server) reads up to `BLOCK`
prompt tokens (each prompt once, for all its rows) and samples up to `BLOCK` tokens in a
`tf.while_loop`, carrying the LSTM states in and out as tensors, so `stream` calls it block after
block. Temperature (0: greedy), top-k (0: off), top-p (1: off), the seed, the position and the
sample number are per-row tensors and every shape is fixed but the batch, so no call retraces
(and `jit_compile=True` compiles once per batch size); rows of one call may differ in all of
them. The sampling rule (greedy, plain, or top-k/top-p first) is chosen once per call, each
with its own loop, so no token pays for a branch. Token t of a row draws a uniform from a
counter-based hash of (seed, sample number, t) and inverts the cumulative distribution at it:
the text depends on the seed, not on the blocks, nor on the other rows of the batch.

An empty prompt starts as if after a line break: the newline token is fed when the vocabulary
has one; otherwise sampling starts from the zero state. A documents run's tokenizer has an
end-of-text id: an empty prompt then starts a new document (the end-of-text token is fed, as
after a document's end), and a row stops at the end-of-text token unless told not to. Stop
strings (`stops.py`) stop a row after it writes one; rows stop independently, and the call
ends when all have stopped. TensorFlow is imported lazily, so bad
arguments, runs and prompts are rejected without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from textgen.core.errors import TextgenError
from textgen.core.sampling_settings import (
    SamplingSettingError,
    SamplingSettings,
    check_sampling,
    seed_value,
)  # fmt: skip
from textgen.data.documents import SEPARATORS
from textgen.data.novelty import NoveltyIndex
from textgen.data.tokenizers import (
    UNKNOWN_ID,
    Tokenizer,
    find_unknown_chars,
    unknown_chars_message,
)  # fmt: skip
from textgen.generation.sampler import BLOCK, build_sampler
from textgen.generation.stops import RowStops, check_stops
from textgen.model.stepmodel import StepModel
from textgen.run.rundir import RunDir

STREAM_CHUNK = 64  # tokens per `stream` chunk by default: about a line of text at a time


@dataclass
class Sample:
    """One sample and how it ended.

    Attributes:
        text: The generated text (the prompt not included; a stop string cut off).
        tokens: Tokens generated, the stop string's or end-of-text token included.
        stopped: `stop` (a stop string), `end` (the end-of-text token) or `length`.
        novelty: What `novelty.NoveltyIndex.report` says of it, when asked for.
    """

    text: str
    tokens: int
    stopped: str
    novelty: dict | None = None


class UnknownCharsWarning(UserWarning):
    """Prompt characters outside the vocabulary were mapped to the unknown id."""


def check_sampling_args(
    *,
    length: int,
    temperature: float,
    top_k: int,
    top_p: float,
    num_samples: int,
    prefix: str = "",
) -> None:
    """Rejects sampling arguments out of range (`check_sampling`'s rule); needs no TensorFlow.

    Args:
        length, temperature, top_k, top_p, num_samples: As `Generator.generate` takes them.
        prefix: Put before each argument's name in errors; `--` names the command line.

    Raises:
        TextgenError: naming the argument at fault.
    """
    settings = SamplingSettings(
        temperature=temperature, top_k=top_k, top_p=top_p, length=length, num_samples=num_samples
    )
    try:
        check_sampling(settings, name=lambda f: prefix + (f.replace("_", "-") if prefix else f))
    except SamplingSettingError as e:
        raise TextgenError(e.what, "command line" if prefix else e.field) from None


def encode_prompt(
    tokenizer: Tokenizer, prompt: str, *, on_unknown: Literal["error", "warn"] = "error"
) -> np.ndarray:
    """Prompt ids (int32); needs no TensorFlow.

    Args:
        tokenizer: The run's tokenizer.
        prompt: The text.
        on_unknown: Characters outside the vocabulary: `error` lists them in a TextgenError;
            `warn` issues an `UnknownCharsWarning` and keeps them as the unknown id.
    """
    ids = np.asarray(tokenizer.encode(prompt), dtype=np.int32)  # (tokens,)
    if not (ids == UNKNOWN_ID).any():
        return ids
    what = unknown_chars_message(find_unknown_chars(tokenizer, prompt), "prompt characters")
    if on_unknown != "warn":
        raise TextgenError(what, "prompt")
    warnings.warn(f"{what}; fed as the unknown token", UnknownCharsWarning, stacklevel=2)
    return ids


class Generator:
    """Samples from a trained model with temperature, top-k and top-p; batched and streamed.

    Args:
        model: ids [batch, time] -> logits [batch, time, vocab] from `build_model`.
        tokenizer: The run's tokenizer.
        jit_compile: XLA-compile the loop (one compile, seconds, per number of samples): a
            win for small models on a CPU, none at 256 units and more (docs/benchmarks.md,
            `scripts/bench_sample.py`). The draws are the same ops either way; XLA's
            float rounding may differ, so rarely a seed gives other text than without it.
    """

    def __init__(
        self, model, tokenizer: Tokenizer, *, jit_compile: bool = False, separator: str = "\n"
    ) -> None:
        self.model = model
        self.separator = separator  # what an end-of-text token reads as, when not stopping at it
        self.run: RunDir | None = None  # set by `from_run`: where novelty finds the index
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.trace_count = 0  # Python-side executions of the traced body: 1 after any calls
        self._step = StepModel(model)
        self.block = BLOCK
        self._sampler = build_sampler(
            self._step, self.block, jit_compile=jit_compile, on_trace=self._count_trace
        )
        newline = np.asarray(tokenizer.encode("\n"), dtype=np.int32)
        ok = len(newline) == 1 and newline[0] != UNKNOWN_ID
        self._start_ids = newline if ok else np.zeros(0, np.int32)  # (1,) or (0,)
        self.end_of_text = getattr(tokenizer, "end_of_text_id", None)
        if self.end_of_text is not None:  # a new document starts after an end-of-text token
            self._start_ids = np.array([self.end_of_text], np.int32)  # (1,)
        self._char_lengths = tokenizer.token_char_lengths()  # (vocab,)
        # Pieces that decode to U+FFFD alone (sentencepiece bytes of a multi-byte character):
        # a stream holds a trailing run of them back until the character is complete.
        self._partial = np.array(
            ["\ufffd" in tokenizer.decode([i]) for i in range(self.vocab_size)], dtype=bool
        )

    def _count_trace(self) -> None:
        self.trace_count += 1

    def refresh(self) -> None:
        """Picks up the model's current weights (the trainer samples after each epoch)."""
        self._step.refresh()

    @classmethod
    def from_run(
        cls, run: str | Path | RunDir, checkpoint: str = "best", *, jit_compile: bool = False
    ) -> Generator:
        """Loads a run's weights and tokenizer.

        Args:
            run: The run dir (`train.out_dir`), or a `RunDir` already read.
            checkpoint: `best` (model.keras, else the latest checkpoint), `latest`, or a
                checkpoint path prefix such as `RUN/checkpoints/ckpt-3`.
            jit_compile: See the class.

        Raises:
            TextgenError: a missing run or checkpoint, or an unreadable file.
        """
        run = run if isinstance(run, RunDir) else RunDir(run)
        tokenizer = run.load_tokenizer()
        separator = SEPARATORS.get(run.load_config().data.documents, "\n")
        generator = cls(
            run.load_model(checkpoint), tokenizer, jit_compile=jit_compile, separator=separator
        )
        generator.run = run
        return generator

    def generate(self, prompt: str = "", length: int = 500, **options) -> list[str]:
        """Samples `num_samples` continuations of `prompt` (the prompt itself not included).

        Takes the arguments of `samples` (but `novelty`) and returns only the texts.
        """
        return [s.text for s in self.samples(prompt, length, **options)]

    def samples(
        self,
        prompt: str = "",
        length: int = 500,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_samples: int = 1,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_at_end: bool | None = None,
        novelty: bool = False,
        on_unknown: Literal["error", "warn"] = "error",
    ) -> list[Sample]:
        """Samples `num_samples` continuations of `prompt`, each with how it ended.

        Args:
            prompt: Text to continue; empty starts after a line break (a documents run: a new
                document).
            length: Tokens per sample (characters for a char run); the cap when it stops.
            temperature: Softmax temperature; 0 is greedy (argmax).
            top_k: Sample among the k likeliest tokens; 0 is off.
            top_p: Sample among the likeliest tokens whose probability sums to p; 1 is off.
            num_samples: Samples drawn side by side, in one batch.
            seed: The same seed gives the same text; None draws a random one.
            stop: Strings (at most 8, 64 characters each): a sample stops after the first one
                it writes, which is cut from its text.
            stop_at_end: Stop at the end-of-text token; None: yes for a documents run.
            novelty: Report what of each sample occurs in the run's training split (the run
                must come from `from_run`, its index still there).
            on_unknown: Prompt characters outside the vocabulary: `error`, or `warn` and feed
                them as the unknown id.

        Returns:
            One `Sample` per sample.

        Raises:
            TextgenError: an argument out of range, (`error`) unknown prompt characters, or
                (`novelty`) no run or no index.
        """
        novelty_index = self._novelty_index() if novelty else None
        rows = self._row_stops(num_samples, stop, stop_at_end)
        pieces = [[] for _ in range(num_samples)]
        chunks = self._stream(
            prompt, length, temperature=temperature, top_k=top_k, top_p=top_p,
            num_samples=num_samples, seed=seed, chunk_size=self.block, on_unknown=on_unknown,
            rows=rows,
        )  # fmt: skip
        for chunk in chunks:
            for piece, text in zip(pieces, chunk, strict=True):
                piece.append(text)
        out = []
        for i, piece in enumerate(pieces):
            reason = rows.reasons[i] or "length"
            out.append(Sample("".join(piece), rows.tokens[i] if rows.active else length, reason))
        if novelty_index is not None:
            for sample in out:
                sample.novelty = novelty_index.report(sample.text)
        return out

    def _novelty_index(self):
        """The novelty index of the run's training split (built on first use)."""
        if self.run is None:
            raise TextgenError("novelty needs the run's index: load with from_run", "novelty")
        return NoveltyIndex.for_run(self.run)

    def _row_stops(self, rows: int, stop: Sequence[str], stop_at_end: bool | None) -> RowStops:
        """The stop state of a batch (inactive, at no cost, when there is nothing to stop at)."""
        stops = check_stops(stop)
        at_end = self.end_of_text is not None if stop_at_end is None else stop_at_end
        end = self.end_of_text if at_end else None
        return RowStops(rows, stops, end, self._char_lengths)

    def stream(
        self,
        prompt: str = "",
        length: int = 500,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_samples: int = 1,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_at_end: bool | None = None,
        chunk_size: int = STREAM_CHUNK,
        on_unknown: Literal["error", "warn"] = "error",
    ) -> Iterator[list[str]]:
        """Like `samples`, but yields the text as it is made: one string per sample per chunk.

        Args:
            chunk_size: Tokens per chunk, one compiled call each, at most `BLOCK` (the text is
                the same for any chunk size; `samples` uses the largest).
            (the others as in `samples`)

        Yields:
            Lists of `num_samples` strings; joining a sample's strings gives its text (a
            stopped sample's strings are empty from then on).
        """
        rows = self._row_stops(num_samples, stop, stop_at_end)
        yield from self._stream(
            prompt, length, temperature=temperature, top_k=top_k, top_p=top_p,
            num_samples=num_samples, seed=seed, chunk_size=chunk_size, on_unknown=on_unknown,
            rows=rows,
        )  # fmt: skip

    def _stream(
        self, prompt: str, length: int, *, temperature: float, top_k: int, top_p: float,
        num_samples: int, seed: int | None, chunk_size: int, on_unknown: str, rows: RowStops,
    ) -> Iterator[list[str]]:  # fmt: skip
        """`stream`'s loop; `rows` follows the stops (and says how each row ended)."""
        s = check_sampling(
            SamplingSettings(temperature, top_k, top_p, length, num_samples, seed),
            vocab_size=self.vocab_size,
        )  # raises SamplingSettingError (a TextgenError) naming the argument
        prompt_ids = encode_prompt(self.tokenizer, prompt, on_unknown=on_unknown)
        feed = prompt_ids if len(prompt_ids) else self._start_ids  # (prompt tokens,)
        states = self._step.zero_states(num_samples)  # (2 * layers, samples, units)
        n = num_samples
        settings = {  # one value per sample: (samples,) each
            "temperature": np.full(n, s.temperature, np.float32),
            "top_k": np.full(n, s.top_k, np.int32),
            "top_p": np.full(n, s.top_p, np.float32),
            "seed": np.full(n, seed_value(s.seed), np.int64),
            "sample": np.arange(n, dtype=np.int32),
        }
        chunk_size = min(max(chunk_size, 1), self.block)
        while len(feed) > self.block:  # a long prompt: read all but the last block first
            _, states = self._call(feed[: self.block], states, 0, 0, settings)
            feed = feed[self.block :]
        held = [np.zeros(0, np.int32) for _ in range(num_samples)]
        done = 0

        def decode(i: int, row: np.ndarray) -> str:
            text, held[i] = self._detokenize(np.concatenate([held[i], row]))
            return text

        while done < length:
            size = min(chunk_size, length - done)
            tokens, states = self._call(feed, states, size, done, settings)  # (samples, size)
            feed, done = feed[:0], done + size
            if rows.active:
                yield rows.step(tokens, done - size, decode)
                if rows.all_stopped:
                    return
                continue
            yield [decode(i, row) for i, row in enumerate(tokens)]
        tail = [self._decode(h) for h in held]  # partial pieces at the very end
        if rows.active:
            tail = rows.finish(length, tail)
        if any(tail):
            yield tail

    def _call(self, feed: np.ndarray, states, size: int, position: int, settings: dict):
        """One compiled call: all samples read `feed` (<= block tokens), then sample `size`."""
        samples = len(settings["sample"])
        padded = np.zeros((1, self.block), np.int32)  # (1, block): one prompt for all samples
        padded[0, : len(feed)] = feed
        feed_row = np.full(samples, 0 if len(feed) else -1, np.int32)  # (samples,)
        tokens, states = self._sampler(
            padded,
            np.array([len(feed)], np.int32),
            feed_row,
            states,
            np.int32(size),
            np.full(samples, position, np.int32),
            **settings,
        )  # (samples, block), (2 * layers, samples, units)
        return tokens.numpy()[:, :size], states

    def _detokenize(self, ids: np.ndarray) -> tuple[str, np.ndarray]:
        """Text of `ids` except a trailing run of partial pieces, which are returned held."""
        keep = len(ids)
        while keep and self._partial[ids[keep - 1]]:
            keep -= 1
        return self._decode(ids[:keep]), ids[keep:]

    def _decode(self, ids: np.ndarray) -> str:
        """The text of `ids`; an end-of-text token reads as the separator of documents."""
        eot = self.end_of_text
        if eot is None or not (ids == eot).any():
            return self.tokenizer.decode(ids)
        cuts = np.flatnonzero(ids == eot)
        parts = np.split(ids, cuts)  # each but the first starts with the end-of-text id
        return self.separator.join(self.tokenizer.decode(p[p != eot]) for p in parts)
