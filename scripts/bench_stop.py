"""Does `stop` cost anything when unused? Sampling chars/s of `Generator.generate`.

Run it twice, once with this checkout and once with an older one on PYTHONPATH, to compare
with the code before stop strings existed; `with_stop` (a stop string that never occurs) is
measured only where `generate` takes `stop`. An untrained model of configs/base.yaml's size
(weights do not change the speed). Best of --repeats. Prints ONE JSON object.

    PYTHONPATH=. python scripts/bench_stop.py
    PYTHONPATH=/path/to/old/checkout python scripts/bench_stop.py
"""

from __future__ import annotations

import argparse
import inspect
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
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import keras

    import textgen
    from textgen.core.config import load_config
    from textgen.data.tokenizers import CharTokenizer
    from textgen.generation.generate import Generator
    from textgen.model.build import build_model

    cfg = load_config(REPO / "configs" / "base.yaml")
    text = (REPO / "data" / "kjv.txt").read_text(encoding="utf-8")[:200_000]
    tokenizer = CharTokenizer(text)
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model, tokenizer.vocab_size)
    generator = Generator(model, tokenizer)
    kinds = {"no_stop": {}}
    if "stop" in inspect.signature(Generator.samples if hasattr(Generator, "samples")
                                   else Generator.generate).parameters:  # fmt: skip
        kinds["with_stop"] = {"stop": ["\x01never"]}
    best = dict.fromkeys(kinds, 0.0)
    for extra in kinds.values():
        generator.generate(length=50, num_samples=args.samples, seed=0, **extra)  # warm up
    for _ in range(args.repeats):  # interleaved: a busy moment slows both alike
        for kind, extra in kinds.items():
            start = time.perf_counter()
            generator.generate(length=args.length, num_samples=args.samples, seed=1, **extra)
            rate = args.length * args.samples / (time.perf_counter() - start)
            best[kind] = max(best[kind], rate)
    print(json.dumps({"code": str(Path(textgen.__file__).parents[1]), "length": args.length,
                      "samples": args.samples, "chars_per_s": {k: round(v) for k, v in
                                                                best.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
