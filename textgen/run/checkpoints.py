"""What a checkpoint holds, which one a run resumes from, and whether it may resume at all.

The one owner of "which checkpoint": `RunDir.checkpoint_prefixes` lists what is on disk (newest
first, damaged ones included); `restore_newest` tries them in that order and returns the first
that restores, with the damaged ones it passed. Retention is done here too, not by
`tf.train.CheckpointManager`, which trusts its `checkpoint` state file and deletes by it: a
checkpoint is deleted only once `max_to_keep` newer ones have been written or restored, and
the state file is rewritten from what is really there.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Generic, TypeVar

from textgen.core.errors import TextgenError
from textgen.core.filewrite import remove_files, write_atomic, writing

T = TypeVar("T")

STATE_FILE = "checkpoint"  # TensorFlow's CheckpointState text proto, beside the ckpt-N files
_CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)(?:\.index|\.data-\d+-of-\d+)?")


def checkpoint_number(path: str) -> int | None:
    """N of a checkpoint prefix or file (`.../ckpt-N`, `ckpt-N.index`, `ckpt-N.data-*`)."""
    match = _CHECKPOINT_FILE.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def restore_errors() -> tuple[type[BaseException], ...]:
    """What restoring a damaged checkpoint raises (IndexError: a truncated `.data` file)."""
    import tensorflow as tf

    return (tf.errors.OpError, ValueError, AssertionError, IndexError)


@dataclass
class TrainCounters:
    """Where training stands: saved in every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next batch within the epoch
    best_val_loss: float = float("inf")
    bad_evals: int = 0  # evaluations since the best, for early stopping
    horizon: int = 0  # the schedule's end step fitted to a time budget; 0: not fitted (yet)
    trained_s: float = 0.0  # seconds of training so far, all invocations of the run together


class DamagedCheckpoint(Exception):
    """A checkpoint that does not restore; the message says why, in one line."""


@dataclass
class Damaged:
    """A checkpoint passed over because it does not restore."""

    prefix: str
    reason: str

    def describe(self) -> str:
        """`checkpoint PATH is damaged (reason)`."""
        return f"checkpoint {self.prefix} is damaged ({self.reason})"


@dataclass
class Restored(Generic[T]):
    """What `restore_newest` restored, from which checkpoint, and what it passed over."""

    value: T | None = None
    path: str | None = None  # None: there was no checkpoint
    damaged: list[Damaged] = field(default_factory=list)


def restore_newest(
    candidates: list[str], restore_one: Callable[[str], T], *, where: str, advice: str = ""
) -> Restored[T]:
    """Restores the newest checkpoint that restores, passing over damaged ones.

    Args:
        candidates: Checkpoint prefixes, newest first (`RunDir.checkpoint_prefixes`).
        restore_one: Restores one prefix; raises `DamagedCheckpoint` when it cannot.
        where: Named when none restores (the run dir).
        advice: What to do then, appended to the error (e.g. `set train.fresh=true ...`).

    Returns:
        The restored value, its prefix and the damaged checkpoints newer than it; an empty
        `Restored` when there are no candidates.

    Raises:
        TextgenError: there are checkpoints, and none of them restores.
    """
    damaged: list[Damaged] = []
    for prefix in candidates:
        try:
            with _tensorflow_warnings_silenced():
                if not Path(prefix + ".index").is_file():
                    raise DamagedCheckpoint(f"{Path(prefix).name}.index is missing")
                value = restore_one(prefix)
        except DamagedCheckpoint as e:
            damaged.append(Damaged(prefix, str(e)))
            continue
        return Restored(value, prefix, damaged)
    if len(damaged) == 1:
        only = damaged[0]
        raise TextgenError(f"cannot restore checkpoint ({only.reason}){advice}", only.prefix)
    if damaged:
        newest = damaged[0]
        raise TextgenError(
            f"none of the run's {len(damaged)} checkpoints restores (the newest, "
            f"{Path(newest.prefix).name}: {newest.reason}){advice}",
            where,
        )
    return Restored()


def damage_reason(error: BaseException) -> str:
    """The first line of an error from restoring, short enough for one line."""
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


@contextlib.contextmanager
def _tensorflow_warnings_silenced() -> Iterator[None]:
    """A failed restore logs WARNINGs about unrestored values when collected: collect it here."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        gc.collect()
        logger.setLevel(level)


class TrainCheckpoint:
    """Model, optimizer, counters and RNG state of a run, in one tf.train.Checkpoint.

    Args:
        model: The Keras model (built under the strategy scope).
        optimizer: Its built Keras optimizer.
        directory: The run's checkpoints dir.
        max_to_keep: Checkpoints kept on disk.
        extra: More variables to keep, by name (e.g. the carried LSTM states).
    """

    def __init__(self, model, optimizer, directory: Path, *, max_to_keep: int = 3, **extra) -> None:
        import tensorflow as tf

        self._vars = {
            f.name: tf.Variable(
                f.default,
                dtype=tf.float64 if isinstance(f.default, float) else tf.int64,
                trainable=False,
                name=f.name,
            )
            for f in fields(TrainCounters)
        }
        # Keras' SeedGenerator states (dropout) are not tracked by tf.train.Checkpoint by default.
        rng = [v.value for v in model.variables if "seed_generator" in v.path]
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, rng=rng, **self._vars, **extra
        )
        self.directory, self.max_to_keep = Path(directory), max_to_keep
        self.latest: str | None = None  # the newest checkpoint written or restored
        self._damaged: set[int] = set()  # numbers of checkpoints that did not restore

    def restore(self, path: str) -> TrainCounters:
        """Restores everything from `path`.

        Raises:
            DamagedCheckpoint: it does not restore (the reason in one line).
        """

        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except restore_errors() as e:
            raise DamagedCheckpoint(damage_reason(e)) from None
        return TrainCounters(**{k: v.numpy().item() for k, v in self._vars.items()})

    def restore_newest(self, candidates: list[str], *, where: str) -> Restored[TrainCounters]:
        """Restores the newest checkpoint of `candidates` that restores (see `restore_newest`).

        Returns:
            The counters (fresh ones when there are no candidates), the path, the damaged.
        """
        restored = restore_newest(candidates, self.restore, where=where,
                                  advice="; set train.fresh=true to start over")  # fmt: skip
        self._damaged = {checkpoint_number(d.prefix) for d in restored.damaged}
        if restored.value is None:
            restored.value = TrainCounters()
        self.latest = restored.path
        return restored

    def save(self, counters: TrainCounters) -> str:
        """Writes `ckpt-<step>`, then the state file, then removes checkpoints beyond the kept.

        Raises:
            TextgenError: the disk is full (the partial checkpoint is removed first).
        """
        for name, var in self._vars.items():
            var.assign(getattr(counters, name))
        prefix = str(self.directory / f"ckpt-{counters.step}")
        self.checkpoint.save_counter.assign_add(1)  # as CheckpointManager did: same contents
        name = f"checkpoint ckpt-{counters.step}"
        with writing(name, prefix, cleanup=lambda: self._remove(prefix)):
            self.checkpoint.write(prefix)
        self._damaged.discard(counters.step)
        self.latest = prefix
        self._sweep(counters.step)
        return prefix

    def _sweep(self, newest: int) -> None:
        """Keeps the newest `max_to_keep` good checkpoints; removes older and broken ones.

        Broken: did not restore, or has no `.index` (a write or a removal that was killed).
        Nothing newer than `newest` is touched.
        """
        on_disk = _numbers_on_disk(self.directory)
        indexed = {n for n in on_disk if (self.directory / f"ckpt-{n}.index").is_file()}
        good = sorted((n for n in indexed - self._damaged if n <= newest), reverse=True)
        kept = good[: self.max_to_keep]
        # TensorFlow's CheckpointState text proto, for tf.train.latest_checkpoint and friends.
        state = [f'model_checkpoint_path: "ckpt-{newest}"']
        state += [f'all_model_checkpoint_paths: "ckpt-{n}"' for n in sorted(kept)]
        write_atomic(self.directory / STATE_FILE, "\n".join(state) + "\n")
        broken = {n for n in on_disk if n < newest and (n in self._damaged or n not in indexed)}
        for number in sorted(set(good[self.max_to_keep :]) | broken):
            self._remove(str(self.directory / f"ckpt-{number}"))
            self._damaged.discard(number)

    @staticmethod
    def _remove(prefix: str) -> None:
        """Removes one checkpoint's files, its index first, and TensorFlow's temp dir."""
        path = Path(prefix)
        remove_files([path.with_name(path.name + ".index")])
        remove_files(sorted(path.parent.glob(f"{path.name}.data-*")))
        remove_files(sorted(path.parent.glob(f"{path.name}_temp*")))


def _numbers_on_disk(directory: Path) -> set[int]:
    return {n for p in directory.glob("ckpt-*") if (n := checkpoint_number(str(p))) is not None}
