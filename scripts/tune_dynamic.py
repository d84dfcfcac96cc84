"""Dynamic evaluation settings against bits per character on a run's val split.

    python scripts/tune_dynamic.py RUN --lrs 1e-4,3e-4,1e-3 --segments 64 --decays 0
    python scripts/tune_dynamic.py RUN --lrs 3e-4 --segments 32,64,128 --streams 1,8

Loads the run's best model once; for every combination scores the val split statically
(streamed, the same stream layout) and dynamically (`textgen.evaluation.dynamic`), resetting the
weights between combinations. Seconds are the dynamic pass's wall time (the static one's is
beside it).
Prints ONE JSON object: the machine, the run, and a row per combination.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textgen.core.hardware import describe_machine
from textgen.evaluation.dynamic import DynamicEvaluator, DynamicSettings
from textgen.evaluation.evaluate import _val_tokens
from textgen.evaluation.scoring import Scorer
from textgen.run.rundir import RunDir


def numbers(kind):
    return lambda text: [kind(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--lrs", type=numbers(float), default=[3e-4])
    parser.add_argument("--segments", type=numbers(int), default=[64])
    parser.add_argument("--decays", type=numbers(float), default=[0.0])
    parser.add_argument("--streams", type=numbers(int), default=[1])
    args = parser.parse_args()
    run = RunDir(args.run)
    cfg, tokenizer = run.load_config(), run.load_tokenizer()
    tokens, _ = _val_tokens(cfg, tokenizer)
    model, lengths = run.load_model(), tokenizer.token_char_lengths()
    rows, static = [], {}
    for segment, streams, lr, decay in itertools.product(
        args.segments, args.streams, args.lrs, args.decays
    ):
        if (segment, streams) not in static:
            started = time.monotonic()
            score = Scorer(model, lengths, cfg.windows.maxlen, segment=segment).score_streams(
                tokens, streams=streams
            )
            static[segment, streams] = (score.bpc, time.monotonic() - started)
        settings = DynamicSettings(lr=lr, segment=segment, decay=decay, streams=streams)
        evaluator = DynamicEvaluator(model, lengths, settings)
        started = time.monotonic()
        score = evaluator.score(tokens)
        seconds = time.monotonic() - started
        evaluator.reset()
        rows.append({
            "lr": lr, "segment": segment, "decay": decay, "streams": streams,
            "static_bpc": round(static[segment, streams][0], 4), "dynamic_bpc": round(score.bpc, 4),
            "seconds": round(seconds, 1), "static_seconds": round(static[segment, streams][1], 1),
            "seconds_per_mb": round(seconds / (score.chars / 1e6), 1),
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"machine": describe_machine(), "run": args.run,
                      "val_chars": int(score.chars) + 1, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
