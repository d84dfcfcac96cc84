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
    """Paths and files of one run.

    Args:
        path: The run dir (`train.out_dir`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
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

    def latest_checkpoint(self) -> str | None:
        """Path prefix of the newest checkpoint, or None."""
        import tensorflow as tf

        return (
            tf.train.latest_checkpoint(str(self.checkpoints)) if self.checkpoints.is_dir() else None
        )

    def clear(self) -> None:
        """Removes what a run writes (for `train.fresh`); leaves other files alone."""
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for path in (self.best_model, self.metrics, self.curves, self.samples, self.config):
            path.unlink(missing_ok=True)

    def load_config(self) -> Config:
        """The run's saved, resolved config."""
        if not self.path.is_dir():
            raise TextgenError("run dir not found", str(self.path))
        if not self.config.is_file():
            raise TextgenError("not a run dir (no config.yaml)", str(self.path))
        try:
            raw = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise TextgenError(f"unreadable config.yaml: {e}", str(self.config)) from None
        return load_config(None, (), base=raw or {})

    def save_config(self, cfg: Config) -> None:
        """Writes config.yaml atomically."""
        write_atomic(self.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def load_tokenizer(self, kind: str) -> Tokenizer:
        """The run's tokenizer."""
        return load_tokenizer(self.path, kind)

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


def load_model(run_dir: str | Path, checkpoint: str = "best"):
    """Loads a run's trained model (ids -> logits).

    Args:
        run_dir: The run dir.
        checkpoint: `best` (model.keras, falling back to the latest checkpoint), `latest`,
            or a checkpoint path prefix such as `RUN/checkpoints/ckpt-3`.

    Returns:
        (model, config, tokenizer)

    Raises:
        TextgenError: a missing run, checkpoint or an unreadable file.
    """
    import tensorflow as tf

    from textgen.model import build_model

    run = RunDir(run_dir)
    cfg = run.load_config()
    tokenizer = run.load_tokenizer(cfg.data.tokenizer)
    if checkpoint == "best" and run.best_model.is_file():
        import keras

        try:
            return keras.models.load_model(run.best_model, compile=False), cfg, tokenizer
        except Exception as e:  # Keras raises many types for a damaged zip
            raise TextgenError(
                f"cannot load model: {e.__class__.__name__}", str(run.best_model)
            ) from None
    if checkpoint in ("best", "latest"):
        path = run.latest_checkpoint()
        if path is None:
            raise TextgenError("the run has no checkpoint yet (train it first)", str(run.path))
    elif checkpoint and tf.io.gfile.exists(checkpoint + ".index"):
        path = checkpoint
    else:
        raise TextgenError(
            "unknown checkpoint: use best, latest or a path like RUN/checkpoints/ckpt-N", checkpoint
        )
    model = build_model(cfg.model, tokenizer.vocab_size)
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        raise TextgenError(f"corrupt checkpoint: {e.__class__.__name__}", path) from None
    return model, cfg, tokenizer
