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

import json
from collections.abc import Sequence
from typing import Any

from textgen import cli
from textgen.core.errors import TextgenError
from textgen.evaluation.dynamic import DynamicSettings
from textgen.evaluation.evaluate import STREAMS, evaluate

__all__ = ["evaluate", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluates a run; prints one JSON object."""
    parser = cli.ArgumentParser(
        prog="textgen.evaluate",
        usage="textgen.evaluate RUN_DIR [--text FILE] [--windowed | --dynamic] [options]",
        description="Bits per character of a run on held-out text.",
    )
    parser.add_argument("run_dir", help="the run dir (train.out_dir)")
    parser.add_argument("--text", help="a UTF-8 file to score (default: the val split)")
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best (the default: model.keras, the lowest val loss the run reached), latest or "
        "RUN/checkpoints/ckpt-N",
    )
    parser.add_argument("--windowed", action="store_true", help="zero-state windows of maxlen")
    parser.add_argument("--dynamic", action="store_true", help="adapt the weights as it reads")
    parser.add_argument(
        "--dynamic-lr", type=float, help=f"step size (default {DynamicSettings.lr})"
    )
    parser.add_argument(
        "--dynamic-decay", type=float, help=f"pull to the trained weights ({DynamicSettings.decay})"
    )
    parser.add_argument("--streams", type=int, help=f"most streams (default {STREAMS}; dynamic 1)")
    parser.add_argument("--segment", type=int, help="tokens per stream per call (or per update)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    args = parser.parse_args(argv)
    method, kwargs = _method_of(args)
    cli.quiet_tensorflow()
    result = evaluate(
        args.run_dir, args.text, checkpoint=args.checkpoint, batch_size=args.batch_size,
        method=method, streams=args.streams, segment=args.segment, **kwargs,
    )  # fmt: skip
    print(json.dumps(result))
    return 0


def _method_of(args) -> tuple[str, dict[str, Any]]:
    """The method the flags ask for, and its settings; bad combinations are errors."""
    if args.batch_size < 1:
        raise TextgenError(f"--batch-size must be >= 1, got {args.batch_size}", "--batch-size")
    for flag in ("streams", "segment"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise TextgenError(f"--{flag} must be >= 1, got {value}", f"--{flag}")
        if value is not None and args.windowed:
            raise TextgenError(f"--{flag} does not apply to --windowed", f"--{flag}")
    if args.windowed and args.dynamic:
        raise TextgenError("--windowed and --dynamic exclude each other", "--dynamic")
    given = {k: getattr(args, f"dynamic_{k}") for k in ("lr", "decay")}
    given = {k: v for k, v in given.items() if v is not None}
    if given and not args.dynamic:
        raise TextgenError("needs --dynamic", f"--dynamic-{next(iter(given))}")
    if not args.dynamic:
        return ("windowed" if args.windowed else "streamed"), {}
    settings = DynamicSettings(**given)
    settings.check()
    return "dynamic", {"dynamic": settings}


if __name__ == "__main__":
    cli.run(main)
