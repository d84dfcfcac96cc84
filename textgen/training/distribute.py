"""Choosing the tf.distribute strategy for `train.distribute`, and who writes the run dir."""

from __future__ import annotations

import json
import os

from textgen.core.errors import TextgenError
from textgen.core.quiet import native_stderr_silenced


def make_strategy(kind: str):
    """Returns the strategy for `train.distribute`.

    Args:
        kind: `auto` (MirroredStrategy over >1 GPUs, else the default strategy), `none`,
            `mirrored` (all local devices) or `multi_worker` (from TF_CONFIG).

    Raises:
        TextgenError: `multi_worker` without a valid TF_CONFIG.
    """
    import tensorflow as tf

    if kind == "multi_worker":
        validate_tf_config(os.environ.get("TF_CONFIG"))
    with native_stderr_silenced():  # device discovery logs "failed call to cuInit" on CPU hosts
        strategy = _strategy(kind, tf)
        tf.config.list_logical_devices()
    return strategy


def _strategy(kind: str, tf):
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def validate_tf_config(text: str | None) -> dict:
    """Parses TF_CONFIG and checks it names a cluster and this task.

    Raises:
        TextgenError: missing or malformed.
    """
    if not text:
        raise TextgenError("train.distribute=multi_worker needs TF_CONFIG", "TF_CONFIG")
    try:
        conf = json.loads(text)
        workers = conf["cluster"]["worker"]
        task_type, task_index = conf["task"]["type"], int(conf["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise TextgenError(
            f"malformed TF_CONFIG: {e.__class__.__name__} {e}", "TF_CONFIG"
        ) from None
    if not isinstance(workers, list) or not workers or task_type not in ("worker", "chief"):
        raise TextgenError("TF_CONFIG needs cluster.worker (a list) and a task", "TF_CONFIG")
    if task_type == "worker" and not 0 <= task_index < len(workers):
        raise TextgenError(f"TF_CONFIG task index {task_index} is not a worker", "TF_CONFIG")
    return conf


def is_chief(strategy) -> bool:
    """True for the one process that writes metrics, samples, model.keras and checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


_STOP_REASONS = (None, "max_time", "interrupted")  # by priority


def agree_on_stop(strategy, reason: str | None) -> str | None:
    """Makes every worker take the same decision to stop (the most urgent reason of any).

    A worker that stopped alone would leave the others waiting in the next all-reduce forever.
    """
    if num_workers(strategy) <= 1:
        return reason
    import tensorflow as tf

    votes = [float(reason == r) for r in _STOP_REASONS]  # one-hot; tf.distribute has no MAX
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(votes, tf.float32)
    )
    totals = strategy.reduce("SUM", values, axis=None).numpy()
    return max((r for r, n in zip(_STOP_REASONS, totals, strict=True) if n > 0 and r), default=None,
               key=_STOP_REASONS.index)  # fmt: skip


def num_workers(strategy) -> int:
    """Number of worker processes the strategy spans (1 unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(tasks) for kind, tasks in spec.items() if kind in ("worker", "chief")) or 1
