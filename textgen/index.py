"""`python -m textgen.index CONFIG [key=value ...] [--force]`: build the index dir of a corpus."""

from __future__ import annotations

import time
from collections.abc import Sequence

from textgen import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Indexes the config's corpus; prints one summary line."""
    parser = cli.config_parser("textgen.index", "Index a corpus into int32 memmaps.")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)

    from textgen.config import load_config
    from textgen.corpus import index_corpus
    from textgen.progress import ProgressBar

    cfg = load_config(args.config, args.overrides)
    bar = ProgressBar(None, desc="index", unit="MB", scale=1e-6)
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    try:
        index, built = index_corpus(
            cfg.data, min_split_tokens=cfg.windows.maxlen + 1, progress=progress, force=args.force
        )
    finally:
        bar.close()
    counts = index.meta["counts"]
    if not built:
        print(f"index is up to date: {index.directory} ({counts['tokens']:,} tokens)")
        return 0
    seconds = time.monotonic() - start
    megabytes = sum(s["size"] for s in index.meta["sources"]) / 1e6
    replaced = (
        f", {counts['replaced_chars']:,} invalid bytes replaced" if counts["replaced_chars"] else ""
    )
    print(
        f"indexed {megabytes:.1f} MB from {len(index.meta['sources'])} file(s) into "
        f"{index.directory}: {counts['train_tokens']:,} train + {counts['val_tokens']:,} val "
        f"tokens, vocab {index.vocab_size}{replaced}, "
        f"{seconds:.1f} s ({megabytes / seconds:.1f} MB/s)"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
