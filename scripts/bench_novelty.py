"""Novelty index benchmark: suffix-array build time and peak RSS, and query time.

Indexes CORPUS (stream mode, char tokenizer) into a temporary index dir if needed, then, in a
fresh child process, builds the suffix array (`textgen.data.novelty.build`) and reports its
time and the child's peak RSS (VmHWM: its anonymous and file-mapped pages); then times
`NoveltyIndex.report` on 500-character samples taken from the training split (copied), the
same shuffled (new), and 150 shuffled + 200 copied + 150 shuffled (spliced: the copy's
positions are searched, as a longer match could start there). Prints one JSON object.

Usage: python scripts/bench_novelty.py CORPUS [--index-dir DIR] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(index_dir: str) -> None:
    """Builds the suffix array; prints seconds and peak RSS (MB) as JSON."""
    from textgen.data.corpus import load_index
    from textgen.data.suffix_array import build

    index = load_index(index_dir)
    start = time.monotonic()
    build(index)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # = VmHWM, in MB
    print(json.dumps({"seconds": time.monotonic() - start, "peak_rss_mb": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--index-dir", default=None, help="default: a temporary dir")
    p.add_argument("--queries", type=int, default=50)  # samples of each kind: a stable max
    args = p.parse_args()
    from textgen.core.config import load_config
    from textgen.data.corpus import index_corpus

    index_dir = args.index_dir or tempfile.mkdtemp(prefix="bench-novelty-") + "/index"
    cfg = load_config(None, [f"data.path={args.corpus}", f"data.index_dir={index_dir}",
                             "data.encoding_errors=replace"])  # fmt: skip
    start = time.monotonic()
    index, _ = index_corpus(cfg.data)
    index_seconds = time.monotonic() - start
    code = f"import sys; sys.argv=['x']; from bench_novelty import _child; _child({index_dir!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)  # fmt: skip
    built = json.loads(out.stdout.strip().splitlines()[-1])

    import numpy as np

    from textgen.data.novelty import NoveltyIndex

    novelty = NoveltyIndex.open(index)
    rng = np.random.default_rng(0)
    times = {"copied": [], "new": [], "spliced": []}
    for _ in range(args.queries):
        at = int(rng.integers(0, len(index.train) - 500))
        text = index.tokenizer.decode(np.asarray(index.train[at : at + 500]))
        shuffled = "".join(rng.permutation(list(text)))
        spliced = shuffled[:150] + text[150:350] + shuffled[350:]
        for kind, sample in (("copied", text), ("new", shuffled), ("spliced", spliced)):
            t = time.perf_counter()
            novelty.report(sample)
            times[kind].append(time.perf_counter() - t)
    print(json.dumps({
        "corpus_mb": round(sum(s["size"] for s in index.meta["sources"]) / 2**20, 1),
        "train_tokens": len(index.train),
        "index_seconds": round(index_seconds, 1),
        "sa_build_seconds": round(built["seconds"], 1),
        "novelty_bytes": sum(f.stat().st_size for f in novelty.directory.iterdir()),
        "sa_build_peak_rss_mb": round(built["peak_rss_mb"]),
        "query_ms_500_chars": {k: {"median": round(1000 * float(np.median(v)), 1),
                                   "p95": round(1000 * float(np.percentile(v, 95)), 1),
                                   "max": round(1000 * max(v), 1)} for k, v in times.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
