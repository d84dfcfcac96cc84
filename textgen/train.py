"""`python -m textgen.train CONFIG [key=value ...]`: train a run, or resume it where it stopped."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import TextIO

from textgen import cli
from textgen.core.config import check_fits_in_memory, load_config
from textgen.core.progress import ProgressBar, format_duration
from textgen.index import describe_index, index_bar
from textgen.run.rundir import RunDir
from textgen.training.init_from import check_model_overrides, model_shape_config
from textgen.training.trainer import StopFlag, train

_PRECISION_WORDS = {  # train.precision, as the start line says it
    "float32": "float32",
    "mixed_bfloat16": "bf16 matmuls (float32 weights and gate math)",
    "mixed_float16": "float16 matmuls (float32 weights, loss scaling)",
}


class _Printer:
    """Turns trainer events into a progress line on a terminal and log lines everywhere.

    Args:
        stream: Where the progress line is drawn (stderr).
        enabled: Draw it at all; defaults to whether `stream` is a terminal.
    """

    def __init__(self, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream, self.enabled = stream, enabled
        self.index_bar = index_bar()
        self.train_bar = self._train_bar(None, 0)  # replaced when training starts

    def __call__(self, kind: str, **data) -> None:
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(**data)

    def _train_bar(self, total: int | None, step: int) -> ProgressBar:
        """A bar whose rate and ETA count only this process's steps, from `step` on."""
        return ProgressBar(total, desc="train", unit="steps", initial=step, stream=self.stream,
                           enabled=self.enabled)  # fmt: skip

    def on_index(self, done: int, total: int) -> None:
        self.index_bar.total = total
        self.index_bar.update(done)

    def on_indexed(self, index, built: bool) -> None:
        self.index_bar.close()
        print(describe_index(index, built=built))

    def on_start(self, steps: int | None, budget: str, params: int, precision: str) -> None:
        self.train_bar = self._train_bar(steps, 0)
        planned = f"{steps:,} steps ({budget})" if steps else f"for a {budget}"
        print(f"training {planned}, {params:,} parameters, {_PRECISION_WORDS[precision]}")

    def on_dropout(self, value: float, reason: str) -> None:
        print(f"model.dropout auto: {value:g} ({reason})")

    def on_init(self, run_dir: str, checkpoint: str, weights: str, vocab: int,
                new_tokens: list[str]) -> None:  # fmt: skip
        new = f"; {len(new_tokens)} new: {''.join(new_tokens)!r}" if new_tokens else ""
        print(f"fine-tuning from {checkpoint} (weights {weights}); vocabulary {vocab}{new}")

    def on_budget(self, horizon: int, step: int, seconds_per_step: float, remaining_s: float):
        self.train_bar.close()
        print(f"time budget: {1 / seconds_per_step:.1f} steps/s measured; the schedule ends at "
              f"step {horizon:,} ({format_duration(remaining_s)} left), refitted as the rate "
              "changes", flush=True)  # fmt: skip

    def on_resume(self, checkpoint: str, step: int, epoch: int, batch: int, total: int,
                  notes: list, precision: str) -> None:  # fmt: skip
        self.train_bar = self._train_bar(total, step)
        print(f"resuming from {checkpoint}: step {step:,}, epoch {epoch}, batch {batch}; "
              f"{_PRECISION_WORDS[precision]}")  # fmt: skip
        for note in notes:
            print(f"  changed since the last run: {note}")

    def on_progress(self, step, total, loss, chars_per_sec, epoch) -> None:
        self.train_bar.total = total
        self.train_bar.update(step, loss=f"{loss:.3f}", epoch=str(epoch),
                              chars_s=f"{chars_per_sec:,.0f}")  # fmt: skip

    def on_eval(self, **m) -> None:
        self.train_bar.close()
        label = "final" if m["final"] else "eval"
        print(f"{label} step {m['step']:,} epoch {m['epoch']}: loss {m['loss']:.3f} "
              f"val_loss {m['val_loss']:.3f} val_bpc {m['val_bpc']:.3f} "
              f"{m['chars_per_sec']:,.0f} chars/s rss {m['rss_mb']:.0f} MB "
              f"{m['elapsed_s']:.0f} s", flush=True)  # fmt: skip

    def on_sample(self, temperature: float, text: str) -> None:
        self.train_bar.close()
        print(f"--- sample at temperature {temperature}:\n{text}\n---", flush=True)

    def on_warning(self, message: str) -> None:
        self.train_bar.close()
        print(f"textgen: warning: {message}", file=sys.stderr, flush=True)

    def on_stop(self, reason: str, step: int, epoch: int, checkpoint: str | None, weights: str):
        self.train_bar.close()
        saved = f"; checkpoint {checkpoint}" if checkpoint else ""
        print(f"stopped ({reason}) at step {step:,}, epoch {epoch}{saved}; weights {weights}")


def resume_command(argv: Sequence[str]) -> str:
    """The shell command that resumes a run trained with these arguments (any entry point)."""
    return shlex.join([sys.executable, "-m", "textgen.train", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    """Trains the config's run; exit 130 after Ctrl-C, with a checkpoint saved."""
    argv = list(sys.argv[1:] if argv is None else argv)  # the words after `train`
    parser = cli.config_parser("textgen.train", "Train (or resume) a character LSTM.")
    args = parser.parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    if cfg.train.init_from:  # a model.* asked on the command line must match the source's
        shaped = model_shape_config(cfg, RunDir(cfg.train.out_dir))
        check_model_overrides(args.overrides, cfg, shaped)
    check_fits_in_memory(cfg)  # before TensorFlow loads: a model that cannot fit fails at once
    cli.quiet_tensorflow()

    sys.stdout.reconfigure(encoding="utf-8", errors="replace")
    stop = StopFlag()
    with stop.on_sigint():
        result = train(cfg, on_event=_Printer(), stop=stop)
    if result.stop_reason == "interrupted":
        print(
            f"interrupted: checkpoint saved. Resume with: {resume_command(argv)}", file=sys.stderr
        )
        return cli.EXIT_INTERRUPTED
    print(f"run dir: {result.run_dir}  (sample: python -m textgen.sample {result.run_dir})")
    return 0


if __name__ == "__main__":
    cli.run(main)
