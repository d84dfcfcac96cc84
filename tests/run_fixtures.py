"""Tiny trained run dirs for tests of generation and evaluation, made without the trainer.

`make_run` builds a tokenizer and a `build_model` model, trains it briefly with a small
GradientTape loop on random windows of a text, and writes a run dir in the real format:
config.yaml, the tokenizer, model.keras and a `checkpoints/` dir (so `best` and `latest` work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def make_run(
    path: Path,
    text: str,
    *,
    units: int = 32,
    layers: int = 1,
    embedding_dim: int = 16,
    maxlen: int = 16,
    steps: int = 150,
    learning_rate: float = 0.02,
    tokenizer: Any = "char",
    index: bool = False,
    sp_vocab_size: int = 64,
    seed: int = 0,
    overrides: tuple[str, ...] = (),
) -> Path:
    """Writes a briefly trained run dir at `path` and returns it.

    Args:
        path: The run dir to create (its parent holds the corpus and index when `index`).
        text: The training text.
        units, layers, embedding_dim, maxlen: The model and window sizes.
        steps: Training steps (batches of 32 random windows).
        learning_rate: Adam's learning rate.
        tokenizer: `char`, `sentencepiece` (with `index`), or a tokenizer object.
        index: Also write the text to a corpus file and index it (data.path, data.index_dir
            point there); the run then uses the index's tokenizer.
        sp_vocab_size: Pieces of a sentencepiece tokenizer built by the index.
        seed: Seeds the weights and the windows.
        overrides: More `key=value` config overrides (e.g. `sample.length=20`).
    """
    import keras
    import tensorflow as tf

    from textgen.core.config import load_config
    from textgen.data.tokenizers import CharTokenizer
    from textgen.model.build import build_model
    from textgen.run.rundir import RunDir

    path = Path(path)
    kind = tokenizer if isinstance(tokenizer, str) else tokenizer.kind
    words = [
        f"model.units={units}",
        f"model.layers={layers}",
        f"model.embedding_dim={embedding_dim}",
        f"windows.maxlen={maxlen}",
        f"windows.step={maxlen}",
        f"data.tokenizer={kind}",
        f"data.sp_vocab_size={sp_vocab_size}",
        f"train.out_dir={path}",
        "data.val_fraction=0.2",
    ]
    if index:
        corpus = path.parent / f"{path.name}-corpus.txt"
        corpus.write_bytes(text.encode("utf-8"))
        words += [f"data.path={corpus}", f"data.index_dir={path.parent / (path.name + '-index')}"]
    cfg = load_config(None, [*words, *overrides])
    if index:
        from textgen.data.corpus import index_corpus

        built = index_corpus(cfg.data, min_split_tokens=maxlen + 1)[0]
        tokenizer = built.tokenizer
        if cfg.data.documents != "stream":  # train on the index's ids: end-of-text tokens too
            ids = np.load(built.directory / "train.npy")  # (train tokens,)
    elif tokenizer == "char":
        tokenizer = CharTokenizer(text)
    elif isinstance(tokenizer, str):
        raise ValueError("a sentencepiece run needs index=True or a tokenizer object")

    keras.utils.set_random_seed(seed)
    model = build_model(cfg.model, tokenizer.vocab_size)
    ids = ids if "ids" in locals() else tokenizer.encode(text)
    train(model, ids, maxlen=maxlen, steps=steps, lr=learning_rate, seed=seed)

    run = RunDir(path)
    run.prepare()
    run.save_config(cfg)
    tokenizer.save(path)
    model.save(run.best_model)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), directory=str(run.checkpoints), max_to_keep=3
    )
    manager.save()
    return path


def train(model, ids: np.ndarray, *, maxlen: int, steps: int, lr: float, seed: int) -> None:
    """A few Adam steps on random windows of `ids` (next-token cross-entropy at every position)."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(lr)
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids, dtype=np.int32)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)  # (batch, time, vocab)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    span = min(maxlen, len(ids) - 1)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - span, size=32)
        rows = ids[starts[:, None] + np.arange(span + 1)]  # (batch, span + 1)
        step(rows[:, :-1], rows[:, 1:])


def remove_checkpoints(path: Path) -> Path:
    """Deletes a run's model.keras and checkpoints (a run that has not saved one yet)."""
    import shutil

    shutil.rmtree(Path(path) / "checkpoints")
    (Path(path) / "model.keras").unlink()
    return Path(path)
