"""Does `stop` cost the export anything? Chars/s of the SavedModel module's `generate`.

The export's loop checks, once per block, whether every row has stopped (a decode and one RE2
search per row); this measures what that costs. Run it twice, once with this checkout and once
with an older one on PYTHONPATH (where `generate` takes no `stop`) to compare. The module is
built in memory (`ExportModule`, the function `serving_default` saves) from an untrained model of
configs/base.yaml's size (weights do not change the speed). Best of --repeats, interleaved.
Prints ONE JSON object.

    PYTHONPATH=. python scripts/bench_export_stop.py
    PYTHONPATH=/path/to/old/checkout python scripts/bench_export_stop.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=2000)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import keras
    import tensorflow as tf

    import textgen
    from textgen.core.config import load_config
    from textgen.data.tokenizers import CharTokenizer
    from textgen.model.build import build_model
    from textgen.serving.export import module_class

    cfg = load_config(REPO / "configs" / "base.yaml")
    text = (REPO / "data" / "kjv.txt").read_text(encoding="utf-8")[:200_000]
    tokenizer = CharTokenizer(text)
    keras.utils.set_random_seed(0)
    module = module_class()(build_model(cfg.model, tokenizer.vocab_size), tokenizer)
    n = args.samples
    inputs = {
        "prompt": tf.constant(["And God said"] * n),
        "length": tf.fill([n], args.length),
        "temperature": tf.fill([n], 1.0),
        "top_k": tf.zeros([n], tf.int32),
        "top_p": tf.fill([n], 1.0),
        "seed": tf.range(n, dtype=tf.int64),
    }
    kinds = {"no_stop": inputs}
    takes_stop = len(module.generate.input_signature) > len(inputs)
    if takes_stop:
        no_stop = {"stop": tf.fill([n, 1], ""), "stop_at_end": tf.ones([n], bool)}
        kinds["no_stop"] = {**inputs, **no_stop}
        kinds["with_stop"] = {**kinds["no_stop"], "stop": tf.fill([n, 1], "\x01never")}
    best = dict.fromkeys(kinds, 0.0)
    for kind in kinds.values():  # trace and warm up
        module.generate(**{**kind, "length": tf.fill([n], 10)})
    for _ in range(args.repeats):
        for name, kind in kinds.items():
            start = time.perf_counter()
            module.generate(**kind)["text"].numpy()
            best[name] = max(best[name], args.length * n / (time.perf_counter() - start))
    out = {"code": str(Path(textgen.__file__).parents[1]), "length": args.length, "samples": n,
           "chars_per_s": {k: round(v) for k, v in best.items()}}  # fmt: skip
    if takes_stop:
        out.update(check_cost(module, kinds["with_stop"], args.length, best["with_stop"]))
    print(json.dumps(out))


def check_cost(module, inputs: dict, length: int, rate: float) -> dict:
    """The stop check alone (`graph_stops.row_ends` on `length` tokens a row, the most any of
    a call's checks sees), best of 20, and its share of a call at the measured rate."""
    import numpy as np
    import tensorflow as tf

    from textgen.serving.graph_stops import row_ends, stop_patterns

    rows = int(inputs["length"].shape[0])
    patterns = stop_patterns(inputs["stop"])
    check = tf.function(lambda tokens: row_ends(
        tokens, inputs["length"], inputs["stop_at_end"], patterns,
        end_of_text=module.end_of_text, tokenizer=module.tokenizer,
    ))  # fmt: skip
    vocab = len(module.piece_bytes)
    tokens = tf.constant(np.random.default_rng(0).integers(1, vocab, (rows, length)), tf.int32)
    check(tokens)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        check(tokens)["text"].numpy()
        best = min(best, time.perf_counter() - start)
    checks = -(-length // module.block)  # one per block of the loop
    return {"check_ms_at_length": round(best * 1000, 2), "checks_per_call": checks,
            "check_share_at_most": round(checks * best / (length * rows / rate), 4)}  # fmt: skip


if __name__ == "__main__":
    main()
