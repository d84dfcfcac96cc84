"""Equal-time ablation on the default corpus: val bpc each recipe reaches in the same budget.

    python scripts/ablation.py [--seconds 600] [--rows NAME,...] [--old-tree DIR]

Each row trains `configs/base.yaml` plus its overrides (written against the base.yaml of before
issue 10, `BEFORE`) for `--seconds` of wall time, in a fresh process, one after another (run it
alone: other work on the machine slows every row). The row `today` runs the code of an older
checkout (`--old-tree`, e.g. `git worktree add ../old REV`) with its own base config and
`train.max_time` as the stop it was then. Every run is then scored on all of the val split with
zero-state windows of 128 (`evaluate --windowed`) so that rows compare, and new-code runs also
streamed (state carried) and, with `--dynamic`, dynamically.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# configs/base.yaml before issue 10 (commit 60fed30), as overrides of today's base.yaml, so the
# rows keep their meaning as base.yaml changes.
BEFORE = [
    "model.units=256",
    "train.batch_size=64",
    "windows.maxlen=128",
    "windows.step=128",
    "windows.carry_state=false",
    "train.learning_rate=0.002",
    "train.adam_beta2=0.999",
    "train.warmup_steps=50",
    "train.eval_every=200",
    "train.checkpoint_every=200",
]
SMALL_BATCHES = [
    "train.batch_size=32",
    "windows.maxlen=64",
    "windows.step=64",
    "train.adam_beta2=0.99",
    "train.warmup_steps=100",
]
ROWS = {
    "today": None,  # the old checkout's configs/base.yaml, as it was
    "keras_budget": [*BEFORE, "model.lstm_kernel=keras"],
    "lean_budget": [*BEFORE, "model.lstm_kernel=lean"],
    "lean_b32_t64": [*BEFORE, *SMALL_BATCHES],
    "lean_b32_t64_carry": [*BEFORE, *SMALL_BATCHES, "windows.carry_state=true"],
    "new_base": [],  # configs/base.yaml as it is: the 600-s sweep's winner
}  # fmt: skip


def _python(tree: Path, *args: str, timeout: float) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed: {done.stderr[-2000:]}")
    return done.stdout


def train_row(name: str, seconds: float, workdir: Path, old_tree: Path | None) -> dict:
    """Trains one row; returns its last metrics record."""
    out = workdir / name
    tree = old_tree if name == "today" else REPO
    if tree is None:
        raise SystemExit("the row 'today' needs --old-tree")
    words = [f"train.out_dir={out}", f"train.max_time={seconds}", "train.fresh=true",
             f"data.index_dir={workdir / ('index_old' if name == 'today' else 'index')}",
             f"data.path={REPO / 'data' / 'kjv.txt'}", *(ROWS[name] or [])]  # fmt: skip
    _python(tree, "-m", "textgen.train", "configs/base.yaml", *words, timeout=seconds * 3 + 600)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    return {
        "name": name,
        "run": str(out),
        "steps": last["step"],
        "updates_per_s": round(last["step"] / max(last["elapsed_s"], 1e-9), 2),
        "chars_per_sec": last["chars_per_sec"],
        "final_val_bpc_logged": last["val_bpc"],
    }


def score(run: str, *flags: str) -> float:
    """bpc of a run on its val split by the current code's `evaluate`."""
    out = _python(REPO, "-m", "textgen.evaluate", run, *flags, timeout=3600)
    return json.loads(out.strip().splitlines()[-1])["bpc"]


def main() -> None:
    """Trains the rows one after another, scores them, prints one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--old-tree", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--dynamic", action="store_true", help="also score with --dynamic")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ablation_"))
    rows = []
    for name in args.rows.split(","):
        row = train_row(name, args.seconds, workdir, args.old_tree)
        row["windowed_bpc"] = score(row["run"], "--windowed")
        if name != "today":
            row["streamed_bpc"] = score(row["run"])
            if args.dynamic:
                row["dynamic_bpc"] = score(row["run"], "--dynamic")
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "ablation", "seconds_each": args.seconds, "rows": rows,
                      "machine": f"{os.cpu_count()} cores"}))  # fmt: skip


if __name__ == "__main__":
    main()
