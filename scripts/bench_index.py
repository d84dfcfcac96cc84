"""Indexing speed and peak memory at 10 MB and 100 MB; prints one JSON object.

    python scripts/bench_index.py [--sizes 10,100] [--workdir DIR] [--keep]

Each corpus is assembled from the Python standard library's own sources by
`scripts/make_corpus.py --utf8-only`; each index build runs in a fresh child process that reports
its own peak RSS (VmHWM) and RssAnon from /proc/self/status. The index is then decoded back
chunk by chunk and compared with the source text, and a second run must be a no-op.
Targets (issue #2): >= 40 MB/s, peak RSS <= 300 MB at 100 MB, peak(100 MB) - peak(10 MB) <= 50 MB.
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

REPO = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys, time
from textgen.core.config import load_config
from textgen.data.corpus import index_corpus
from textgen.core.memory import proc_status_mb
cfg = load_config(None, [f"data.path={sys.argv[1]}", f"data.index_dir={sys.argv[2]}"])
start = time.perf_counter()
index, built = index_corpus(cfg.data)
seconds = time.perf_counter() - start
print(json.dumps({"built": built, "seconds": seconds, "peak_rss_mb": proc_status_mb("VmHWM"),
                  "rss_anon_mb": proc_status_mb("RssAnon"), "vocab": index.vocab_size,
                  "tokens": index.meta["counts"]["tokens"]}))
"""

_VERIFY = """
import sys
import numpy as np
from textgen.data.corpus import load_index
index = load_index(sys.argv[2])
chunk = 1 << 22
with open(sys.argv[1], encoding="utf-8", newline="") as f:
    for split in (index.train, index.val):
        for i in range(0, len(split), chunk):
            part = index.tokenizer.decode(np.asarray(split[i : i + chunk]))
            if f.read(len(part)) != part:
                print("MISMATCH"); sys.exit(1)
    print("OK" if f.read(1) == "" else "MISMATCH")
"""


def _python(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env=env, check=True)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def measure(mb: int, workdir: Path) -> dict:
    """Builds a corpus of `mb` MiB, indexes it twice, verifies it; returns the figures."""
    corpus, index_dir = workdir / f"corpus_{mb}mb.txt", workdir / f"index_{mb}mb"
    if not corpus.exists():
        make = [sys.executable, str(REPO / "scripts" / "make_corpus.py"), str(corpus)]
        subprocess.run([*make, "--mb", str(mb), "--utf8-only"], check=True, capture_output=True)
    subprocess.run(["rm", "-rf", str(index_dir)], check=True)
    size = corpus.stat().st_size
    first = json.loads(_python(_CHILD, str(corpus), str(index_dir)))
    start = time.perf_counter()
    second = json.loads(_python(_CHILD, str(corpus), str(index_dir)))
    noop_seconds = time.perf_counter() - start
    verified = _python(_VERIFY, str(corpus), str(index_dir)) == "OK"
    return {
        "mb": round(size / 1e6, 1),
        "bytes": size,
        "tokens": first["tokens"],
        "vocab": first["vocab"],
        "seconds": round(first["seconds"], 2),
        "mb_per_s": round(size / 1e6 / first["seconds"], 1),
        "peak_rss_mb": round(first["peak_rss_mb"], 1),
        "rss_anon_mb_at_end": round(first["rss_anon_mb"], 1),
        "rerun_rebuilt": second["built"],
        "rerun_index_seconds": round(second["seconds"], 3),
        "rerun_process_seconds": round(noop_seconds, 2),
        "decodes_to_source": verified,
    }


def main() -> None:
    """Runs the benchmark and prints one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="corpus sizes in MiB")
    parser.add_argument("--workdir", default=None, help="where corpora and indexes go")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and indexes")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_index_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [measure(int(mb), workdir) for mb in args.sizes.split(",")]
    result = {"benchmark": "index", "machine": f"{os.cpu_count()} cores", "rows": rows}
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        result["peak_rss_growth_mb"] = round(large["peak_rss_mb"] - small["peak_rss_mb"], 1)
        result["targets_met"] = {
            "mb_per_s>=40": all(r["mb_per_s"] >= 40 for r in rows),
            "peak_rss<=300mb_at_largest": large["peak_rss_mb"] <= 300,
            "peak_growth<=50mb": result["peak_rss_growth_mb"] <= 50,
            "round_trip": all(r["decodes_to_source"] for r in rows),
            "rerun_noop": not any(r["rerun_rebuilt"] for r in rows),
        }
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
