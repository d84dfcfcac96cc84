"""`Generator`: samples text from a run with one compiled loop over tokens, traced once.

The trained layers are folded into a step model (`stepmodel.py`): Embedding times the first
LSTM's input kernel (plus bias) becomes one `[vocab, 4 * units]` table, so that input costs a
gather, and each layer's recurrent matmul for the next token runs beside the token-to-token chain.
One `tf.function` with a fixed input signature reads up to `BLOCK` prompt tokens (once for all
samples) and samples up to `BLOCK` tokens in a `tf.while_loop`, carrying the LSTM states in and
out as tensors, so `stream` calls it block after block. Temperature (0: greedy), top-k (0: off),
top-p (1: off), the seed, the position and the number of samples are tensors and every shape is
fixed but the batch, so no call retraces (and `jit_compile=True` compiles once per batch size).
The sampling rule (greedy, plain, or top-k/top-p first) is chosen once per call, each with its
own loop, so no token pays for a branch. Token t draws with `stateless_fold_in(seed, t)`: the
text depends on the seed, not on the blocks.

An empty prompt starts as if after a line break: the newline token is fed when the vocabulary
has one; otherwise sampling starts from the zero state. TensorFlow is imported lazily, so bad
arguments, runs and prompts are rejected without it.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from textgen.errors import TextgenError
from textgen.rundir import RunDir
from textgen.stepmodel import FILTERED, GREEDY, PLAIN, StepModel, pick_tokens, sampling_rule
from textgen.tokenizers import UNKNOWN_ID, Tokenizer

BLOCK = 256  # most tokens per compiled call: a call costs ~1 ms, 256 tokens ~25 ms (1 sample)
STREAM_CHUNK = 64  # tokens per `stream` chunk by default: about a line of text at a time


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
    """Rejects sampling arguments out of range; needs no TensorFlow.

    Args:
        length: Tokens per sample, >= 1.
        temperature: >= 0 (0: greedy).
        top_k: >= 0 (0: off).
        top_p: In (0, 1] (1: off).
        num_samples: >= 1.
        prefix: Put before each argument's name in errors; `--` names the command line.

    Raises:
        TextgenError: naming the argument at fault.
    """
    rules = [
        ("length", length, length >= 1, ">= 1"),
        ("temperature", temperature, math.isfinite(temperature) and temperature >= 0, ">= 0"),
        ("top-k" if prefix else "top_k", top_k, top_k >= 0, ">= 0"),
        ("top-p" if prefix else "top_p", top_p, 0 < top_p <= 1, "in (0, 1]"),
        ("num-samples" if prefix else "num_samples", num_samples, num_samples >= 1, ">= 1"),
    ]
    for name, value, ok, must in rules:
        if not ok:
            where = "command line" if prefix else name
            raise TextgenError(f"{prefix}{name} must be {must}, got {value}", where)


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
    missing = [c for c in dict.fromkeys(prompt) if UNKNOWN_ID in tokenizer.encode(c)]
    listed = " ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:20])
    more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    what = f"prompt characters outside the model's vocabulary: {listed}{more}"
    if on_unknown != "warn":
        raise TextgenError(what, "prompt")
    warnings.warn(f"{what}; fed as the unknown token", UnknownCharsWarning, stacklevel=2)
    return ids


def seed_pair(seed: int | None) -> np.ndarray:
    """Two int32 words of a seed for stateless random ops; None draws a fresh random seed."""
    if seed is None:
        seed = secrets.randbits(62)
    seed = int(seed) % (1 << 62)
    return np.array([seed & 0x7FFFFFFF, seed >> 31], dtype=np.int32)  # (2,)


class Generator:
    """Samples from a trained model with temperature, top-k and top-p; batched and streamed.

    Args:
        model: ids [batch, time] -> logits [batch, time, vocab] from `build_model`.
        tokenizer: The run's tokenizer.
        jit_compile: XLA-compile the loop (one compile, seconds, per number of samples). On
            a 2-core CPU, one sample: ~4x faster per character at 128 units, the same at 256
            and 512 (`scripts/bench_sample.py`). XLA draws tokens by another algorithm, so a
            seed gives other text than without it (the same text on every XLA run).
    """

    def __init__(self, model, tokenizer: Tokenizer, *, jit_compile: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.trace_count = 0  # Python-side executions of the traced body: 1 after any calls
        self._step = StepModel(model)
        self.block = BLOCK
        self._chunk = self._build_chunk_fn(jit_compile)
        newline = np.asarray(tokenizer.encode("\n"), dtype=np.int32)
        ok = len(newline) == 1 and newline[0] != UNKNOWN_ID
        self._start_ids = newline if ok else np.zeros(0, np.int32)  # (1,) or (0,)
        # Pieces that decode to U+FFFD alone (sentencepiece bytes of a multi-byte character):
        # a stream holds a trailing run of them back until the character is complete.
        self._partial = np.array(
            ["\ufffd" in tokenizer.decode([i]) for i in range(self.vocab_size)], dtype=bool
        )

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
        return cls(run.load_model(checkpoint), tokenizer, jit_compile=jit_compile)

    def generate(
        self,
        prompt: str = "",
        length: int = 500,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_samples: int = 1,
        seed: int | None = None,
        on_unknown: Literal["error", "warn"] = "error",
    ) -> list[str]:
        """Samples `num_samples` continuations of `prompt` (the prompt itself not included).

        Args:
            prompt: Text to continue; empty starts after a line break.
            length: Tokens per sample (characters for a char run).
            temperature: Softmax temperature; 0 is greedy (argmax).
            top_k: Sample among the k likeliest tokens; 0 is off.
            top_p: Sample among the likeliest tokens whose probability sums to p; 1 is off.
            num_samples: Samples drawn side by side, in one batch.
            seed: The same seed gives the same text; None draws a random one.
            on_unknown: Prompt characters outside the vocabulary: `error`, or `warn` and feed
                them as the unknown id.

        Returns:
            One string per sample.

        Raises:
            TextgenError: an argument out of range or (`error`) unknown prompt characters.
        """
        pieces = [[] for _ in range(num_samples)]
        chunks = self.stream(
            prompt, length, temperature=temperature, top_k=top_k, top_p=top_p,
            num_samples=num_samples, seed=seed, chunk_size=length, on_unknown=on_unknown,
        )  # fmt: skip
        for chunk in chunks:
            for piece, text in zip(pieces, chunk, strict=True):
                piece.append(text)
        return ["".join(piece) for piece in pieces]

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
        chunk_size: int = STREAM_CHUNK,
        on_unknown: Literal["error", "warn"] = "error",
    ) -> Iterator[list[str]]:
        """Like `generate`, but yields the text as it is made: one string per sample per chunk.

        Args:
            chunk_size: Tokens per chunk, one compiled call each, at most `BLOCK` (the text is
                the same for any chunk size; `generate` uses the largest).
            (the others as in `generate`)

        Yields:
            Lists of `num_samples` strings; joining a sample's strings gives its text.
        """
        check_sampling_args(
            length=length, temperature=temperature, top_k=top_k, top_p=top_p,
            num_samples=num_samples,
        )  # fmt: skip
        prompt_ids = encode_prompt(self.tokenizer, prompt, on_unknown=on_unknown)
        feed = prompt_ids if len(prompt_ids) else self._start_ids  # (prompt tokens,)
        states = self._step.zero_states(num_samples)  # (2 * layers, samples, units)
        top_k = np.int32(min(top_k, self.vocab_size))
        scalars = (np.float32(temperature), top_k, np.float32(top_p), seed_pair(seed))
        chunk_size = min(max(chunk_size, 1), self.block)
        while len(feed) > self.block:  # a long prompt: read all but the last block first
            _, states = self._call(feed[: self.block], states, 0, 0, scalars)
            feed = feed[self.block :]
        held = [np.zeros(0, np.int32) for _ in range(num_samples)]
        done = 0
        while done < length:
            size = min(chunk_size, length - done)
            tokens, states = self._call(feed, states, size, done, scalars)  # (samples, size)
            feed, done = feed[:0], done + size
            texts = []
            for i, row in enumerate(tokens):
                text, held[i] = self._detokenize(np.concatenate([held[i], row]))
                texts.append(text)
            yield texts
        if any(len(h) for h in held):
            yield [self.tokenizer.decode(h) for h in held]

    def _call(self, feed: np.ndarray, states, size: int, position: int, scalars: tuple):
        """One compiled call: reads `feed` (<= block tokens), samples `size` tokens."""
        padded = np.zeros(self.block, np.int32)  # (block,)
        padded[: len(feed)] = feed
        tokens, states = self._chunk(
            padded, np.int32(len(feed)), states, np.int32(size), np.int32(position), *scalars
        )  # (samples, block), (2 * layers, samples, units)
        return tokens.numpy()[:, :size], states

    def _detokenize(self, ids: np.ndarray) -> tuple[str, np.ndarray]:
        """Text of `ids` except a trailing run of partial pieces, which are returned held."""
        keep = len(ids)
        while keep and self._partial[ids[keep - 1]]:
            keep -= 1
        return self.tokenizer.decode(ids[:keep]), ids[keep:]

    def _build_chunk_fn(self, jit_compile: bool):
        """The one compiled function: read `feed`, then sample up to `block` tokens."""
        import tensorflow as tf

        step, block, spec = self._step, self.block, tf.TensorSpec

        @tf.function(
            jit_compile=jit_compile,
            input_signature=[
                spec((block,), tf.int32),  # feed: tokens to read first (prompt), zero-padded
                spec((), tf.int32),  # feed_length: how many of them are real
                spec((2 * step.layers, None, step.units), tf.float32),  # (h, c) per layer
                spec((), tf.int32),  # length: tokens to sample, <= block
                spec((), tf.int32),  # position: tokens sampled before this call
                spec((), tf.float32),  # temperature
                spec((), tf.int32),  # top_k
                spec((), tf.float32),  # top_p
                spec((2,), tf.int32),  # seed
            ],
        )
        def chunk(feed, feed_length, states, length, position, temperature, top_k, top_p, seed):
            self.trace_count += 1  # runs only while tracing
            carry = step.carry_of(states)
            carry = tf.cond(
                feed_length > 0, lambda: step.warm_up(feed, feed_length, carry), lambda: carry
            )
            samples = tf.shape(states)[1]

            def sample_with(rule: int, start: tuple):
                def run():
                    out = tf.zeros([block, samples], tf.int32)  # (block, samples): fixed for XLA

                    def body(i, out, *carry):
                        logits = step.logits(carry)  # (samples, vocab)
                        key = tf.random.experimental.stateless_fold_in(seed, position + i)
                        settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
                        token = pick_tokens(rule, logits, seed=key, **settings)  # (samples,)
                        out = tf.tensor_scatter_nd_update(out, [[i]], token[None])
                        return (i + 1, out, *step.advance(token, carry))

                    loop = tf.while_loop(lambda i, *_: i < length, body, (0, out, *start))
                    return loop[1], loop[2:]

                return run

            # One loop per rule, the rule picked once: a branch per token costs ~30% of a step.
            rule = sampling_rule(temperature, top_k, top_p)
            loops = [sample_with(r, carry) for r in (GREEDY, PLAIN, FILTERED)]
            out, final_carry = tf.switch_case(rule, loops)
            return tf.transpose(out), step.states_of(final_carry)  # (samples, block), states

        return chunk
