"""An equal-time sweep over several kinds of text: val bpc per corpus and their mean (one JSON).

    python scripts/make_corpora.py                      # austen, shakespeare, pystdlib -> corpora/
    python scripts/sweep_corpora.py --seconds 600 --candidates base,linear [--corpora ...] [--pair]
        [--stop-worse 0.01]

Each candidate is configs/base.yaml (or `--config`, e.g. configs/quick.yaml) plus its overrides,
trained on each corpus for the same time budget (`train.max_time`, which since issue 21 includes
the final evaluation) in a fresh process; the score is the final evaluation's val bpc (all of
the held-out 5%, streamed). One index per corpus is shared by the candidates. Run it alone:
other jobs change the step rate.

`--pair` trains two candidates at once, each pinned to its own core (`taskset`), so the two see
the same machine at the same moments: a side-by-side comparison at equal CPU time that background
noise cannot tilt (absolute figures are then those of one core, not two). `--stop-worse BPC`
ends a paired sweep after the first corpus where the candidate already loses by more than BPC
(the adoption rule loses it anyway), leaving the sweep's time to the next candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from textgen.core.hardware import describe_machine

REPO = Path(__file__).resolve().parent.parent
CORPORA = {  # name -> path; all but kjv are built by scripts/make_corpora.py
    "kjv": REPO / "data/kjv.txt",  # verse (the corpus base.yaml was swept on)
    "austen": REPO / "corpora/austen.txt",  # English prose
    "shakespeare": REPO / "corpora/shakespeare.txt",  # drama and verse
    "pystdlib": REPO / "corpora/pystdlib.txt",  # source code
}
CANDIDATES = {  # overrides of configs/base.yaml (or of --config)
    "base": [],
    "seed2": ["train.seed=2"],  # the noise between two runs of one recipe
    "linear": ["train.lr_schedule=linear"],
    "linear_floor0": ["train.lr_schedule=linear", "train.min_lr_ratio=0.0"],
    "cosine_floor0": ["train.min_lr_ratio=0.0"],
    "warmup30": ["train.warmup_steps=30"],
    "warmup300": ["train.warmup_steps=300"],
    "f32": ["train.precision=float32"],  # base.yaml before bf16 became auto's choice
    # base.yaml before issue 21 (float32, lr 3e-3, embedding 64, no residual sums)
    "old_base": [
        "train.precision=float32",
        "train.learning_rate=0.003",
        "model.embedding_dim=64",
        "model.residual=false",
    ],
    "emb64": ["model.embedding_dim=64"],  # base.yaml before sweep G
    "no_residual": ["model.residual=false"],  # base.yaml before sweep H
    "quick_old": ["model.embedding_dim=64", "model.residual=false"],  # quick.yaml before G, H
    "bf16": ["train.precision=mixed_bfloat16"],  # what auto picks on a CPU with bf16 units
    "lr4e-3": ["train.learning_rate=0.004"],
    "lr5e-3": ["train.learning_rate=0.005"],  # base.yaml is 4e-3 now: one step further
    "lr3e-3": ["train.learning_rate=0.003"],  # for --config configs/quick.yaml (2e-3)
    "emb32": ["model.embedding_dim=32"],
    "emb128": ["model.embedding_dim=128"],
    "residual": ["model.residual=true"],  # layers above the first add their input (sweep H)
    "2x448": ["model.units=448"],
    "2x512": ["model.units=512"],
    "2x256": ["model.units=256"],
    "t96": ["windows.maxlen=96", "windows.step=96"],
}


def command(candidate: str, corpus: str, seconds: float, workdir: Path, config: str) -> list[str]:
    """The train command of one (candidate, corpus) cell."""
    words = [*CANDIDATES[candidate], f"data.path={CORPORA[corpus]}",
             f"data.index_dir={workdir / ('index-' + corpus)}",
             f"train.out_dir={workdir / corpus / candidate}", f"train.max_time={seconds}",
             "train.fresh=true", "sample.epoch_temperatures=[]"]  # fmt: skip
    return [sys.executable, "-m", "textgen.train", config, *words]


def result(candidate: str, corpus: str, workdir: Path, wall_s: float) -> dict:
    """The final evaluation of one finished cell."""
    lines = (workdir / corpus / candidate / "metrics.jsonl").read_text().splitlines()
    final = [r for r in map(json.loads, lines) if r["final"]][-1]
    keys = ("step", "val_bpc", "chars_per_sec", "elapsed_s", "eval_s", "rss_mb")
    return {"corpus": corpus, "candidate": candidate, "wall_s": round(wall_s, 1),
            **{k: final.get(k) for k in keys}}  # fmt: skip


def run_cells(cells: list[tuple[str, str]], seconds: float, workdir: Path, cores: list[str],
              config: str):  # fmt: skip
    """Runs cells at once (one per core in `cores`, or alone when `cores` is empty)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    started, procs = time.monotonic(), []
    for i, (cand, corpus) in enumerate(cells):
        pin = ["taskset", "-c", cores[i]] if cores else []
        log = open(workdir / f"{corpus}-{cand}.log", "w")  # noqa: SIM115 (closed below)
        cmd = [*pin, *command(cand, corpus, seconds, workdir, config)]
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log), log))
    rows = []
    for (cand, corpus), (proc, log) in zip(cells, procs, strict=True):
        code = proc.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"{corpus}/{cand} failed (exit {code}): see {log.name}")
        rows.append(result(cand, corpus, workdir, time.monotonic() - started))
    return rows


def summary(rows: list[dict], base: str) -> dict:
    """Per candidate: mean val bpc over the corpora and its difference from `base` per corpus."""
    by = {(r["candidate"], r["corpus"]): r["val_bpc"] for r in rows}
    corpora = sorted({r["corpus"] for r in rows})
    out = {}
    for cand in dict.fromkeys(r["candidate"] for r in rows):
        scores = [by[cand, c] for c in corpora if (cand, c) in by]
        entry = {"mean_bpc": round(sum(scores) / len(scores), 4), "corpora": len(scores)}
        if cand != base and all((base, c) in by for c in corpora):
            entry["delta_vs_base"] = {c: round(by[cand, c] - by[base, c], 4)
                                      for c in corpora if (cand, c) in by}  # fmt: skip
        out[cand] = entry
    return out


def main() -> None:
    """Runs every (candidate, corpus) cell and prints one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--candidates", default="base,linear")
    parser.add_argument("--corpora", default="kjv,austen,shakespeare,pystdlib")
    parser.add_argument("--pair", action="store_true", help="two candidates at once, 1 core each")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--config", default="configs/base.yaml", help="what candidates override")
    parser.add_argument(
        "--stop-worse", type=float, default=None, metavar="BPC",
        help="with --pair: stop after a corpus where the candidate is worse than the first by more",
    )  # fmt: skip
    args = parser.parse_args()
    candidates, corpora = args.candidates.split(","), args.corpora.split(",")
    for name in corpora:
        if not CORPORA[name].is_file():
            raise SystemExit(f"{CORPORA[name]} is missing: run python scripts/make_corpora.py")
    if args.pair and len(candidates) != 2:
        raise SystemExit("--pair takes exactly two candidates")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sweep_corpora_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for corpus in corpora:
        if args.pair:
            batch = run_cells([(c, corpus) for c in candidates], args.seconds, workdir, ["0", "1"],
                               args.config)  # fmt: skip
        else:
            batch = [
                run_cells([(c, corpus)], args.seconds, workdir, [], args.config)[0]
                for c in candidates
            ]
        rows += batch
        for row in batch:
            print(json.dumps(row), file=sys.stderr, flush=True)
        if args.pair and args.stop_worse is not None:
            base, candidate = (row["val_bpc"] for row in batch)
            if candidate - base > args.stop_worse:
                print(f"stopped: {candidates[1]} is worse by {candidate - base:.4f} on {corpus}",
                      file=sys.stderr)  # fmt: skip
                break
    print(json.dumps({"sweep": "corpora", "machine": describe_machine(),
                      "config": args.config, "seconds_each": args.seconds, "pair": args.pair,
                      "rows": rows,
                      "summary": summary(rows, candidates[0])}))  # fmt: skip


if __name__ == "__main__":
    main()
