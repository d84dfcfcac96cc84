"""The measurements behind `textgen.compare`, one per fresh process, each printing its peak RSS.

    python -m textgen.comparison.worker onehot-build PREFIX --maxlen 40 --step 3
    python -m textgen.comparison.worker onehot-train PREFIX --maxlen 40 --step 3 --units 128 \
        --batch-size 128 --steps K
    python -m textgen.comparison.worker ids-train CONFIG

Each prints one JSON object on its last stdout line, with `peak_mb`: the process's VmHWM read by
itself at its end, so nothing of the parent (or of an earlier measurement) is in it. The classic
pipeline is the one of keras-io's `lstm_text_generation.py`: the text kept in memory, the lists
`sentences` and `next_chars`, one-hot bool `x` (windows, maxlen, vocab) and `y` (windows, vocab),
`LSTM(units)` + softmax, `model.fit(x, y)` on the whole arrays. Its fill is vectorized in bounded
chunks (same arrays, bit for bit, minutes faster than the example's per-character Python loop).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen import cli
from textgen.core.config import load_config
from textgen.core.memory import peak_rss_mb, rss_mb
from textgen.training.trainer import train

_FILL_ROWS = 16384  # windows per vectorized fill chunk: index temporaries of ~5 MB


@dataclass
class ClassicArrays:
    """What the classic example holds in memory once its arrays are built."""

    chars: list[str]  # the sorted vocabulary
    sentences: list[str]  # every window's text
    next_chars: list[str]  # the character after each window
    x: np.ndarray  # (windows, maxlen, vocab) bool
    y: np.ndarray  # (windows, vocab) bool


def classic_arrays(text: str, maxlen: int = 40, step: int = 3) -> ClassicArrays:
    """Builds the classic example's windows and one-hot arrays from `text`.

    Args:
        text: The corpus text.
        maxlen: Characters per window.
        step: Distance between window starts.

    Returns:
        The vocabulary, window texts, next characters and the bool arrays `x` and `y`.
    """
    chars = sorted(set(text))
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i : i + maxlen])
        next_chars.append(text[i + maxlen])
    x = np.zeros((len(sentences), maxlen, len(chars)), dtype="bool")
    y = np.zeros((len(sentences), len(chars)), dtype="bool")
    _fill(x, y, _char_ids(text, chars), step)
    return ClassicArrays(chars, sentences, next_chars, x, y)


def _char_ids(text: str, chars: list[str]) -> np.ndarray:
    """The index of each character of `text` in the sorted vocabulary `chars`, int32."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (len(text),)
    vocab = np.array([ord(c) for c in chars], dtype="<u4")  # sorted, as `chars` is
    return np.searchsorted(vocab, points).astype(np.int32)


def _fill(x: np.ndarray, y: np.ndarray, ids: np.ndarray, step: int) -> None:
    """Sets x[i, t, ids[i*step + t]] and y[i, ids[i*step + maxlen]], one chunk of rows at a time."""
    windows, maxlen, _ = x.shape
    offsets = np.arange(maxlen)  # (maxlen,)
    for first in range(0, windows, _FILL_ROWS):
        rows = np.arange(first, min(first + _FILL_ROWS, windows))  # (chunk,)
        starts = rows * step
        x[rows[:, None], offsets[None, :], ids[starts[:, None] + offsets]] = True
        y[rows, ids[starts + maxlen]] = True


def _onehot_build(args: argparse.Namespace) -> dict:
    text = Path(args.prefix).read_text(encoding="utf-8")
    start = time.monotonic()
    arrays = classic_arrays(text, args.maxlen, args.step)
    return {
        "windows": len(arrays.sentences),
        "vocab": len(arrays.chars),
        "x_bytes": int(arrays.x.nbytes),
        "y_bytes": int(arrays.y.nbytes),
        "build_s": round(time.monotonic() - start, 2),
    }


def _onehot_train(args: argparse.Namespace) -> dict:
    import keras  # first, as the example does: its import cost is part of every run

    base = rss_mb()
    text = Path(args.prefix).read_text(encoding="utf-8")
    arrays = classic_arrays(text, args.maxlen, args.step)
    vocab = len(arrays.chars)
    model = keras.Sequential(
        [
            keras.Input(shape=(args.maxlen, vocab)),
            keras.layers.LSTM(args.units),
            keras.layers.Dense(vocab, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(0.01))
    start = time.monotonic()
    history = model.fit(
        arrays.x,
        arrays.y,
        batch_size=args.batch_size,
        epochs=1,
        steps_per_epoch=args.steps,
        verbose=0,
    )
    return {
        "windows": len(arrays.sentences),
        "vocab": vocab,
        "import_rss_mb": round(base, 1),
        "fit_s": round(time.monotonic() - start, 2),
        "loss": float(history.history["loss"][-1]),
    }


def _ids_train(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config)
    start = time.monotonic()
    result = train(cfg)
    return {
        "steps": result.step,
        "stop_reason": result.stop_reason,
        "train_s": round(time.monotonic() - start, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one measurement and prints its JSON line."""
    parser = cli.ArgumentParser(prog="textgen.comparison.worker", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("onehot-build", "onehot-train"):
        p = sub.add_parser(kind)
        p.add_argument("prefix")
        p.add_argument("--maxlen", type=int, default=40)
        p.add_argument("--step", type=int, default=3)
        p.add_argument("--units", type=int, default=128)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--steps", type=int, default=1)
    sub.add_parser("ids-train").add_argument("config")
    args = parser.parse_args(argv)
    if args.kind != "onehot-build":  # building the arrays needs numpy alone
        cli.quiet_tensorflow()
    run = {"onehot-build": _onehot_build, "onehot-train": _onehot_train, "ids-train": _ids_train}
    result = run[args.kind](args)
    result["peak_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
