"""TensorFlow's thread pools on this machine: training steps/s of base.yaml per setting (one JSON).

    python scripts/bench_threads.py [--steps 600] [--rounds 2] [--corpus corpora/austen.txt]
        [--settings 0x0,1x2,2x1,1x1,2x2]

A setting `AxB` is `tf.config.threading.set_intra_op_parallelism_threads(A)` and
`set_inter_op_parallelism_threads(B)` before TensorFlow starts (0 = TensorFlow's own choice,
what textgen does today). Each cell is a fresh `textgen.train configs/base.yaml` process on the
whole machine for `--steps` steps (evaluated at half-way and at the end); its rate is the
steady-state steps/s between the two evaluations (the first half pays for tracing and
compiling; a 0.2% val split keeps the final evaluation short). Settings run interleaved,
`--rounds` times each, so drift on a shared machine hits all of them alike; the median per
setting is reported with its ratio to the first. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from textgen.core.hardware import describe_machine  # noqa: E402

LAUNCH = (
    "import sys, runpy, tensorflow as tf;"
    "tf.config.threading.set_intra_op_parallelism_threads({intra});"
    "tf.config.threading.set_inter_op_parallelism_threads({inter});"
    "sys.argv = ['textgen.train', *sys.argv[1:]];"
    "runpy.run_module('textgen.train', run_name='__main__')"
)


def steady_steps_per_s(metrics: Path) -> float:
    """Steps/s between the first and the last periodic evaluation, evaluation excluded."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    periodic = [r for r in records if not r["final"]]
    first, last = periodic[0], periodic[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"] - last["eval_s"]
    return (last["step"] - first["step"]) / seconds


def run_cell(setting: str, corpus: Path, steps: int, workdir: Path) -> float:
    """One training process at `setting`; its steady-state steps/s."""
    intra, inter = (int(n) for n in setting.split("x"))
    out = workdir / f"run-{setting}"
    words = [f"data.path={corpus}", f"data.index_dir={workdir / 'index'}", f"train.out_dir={out}",
             "train.max_time=null", f"train.max_steps={steps}", f"train.eval_every={steps // 2}",
             "train.eval_windows=64",
             "data.val_fraction=0.002", f"train.checkpoint_every={steps}", "train.fresh=true",
             "sample.epoch_temperatures=[]"]  # fmt: skip
    code = LAUNCH.format(intra=intra, inter=inter)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", code, "configs/base.yaml", *words], cwd=REPO, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return steady_steps_per_s(out / "metrics.jsonl")


def main() -> None:
    """Runs every setting `--rounds` times, interleaved, and prints the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=REPO / "corpora" / "austen.txt")
    parser.add_argument("--settings", default="0x0,1x2,2x1,1x1,2x2")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    settings = args.settings.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_threads_"))
    rates: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting in settings:
            rates[setting].append(run_cell(setting, args.corpus, args.steps, workdir))
            print(setting, round(rates[setting][-1], 3), file=sys.stderr, flush=True)
    medians = {s: statistics.median(r) for s, r in rates.items()}
    first = medians[settings[0]]
    print(json.dumps({"bench": "threads", "machine": describe_machine(), "steps": args.steps,
                      "steps_per_s": {s: round(m, 3) for s, m in medians.items()},
                      "vs_first": {s: round(m / first, 3) for s, m in medians.items()},
                      "all": {s: [round(x, 3) for x in r] for s, r in rates.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
