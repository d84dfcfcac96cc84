"""The training loop: a custom `strategy.run` loop with exact mid-epoch resume.

`train` indexes the corpus, plans the data (`dataplan.py`), builds the session (`session.py`:
model, optimizer, checkpoint, compiled steps) and runs `_Loop`. Several optimizer steps run
inside one `tf.function` call (`train.steps_per_call`), each on a global batch gathered from the
index by `windows.BatchPlan`. Checkpoints hold the model, the optimizer, the step/epoch/batch
counters and the dropout RNG state, so a resumed run continues with exactly the batch it would
have seen. Only the entry point prints: progress reaches it through `on_event(kind, **data)`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from textgen.core.config import Config, check_fits_in_memory, precision_policy
from textgen.core.errors import TextgenError
from textgen.core.memory import pin_mmap_threshold, rss_mb
from textgen.core.progress import format_duration
from textgen.data.corpus import index_corpus
from textgen.data.dataplan import DataPlan
from textgen.evaluation.scoring import Scorer
from textgen.generation.generate import Generator
from textgen.run.checkpoints import TrainCounters
from textgen.run.rundir import RunDir
from textgen.training.budget import TimeBudget
from textgen.training.curves import CurvesPainter, write_scalars
from textgen.training.distribute import agree_on_stop, is_chief, make_strategy
from textgen.training.init_from import fine_tuning_plan, start_from, weights_fingerprint
from textgen.training.regularisation import resolve_dropout, source_windows_per_s
from textgen.training.resume import check_resumable, resume_guard
from textgen.training.session import TrainSession

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
            `resume`, `budget`, `progress`, `eval`, `sample`, `warning`, `dropout` (auto's
            value and reason) and `stop` events.
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
    cfg, source, base = fine_tuning_plan(cfg, run)  # train.init_from, or nothing to do
    check_fits_in_memory(cfg)  # a model that cannot fit is refused before anything is built
    index, built = index_corpus(
        cfg.data,
        min_split_tokens=cfg.windows.maxlen + 1,
        progress=lambda done, total: emit("index", done=done, total=total),
        accept=resume_guard(run, cfg),  # a vocabulary the run cannot resume on: old index stays
        base=base,
    )
    emit("indexed", index=index, built=built)
    data = DataPlan(cfg, index)  # before TensorFlow: a bad batch size fails at once, alone
    cfg = _resolve_dropout(cfg, run, data, source, emit)
    # Multi-worker strategies must exist before TensorFlow runs anything else.
    strategy = make_strategy(cfg.train.distribute)
    chief = is_chief(strategy)
    lock = run.lock() if chief else None  # one writer per run dir; a second `train` is refused
    import keras
    import tensorflow as tf

    policy = keras.mixed_precision.global_policy()
    # Non-chief workers must save too (saving may run collectives), but to a scratch dir.
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="textgen-worker-"))
    try:
        if cfg.train.fresh and chief:
            run.clear()
        run.prepare()  # every worker: the chief writes here, the others read its checkpoints
        candidates = run.checkpoint_prefixes()  # newest first, damaged ones included
        notes = check_resumable(run, cfg, index) if candidates else []
        precision = precision_policy(cfg.train, gpus=len(tf.config.list_physical_devices("GPU")))
        keras.mixed_precision.set_global_policy(precision)
        session = TrainSession(cfg, data, strategy=strategy,
                               checkpoint_dir=scratch or run.checkpoints)  # fmt: skip
        restored = session.checkpoint.restore_newest(candidates, where=str(run.checkpoints))
        counters = restored.value
        for damaged in restored.damaged:
            emit("warning", message=f"{damaged.describe()}; resuming from {restored.path}")
        if source is not None and restored.path is None:  # a new fine-tuned run: copy weights
            origin, event = start_from(source, session.model, index.tokenizer)
            cfg = session.cfg = cfg.replace(origin=origin)
            for message in event.pop("passed"):
                emit("warning", message=f"train.init_from: {message}")
            emit("init", **event)
        if chief:  # logs cut back to the checkpoint; config, tokenizer, corpus record
            run.start_writing(cfg, index, step=counters.step)
        loop = _Loop(session, run, emit, chief=chief)
        if restored.path:
            emit("resume", checkpoint=restored.path, step=counters.step, epoch=counters.epoch,
                 batch=counters.batch, total=loop.total_steps(counters), notes=notes,
                 precision=precision)  # fmt: skip
        else:
            emit("start", steps=loop.total_steps(counters), budget=loop.describe_budget(),
                 params=session.model.count_params(), precision=precision)  # fmt: skip
        return loop.run(counters, stop)
    finally:
        keras.mixed_precision.set_global_policy(policy)  # leave the process as it was
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if lock:
            lock.release()


def _resolve_dropout(cfg: Config, run: RunDir, data: DataPlan, source, emit) -> Config:
    """`model.dropout: auto` as a number, said with its reason (regularisation.py)."""
    rate = None
    if source is not None:
        rate = source_windows_per_s(source.run.read_metrics(), source.cfg.train.batch_size)
    cfg, reason = resolve_dropout(
        cfg, steps_per_pass=data.batch_plan().batches_per_epoch, total_steps=data.total_steps,
        source_windows_per_s=rate,
        saved=run.load_config() if run.resumes(fresh=cfg.train.fresh) else None,
    )  # fmt: skip
    if reason is not None:
        emit("dropout", value=cfg.model.dropout, reason=reason)
    return cfg


class _Loop:
    """The training loop over a session: train calls, evaluations, checkpoints, samples."""

    def __init__(self, session: TrainSession, run: RunDir, emit: EventHandler, *, chief: bool):
        import tensorflow as tf

        self.session, self.data, self.cfg = session, session.data, session.cfg
        self.run_dir, self.emit, self.chief = run, emit, chief
        tokenizer = self.data.index.tokenizer
        self.scorer = Scorer(session.model, tokenizer.token_char_lengths(), self.cfg.windows.maxlen)
        self.paint_curves = CurvesPainter(run, warn=lambda text: emit("warning", message=text))
        self.writer = tf.summary.create_file_writer(str(run.tensorboard)) if chief else None
        self.clock: _Clock | None = None  # started when the loop starts
        self.budget: TimeBudget | None = None  # set when the loop starts, if train.max_time is
        self.spent_before = 0.0  # seconds trained by earlier invocations of the run
        self.generator = None  # the sampler, built at the first epoch end
        # A fine-tuned run's first metrics record says where its weights came from.
        self.origin_pending = bool(self.cfg.origin.run_dir) and not run.read_metrics()

    def describe_budget(self) -> str:
        """What bounds the run, as the progress line says it."""
        tc = self.cfg.train
        if tc.max_time:
            return f"time budget {format_duration(tc.max_time)}"
        return f"{tc.epochs} epoch{'s' if tc.epochs != 1 else ''}"

    def total_steps(self, counters: TrainCounters) -> int | None:
        """Steps the run will make; None while a time budget has not fitted its horizon yet."""
        tc = self.cfg.train
        if not tc.max_time:
            return self.data.total_steps
        limits = [n for n in (counters.horizon, tc.max_steps) if n]
        return min(limits) if limits else None

    def run(self, counters: TrainCounters, stop: StopFlag) -> TrainResult:
        """Trains until a limit or a stop; checkpoints on the way out."""
        import tensorflow as tf

        tc, session = self.cfg.train, self.session
        iterator = session.iterator(counters)
        self.clock = clock = _Clock(counters.step, self.data.targets_per_step)
        self.spent_before = counters.trained_s
        if tc.max_time:  # the budget's clock starts with the loop's: the warm-up is spent from it
            self.budget = TimeBudget(
                tc.max_time, spent=counters.trained_s, eval_every=tc.eval_every
            )
            self.scorer.warm_up()  # the first evaluation then costs what every later one does
        # Until a time budget has measured the step rate, its cosine stays at the peak.
        unfitted = 2**31
        session.set_horizon(
            (counters.horizon or unfitted) if tc.max_time else self.data.schedule_steps
        )
        reason, metrics, loss = None, None, float("nan")
        try:
            while reason is None:
                total = self.total_steps(counters)
                if total is not None and counters.step >= total:
                    reason = (
                        "max_steps" if tc.max_steps and counters.step >= tc.max_steps else "done"
                    )
                elif reason := agree_on_stop(session.strategy, self._local_stop(stop)):
                    break
                else:
                    steps = self._next_call_size(counters)
                    call = (tf.constant(steps, tf.int32), tf.constant(counters.batch == 0))
                    loss = float(session.train_steps(iterator, *call))  # reset at an epoch start
                    if self.budget:
                        self.budget.observe_call(counters.step + steps)
                    reason, metrics = self._after_call(counters, steps, loss, metrics)
        finally:
            if counters.step > clock.start_step:
                self._save_checkpoint(counters)
            if self.chief and counters.step > 0 and not self.run_dir.best_model.exists():
                self._save_best_model()  # promised once a step is trained, evaluated or not
        if reason != "interrupted" and counters.step > 0:  # Ctrl-C means: exit now
            metrics = self._evaluate(counters, loss, final=True)
        self.emit("stop", reason=reason, step=counters.step, epoch=counters.epoch,
                  checkpoint=session.checkpoint.latest if self.chief else None,
                  weights=weights_fingerprint(session.model))  # fmt: skip
        return TrainResult(self.run_dir.path, counters.step, counters.epoch, reason,
                           counters.best_val_loss, metrics)  # fmt: skip

    def _local_stop(self, stop: StopFlag) -> str | None:
        """This process's reason to stop before the next call, if any."""
        if stop:
            return "interrupted"
        return "max_time" if self.budget and self.budget.remaining() <= 0 else None

    def _fit_horizon(self, counters: TrainCounters, loss: float, metrics):
        """Once the step rate is measured, after every call: fits where the schedule ends."""
        if self.budget.eval_seconds is None:  # an evaluation's cost is part of each step's
            metrics = self._evaluate(counters, loss, final=False)
        first = not counters.horizon
        counters.horizon = self.budget.fit_horizon(counters.step)
        self.session.set_horizon(counters.horizon)
        if first:  # announced once; later refits show in the progress line's total and ETA
            self.emit("budget", horizon=counters.horizon, step=counters.step,
                      seconds_per_step=self.budget.seconds_per_step(counters.step),
                      remaining_s=self.budget.remaining())  # fmt: skip
        return metrics

    def _save_checkpoint(self, counters: TrainCounters) -> None:
        counters.trained_s = self.spent_before + self.clock.elapsed()
        self.session.checkpoint.save(counters)

    def _after_call(self, counters: TrainCounters, steps: int, loss: float, metrics):
        """Advances the counters, then evaluates, samples and checkpoints when due."""
        tc = self.cfg.train
        if not math.isfinite(loss):
            raise TextgenError(
                f"loss became {loss} at step {counters.step + steps}; lower train.learning_rate",
                "train.learning_rate",
            )
        counters.step += steps
        counters.batch += steps
        chars_per_sec = self.clock.targets_per_sec(counters.step) * self.data.chars_per_token
        self.emit("progress", step=counters.step, total=self.total_steps(counters), loss=loss,
                  chars_per_sec=chars_per_sec, epoch=counters.epoch)  # fmt: skip
        epoch_end = counters.batch >= self.data.steps_per_epoch
        if epoch_end:
            counters.epoch, counters.batch = counters.epoch + 1, 0
        reason = None
        if epoch_end or counters.step % tc.eval_every == 0:
            metrics = self._evaluate(counters, loss, final=False)
            if tc.patience and counters.bad_evals >= tc.patience:
                reason = "early_stop"
        if self.budget and self.budget.measured():
            metrics = self._fit_horizon(counters, loss, metrics)
        if epoch_end and reason is None:
            self._write_samples(counters)
        if epoch_end or counters.step % tc.checkpoint_every == 0:
            self._save_checkpoint(counters)
        return reason, metrics

    def _next_call_size(self, counters: TrainCounters) -> int:
        """Steps in the next call: up to steps_per_call, never past an epoch end or an event."""
        tc, step = self.cfg.train, counters.step
        limits = [
            tc.steps_per_call,
            self.data.steps_per_epoch - counters.batch,
            tc.eval_every - step % tc.eval_every,
            tc.checkpoint_every - step % tc.checkpoint_every,
        ]
        total = self.total_steps(counters)
        if total is not None:
            limits.append(total - step)
        return max(1, min(limits))

    def _evaluate(self, counters: TrainCounters, loss: float, *, final: bool) -> dict[str, Any]:
        """Scores val as streams (a bounded sample, or all of it when final); tracks the best."""
        val, started = self.data.index.val, time.monotonic()
        limit = None if final else self.cfg.train.eval_windows * self.cfg.windows.maxlen
        score = self.scorer.score_streams(val, limit_tokens=limit)
        eval_s = time.monotonic() - started
        if self.budget and not final:  # the final evaluation's cost is kept out of the budget
            self.budget.observe_eval(eval_s, final_share=len(val) / max(score.tokens, 1))
        record = {
            "step": counters.step,
            "epoch": counters.epoch,
            "lr": float(f"{self.session.learning_rate():.6g}"),
            "loss": round(loss, 5),
            "val_loss": round(score.nats_per_token, 5),
            "val_bpc": round(score.bpc, 5),
            "chars_per_sec": round(
                self.clock.targets_per_sec(counters.step) * self.data.chars_per_token, 1
            ),
            "rss_mb": round(rss_mb(), 1),
            "elapsed_s": round(self.spent_before + self.clock.elapsed(), 2),
            "eval_s": round(eval_s, 2),  # this evaluation's seconds (in elapsed_s from the next)
            "final": final,
            "method": score.method,
        }
        improved = score.nats_per_token < counters.best_val_loss
        if improved:
            counters.best_val_loss, counters.bad_evals = score.nats_per_token, 0
        elif not final:
            counters.bad_evals += 1
        if self.origin_pending:
            record, self.origin_pending = {"origin": asdict(self.cfg.origin), **record}, False
        if self.chief:
            self.run_dir.append_metrics(record)
            if improved or not self.run_dir.best_model.exists():
                self._save_best_model()
            write_scalars(self.writer, record)
            self.paint_curves(force=final)
        self.emit("eval", **record)
        return record

    def _save_best_model(self) -> None:
        from textgen.model.build import float32_copy  # keras: loaded once training runs

        model = self.session.model
        self.run_dir.save_model(float32_copy(model, self.session.cfg.model))  # any machine's

    def _write_samples(self, counters: TrainCounters) -> None:
        """Appends samples at the configured temperatures to samples.txt."""
        if not self.chief:
            return
        if self.generator is None:
            self.generator = Generator(self.session.model, self.data.index.tokenizer)
        self.generator.refresh()  # one compiled sampler per run, fed the latest weights
        sc = self.cfg.sample
        lines = [f"=== epoch {counters.epoch} step {counters.step} ==="]
        for temperature in sc.epoch_temperatures:
            text = self.generator.generate(
                sc.prompt, sc.epoch_length, temperature=temperature, seed=counters.step
            )[0]
            lines.append(f"--- temperature {temperature}\n{sc.prompt}{text}")
            self.emit("sample", temperature=temperature, text=sc.prompt + text)
        self.run_dir.append_samples("\n".join(lines) + "\n\n")


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
