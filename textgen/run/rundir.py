"""The run dir: its layout, its saved config and tokenizer, and loading its weights.

RUN/config.yaml          resolved config of the run
RUN/tokenizer.json|.model the run's tokenizer (a copy of the index's)
RUN/checkpoints/         ckpt-N (`checkpoints.py`): model, optimizer, counters, RNG, carried states
RUN/model.keras          best model by val loss: int32 ids [batch, time] -> logits
RUN/metrics.jsonl        one JSON object per evaluation (`runlog.py`: cut back on resume)
RUN/samples.txt          samples after each epoch
RUN/corpus.json          the sources and counts of the index the run last started on
RUN/.lock                held (flock) by the one `train` writing the run (`dirlock.py`)
RUN/curves.png           train and val bits per character by step (when matplotlib is installed)
RUN/tensorboard/         scalars
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from textgen.core.config import Config, load_config
from textgen.core.dirlock import DirLock, run_dir_lock
from textgen.core.errors import TextgenError
from textgen.core.filewrite import remove_files, write_atomic, writing
from textgen.data.tokenizers import Tokenizer, load_tokenizer
from textgen.run import runlog
from textgen.run.checkpoints import (
    DamagedCheckpoint,
    checkpoint_number,
    damage_reason,
    restore_errors,
    restore_newest,
)  # fmt: skip


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint did not restore, and an older one was used instead."""


class RunDir:
    """Paths and files of one run; it reads the saved config and tokenizer once.

    Args:
        path: The run dir (`train.out_dir`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._config: Config | None = None  # read on first use, then kept
        self._tokenizer: Tokenizer | None = None

    config_file = property(lambda self: self.path / "config.yaml")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best_model = property(lambda self: self.path / "model.keras")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    curves = property(lambda self: self.path / "curves.png")
    samples = property(lambda self: self.path / "samples.txt")
    tensorboard = property(lambda self: self.path / "tensorboard")
    corpus_record = property(lambda self: self.path / "corpus.json")

    def check_usable(self) -> None:
        """Raises if the run dir cannot be one (a file is in the way); creates nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise TextgenError("train.out_dir exists and is not a directory", str(self.path))
        parent = next((p for p in self.path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise TextgenError(f"cannot create the run dir: {parent} is a file", str(self.path))

    def prepare(self) -> None:
        """Creates the run dir, or says why it cannot."""
        self.check_usable()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(exist_ok=True)
        except OSError as e:
            raise TextgenError(
                f"cannot create the run dir: {e.strerror or e}", str(self.path)
            ) from None

    def lock(self) -> DirLock:
        """Creates the run dir and takes its writer lock (one `train` per run dir).

        Raises:
            TextgenError: `run dir is in use by process PID`, or the dir cannot be created.
        """
        self.prepare()
        return run_dir_lock(self.path).acquire()

    def resumes(self, *, fresh: bool) -> bool:
        """Whether a `train` invocation (with `train.fresh` = `fresh`) resumes this run: it has
        checkpoints and its config.yaml."""
        return not fresh and bool(self.checkpoint_prefixes()) and self.config_file.is_file()

    def checkpoint_prefixes(self) -> list[str]:
        """Path prefixes of the checkpoints on disk (`.../ckpt-N`), newest (largest N) first.

        Read from the files themselves, not from TensorFlow's `checkpoint` state file, which
        a crash or a user can leave pointing at nothing or unreadable. A checkpoint with any
        of its files (`.index` or `.data-*`) is listed: one whose index is missing is damaged,
        not absent.
        """
        if not self.checkpoints.is_dir():
            return []
        numbers = {checkpoint_number(p.name) for p in self.checkpoints.glob("ckpt-*")}
        numbers.discard(None)
        return [str(self.checkpoints / f"ckpt-{n}") for n in sorted(numbers, reverse=True)]

    def latest_checkpoint(self) -> str | None:
        """Path prefix of the newest checkpoint on disk, or None."""
        prefixes = self.checkpoint_prefixes()
        return prefixes[0] if prefixes else None

    def resolve_checkpoint(self, checkpoint: str = "best") -> str:
        """What `checkpoint` names in this run, checked without TensorFlow.

        Args:
            checkpoint: `best` (model.keras, else the newest checkpoint), `latest` (the newest
                checkpoint), or a checkpoint path prefix such as `RUN/checkpoints/ckpt-3`.

        Returns:
            The path of model.keras or a checkpoint prefix.

        Raises:
            TextgenError: no run dir, no config, or no checkpoint of that name.
        """
        self.load_config()  # no dir, no config.yaml: its own error
        if checkpoint == "best" and self.best_model.is_file():
            return str(self.best_model)
        if checkpoint in ("best", "latest"):
            latest = self.latest_checkpoint()
            if latest is None:
                raise TextgenError("the run has no checkpoint yet (train it first)", str(self.path))
            return latest
        if checkpoint and Path(checkpoint + ".index").is_file():
            return checkpoint
        raise TextgenError(
            "unknown checkpoint: use best, latest or a path like RUN/checkpoints/ckpt-N", checkpoint
        )

    def load_model(self, checkpoint: str = "best"):
        """Loads the run's trained model (int32 ids [batch, time] -> logits).

        `best` without model.keras and `latest` use the newest checkpoint that restores; a
        damaged newer one is passed over with a `DamagedCheckpointWarning`.

        Args:
            checkpoint: As in `resolve_checkpoint`.

        Raises:
            TextgenError: a missing run or checkpoint, an unreadable file, a tokenizer that
                does not fit the model, or no checkpoint that restores.
        """
        path = self.resolve_checkpoint(checkpoint)
        if path == str(self.best_model):
            import keras

            from textgen.model.lstm_kernel import LeanLSTM

            try:
                model = keras.models.load_model(
                    path, compile=False, custom_objects={"textgen>LeanLSTM": LeanLSTM}
                )
            except Exception as e:  # Keras raises many types for a damaged zip
                raise TextgenError(f"cannot load model: {e.__class__.__name__}", path) from None
            self._check_vocabulary(model.output_shape[-1], path)
            return model

        if checkpoint not in ("best", "latest"):  # a named checkpoint: that one or an error
            return restore_newest([path], self._restore_model, where=path).value
        restored = restore_newest(self.checkpoint_prefixes(), self._restore_model,
                                  where=str(self.checkpoints))  # fmt: skip
        for damaged in restored.damaged:
            warnings.warn(f"{damaged.describe()}; using {restored.path}",
                          DamagedCheckpointWarning, stacklevel=2)  # fmt: skip
        return restored.value

    def _restore_model(self, prefix: str):
        """The model of one checkpoint; raises DamagedCheckpoint if it does not restore."""
        import tensorflow as tf

        from textgen.model.build import build_model

        model = build_model(self.load_config().model, self.load_tokenizer().vocab_size)
        try:
            tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
        except restore_errors() as e:
            shape = re.search(r"incompatible tensor with shape \((\d+), \d+\).*embedding", str(e))
            if shape:
                self._check_vocabulary(int(shape.group(1)), prefix)
            raise DamagedCheckpoint(damage_reason(e)) from None
        return model

    def _check_vocabulary(self, model_vocab: int, where: str) -> None:
        """Refuses a tokenizer whose vocabulary is not the size the model was trained on."""
        tokens = self.load_tokenizer().vocab_size
        if tokens != model_vocab:
            raise TextgenError(
                f"the run's tokenizer has {tokens} tokens but its model was trained on "
                f"{model_vocab}: the tokenizer file is from another run",
                str(self.path),
            )

    def clear(self) -> None:
        """Removes what a run writes (for `train.fresh`); leaves other files alone."""
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for path in (self.best_model, self.metrics, self.curves, self.samples, self.config_file,
                     self.corpus_record):  # fmt: skip
            path.unlink(missing_ok=True)
        self._config = self._tokenizer = None

    def remove_leftovers(self) -> None:
        """Removes temporary files of writes that a killed process left (under the lock)."""
        remove_files([
            *self.path.glob(".tmp-*"),  # model.keras being written
            *self.path.glob(".*.tmp-*"),  # write_atomic's temporaries
            *self.checkpoints.glob("ckpt-*_temp*"),  # TensorFlow's checkpoint being written
            *self.checkpoints.glob("checkpoint.tmp*"),  # its state file being written
        ])  # fmt: skip

    def start_writing(self, cfg: Config, index: Any, *, step: int) -> None:
        """Makes the run dir agree with the checkpoint at `step` before training writes to it.

        Removes leftovers of killed writes, cuts metrics.jsonl and samples.txt back to what
        that checkpoint has seen (`step` 0: no checkpoint, nothing), then writes config.yaml,
        the tokenizer and the corpus record. The chief calls it holding the run dir's lock.
        """
        self.remove_leftovers()
        runlog.cut_metrics(self.metrics, step)
        runlog.cut_samples(self.samples, step)
        self.save_config(cfg)
        with writing("the tokenizer", self.path):
            index.tokenizer.save(self.path)
        record = {"sources": index.meta["sources"], "counts": index.meta["counts"]}
        write_atomic(self.corpus_record, json.dumps(record, indent=1), what="corpus.json")
        self._tokenizer = None

    def load_corpus_record(self) -> dict[str, Any] | None:
        """The sources and counts of the index the run last started on (None if unknown)."""
        try:
            record = json.loads(self.corpus_record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def save_model(self, model) -> None:
        """Writes model.keras through a temporary file (removed if the write fails)."""
        tmp = self.path / f".tmp-{self.best_model.name}"  # Keras wants the .keras suffix
        with writing("model.keras", self.best_model, cleanup=lambda: remove_files([tmp])):
            model.save(tmp)
            tmp.replace(self.best_model)

    def load_config(self) -> Config:
        """The run's saved, resolved config (read once)."""
        if self._config is not None:
            return self._config
        if not self.path.is_dir():
            raise TextgenError("run dir not found", str(self.path))
        if not self.config_file.is_file():
            raise TextgenError("not a run dir (no config.yaml)", str(self.path))
        # Errors name the file, line and column.
        self._config = load_config(self.config_file, saved=True)
        return self._config

    def save_config(self, cfg: Config) -> None:
        """Writes config.yaml atomically."""
        cfg.dump(self.config_file)
        self._config = None  # the next read sees what was written

    def load_tokenizer(self) -> Tokenizer:
        """The run's tokenizer (read once), of the kind its config names."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path, self.load_config().data.tokenizer)
        return self._tokenizer

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Appends one evaluation record to metrics.jsonl (one line, one write)."""
        runlog.append_text(self.metrics, json.dumps(record) + "\n", what="metrics.jsonl")

    def append_samples(self, text: str) -> None:
        """Appends a block of samples (starting `=== epoch E step S ===`) to samples.txt."""
        runlog.append_text(self.samples, text, what="samples.txt")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl (empty if none; a torn line is skipped)."""
        return runlog.read_records(self.metrics)
