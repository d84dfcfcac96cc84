"""Serving throughput, latency and memory: `textgen.serve` on loopback under concurrent clients.

    python scripts/bench_serve.py              # base.yaml's model size (2 x 256), ~2 minutes
    python scripts/bench_serve.py --quick      # a small model and fewer requests, seconds

An untrained model over the KJV alphabet (weights do not change the speed) is exported and
served by `python -m textgen.serve EXPORT --port 0` in its own process. For 1, 4 and 16
clients (threads with keep-alive connections, each sending its next request when the last
one is answered) it measures `POST /v1/generate` with length 200 for --seconds each:
aggregate characters/s and p50/p95 latency. Then RSS of the server (VmRSS) before and after
--requests requests from 16 clients. Every non-200 answer is counted. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from textgen.core.hardware import describe_machine  # noqa: E402 (after the path)


def make_export(directory: Path, units: int, layers: int) -> Path:
    """An untrained run of this size on the KJV alphabet, exported."""
    import keras

    from textgen.core.config import load_config
    from textgen.data.tokenizers import CharTokenizer
    from textgen.model.build import build_model
    from textgen.run.rundir import RunDir
    from textgen.serving.export import export

    run_dir = directory / "run"
    words = [f"model.units={units}", f"model.layers={layers}", "model.embedding_dim=64"]
    cfg = load_config(None, [*words, f"train.out_dir={run_dir}"])
    tokenizer = CharTokenizer((REPO / "data" / "kjv.txt").read_text(encoding="utf-8"))
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model, tokenizer.vocab_size)
    run = RunDir(run_dir)
    run.prepare()
    run.save_config(cfg)
    tokenizer.save(run_dir)
    model.save(run.best_model)
    return export(run_dir, directory / "export")


def start_server(export_dir: Path) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "textgen.serve", str(export_dir), "--port", "0"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    host, port = line.split("http://")[1].split("/")[0].split(":")
    return proc, host, int(port)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmRSS"))) / 1024


def clients(host: str, port: int, n: int, *, seconds: float, requests: int, length: int):
    """n client threads until `seconds` pass or `requests` are answered in all."""
    latencies, chars, failures, lock = [], [0], [0], threading.Lock()
    deadline, sent = time.perf_counter() + seconds, [0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        i = 0
        while time.perf_counter() < deadline:
            with lock:
                if sent[0] >= requests:
                    break
                sent[0] += 1
            body = json.dumps({"prompt": "And God said", "length": length, "seed": k * 100003 + i,
                               "temperature": 0.8})  # fmt: skip
            start = time.perf_counter()
            conn.request("POST", "/v1/generate", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            took = time.perf_counter() - start
            with lock:
                if response.status != 200:
                    failures[0] += 1
                else:
                    latencies.append(took)
                    chars[0] += len(answer["texts"][0])
            i += 1
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "clients": n,
        "requests": len(latencies),
        "chars_per_sec": round(chars[0] / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "non_200": failures[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 x 64 units, shorter runs")
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    parser.add_argument("--requests", type=int, default=2000, help="for the RSS measurement")
    args = parser.parse_args()
    units, layers = (64, 1) if args.quick else (256, 2)
    seconds, requests = (3.0, 200) if args.quick else (args.seconds, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = make_export(Path(tmp), units, layers)
        proc, host, port = start_server(export_dir)
        try:
            clients(host, port, 4, seconds=2, requests=40, length=50)  # warm up
            levels = [
                clients(host, port, n, seconds=seconds, requests=10**9, length=200)
                for n in (1, 4, 16)
            ]
            before = rss_mb(proc.pid)
            memory = clients(host, port, 16, seconds=3600, requests=requests, length=200)
            after = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {
        "model": f"{layers} x {units} (untrained, KJV alphabet)",
        "length": 200,
        "levels": levels,
        "speedup_16_vs_1": round(levels[2]["chars_per_sec"] / levels[0]["chars_per_sec"], 2),
        "rss_requests": memory["requests"],
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "non_200": sum(x["non_200"] for x in [*levels, memory]),
        "machine": describe_machine(),
        "loadavg_end": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
