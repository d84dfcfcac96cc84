"""`python -m textgen.compare CONFIG [key=value ...] [--sizes MB,...] [--steps K]`: one-hot vs ids.

For each prefix of the config's corpus, measures the peak RSS of the classic Keras example
(one-hot bool `x` and `y`, `model.fit` on the whole arrays) and of textgen's trainer (int32 ids
read from the index), each in a fresh process (`textgen.comparison.worker`), so the
parent, which never imports TensorFlow, adds nothing. A one-hot run whose estimate exceeds
80% of the available RAM is not started: its row says `skipped`, with the estimate
(build: the exact bytes of `x` and `y`; build + fit: TensorFlow's import plus 3.2x those bytes,
as measured).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from textgen import cli
from textgen.comparison.measure import (
    CLASSIC_OVERRIDES,
    DEFAULT_SIZES,
    RAM_FRACTION,
    available_mb,
    check_writable,
    measure,
    parse_sizes,
    read_prefixes,
)  # fmt: skip
from textgen.comparison.report import markdown_table, plot
from textgen.core.config import load_config
from textgen.core.errors import TextgenError


def _say(text: str) -> None:
    print(f"compare: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Measures every size, prints the Markdown table, writes the JSON and the plot if asked."""
    parser = cli.config_parser("textgen.compare", "One-hot vs embedding memory, measured.")
    parser.add_argument("--sizes", default=",".join(f"{s:g}" for s in DEFAULT_SIZES),
                        help="corpus prefixes in MB (10^6 bytes); default %(default)s")  # fmt: skip
    parser.add_argument(
        "--steps", type=int, default=5, help="training steps per run (K); default 5"
    )
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--available-mb", type=float, help=argparse.SUPPRESS)  # the skip rule's RAM
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)
    if args.steps < 1:
        raise TextgenError(f"steps must be >= 1, got {args.steps}", "--steps")
    check_writable(args.json, "--json")
    check_writable(args.plot, "--plot")

    cfg = load_config(args.config, [*CLASSIC_OVERRIDES, *args.overrides])
    prefixes = read_prefixes(cfg, sizes)
    if prefixes[-1].whole:
        _say(f"the corpus has only {prefixes[-1].nbytes / 1e6:.3g} MB: measuring it whole for "
             f"{', '.join(f'{s:g}' for s in sizes[len(prefixes) - 1:])} MB")  # fmt: skip
    rows = [measure(p, cfg, args.steps, args.available_mb, say=_say) for p in prefixes]
    print(markdown_table(rows, args.steps), flush=True)
    available = args.available_mb if args.available_mb is not None else available_mb()
    if args.json:
        report = {"steps": args.steps, "available_mb": round(available, 1), "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.plot and not plot(rows, args.plot, args.steps, available, ram_fraction=RAM_FRACTION):
        _say("matplotlib is not installed: no plot written")
    return 0


if __name__ == "__main__":
    cli.run(main)
