"""Fine-tuning: a new run whose weights start from another run's (`train.init_from`).

The source is a run dir (its `train.init_checkpoint`: `best` = model.keras, or `latest`), or one
of its checkpoints (`RUN/checkpoints/ckpt-N`). It is only read: no lock is taken for writing and
no file in it is created or changed; a source that a trainer holds (mid-write) is refused. The
new run takes the source's model shape and extends its tokenizer:

- char: the source's characters plus the new corpus's (ids are re-sorted by code point, so rows
  are copied by character, not by id). A new character's output column starts at zero with the
  bias `NEW_TOKEN_BIAS` (-20), so at step 0 each context gives it about e^-20 of the mass the
  known characters share: their probabilities are unchanged to ~1e-8, their ratios exactly. Its
  embedding row starts at the mean of the known rows (a neutral input).
- sentencepiece: the source's pieces as they are; byte fallback leaves nothing unknown.

The optimizer, counters, schedule and carried states start fresh, as in any new run. A resumed
fine-tuned run needs no source: its own checkpoints, config and (merged) tokenizer suffice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen.core.config import Config, ModelConfig, OriginConfig
from textgen.core.dirlock import read_holder
from textgen.core.errors import TextgenError
from textgen.data.tokenizers import CharTokenizer, Tokenizer, same_vocabulary
from textgen.run.checkpoints import checkpoint_number
from textgen.run.rundir import DamagedCheckpointWarning, RunDir

# Why -20 (nats) and not -1e4: the new columns' probabilities must be negligible at step 0, and
# learnable once the character shows up in the new text. A trained char model's log-sum-exp over
# its logits lies well above -8 in any context, so e^-20 leaves a new character below ~1e-5 of
# the known ones' mass (measured: ~1e-9 on the tests' and the benchmark's sources). Adam moves
# each of the column's `units` weights by ~lr per step, so the logit can rise by 20 in a few
# hundred steps; at -1e4 it would take millions: the character would never be sampled.
NEW_TOKEN_BIAS = -20.0
SHAPE_KEYS = ModelConfig.SHAPE_KEYS  # model.* that the source fixes


@dataclass
class Source:
    """A run to fine-tune from, checked and read without TensorFlow.

    Attributes:
        run: The source run dir.
        checkpoint: `best`, `latest` or a checkpoint prefix, as `RunDir.load_model` takes.
        cfg: The source run's saved config.
        tokenizer: The source run's tokenizer.
    """

    run: RunDir
    checkpoint: str
    cfg: Config
    tokenizer: Tokenizer


def open_source(cfg: Config) -> Source:
    """Resolves and checks `train.init_from` (no TensorFlow, nothing written).

    Raises:
        TextgenError: the source is missing, not a run, has no checkpoint, is being trained, is
            the run's own out_dir, or its tokenizer kind is not `data.tokenizer`.
    """
    given = cfg.train.init_from or ""
    path, checkpoint = Path(given), cfg.train.init_checkpoint
    if checkpoint_number(path.name) is not None and path.parent.name == "checkpoints":
        path, checkpoint = path.parent.parent, given  # RUN/checkpoints/ckpt-N
    elif path.name == "model.keras":
        path, checkpoint = path.parent, "best"
    if path.resolve() == Path(cfg.train.out_dir).resolve():
        raise TextgenError("train.init_from is this run's own train.out_dir", given)
    run = RunDir(path)
    try:
        source_cfg = run.load_config()
        if source_cfg.data.tokenizer != cfg.data.tokenizer:
            raise TextgenError(
                f"the source run's tokenizer is '{source_cfg.data.tokenizer}' but data.tokenizer "
                f"is '{cfg.data.tokenizer}'; set data.tokenizer={source_cfg.data.tokenizer}",
                given,
            )
        check_not_being_trained(run)
        run.resolve_checkpoint(checkpoint)  # no checkpoint at all: its own error
        tokenizer = run.load_tokenizer()
    except TextgenError as e:
        hint = " (`make pretrained` trains runs/base)" if not path.exists() else ""
        raise TextgenError(f"train.init_from: {e.what}{hint}", e.where or given) from None
    return Source(run, checkpoint, source_cfg, tokenizer)


def check_not_being_trained(run: RunDir) -> None:
    """Refuses a run dir whose writer lock a trainer holds (its files may be mid-write)."""
    with _read_lock(run) as held:
        if not held:
            holder = read_holder(run.path / ".lock")
            by = f"process {holder}" if holder else "another process"
            raise TextgenError(f"the run is being trained by {by}; wait for it to stop",
                               str(run.path))  # fmt: skip


@contextlib.contextmanager
def _read_lock(run: RunDir) -> Iterator[bool]:
    """A shared flock on RUN/.lock if that file exists, opened read-only (creates nothing).

    Yields whether no writer holds it. While it is held a trainer that starts on the source is
    refused (for the second or so the weights take to read).
    """
    try:
        fd = os.open(run.path / ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True  # no trainer has the run open: it removes the file when it stops
        return
    except OSError:
        yield True  # an unreadable lock file: nothing to learn from it
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the flock


def model_shape_config(cfg: Config, run: RunDir) -> Config:
    """`cfg` with the model shape of `cfg.train.init_from`'s source, or of the run it resumes.

    model.dropout and model.lstm_kernel stay `cfg`'s: they change no weight's shape.
    """
    shaped = run.load_config() if run.resumes(fresh=cfg.train.fresh) else open_source(cfg).cfg
    shape = {key: getattr(shaped.model, key) for key in SHAPE_KEYS}
    return cfg.replace(model=dataclasses.replace(cfg.model, **shape))


def check_model_overrides(overrides: Sequence[str], cfg: Config, shaped: Config) -> None:
    """Refuses a command-line model.* that differs from the source's shape (dropout may).

    Args:
        overrides: The `key=value` words of the command line.
        cfg: The config they produced.
        shaped: `model_shape_config(cfg, ...)`: the shape the run will have.

    Raises:
        TextgenError: naming the key, the value asked and the source's.
    """
    for word in overrides:
        key = word.partition("=")[0].strip()
        section, _, name = key.partition(".")
        if section != "model" or name not in SHAPE_KEYS:
            continue
        asked, kept = getattr(cfg.model, name), getattr(shaped.model, name)
        if asked != kept:
            raise TextgenError(
                f"{key}={asked} differs from the source run's {kept}: a fine-tuned run keeps its "
                "source's model shape (only model.dropout may change)",
                "command line",
            )


def load_source_model(source: Source) -> tuple[object, str, list[str]]:
    """Reads the source's weights, checking again that no trainer holds it.

    Returns:
        The model, the path it was read from and warnings (damaged newer checkpoints passed).

    Raises:
        TextgenError: no checkpoint restores, or a trainer holds the run.
    """
    with _read_lock(source.run) as free:
        if not free:
            check_not_being_trained(source.run)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                path = source.run.resolve_checkpoint(source.checkpoint)
                model = source.run.load_model(source.checkpoint)
        except TextgenError as e:
            raise TextgenError(f"train.init_from: {e.what}", e.where) from None
    passed = [str(w.message) for w in caught if w.category is DamagedCheckpointWarning]
    if passed and path != str(source.run.best_model):
        path = source.run.checkpoint_prefixes()[len(passed)]  # the one that restored
    return model, path, passed


def copy_weights(source_model, model, source_tok: Tokenizer, tokenizer: Tokenizer) -> list[str]:
    """Copies the source model's weights into `model`, row by token for the vocabulary layers.

    Args:
        source_model: The source run's model (its vocabulary is `source_tok`'s).
        model: A new model of the same shape over `tokenizer` (a superset of `source_tok`).
        source_tok: The source's tokenizer.
        tokenizer: The new run's tokenizer.

    Returns:
        The characters `tokenizer` has that `source_tok` lacks (empty for sentencepiece).
    """
    rows, new = _row_map(source_tok, tokenizer)  # rows[i]: the new id of source id i
    embedding = source_model.get_layer("embedding").get_weights()[0]  # (source_vocab, dim)
    new_embedding = np.tile(embedding[1:].mean(axis=0), (tokenizer.vocab_size, 1))  # (vocab, dim)
    new_embedding[rows] = embedding
    model.get_layer("embedding").set_weights([new_embedding])
    for layer in model.layers:
        if layer.name.startswith("lstm_"):
            layer.set_weights(source_model.get_layer(layer.name).get_weights())
    kernel, bias = source_model.get_layer("logits").get_weights()  # (units, source_vocab)
    new_kernel = np.zeros((kernel.shape[0], tokenizer.vocab_size), kernel.dtype)  # (units, vocab)
    new_bias = np.full(tokenizer.vocab_size, NEW_TOKEN_BIAS, bias.dtype)  # (vocab,)
    new_kernel[:, rows], new_bias[rows] = kernel, bias
    model.get_layer("logits").set_weights([new_kernel, new_bias])
    return new


def _row_map(source_tok: Tokenizer, tokenizer: Tokenizer) -> tuple[np.ndarray, list[str]]:
    """The new id of every source id, and the new characters."""
    if not isinstance(source_tok, CharTokenizer):
        if not same_vocabulary(source_tok, tokenizer):
            raise ValueError("a sentencepiece run is fine-tuned with its source's own pieces")
        return np.arange(tokenizer.vocab_size), []
    assert isinstance(tokenizer, CharTokenizer)
    rows = np.concatenate([[0], tokenizer.encode(source_tok.chars)])  # (source_vocab,)
    if (rows[1:] == 0).any():
        raise ValueError("the new tokenizer lacks characters of the source's")
    new = [c for c in tokenizer.chars if c not in set(source_tok.chars)]
    return rows, new


def fine_tuning_plan(cfg: Config, run: RunDir) -> tuple[Config, Source | None, Tokenizer | None]:
    """What `train.init_from` means for this invocation of the run in `run`.

    Returns:
        The config with the source's model shape; the source (None when the run resumes from its
        own checkpoints: it needs no source then); the tokenizer the index extends (the
        source's, or the resumed run's own merged one). `(cfg, None, None)` without init_from.
    """
    if not cfg.train.init_from:
        return cfg, None, None
    if run.resumes(fresh=cfg.train.fresh):
        saved = run.load_config()
        shaped = model_shape_config(cfg, run).replace(origin=saved.origin)
        return shaped, None, run.load_tokenizer()
    source = open_source(cfg)
    return model_shape_config(cfg, run), source, source.tokenizer


def start_from(source: Source, model, tokenizer: Tokenizer) -> tuple[OriginConfig, dict]:
    """Copies the source's weights into a new run's `model` (over `tokenizer`).

    Returns:
        The origin to record, and the trainer's `init` event data plus `passed`: warnings about
        damaged newer checkpoints of the source that were passed over.
    """
    source_model, path, passed = load_source_model(source)
    new = copy_weights(source_model, model, source.tokenizer, tokenizer)
    fingerprint = weights_fingerprint(source_model)
    origin = OriginConfig(run_dir=str(source.run.path), checkpoint=path, weights=fingerprint)
    event = {"run_dir": origin.run_dir, "checkpoint": path, "weights": fingerprint,
             "vocab": tokenizer.vocab_size, "new_tokens": new, "passed": passed}  # fmt: skip
    return origin, event


def weights_fingerprint(model) -> str:
    """A short SHA-256 of every weight's bytes: equal on workers and on reproduced runs."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]
