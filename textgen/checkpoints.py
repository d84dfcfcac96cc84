"""What a checkpoint holds, restoring it exactly, and deciding whether a run may resume."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from textgen.config import Config
from textgen.errors import TextgenError
from textgen.rundir import RunDir
from textgen.tokenizers import Tokenizer, same_vocabulary

# Keys whose change makes the saved weights or token ids meaningless.
_SHAPE_KEYS = (
    ("model", "embedding_dim"),
    ("model", "units"),
    ("model", "layers"),
    ("data", "tokenizer"),
)


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
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(directory), max_to_keep=max_to_keep
        )

    def restore(self, path: str) -> TrainCounters:
        """Restores everything from `path`; a damaged checkpoint is a TextgenError naming it."""
        import tensorflow as tf

        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        # IndexError: a truncated .data file ("Read less bytes than requested").
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise TextgenError(
                f"cannot restore checkpoint ({reason}); set train.fresh=true to start over, "
                "or delete it to fall back to an older one",
                path,
            ) from None
        return TrainCounters(**{k: v.numpy().item() for k, v in self._vars.items()})

    def save(self, counters: TrainCounters) -> str:
        """Writes a checkpoint of the current state (CheckpointManager writes then renames)."""
        for name, var in self._vars.items():
            var.assign(getattr(counters, name))
        return self.manager.save(checkpoint_number=counters.step)


def check_resumable(run: RunDir, cfg: Config, tokenizer: Tokenizer) -> list[str]:
    """Refuses to resume a run whose model shape, tokenizer or vocabulary changed.

    Returns:
        Notes on allowed changes (learning rate, epochs, limits, ...), for the user.

    Raises:
        TextgenError: the saved run is incompatible with `cfg` or with the current index.
    """
    saved = run.load_config()
    how = "set train.fresh=true to start over, or choose another train.out_dir"
    for section, key in _SHAPE_KEYS:
        old, new = getattr(getattr(saved, section), key), getattr(getattr(cfg, section), key)
        if old != new:
            raise TextgenError(
                f"cannot resume: {section}.{key} changed from {old!r} to {new!r}; {how}",
                str(run.path),
            )
    previous = run.load_tokenizer()
    if not same_vocabulary(previous, tokenizer):
        raise TextgenError(
            f"cannot resume: the corpus vocabulary changed since this run started "
            f"({previous.vocab_size} -> {tokenizer.vocab_size} tokens); {how}",
            str(run.path),
        )
    notes = []
    old_dict, new_dict = saved.to_dict(), cfg.to_dict()
    for section, values in new_dict.items():
        for key, value in values.items():
            if key != "fresh" and old_dict[section].get(key) != value:
                notes.append(f"{section}.{key}: {old_dict[section].get(key)!r} -> {value!r}")
    return notes
