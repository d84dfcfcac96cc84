"""Where a run's learning curves go: TensorBoard scalars, and a PNG (`RUN/curves.png`).

The PNG is drawn from the run's metrics.jsonl records.

Train and val loss are both drawn in bits per character, so char and sentencepiece runs read the
same way: a record's chars per token is `val_loss / (val_bpc * ln 2)`. The scores of the final
evaluations (all of val) are stars. matplotlib is optional: without it nothing is drawn.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PAINT_EVERY_S = 60.0  # during training, RUN/curves.png is redrawn at most this often


def train_bpc(record: dict[str, Any]) -> float:
    """The record's train loss (nats per token) in bits per character.

    Per token when its val_loss is 0, which gives no chars-per-token ratio.
    """
    if not record["val_loss"]:
        return record["loss"] / math.log(2)
    return record["loss"] * record["val_bpc"] / record["val_loss"]


def plot_curves(records: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> bool:
    """Writes train and val bits per character by step to `path` (a temp file, then renamed).

    Uses matplotlib's object API without pyplot, so it never changes the caller's backend or
    figures (a notebook that calls `train` keeps its own).

    Args:
        records: metrics.jsonl records (`step`, `loss`, `val_loss`, `val_bpc`, `final`).
        path: The PNG to write.
        title: Put before the val score in the title (e.g. the run dir).

    Returns:
        False when there is nothing to draw or matplotlib is not installed (nothing is written).

    Raises:
        OSError: the PNG could not be written (nothing is left behind).
    """
    if not records:
        return False
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    periodic = [r for r in records if not r.get("final")]
    final = [r for r in records if r.get("final")]
    ax.plot([r["step"] for r in records], [train_bpc(r) for r in records],
            color="tab:gray", alpha=0.8, label="train (last call's batches)")  # fmt: skip
    if periodic:
        ax.plot([r["step"] for r in periodic], [r["val_bpc"] for r in periodic],
                color="tab:blue", marker=".", label="val (sampled windows)")  # fmt: skip
    if final:
        ax.plot([r["step"] for r in final], [r["val_bpc"] for r in final], linestyle="none",
                color="tab:red", marker="*", markersize=11, label="val (all of it)")  # fmt: skip
        score = f"val {final[-1]['val_bpc']:.3f} bpc (all of it, step {final[-1]['step']})"
    else:
        score = f"best val {min(r['val_bpc'] for r in records):.3f} bpc (sampled)"
    ax.set(xlabel="step", ylabel="bits per character",
           title=f"{title}{': ' if title else ''}{score}")  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def write_scalars(writer, record: dict[str, Any]) -> None:
    """Writes a record's scalars for TensorBoard; `writer` None (not the chief) writes nothing.

    Uses TF's core summary op, so TensorBoard itself need not be installed.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    if writer is None:
        return
    scalars = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    with writer.as_default(step=record["step"]):
        for key in ("loss", "val_loss", "val_bpc", "chars_per_sec", "rss_mb"):
            tf.summary.write(key, tf.constant(record[key], tf.float32), metadata=scalars)
    writer.flush()


class CurvesPainter:
    """Redraws a run's curves.png from its metrics: when forced, else at most once a minute.

    A failed drawing is passed to `warn` as one line: a plot never stops a training run.

    Args:
        run_dir: The run (a `RunDir`).
        warn: Called with the message when the PNG cannot be written.
    """

    def __init__(self, run_dir, *, warn: Callable[[str], None]) -> None:
        self.run_dir, self.warn = run_dir, warn
        self.painted_at = -math.inf  # the first evaluation draws

    def __call__(self, *, force: bool = False) -> None:
        """Draws now if forced (after a final evaluation) or a minute has passed."""
        if not force and time.monotonic() - self.painted_at < PAINT_EVERY_S:
            return
        self.painted_at = time.monotonic()
        path = self.run_dir.curves
        try:
            plot_curves(self.run_dir.read_metrics(), path, title=str(self.run_dir.path))
        except Exception as error:  # a plot is never worth stopping a training run for
            self.warn(f"{path.name} not drawn: {error}")
