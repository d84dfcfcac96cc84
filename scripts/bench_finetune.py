"""Fine-tuning benchmark of issue #19; prints one JSON object.

    python scripts/bench_finetune.py --source RUN TEXT [TEXT ...] [--minutes 2]
        [--variant NAME=CONFIG[,key=value...] ...] [--workdir DIR] [--alone]

For each small text, every variant trains for the same time budget, two at a time side by side
(so a pair shares the machine's load equally: the fairest comparison on a busy machine), then
`textgen.evaluate` scores the model that `sample` uses (model.keras, best by val loss) on the
text's held-out tail (the last 5%, the same characters for every variant). Default variants:
`finetune` (configs/finetune.yaml from --source) and `scratch` (configs/base.yaml, random
weights). Reported per text and variant: `bpc` (held-out, best model), `best_val_bpc` (the best
periodic evaluation), `final_bpc` (the last model on all of val), `steps`, `seconds`.
`--alone` runs one at a time on the whole machine instead (what a user's run sees: a paired run
has one core's share, so `dropout: auto` plans passes it will not make; run it on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VARIANTS = ("finetune=configs/finetune.yaml", "scratch=configs/base.yaml")


def run_variant(name: str, spec: str, text: Path, args, workdir: Path) -> subprocess.Popen:
    """Starts one training run in the background; its log goes beside its run dir."""
    config, *overrides = spec.split(",")
    out = workdir / f"{text.stem}-{name}"
    words = [f"data.path={text}", f"data.index_dir={workdir / ('index-' + text.stem + '-' + name)}",
             f"train.out_dir={out}", f"train.max_time={args.minutes * 60:g}s", "train.fresh=true",
             "sample.epoch_temperatures=[]"]  # fmt: skip
    if "finetune" in config:
        words.append(f"train.init_from={args.source}")
    cmd = [sys.executable, "-m", "textgen.train", config, *words, *overrides]
    log = open(workdir / f"{text.stem}-{name}.log", "w")  # noqa: SIM115 (closed with the process)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def measure(run_dir: Path) -> dict:
    """Held-out bpc of the best model, and what metrics.jsonl says of the run."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", "textgen.evaluate", str(run_dir)], cwd=REPO,
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    periodic = [r for r in records if not r.get("final")]
    final = [r for r in records if r.get("final")]
    return {
        "bpc": round(scored["bpc"], 4),
        "best_val_bpc": min(r["val_bpc"] for r in periodic) if periodic else None,
        "final_bpc": final[-1]["val_bpc"] if final else None,
        "steps": records[-1]["step"],
        "seconds": records[-1]["elapsed_s"],
    }


def main() -> None:
    """Runs the variants on each text, two at a time, and prints the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="+", type=Path)
    parser.add_argument("--source", required=True, help="the run fine-tuning starts from")
    parser.add_argument("--minutes", type=float, default=2.0, help="budget of each run")
    parser.add_argument("--variant", action="append", help="NAME=CONFIG[,key=value...]")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_finetune"))
    parser.add_argument("--alone", action="store_true", help="one run at a time, not two")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    variants = dict(v.split("=", 1) for v in (args.variant or DEFAULT_VARIANTS))
    jobs = [(text, name) for text in args.texts for name in variants]
    results: dict[str, dict] = {}
    started = time.time()
    at_once = 1 if args.alone else 2  # pairs side by side: equal share of a busy machine
    for i in range(0, len(jobs), at_once):
        pair = jobs[i : i + at_once]
        procs = [run_variant(name, variants[name], text, args, args.workdir) for text, name in pair]
        for (text, name), proc in zip(pair, procs, strict=True):
            if proc.wait() != 0:
                results.setdefault(text.stem, {})[name] = {"error": f"exit {proc.returncode}"}
                continue
            results.setdefault(text.stem, {})[name] = measure(args.workdir / f"{text.stem}-{name}")
        (args.workdir / "partial.json").write_text(json.dumps(results))  # to watch a long run
    print(json.dumps({"minutes": args.minutes, "source": str(args.source), "variants": variants,
                      "alone": args.alone,
                      "results": results, "wall_s": round(time.time() - started)}))  # fmt: skip


if __name__ == "__main__":
    main()
