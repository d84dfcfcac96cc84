"""1 vs 2 training workers on this machine (MultiWorkerMirroredStrategy on loopback).

    python scripts/bench_workers.py [--steps 60] [--units 256]

Prints one JSON object: chars/s of one process (`train.distribute=none`) and of two worker
processes sharing the same global batch over 127.0.0.1, from the chief's metrics, plus the
all-reduce volume per step (2 x parameters x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(words: list[str], workers: int) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "textgen.train", "configs/base.yaml", *words]
    if workers == 1:
        return [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)]
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(workers)]}
    procs = []
    for i in range(workers):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([*cmd, "train.distribute=multi_worker"], cwd=REPO,
                                      env=dict(env, TF_CONFIG=tf_config),
                                      stdout=subprocess.DEVNULL))  # fmt: skip
    return procs


def measure(workers: int, steps: int, units: int, workdir: Path) -> dict:
    """Trains `steps` steps with `workers` processes; returns the chief's throughput."""
    out = workdir / f"run_{workers}"
    words = [f"train.out_dir={out}", f"train.max_steps={steps}", "train.fresh=true",
             f"model.units={units}", "model.layers=2", "train.eval_every=1000000",
             "train.checkpoint_every=1000000", f"data.index_dir={workdir / 'index'}"]  # fmt: skip
    for proc in _train(words, workers):
        if proc.wait() != 0:
            raise SystemExit(f"a worker failed with status {proc.returncode}")
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"workers": workers, "chars_per_sec": final["chars_per_sec"], "steps": final["step"]}


def main() -> None:
    """Runs 1 then 2 workers and prints one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--units", type=int, default=256)
    args = parser.parse_args()
    from textgen.core.config import load_config
    from textgen.data.corpus import index_corpus

    workdir = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    cfg = load_config("configs/base.yaml", [f"data.index_dir={workdir / 'index'}"])
    index, _ = index_corpus(cfg.data)  # once, before the workers share it
    model_cfg = load_config(None, [f"model.units={args.units}", "model.layers=2"]).model
    params = model_cfg.count_params(index.vocab_size)
    rows = [measure(n, args.steps, args.units, workdir) for n in (1, 2)]
    speedup = round(rows[1]["chars_per_sec"] / rows[0]["chars_per_sec"], 2)
    print(json.dumps({"benchmark": "workers", "machine": f"{os.cpu_count()} cores",
                      "units": args.units, "params": params, "rows": rows, "speedup": speedup,
                      "allreduce_mb_per_step": round(2 * params * 4 / 1e6, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
