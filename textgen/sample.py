"""`python -m textgen.sample RUN_DIR [--prompt ...] [--length N] ...`: generate text from a run.

Streams one sample to stdout as it is generated (several samples are printed when done, each
after a `--- sample i ---` line). Output is UTF-8 whatever the terminal's encoding. Options not
given come from the run's `sample` config section; the same `--seed` gives the same text.
`--adapt FILE` first adapts the weights (in memory) to a text with dynamic evaluation's updates
(`textgen.evaluation.dynamic`), to prime a style; the run's files are not changed.

A documents run (`data.documents` lines, paragraphs or files) stops each sample at its end-of-text
token (`--length` is then a cap; `--no-stop-at-end` goes on) and prints several samples one
document each, separated as the corpus was (a line break, or a blank line for paragraphs).
`--stop STRING` (repeatable) stops a sample after it writes STRING, which is not printed.
`--novelty` says on stderr, per sample, how much of it occurs verbatim in the training split.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from textgen import cli
from textgen.data.novelty import NoveltyIndex
from textgen.evaluation.dynamic import adapt_generator, encode_text
from textgen.evaluation.evaluate import read_utf8
from textgen.generation.generate import Generator, check_sampling_args, encode_prompt
from textgen.generation.stops import check_stops
from textgen.run.rundir import RunDir


def main(argv: Sequence[str] | None = None) -> int:
    """Samples from a run; prints the prompt followed by the generated text."""
    parser = cli.ArgumentParser(
        prog="textgen.sample",
        usage="textgen.sample RUN_DIR [--prompt TEXT] [--length N] [options]",  # one line
        description="Generate text from a run.",
    )
    parser.add_argument("run_dir", help="the run dir (train.out_dir)")
    parser.add_argument("--prompt", help="text to continue (default: sample.prompt)")
    parser.add_argument("--length", type=int, help="tokens per sample (default: sample.length)")
    parser.add_argument("--temperature", type=float, help="0 is greedy (sample.temperature)")
    parser.add_argument("--top-k", type=int, help="keep the k likeliest tokens; 0 is off")
    parser.add_argument("--top-p", type=float, help="keep the likeliest mass p; 1 is off")
    parser.add_argument("--num-samples", type=int, default=1, help="samples to draw (default 1)")
    parser.add_argument("--seed", type=int, help="the same seed gives the same text")
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best (the default: model.keras, the lowest val loss the run reached), latest or "
        "RUN/checkpoints/ckpt-N",
    )
    parser.add_argument(
        "--allow-unknown",
        action="store_true",
        help="feed prompt characters outside the vocabulary as unknown (with a warning)",
    )
    parser.add_argument(
        "--adapt",
        metavar="FILE",
        help="adapt the weights to this UTF-8 text before sampling (style priming; dynamic "
        "evaluation's updates, in memory: the run's files are not changed)",
    )
    parser.add_argument("--no-prompt-echo", action="store_true", help="print only new text")
    parser.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="STRING",
        help="stop a sample after it writes STRING (not printed; repeatable, up to 8 strings "
        "of up to 64 characters; Python escapes such as \\n are read)",
    )
    parser.add_argument(
        "--no-stop-at-end",
        action="store_true",
        help="a documents run: go on after a document's end-of-text token (documents are then "
        "separated as in the corpus)",
    )
    parser.add_argument(
        "--novelty",
        action="store_true",
        help="report, per sample on stderr, its longest span found verbatim in the training "
        "split and the share of its 20-token n-grams found there (needs the run's index)",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="XLA-compile the sampling loop: it compiles for seconds, then runs faster per "
        "character for models of 128 units or fewer on a CPU (worth it for long outputs); the "
        "same seed usually gives the same text as without --xla (float rounding may differ)",
    )
    args = parser.parse_args(argv)

    args.stop = list(check_stops([_unescape(s) for s in args.stop], where="--stop"))

    explicit = {k: v for k, v in _sampling_args(args).items() if v is not None}
    check_sampling_args(**{**_NEUTRAL, **explicit}, prefix="--")  # before anything slow
    run = RunDir(args.run_dir)
    defaults = run.load_config().sample
    options = {**{k: getattr(defaults, k) for k in _NEUTRAL if k != "num_samples"}, **explicit}
    check_sampling_args(**options, prefix="--")
    run.resolve_checkpoint(args.checkpoint)  # a missing one is said before TensorFlow loads
    prompt = args.prompt if args.prompt is not None else defaults.prompt
    if not args.allow_unknown:
        encode_prompt(run.load_tokenizer(), prompt)  # raises on unknown chars
    adapt_ids = _adapt_ids(run, args.adapt) if args.adapt is not None else None
    novelty = None
    if args.novelty:
        novelty = NoveltyIndex.for_run(run)  # a gone index is said before TensorFlow loads

    cli.quiet_tensorflow()
    generator = Generator.from_run(run, args.checkpoint, jit_compile=args.xla)
    if adapt_ids is not None:
        adapt_generator(generator, adapt_ids)
    out = _utf8_stdout()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if novelty is not None or generator.end_of_text is not None:
            _write_samples(out, generator, prompt, args, options, novelty)
        else:
            _write(out, generator, prompt, args, options)
    return 0


def _unescape(text: str) -> str:
    """`\\n`, `\\t` and other Python escapes in a command-line string, as characters."""
    if "\\" not in text:
        return text
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def _write_samples(out, generator, prompt: str, args, options: dict, novelty) -> None:
    """Prints every sample when all are done (documents one per line, as the corpus had them);
    with `novelty`, a report line per sample on stderr."""
    samples = generator.samples(
        prompt,
        seed=args.seed,
        stop=args.stop,
        stop_at_end=False if args.no_stop_at_end else None,
        on_unknown="warn" if args.allow_unknown else "error",
        **options,
    )
    echo = "" if args.no_prompt_echo else prompt
    documents = generator.end_of_text is not None and not args.no_stop_at_end
    reports = [novelty.report(s.text) for s in samples] if novelty is not None else []
    for i, sample in enumerate(samples, 1):
        if documents:
            out.write(f"{echo}{sample.text}{generator.separator}")
        elif len(samples) > 1:
            out.write(f"--- sample {i} ---\n{echo}{sample.text}\n")
        else:
            out.write(f"{echo}{sample.text}\n")
        out.flush()
        if novelty is not None:
            print(f"textgen: novelty: sample {i}: {_describe(reports[i - 1])}",
                  file=sys.stderr, flush=True)  # fmt: skip
    if novelty is not None and novelty.eot is not None:
        new = sum(not r["in_training"] for r in reports)
        print(f"textgen: novelty: {new} of {len(samples)} samples are not training documents",
              file=sys.stderr)  # fmt: skip


def _describe(report: dict) -> str:
    """One line of a novelty report."""
    line = (
        f"longest copied span {report['longest']} tokens at train offset {report['longest_at']} "
        f"({report['longest_text'][:40]!r}), {report['ngrams_found']:.0%} of "
        f"{report['ngram']}-grams found"
    )
    if "in_training" in report:
        line += ", in training: " + ("yes" if report["in_training"] else "no")
    return line


def _adapt_ids(run, path: str):
    """The ids of the `--adapt` text; a missing or non-UTF-8 file or unknown chars are errors."""
    return encode_text(run.load_tokenizer(), read_utf8(path), path)


def _write(out, generator, prompt: str, args, options: dict) -> None:
    """Streams one sample (or prints several when done), flushing every chunk."""
    several = options["num_samples"] > 1
    chunks = generator.stream(
        prompt,
        seed=args.seed,
        stop=args.stop,
        on_unknown="warn" if args.allow_unknown else "error",
        **({"chunk_size": generator.block} if several else {}),  # printed when done: big calls
        **options,
    )
    if not several:
        out.write("" if args.no_prompt_echo else prompt)
        for chunk in chunks:
            out.write(chunk[0])
            out.flush()
        out.write("\n")
    else:
        texts = ["".join(parts) for parts in zip(*chunks, strict=True)]
        for i, text in enumerate(texts, 1):
            out.write(f"--- sample {i} ---\n{'' if args.no_prompt_echo else prompt}{text}\n")
    out.flush()


# Values that pass every check; stand-ins for options that are not given yet.
_NEUTRAL = {"length": 1, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "num_samples": 1}


def _sampling_args(args) -> dict:
    return {
        "length": args.length,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "num_samples": args.num_samples,
    }


def _utf8_stdout():
    """sys.stdout, switched to UTF-8 if the terminal's encoding is something else."""
    stream = sys.stdout
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if encoding != "utf8" and hasattr(stream, "reconfigure"):
        stream.reconfigure(encoding="utf-8", errors="replace")
    return stream


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line: `textgen: warning: ...`."""
    sys.stdout.flush()
    print(f"textgen: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
