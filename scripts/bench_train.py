"""Training benchmarks of issue #3; prints one JSON object.

    python scripts/bench_train.py [--quick] [--workdir DIR]

(a) memory: peak RSS (VmHWM) and RssAnon of the same fixed number of steps on a 10 MB and a
    100 MB corpus, each a fresh `textgen.train` process (target: within 10%);
(b) pipeline: chars/s of the compiled steps fed by textgen's memmap pipeline vs the very same
    batches from memory (target: overhead <= 5%);
(c) efficiency: training FLOP/s at units 512 (~24 units (units + embedding) per char per layer,
    plus the output layer) as a fraction of numpy float32 matmul FLOP/s in the same run
    (target: >= 35%);
(d) supervision: supervised characters per second of textgen's default `sequence` target vs
    the classic next-char-only setup (maxlen 40, step 3, one target per window), same model.
Timings are medians of alternating repeats, because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_corpus(path: Path, mb: int) -> Path:
    """Assembles an `mb` MiB UTF-8 corpus from the standard library's sources (cached)."""
    if not path.exists():
        script = REPO / "scripts" / "make_corpus.py"
        cmd = [sys.executable, str(script), str(path), "--mb", str(mb), "--utf8-only"]
        subprocess.run(cmd, check=True, capture_output=True)
    return path


def memory_run(corpus: Path, workdir: Path, steps: int) -> dict:
    """Indexes `corpus`, then trains `steps` steps in a fresh process; returns its memory."""
    name = corpus.stem
    words = [f"data.path={corpus}", f"data.index_dir={workdir / ('index_' + name)}",
             "data.val_fraction=0.002", f"train.out_dir={workdir / ('run_' + name)}",
             f"train.max_steps={steps}", "train.steps_per_call=5", "train.eval_every=1000000",
             "train.checkpoint_every=1000000", "train.fresh=true", "model.units=256",
             "model.layers=1", "train.batch_size=64"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m"]
    subprocess.run([*base, "textgen.index", "configs/base.yaml", *words[:3]], cwd=REPO, env=env,
                   check=True, capture_output=True)  # fmt: skip
    code = (
        "import sys, json\nfrom textgen.core.config import load_config\n"
        "from textgen.training.trainer import train\n"
        "from textgen.core.memory import proc_status_mb as m\n"
        "train(load_config('configs/base.yaml', sys.argv[1:]))\n"
        "print(json.dumps({'peak_rss_mb': m('VmHWM'), 'rss_anon_mb': m('RssAnon'),"
        " 'rss_file_mb': m('RssFile')}))"
    )
    out = subprocess.run([sys.executable, "-c", code, *words], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["corpus_mb"] = round(corpus.stat().st_size / 1e6, 1)
    return {k: round(v, 1) for k, v in result.items()}


def numpy_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Median float32 matmul FLOP/s of numpy on this machine, now."""
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def session_for(overrides: list[str], corpus: Path, workdir: Path, tag: str):
    """A trainer session (model, compiled steps, pipeline) without running its loop."""
    from textgen.core.config import load_config
    from textgen.training.session import open_session

    cfg = load_config("configs/base.yaml", [
        f"data.path={corpus}", f"data.index_dir={workdir / 'index_speed'}",
        f"train.out_dir={workdir / ('speed_' + tag)}", "train.fresh=true", *overrides,
    ])  # fmt: skip
    return open_session(cfg)


def time_calls(session, iterator, calls: int, steps: int) -> float:
    """Median seconds per step over `calls` calls of `steps` steps (after one warm-up call)."""
    import tensorflow as tf

    n = tf.constant(steps, tf.int32)
    session.train_steps(iterator, n)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        float(session.train_steps(iterator, n))
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def in_memory_iterator(session, batches: int):
    """The same batches as the pipeline's first ones, from one in-memory tensor, repeated."""
    import numpy as np
    import tensorflow as tf

    plan, tokens = session.data.batch_plan(), session.data.index.train
    pairs = [plan.batch(tokens, 0, k) for k in range(batches)]
    xs, ys = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    data = tf.data.Dataset.from_tensor_slices((xs, ys)).repeat().prefetch(8)
    return iter(session.strategy.experimental_distribute_dataset(data))


def pipeline_overhead(corpus: Path, workdir: Path, quick: bool) -> dict:
    """(b): seconds per step, pipeline vs in-memory, alternating rounds."""
    from textgen.run.checkpoints import TrainCounters

    session = session_for(["model.units=256", "model.layers=1"], corpus, workdir, "pipe")
    pipe = session.iterator(TrainCounters())
    memory = in_memory_iterator(session, 64)
    rounds, calls = (2, 2) if quick else (4, 3)
    pipe_t, mem_t = [], []
    for _ in range(rounds):
        pipe_t.append(time_calls(session, pipe, calls, 10))
        mem_t.append(time_calls(session, memory, calls, 10))
    p, m = statistics.median(pipe_t), statistics.median(mem_t)
    tokens = session.data.targets_per_step
    return {"pipeline_chars_per_s": round(tokens / p), "in_memory_chars_per_s": round(tokens / m),
            "overhead_pct": round(100 * (p - m) / m, 2)}  # fmt: skip


def efficiency(corpus: Path, workdir: Path, quick: bool) -> dict:
    """(c): training FLOP/s at units 512 vs numpy matmul FLOP/s."""
    from textgen.model.build import train_flops_per_token
    from textgen.run.checkpoints import TrainCounters

    rows = {}
    for batch in (64, 128):
        session = session_for(["model.units=512", "model.layers=2", f"train.batch_size={batch}"],
                              corpus, workdir, f"eff{batch}")  # fmt: skip
        seconds = time_calls(session, session.iterator(TrainCounters()), 2 if quick else 3, 5)
        flops = train_flops_per_token(session.cfg.model, session.data.index.vocab_size)
        rows[batch] = flops * session.data.targets_per_step / seconds
    matmul = numpy_matmul_flops()
    best = max(rows, key=rows.get)
    return {"train_gflops_by_batch": {b: round(f / 1e9, 1) for b, f in rows.items()},
            "numpy_matmul_gflops": round(matmul / 1e9, 1), "best_batch": best,
            "fraction_of_matmul": round(rows[best] / matmul, 3)}  # fmt: skip


def supervision(corpus: Path, workdir: Path, quick: bool) -> dict:
    """(d): supervised chars/s, sequence target (maxlen 128) vs classic next-char (maxlen 40)."""
    from textgen.run.checkpoints import TrainCounters

    model = ["model.units=256", "model.layers=1", "train.batch_size=128"]
    setups = {
        "sequence": ["windows.maxlen=128", "windows.step=128", "windows.target=sequence"],
        "classic_next": ["windows.maxlen=40", "windows.step=3", "windows.target=next"],
    }
    rates = {}
    for name, words in setups.items():
        session = session_for([*model, *words], corpus, workdir, name)
        seconds = time_calls(session, session.iterator(TrainCounters()), 2 if quick else 3, 5)
        rates[name] = session.data.targets_per_step / seconds
    return {"supervised_chars_per_s": {k: round(v) for k, v in rates.items()},
            "ratio": round(rates["sequence"] / rates["classic_next"], 1)}  # fmt: skip


def main() -> None:
    """Runs (a)-(d) and prints one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--workdir", default=None, help="corpora, indexes and runs go here")
    parser.add_argument("--skip-memory", action="store_true", help="skip (a)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_train_"))
    workdir.mkdir(parents=True, exist_ok=True)
    small = make_corpus(workdir / "corpus_10mb.txt", 10)
    result: dict = {"benchmark": "train", "machine": f"{os.cpu_count()} cores"}
    if not args.skip_memory:
        steps = 20 if args.quick else 60
        large = make_corpus(workdir / "corpus_100mb.txt", 100)
        a, b = memory_run(small, workdir, steps), memory_run(large, workdir, steps)
        ratio = round(b["peak_rss_mb"] / a["peak_rss_mb"], 3)
        result["memory"] = {"steps": steps, "10mb": a, "100mb": b, "peak_ratio": ratio}
    result["pipeline"] = pipeline_overhead(small, workdir, args.quick)
    result["efficiency"] = efficiency(small, workdir, args.quick)
    result["supervision"] = supervision(small, workdir, args.quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
