"""`python -m textgen.evaluate RUN_DIR [--text FILE] [--windowed | --dynamic]`: bits per character.

Scores the run's model on its val split (read from the index dir of the run's config) or on any
UTF-8 file encoded with the run's tokenizer. Every token after the first is predicted once, by one
of three methods (`scoring.py`, `dynamic.py`):

- `streamed` (default): S contiguous streams (64 at most), the LSTM state carried through each,
  so a token has all the text before it in its stream as context, as when sampling;
- `windowed` (`--windowed`): zero-state windows of `windows.maxlen` tokens (1 to maxlen tokens
  of context), the pre-streams figure;
- `dynamic` (`--dynamic`): streamed (one stream by default) while the weights take a gradient
  step after each segment (Krause et al. 2018); reports the static streamed score of the same
  layout too. The run's files are never written.

Prints one JSON object: `bpc`, `nats_per_char`, `nats_per_token`, `tokens` (predicted), `chars`
(characters they cover), `unknown_chars` (tokens of the text outside the vocabulary: the unknown
id), `source`, `checkpoint`, `method`, `seconds` (scoring time); streamed and dynamic add `streams`
and `segment`; dynamic adds `static_bpc`, `dynamic_bpc` (= `bpc`), `dynamic_lr`, `dynamic_decay`
and `static_seconds`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from textgen.core.errors import TextgenError
from textgen.data.corpus import load_index
from textgen.data.tokenizers import UNKNOWN_ID, same_vocabulary
from textgen.evaluation.dynamic import DynamicEvaluator, DynamicSettings
from textgen.evaluation.scoring import ArrayTokens, Scorer
from textgen.run.rundir import RunDir

_COUNT_BLOCK = 1 << 20  # ids per read when counting unknown ids in a split
STREAMS = 64  # most streams of a streamed score
METHODS = ("streamed", "windowed", "dynamic")


def evaluate(
    run_dir: str | Path,
    text_file: str | Path | None = None,
    *,
    checkpoint: str = "best",
    batch_size: int = 64,
    method: Literal["streamed", "windowed", "dynamic"] = "streamed",
    streams: int | None = None,
    segment: int | None = None,
    dynamic: DynamicSettings | None = None,
) -> dict[str, Any]:
    """Scores a run on its val split, or on `text_file`.

    Args:
        run_dir: The run dir.
        text_file: A UTF-8 text file; None scores the val split of the run's index.
        checkpoint: `best`, `latest` or a checkpoint path prefix.
        batch_size: Windows per forward pass (windowed).
        method: `streamed`, `windowed` or `dynamic` (see the module).
        streams: Most streams (streamed: 64; dynamic: `dynamic.streams`).
        segment: Tokens per stream per call (streamed: `windows.maxlen`; dynamic: tokens
            between updates, `dynamic.segment`).
        dynamic: The dynamic-evaluation settings (default `DynamicSettings()`).

    Returns:
        A dict with bpc, nats_per_char, nats_per_token, tokens, chars, unknown_chars, source,
        checkpoint, method, seconds, and per method the keys the module lists.

    Raises:
        TextgenError: a missing run, checkpoint, index or file; a file that is not UTF-8; a
            text too short to score; an index whose tokenizer is not the run's; bad settings.
    """
    if method not in METHODS:
        raise TextgenError(f"method must be one of {', '.join(METHODS)}, got {method!r}", "method")
    settings = _dynamic_settings(dynamic, streams, segment) if method == "dynamic" else None
    run = RunDir(run_dir)
    run.resolve_checkpoint(checkpoint)  # a missing run or checkpoint is said before TensorFlow
    cfg, tokenizer = run.load_config(), run.load_tokenizer()
    text = read_utf8(text_file) if text_file is not None else None
    if text is not None:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)  # (tokens,)
        tokens, unknown, source = ids, int((ids == UNKNOWN_ID).sum()), str(text_file)
    else:
        tokens, source = _val_tokens(cfg, tokenizer)
        unknown = _count_unknown(tokens)
    if len(tokens) < 2:
        raise TextgenError("too short to score: it needs at least 2 tokens", source)

    tokens = ArrayTokens(tokens) if text is not None else tokens
    model = run.load_model(checkpoint)
    lengths = tokenizer.token_char_lengths()
    if settings is not None:
        result = _score_dynamic(model, lengths, tokens, cfg.windows.maxlen, settings)
    else:
        result = _score_static(
            model, lengths, tokens, cfg.windows.maxlen, method=method, batch_size=batch_size,
            streams=streams or STREAMS, segment=segment,
        )  # fmt: skip
    return {**result, "unknown_chars": unknown, "source": source, "checkpoint": checkpoint}


def _dynamic_settings(
    dynamic: DynamicSettings | None, streams: int | None, segment: int | None
) -> DynamicSettings:
    """The dynamic settings with `streams` and `segment` put in where given; checked."""
    settings = dynamic or DynamicSettings()
    changes = {"streams": streams, "segment": segment}
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
    settings.check()
    return settings


def _figures(score) -> dict[str, Any]:
    return {
        "bpc": score.bpc,
        "nats_per_char": score.nats_per_char,
        "nats_per_token": score.nats_per_token,
        "tokens": score.tokens,
        "chars": round(score.chars),
        "method": score.method,
    }


def _score_static(model, lengths, tokens, maxlen: int, *, method: str, batch_size: int,
                  streams: int, segment: int | None) -> dict[str, Any]:  # fmt: skip
    """A streamed or windowed score, timed."""
    scorer = Scorer(model, lengths, maxlen, batch_size, segment=segment)
    started = time.monotonic()
    if method == "windowed":
        score = scorer.score_all(tokens)
        return {**_figures(score), "seconds": round(time.monotonic() - started, 2)}
    score = scorer.score_streams(tokens, streams=streams)
    return {**_figures(score), "streams": score.streams, "segment": scorer.segment,
            "seconds": round(time.monotonic() - started, 2)}  # fmt: skip


def _score_dynamic(model, lengths, tokens, maxlen: int, settings: DynamicSettings):
    """The static streamed score of the layout, then the dynamic one, timed."""
    scorer = Scorer(model, lengths, maxlen, segment=settings.segment)
    started = time.monotonic()
    static = scorer.score_streams(tokens, streams=settings.streams)
    static_seconds = time.monotonic() - started
    evaluator = DynamicEvaluator(model, lengths, settings)
    started = time.monotonic()
    score = evaluator.score(tokens)
    return {
        **_figures(score),
        "streams": score.streams,
        "segment": settings.segment,
        "static_bpc": static.bpc,
        "dynamic_bpc": score.bpc,
        "dynamic_lr": settings.lr,
        "dynamic_decay": settings.decay,
        "seconds": round(time.monotonic() - started, 2),
        "static_seconds": round(static_seconds, 2),
    }


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file (a BOM is dropped).

    Raises:
        TextgenError: the file is missing, unreadable or not UTF-8 (naming the byte offset).
    """
    path = Path(path)
    if not path.is_file():
        raise TextgenError("text file not found", str(path))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TextgenError(f"cannot read the text file: {e.strerror or e}", str(path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TextgenError(f"not UTF-8 (invalid byte at offset {e.start})", str(path)) from None


def _val_tokens(cfg, tokenizer):
    """The val split of the run's index, checked to use the run's tokenizer."""
    index = load_index(cfg.data.index_dir)
    if not same_vocabulary(index.tokenizer, tokenizer):
        raise TextgenError(
            "the index's tokenizer is not the run's (re-indexed since?); pass --text FILE",
            str(index.directory),
        )
    return index.val, f"val split of {index.directory}"


def _count_unknown(tokens) -> int:
    """Unknown ids in a token source, read a block at a time (bounded memory)."""
    total = 0
    for start in range(0, len(tokens), _COUNT_BLOCK):
        span = min(_COUNT_BLOCK, len(tokens) - start)
        total += int((tokens.read(np.array([start]), span) == UNKNOWN_ID).sum())
    return total
