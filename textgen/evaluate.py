"""`python -m textgen.evaluate RUN_DIR [--text FILE] [--checkpoint NAME]`: bits per character.

Scores the run's model on its val split (read from the index dir of the run's config) or on any
UTF-8 file encoded with the run's tokenizer. Every token after the first is predicted once, with
up to `windows.maxlen` tokens of context (`scoring.Scorer.score_all`). Prints one JSON object:
`bpc`, `nats_per_char`, `nats_per_token`, `tokens` (predicted), `chars` (characters they cover),
`unknown_chars` (tokens of the text outside the vocabulary: the unknown id), `source`,
`checkpoint`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgen import cli
from textgen.errors import TextgenError
from textgen.tokenizers import UNKNOWN_ID, same_vocabulary

_COUNT_BLOCK = 1 << 20  # ids per read when counting unknown ids in a split


def evaluate(
    run_dir: str | Path,
    text_file: str | Path | None = None,
    *,
    checkpoint: str = "best",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Scores a run on its val split, or on `text_file`.

    Args:
        run_dir: The run dir.
        text_file: A UTF-8 text file; None scores the val split of the run's index.
        checkpoint: `best`, `latest` or a checkpoint path prefix.
        batch_size: Windows per forward pass.

    Returns:
        A dict with bpc, nats_per_char, nats_per_token, tokens, chars, unknown_chars, source,
        checkpoint.

    Raises:
        TextgenError: a missing run, checkpoint, index or file; a file that is not UTF-8; a
            text too short to score; an index whose tokenizer is not the run's.
    """
    from textgen.rundir import RunDir

    run = RunDir(run_dir)
    run.resolve_checkpoint(checkpoint)  # a missing run or checkpoint is said before TensorFlow
    cfg, tokenizer = run.load_config(), run.load_tokenizer()
    text = read_utf8(text_file) if text_file is not None else None

    from textgen.scoring import ArrayTokens, Scorer

    model = run.load_model(checkpoint)
    if text is not None:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)  # (tokens,)
        tokens, unknown, source = ArrayTokens(ids), int((ids == UNKNOWN_ID).sum()), str(text_file)
    else:
        tokens, source = _val_tokens(cfg, tokenizer)
        unknown = _count_unknown(tokens)
    if len(tokens) < 2:
        raise TextgenError("too short to score: it needs at least 2 tokens", source)
    scorer = Scorer(model, tokenizer.token_char_lengths(), cfg.windows.maxlen, batch_size)
    score = scorer.score_all(tokens)
    return {
        "bpc": score.bpc,
        "nats_per_char": score.nats_per_char,
        "nats_per_token": score.nats_per_token,
        "tokens": score.tokens,
        "chars": round(score.chars),
        "unknown_chars": unknown,
        "source": source,
        "checkpoint": checkpoint,
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
    from textgen.corpus import load_index

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


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluates a run; prints one JSON object."""
    parser = cli.ArgumentParser(
        prog="textgen.evaluate",
        usage="textgen.evaluate RUN_DIR [--text FILE] [--checkpoint NAME] [--batch-size N]",
        description="Bits per character of a run on held-out text.",
    )
    parser.add_argument("run_dir", help="the run dir (train.out_dir)")
    parser.add_argument("--text", help="a UTF-8 file to score (default: the val split)")
    parser.add_argument(
        "--checkpoint", default="best", help="best, latest or RUN/checkpoints/ckpt-N"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise TextgenError(f"--batch-size must be >= 1, got {args.batch_size}", "--batch-size")
    cli.quiet_tensorflow()
    result = evaluate(
        args.run_dir, args.text, checkpoint=args.checkpoint, batch_size=args.batch_size
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    cli.run(main)
