"""The run dir: its layout, its saved config and tokenizer, and loading its weights.

RUN/config.yaml          resolved config of the run
RUN/tokenizer.json|.model the run's tokenizer (a copy of the index's)
RUN/checkpoints/         tf.train.CheckpointManager: model, optimizer, counters, RNG state
RUN/model.keras          best model by val loss: int32 ids [batch, time] -> logits
RUN/metrics.jsonl        one JSON object per evaluation
RUN/samples.txt          samples after each epoch
RUN/curves.png           train and val bits per character by step (when matplotlib is installed)
RUN/tensorboard/         scalars
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from textgen.config import Config, load_config
from textgen.errors import TextgenError
from textgen.tokenizers import Tokenizer, load_tokenizer


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

    def checkpoint_prefixes(self) -> list[str]:
        """Path prefixes of the checkpoints on disk (`.../ckpt-N`), newest (largest N) first.

        Read from the files themselves, not from TensorFlow's `checkpoint` state file, which
        a crash or a user can leave pointing at nothing.
        """
        if not self.checkpoints.is_dir():
            return []
        numbered = []
        for index_file in self.checkpoints.glob("ckpt-*.index"):
            number = index_file.name[len("ckpt-") : -len(".index")]
            if number.isdigit():
                numbered.append((int(number), str(index_file.with_suffix(""))))
        return [prefix for _, prefix in sorted(numbered, reverse=True)]

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

        Args:
            checkpoint: As in `resolve_checkpoint`.

        Raises:
            TextgenError: a missing run or checkpoint, or an unreadable file.
        """
        path = self.resolve_checkpoint(checkpoint)
        from textgen.model import build_model  # also registers LeanLSTM for model.keras

        if path == str(self.best_model):
            import keras

            try:
                return keras.models.load_model(path, compile=False)
            except Exception as e:  # Keras raises many types for a damaged zip
                raise TextgenError(f"cannot load model: {e.__class__.__name__}", path) from None
        import tensorflow as tf

        model = build_model(self.load_config().model, self.load_tokenizer().vocab_size)
        try:
            tf.train.Checkpoint(model=model).restore(path).expect_partial()
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
            raise TextgenError(f"corrupt checkpoint: {e.__class__.__name__}", path) from None
        return model

    def clear(self) -> None:
        """Removes what a run writes (for `train.fresh`); leaves other files alone."""
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for path in (self.best_model, self.metrics, self.curves, self.samples, self.config_file):
            path.unlink(missing_ok=True)
        self._config = self._tokenizer = None

    def load_config(self) -> Config:
        """The run's saved, resolved config (read once)."""
        if self._config is not None:
            return self._config
        if not self.path.is_dir():
            raise TextgenError("run dir not found", str(self.path))
        if not self.config_file.is_file():
            raise TextgenError("not a run dir (no config.yaml)", str(self.path))
        try:
            raw = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise TextgenError(f"unreadable config.yaml: {e}", str(self.config_file)) from None
        self._config = load_config(None, (), base=raw or {})
        return self._config

    def save_config(self, cfg: Config) -> None:
        """Writes config.yaml atomically."""
        write_atomic(self.config_file, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self._config = None  # the next read sees what was written

    def load_tokenizer(self) -> Tokenizer:
        """The run's tokenizer (read once), of the kind its config names."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path, self.load_config().data.tokenizer)
        return self._tokenizer

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Appends one evaluation record to metrics.jsonl."""
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All records of metrics.jsonl (empty if none)."""
        if not self.metrics.is_file():
            return []
        lines = self.metrics.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def write_atomic(path: Path, text: str) -> None:
    """Writes text to a temporary sibling, then renames it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
