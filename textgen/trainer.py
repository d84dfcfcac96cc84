"""The training loop: a custom `strategy.run` loop with exact mid-epoch resume.

Several optimizer steps run inside one `tf.function` call (`train.steps_per_call`), each on a
global batch gathered from the index by `windows.BatchPlan`. Checkpoints hold the model, the
optimizer, the step/epoch/batch counters and the dropout RNG state, so a resumed run continues
with exactly the batch it would have seen. Only the entry point prints: progress reaches it
through `on_event(kind, **data)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textgen.checkpoints import Progress, TrainState, check_resumable
from textgen.config import Config
from textgen.corpus import Index, index_corpus
from textgen.curves import CurvesPainter, write_scalars
from textgen.distribute import agree_on_stop, is_chief, make_strategy
from textgen.errors import TextgenError
from textgen.memory import pin_mmap_threshold, rss_mb
from textgen.optimization import compile_train_calls, learning_rate_schedule
from textgen.rundir import RunDir
from textgen.scoring import Scorer
from textgen.windows import BatchPlan, TokenFile, WindowSpec, eval_starts, train_dataset

EventHandler = Callable[..., None]


@dataclass
class TrainResult:
    """How a call to `train` ended."""

    run_dir: Path
    step: int
    epoch: int
    stop_reason: str  # done | max_steps | max_time | early_stop | interrupted
    best_val_loss: float
    last_metrics: dict[str, Any] | None


class StopFlag:
    """Set by SIGINT (Ctrl-C) while training, so the loop can save a checkpoint and exit."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Asks the loop to stop after the current call."""
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    @contextlib.contextmanager
    def on_sigint(self) -> Iterator[StopFlag]:
        """First Ctrl-C sets the flag; a second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self:
                raise KeyboardInterrupt
            self.set()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def train(
    cfg: Config, *, on_event: EventHandler | None = None, stop: StopFlag | None = None
) -> TrainResult:
    """Trains (or resumes) the run in `cfg.train.out_dir`.

    Args:
        cfg: The resolved config.
        on_event: Called as `on_event(kind, **data)` for `index`, `indexed`, `start`,
            `resume`, `progress`, `eval`, `sample`, `warning` and `stop` events.
        stop: Set it (e.g. from a SIGINT handler) to checkpoint and return early.

    Returns:
        Where training stopped and why.

    Raises:
        TextgenError: a bad config, corpus, run dir or checkpoint.
    """
    emit = on_event or (lambda kind, **data: None)
    stop = stop if stop is not None else StopFlag()
    pin_mmap_threshold()  # batch buffers go back to the OS: RSS stays flat over a long run
    run = RunDir(cfg.train.out_dir)
    run.check_usable()  # fail before indexing, but create nothing until the inputs are known good
    index, built = index_corpus(
        cfg.data,
        min_split_tokens=cfg.windows.maxlen + 1,
        progress=lambda done, total: emit("index", done=done, total=total),
    )
    emit("indexed", built=built, counts=index.meta["counts"], directory=str(index.directory))
    # Before TensorFlow is imported: a bad batch size fails at once, with nothing else on stderr.
    _check_batch_fits(
        WindowSpec(len(index.train), cfg.windows.maxlen, cfg.windows.step, cfg.windows.target),
        cfg.train.batch_size,
    )
    # Multi-worker strategies must exist before TensorFlow runs anything else.
    strategy = make_strategy(cfg.train.distribute)
    chief = is_chief(strategy)
    if cfg.train.fresh and chief:
        run.clear()
    run.prepare()  # every worker: the chief writes here, the others read its checkpoints
    resume_from = run.latest_checkpoint()
    notes = check_resumable(run, cfg, index.tokenizer) if resume_from else []
    if chief:
        run.save_config(cfg)
        index.tokenizer.save(run.path)
    import keras

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(cfg.train.mixed_precision)
    try:
        session = _Session(cfg, run, index, emit, strategy=strategy, chief=chief)
        progress = session.state.restore(resume_from) if resume_from else Progress()
        if resume_from:
            emit("resume", checkpoint=resume_from, step=progress.step, epoch=progress.epoch,
                 batch=progress.batch, notes=notes)  # fmt: skip
        else:
            emit("start", steps=session.total_steps, params=session.model.count_params())
        return session.run(progress, stop)
    finally:
        keras.mixed_precision.set_global_policy(policy)  # leave the process as it was


def _check_batch_fits(spec: WindowSpec, batch_size: int) -> None:
    """Refuses a global batch larger than the split's windows (an epoch of zero steps)."""
    if spec.count < batch_size:
        raise TextgenError(
            f"train.batch_size {batch_size} is larger than the {spec.count} training "
            "windows; lower train.batch_size or windows.step, or use a larger corpus",
            "train.batch_size",
        )


class _Session:
    """Everything one `train` call builds: strategy, model, optimizer, data, compiled steps."""

    def __init__(
        self, cfg: Config, run: RunDir, index: Index, emit: EventHandler, *, strategy, chief: bool
    ) -> None:
        import keras
        import tensorflow as tf

        from textgen.model import build_model

        self.cfg, self.run_dir, self.index, self.emit = cfg, run, index, emit
        tc = cfg.train
        keras.utils.set_random_seed(tc.seed)
        if tc.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy, self.chief = strategy, chief
        self.train_tokens = TokenFile(index.directory / "train.npy")
        self.val_tokens = TokenFile(index.directory / "val.npy")
        spec = WindowSpec(len(self.train_tokens), cfg.windows.maxlen, cfg.windows.step,
                          cfg.windows.target)  # fmt: skip
        self.plan = BatchPlan(spec, tc.batch_size, tc.seed,
                              num_shards=self.strategy.num_replicas_in_sync)  # fmt: skip
        _check_batch_fits(spec, tc.batch_size)
        self.steps_per_epoch = min(tc.steps_per_epoch or 2**62, self.plan.batches_per_epoch)
        self.total_steps = tc.epochs * self.steps_per_epoch
        if tc.max_steps:
            self.total_steps = min(self.total_steps, tc.max_steps)
        schedule_steps = tc.epochs * self.steps_per_epoch  # max_steps is a limit, not a horizon
        with self.strategy.scope():
            self.model = build_model(cfg.model, index.vocab_size)
            optimizer = keras.optimizers.Adam(learning_rate_schedule(tc, schedule_steps))
            if tc.mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            # Non-chief workers must save too (saving may run collectives), but to a scratch dir.
            self.scratch = None if chief else tempfile.mkdtemp(prefix="textgen-worker-")
            self.state = TrainState(self.model, optimizer, self.scratch or run.checkpoints)
        self.scorer = Scorer(self.model, index.tokenizer.token_char_lengths(), cfg.windows.maxlen)
        self.paint_curves = CurvesPainter(run, warn=lambda text: emit("warning", message=text))
        counts = index.meta["counts"]
        self.chars_per_token = counts["chars"] / max(counts["tokens"], 1)
        targets = cfg.windows.maxlen if cfg.windows.target == "sequence" else 1
        self.targets_per_step = tc.batch_size * targets
        self._train_calls = compile_train_calls(
            self.model, optimizer, self.strategy, tc, targets_per_window=targets
        )
        self.generator = None  # built at the first epoch end

    def dataset_iterator(self, progress: Progress):
        """A distributed iterator positioned at `progress`'s epoch and batch."""

        def per_pipeline(context):
            first = context.input_pipeline_id * (
                self.plan.num_shards // context.num_input_pipelines
            )
            shards = range(first, first + self.plan.num_shards // context.num_input_pipelines)
            return train_dataset(self.plan, self.train_tokens, epoch=progress.epoch,
                                 batch=progress.batch, steps_per_epoch=self.steps_per_epoch,
                                 shards=shards)  # fmt: skip

        return iter(self.strategy.distribute_datasets_from_function(per_pipeline))

    def run(self, progress: Progress, stop: StopFlag) -> TrainResult:
        """The loop: train calls, evaluations, checkpoints, samples, until a limit or a stop."""
        import tensorflow as tf

        tc = self.cfg.train
        iterator = self.dataset_iterator(progress)
        self.writer = (
            tf.summary.create_file_writer(str(self.run_dir.tensorboard)) if self.chief else None
        )
        self.clock = _Clock(progress.step, self.targets_per_step)
        reason, metrics, loss = None, None, float("nan")
        try:
            while reason is None:
                if progress.step >= self.total_steps:
                    reason = (
                        "max_steps" if tc.max_steps and progress.step >= tc.max_steps else "done"
                    )
                elif reason := agree_on_stop(self.strategy, self._local_stop(stop)):
                    break
                else:
                    steps = self._next_call_size(progress)
                    loss = float(self._train_calls(iterator, tf.constant(steps, tf.int32)))
                    reason, metrics = self._after_call(progress, steps, loss, metrics)
        finally:
            if progress.step > self.clock.start_step:
                self.state.save(progress)
            if self.chief and progress.step > 0 and not self.run_dir.best_model.exists():
                self._save_best_model()  # promised once a step is trained, evaluated or not
            if self.scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)
        if reason != "interrupted" and progress.step > 0:  # Ctrl-C means: exit now
            metrics = self._evaluate(progress, loss, final=True)
        self.emit("stop", reason=reason, step=progress.step, epoch=progress.epoch,
                  checkpoint=self.state.manager.latest_checkpoint if self.chief else None,
                  weights=weights_fingerprint(self.model))  # fmt: skip
        return TrainResult(self.run_dir.path, progress.step, progress.epoch, reason,
                           progress.best_val_loss, metrics)  # fmt: skip

    def _local_stop(self, stop: StopFlag) -> str | None:
        """This process's reason to stop before the next call, if any."""
        if stop:
            return "interrupted"
        max_time = self.cfg.train.max_time
        return "max_time" if max_time and self.clock.elapsed() >= max_time else None

    def _after_call(self, progress: Progress, steps: int, loss: float, metrics):
        """Advances the counters, then evaluates, samples and checkpoints when due."""
        tc = self.cfg.train
        if not math.isfinite(loss):
            raise TextgenError(
                f"loss became {loss} at step {progress.step + steps}; lower train.learning_rate",
                "train.learning_rate",
            )
        progress.step += steps
        progress.batch += steps
        rate = self.clock.targets_per_sec(progress.step)
        self.emit("progress", step=progress.step, total=self.total_steps, loss=loss,
                  chars_per_sec=rate * self.chars_per_token, epoch=progress.epoch)  # fmt: skip
        epoch_end = progress.batch >= self.steps_per_epoch
        if epoch_end:
            progress.epoch, progress.batch = progress.epoch + 1, 0
        reason = None
        if epoch_end or progress.step % tc.eval_every == 0:
            metrics = self._evaluate(progress, loss, final=False)
            if tc.patience and progress.bad_evals >= tc.patience:
                reason = "early_stop"
        if epoch_end and reason is None:
            self._write_samples(progress)
        if epoch_end or progress.step % tc.checkpoint_every == 0:
            self.state.save(progress)
        return reason, metrics

    def _next_call_size(self, progress: Progress) -> int:
        """Steps in the next call: up to steps_per_call, never past an epoch end or an event."""
        tc = self.cfg.train
        step = progress.step
        limits = (
            tc.steps_per_call,
            self.steps_per_epoch - progress.batch,
            self.total_steps - step,
            tc.eval_every - step % tc.eval_every,
            tc.checkpoint_every - step % tc.checkpoint_every,
        )
        return max(1, min(limits))

    def _evaluate(self, progress: Progress, loss: float, *, final: bool) -> dict[str, Any]:
        """Scores val (a bounded sample, or all of it when final); tracks the best model."""
        if final:
            score = self.scorer.score_all(self.val_tokens)
        else:
            limit = self.cfg.train.eval_windows
            starts = eval_starts(len(self.val_tokens), self.cfg.windows.maxlen, limit)
            score = self.scorer.score_windows(self.val_tokens, starts)
        record = {
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": round(loss, 5),
            "val_loss": round(score.nats_per_token, 5),
            "val_bpc": round(score.bpc, 5),
            "chars_per_sec": round(
                self.clock.targets_per_sec(progress.step) * self.chars_per_token, 1
            ),
            "rss_mb": round(rss_mb(), 1),
            "elapsed_s": round(self.clock.elapsed(), 2),
            "final": final,
        }
        improved = score.nats_per_token < progress.best_val_loss
        if improved:
            progress.best_val_loss, progress.bad_evals = score.nats_per_token, 0
        elif not final:
            progress.bad_evals += 1
        if self.chief:
            self.run_dir.append_metrics(record)
            if improved or not self.run_dir.best_model.exists():
                self._save_best_model()
            write_scalars(self.writer, record)
            self.paint_curves(force=final)
        self.emit("eval", **record)
        return record

    def _save_best_model(self) -> None:
        path = self.run_dir.best_model
        tmp = path.with_name(f".tmp-{path.name}")  # Keras wants the .keras suffix
        tmp = tmp.with_suffix(".keras")
        self.model.save(tmp)
        tmp.replace(path)

    def _write_samples(self, progress: Progress) -> None:
        """Appends samples at the configured temperatures to samples.txt."""
        if not self.chief:
            return
        from textgen.generate import Generator

        if self.generator is None:
            self.generator = Generator(self.model, self.index.tokenizer)
        generator = self.generator
        generator.refresh()  # one compiled sampler per run, fed the latest weights
        sc = self.cfg.sample
        lines = [f"=== epoch {progress.epoch} step {progress.step} ==="]
        for temperature in sc.epoch_temperatures:
            text = generator.generate(prompt=sc.prompt, length=sc.epoch_length,
                                      temperature=temperature, seed=progress.step)[0]  # fmt: skip
            lines.append(f"--- temperature {temperature}\n{sc.prompt}{text}")
            self.emit("sample", temperature=temperature, text=sc.prompt + text)
        with open(self.run_dir.samples, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")


def weights_fingerprint(model) -> str:
    """A short SHA-256 of every weight's bytes: equal on workers and on reproduced runs."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


class _Clock:
    """Wall time and throughput since this invocation started training."""

    def __init__(self, start_step: int, targets_per_step: int) -> None:
        self.start = time.monotonic()
        self.start_step, self.targets_per_step = start_step, targets_per_step

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def targets_per_sec(self, step: int) -> float:
        """Supervised tokens per second so far."""
        return (step - self.start_step) * self.targets_per_step / max(self.elapsed(), 1e-9)
