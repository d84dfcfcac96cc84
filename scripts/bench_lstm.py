"""The LSTM kernels side by side in one process (issue 10); prints one JSON object.

    python scripts/bench_lstm.py [--quick] [--shapes 16x64,32x64,64x128] [--variants ...] [--ops]
        [--trainer [--workdir DIR]]

A plain `tf.function` train step (Embedding(84, 64) -> 2 x LSTM(256) -> Dense(84), sequence
targets, Adam, random ids; no textgen pipeline) for each variant and batch x time shape:
optimizer updates/s, chars/s, training FLOP/s as a fraction of the measured float32 matmul peak
(`tf.matmul`, 2048^3, timed in every round), and (--ops) the ops inside the while-loop bodies
of the step's graph; with --trainer, also textgen's own trainer with each kernel.
The variants run interleaved (several short rounds, median per variant), so noise from other work
on the machine hits all of them alike: compare the ratios, not the absolute figures.

Variants: `keras` (keras.layers.LSTM), `lean` (textgen's LeanLSTM, default settings), each
optionally `+xla` (the whole train step under `jit_compile=True`) and `/bf16` (mixed_bfloat16);
lean only: `/uN` (N steps per loop iteration), `/jit` or `/nojit` (XLA on the two loops or not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # bench_train's trainer helpers
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VOCAB, EMBEDDING, UNITS, LAYERS = 84, 64, 256, 2
DEFAULT_VARIANTS = "keras,keras+xla,lean,lean+xla"


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """Median FLOP/s of one `tf.matmul` of two n x n matrices of `dtype`, now."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal([n, n]), dtype)
    tf.matmul(a, a).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, a).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def make_step(variant: str, seed: int = 0):
    """(train step, its model) for a variant such as `lean+xla/u4`."""
    import keras
    import tensorflow as tf

    from textgen.core.config import ModelConfig
    from textgen.model.build import build_model
    from textgen.model.lstm_kernel import LeanLSTM

    name, *flags = variant.split("/")
    kind, xla = name.removesuffix("+xla"), name.endswith("+xla")
    keras.utils.set_random_seed(seed)
    cfg = ModelConfig(
        embedding_dim=EMBEDDING, units=UNITS, layers=LAYERS, lstm_kernel=kind, residual=False
    )
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if "bf16" in flags else policy)
    try:
        model = build_model(cfg, VOCAB)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    for layer in model.layers:
        if isinstance(layer, LeanLSTM):
            for flag in flags:
                if flag.startswith("u"):
                    layer.steps_per_iteration = int(flag[1:])
                elif flag in ("jit", "nojit"):
                    layer.jit_min_units = 0 if flag == "jit" else 2**31
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=xla)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)  # (batch, time, vocab)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step, model


def loop_ops(step, x, y) -> list[int]:
    """Nodes of each while-loop body in the step's graph (before Grappler), largest first."""
    graph = step.get_concrete_function(x, y).graph.as_graph_def()
    bodies = {
        n.attr["body"].func.name
        for f in graph.library.function
        for n in f.node_def
        if n.op in ("While", "StatelessWhile")
    } | {n.attr["body"].func.name for n in graph.node if n.op in ("While", "StatelessWhile")}
    sizes = [len(f.node_def) for f in graph.library.function if f.signature.name in bodies]
    return sorted(sizes, reverse=True)


def seconds_per_step(step, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    float(loss)
    return (time.perf_counter() - start) / steps


def bench_shape(variants, batch: int, length: int, rounds: int) -> dict:
    """One shape: every variant compiled, warmed up, then timed in interleaved rounds."""
    import numpy as np
    import tensorflow as tf

    from textgen.core.config import ModelConfig
    from textgen.model.build import train_flops_per_token

    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(1, VOCAB, (batch, length), dtype=np.int32))
    y = tf.constant(rng.integers(1, VOCAB, (batch, length), dtype=np.int32))
    steps = {v: make_step(v)[0] for v in variants}
    for fn in steps.values():
        fn(x, y)  # trace and compile
        seconds_per_step(fn, x, y, 1)
    per_round = max(2, round(1.0 / seconds_per_step(steps[variants[0]], x, y, 1)))
    times: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(rounds):
        for dtype, measured in peaks.items():  # the peak drifts with the machine's load too
            measured.append(matmul_peak(repeats=2, dtype=dtype))
        for v in variants:
            times[v].append(seconds_per_step(steps[v], x, y, per_round))
    peak = {dtype: statistics.median(measured) for dtype, measured in peaks.items()}
    cfg = ModelConfig(embedding_dim=EMBEDDING, units=UNITS, layers=LAYERS, residual=False)
    flops = train_flops_per_token(cfg, VOCAB) * batch * length
    rows = {
        "matmul_peak_gflops": round(peak["float32"] / 1e9, 1),
        "bf16_matmul_peak_gflops": round(peak["bfloat16"] / 1e9, 1),
    }
    base = statistics.median(times[variants[0]])
    for v in variants:
        t = statistics.median(times[v])
        rows[v] = {
            "updates_per_s": round(1 / t, 2),
            "chars_per_s": round(batch * length / t),
            "vs_first": round(base / t, 2),
            "fraction_of_matmul_peak": round(flops / t / peak["float32"], 3),
        }
        if v.endswith("/bf16"):  # its own dtype's peak too
            rows[v]["fraction_of_bf16_matmul_peak"] = round(flops / t / peak["bfloat16"], 3)
    return rows


def trainer_rows(shapes: list[str], rounds: int, workdir: Path) -> dict:
    """textgen's own trainer (2 x 256, zero-state windows), keras vs lean kernel, interleaved.

    Uses `bench_train.py`'s helpers (`session.open_session`): seconds per optimizer update of
    the compiled multi-step call, fed by textgen's pipeline from a 10 MB corpus.
    """
    from bench_train import make_corpus, session_for, time_calls

    from textgen.run.checkpoints import TrainCounters

    corpus = make_corpus(workdir / "corpus_10mb.txt", 10)
    rows = {}
    for shape in shapes:
        batch, length = (int(n) for n in shape.split("x"))
        words = [
            f"train.batch_size={batch}",
            f"windows.maxlen={length}",
            f"windows.step={length}",
            "model.units=256",
            "windows.carry_state=false",
        ]  # the shapes of the table
        sessions = {
            kind: session_for([*words, f"model.lstm_kernel={kind}"], corpus, workdir, kind)
            for kind in ("keras", "lean")
        }
        its = {k: s.iterator(TrainCounters()) for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(rounds):
            for kind, session in sessions.items():
                times[kind].append(time_calls(session, its[kind], 1, 10))
        median = {k: statistics.median(v) for k, v in times.items()}
        rows[shape] = {
            k: {"updates_per_s": round(1 / t, 2), "chars_per_s": round(batch * length / t)}
            for k, t in median.items()
        }
        rows[shape]["lean_vs_keras"] = round(median["keras"] / median["lean"], 2)
    return rows


def main() -> None:
    """Runs every shape and prints one JSON object."""
    global UNITS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--shapes", default="16x64,32x64,64x128", help="batch x time list")
    parser.add_argument("--units", type=int, default=UNITS, help="LSTM width (base.yaml: 384)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated")
    parser.add_argument("--ops", action="store_true", help="also count loop-body ops")
    parser.add_argument(
        "--trainer", action="store_true", help="also textgen's trainer, keras vs lean"
    )
    parser.add_argument("--workdir", default=None, help="--trainer's corpus, index and runs")
    args = parser.parse_args()
    UNITS = args.units
    import tensorflow as tf

    variants = args.variants.split(",")
    result: dict = {
        "benchmark": "lstm",
        "machine": f"{os.cpu_count()} cores",
        "tensorflow": tf.__version__,
        "model": f"Embedding({VOCAB},{EMBEDDING}) -> {LAYERS} x LSTM({UNITS}) -> Dense({VOCAB})",
        "shapes": {},
    }
    for shape in args.shapes.split(","):
        batch, length = (int(n) for n in shape.split("x"))
        rows = bench_shape(variants, batch, length, 3 if args.quick else 7)
        result["shapes"][shape] = rows
    if args.ops:
        x = tf.zeros([16, 64], tf.int32)
        result["loop_body_ops"] = {v: loop_ops(make_step(v)[0], x, x) for v in variants}
    if args.trainer:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_lstm_"))
        shapes = args.shapes.split(",")
        result["trainer"] = trainer_rows(shapes, 3 if args.quick else 5, workdir)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
