"""`python -m textgen.index CONFIG [key=value ...] [--force]`: build the index dir of a corpus."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from textgen import cli
from textgen.core.config import load_config
from textgen.core.progress import ProgressBar
from textgen.data.corpus import index_corpus
from textgen.run.rundir import RunDir
from textgen.training.init_from import fine_tuning_plan


def index_bar() -> ProgressBar:
    """The progress line of indexing (both passes, in MB of source text)."""
    return ProgressBar(None, desc="index", unit="MB", scale=1e-6)


def describe_index(index, *, built: bool, seconds: float | None = None) -> str:
    """The one-line summary of an index that `index` and `train` print."""
    counts, sources = index.meta["counts"], index.meta["sources"]
    if not built:
        return (
            f"index is up to date: {index.directory} ({counts['tokens']:,} tokens"
            f"{describe_documents(index.meta)})"
        )
    megabytes = sum(s["size"] for s in sources) / 1e6
    replaced = counts["replaced_chars"]
    extra = f", {replaced:,} invalid bytes replaced" if replaced else ""
    if seconds:
        extra += f", {seconds:.1f} s ({megabytes / seconds:.1f} MB/s)"
    return (
        f"indexed {megabytes:.1f} MB from {len(sources)} file(s) into {index.directory}: "
        f"{counts['train_tokens']:,} train + {counts['val_tokens']:,} val tokens, "
        f"vocab {index.vocab_size}{describe_documents(index.meta)}{extra}"
    )


def describe_documents(meta: dict) -> str:
    """`, N documents (MODE; length in chars: median M, 10-90% A-B, max X)`, or "" for a stream."""
    docs = meta.get("documents")
    if not docs:
        return ""
    q = docs["length_quantiles"]
    return (
        f", {docs['count']:,} documents ({docs['mode']}; length in chars: median {q['p50']}, "
        f"10-90% {q['p10']}-{q['p90']}, max {q['p100']})"
    )


def say_waiting(index_dir: str):
    """An `on_wait` for `index_corpus` that says, on stderr, who this process waits for."""

    def on_wait(pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        print(f"textgen: waiting for {who}, which is writing {index_dir}", file=sys.stderr,
              flush=True)  # fmt: skip

    return on_wait


def main(argv: Sequence[str] | None = None) -> int:
    """Indexes the config's corpus; prints one summary line."""
    parser = cli.config_parser("textgen.index", "Index a corpus into int32 memmaps.")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    base = None
    if cfg.train.init_from:  # a fine-tuning config: the index extends the source's tokenizer
        _, _, base = fine_tuning_plan(cfg, RunDir(cfg.train.out_dir))
    bar = index_bar()
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    try:
        index, built = index_corpus(
            cfg.data,
            min_split_tokens=cfg.windows.maxlen + 1,
            progress=progress,
            force=args.force,
            on_wait=say_waiting(cfg.data.index_dir),
            base=base,
        )
    finally:
        bar.close()
    print(describe_index(index, built=built, seconds=time.monotonic() - start))
    return 0


if __name__ == "__main__":
    cli.run(main)
