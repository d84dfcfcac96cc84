"""The server under hostile clients: a drill against a live `textgen.serve` on 127.0.0.1 only.

    python scripts/serve_drill.py            # an untrained 2 x 384 model (the issue's size)
    python scripts/serve_drill.py --quick    # 1 x 64 units and smaller floods, for a smoke run

An untrained model over the KJV alphabet (weights do not change the speed) is exported and
served by `textgen.serve EXPORT --port 0 --max-queue 256 --max-length 1000000` in its own process on
127.0.0.1; every loop is bounded and the script stops the server itself. The catalogue:

- sweep: malformed and hostile bodies (5000-digit integers, 20,000 nested brackets, a top_p
  that is 0 in float32, an infinite temperature, other content types, wrong methods, 70 KB);
- poison: 15 normal requests sent together with 1 that used to fail its whole batch;
- flood: 1,000 concurrent requests of 200 tokens, each on its own new connection; 503s and
  their latency from the client's connect, /healthz latency during the flood, RSS growth, the
  server up afterwards;
- burst: three times, once the server is idle: 1,000 connections opened first, then a request
  written on each in one go; the 503s' latency from the write to their first bytes, read by a
  lean raw-socket client (the server's part, not the drill's own Python on the same cores);
- long prompt: the latency of a 200-token request alone and beside a 64 KB prompt;
- leavers: 20 clients that leave `/v1/generate` after 1 s: seconds and calls until their rows
  are free;
- slowloris: sockets that send a header byte every 2 s: how many the server closes;
- slow readers: streams whose clients read nothing: how many are dropped, rows freed.

Prints ONE JSON object of counts and timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import REPO, make_export, rss_mb

HOST = "127.0.0.1"  # the drill never leaves the machine
JSON = {"Content-Type": "application/json"}


async def http(port: int, method: str, path: str, body: bytes = b"", headers=None, *,
               timeout: float = 120) -> tuple[int, dict, bytes, float]:  # fmt: skip
    """One request on its own connection: (status, headers, body, seconds); status 0 if the
    connection failed or timed out."""
    started = time.perf_counter()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close",
             f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            raw = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return 0, {}, b"", time.perf_counter() - started
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1]) if status_line.startswith("HTTP/") else 0
    found = dict(h.lower().split(": ", 1) for h in header_lines if ": " in h)
    if found.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return status, found, payload, time.perf_counter() - started


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2 :]
    return bytes(out)


def post(port: int, body, path: str = "/v1/generate", **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http(port, "POST", path, data, JSON, **kwargs)


async def healthz(port: int) -> dict:
    status, _, body, seconds = await http(port, "GET", "/healthz", timeout=30)
    return {**json.loads(body), "seconds": seconds} if status == 200 else {"seconds": seconds}


def hostile_bodies() -> list[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers) of the sweep: every one must be a 4xx with one JSON line."""
    g = "/v1/generate"
    bodies = [
        b'{"prompt": "a", "length": ' + b"9" * 5000 + b"}",
        b'{"prompt": "a", "seed": -' + b"9" * 5000 + b"}",
        b"[" * 20_000 + b"]" * 20_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"prompt": "a", "top_p": 1e-50}',
        b'{"prompt": "a", "temperature": 1e300}',
        b'{"prompt": "a", "temperature": 1e-45}',
        b'{"prompt": "a", "temperature": NaN}',
        b'{"prompt": "a", "top_k": 1e40}',
        b'{"prompt": "a", "length": 1e999}',
        b'{"prompt": "a", "num_samples": 1000}',
        b'{"prompt": "\\ud800"}',
        b'{"prompt": "a", "prompt": 5}',
        b"\xff\xfe\x00",
        b"",
        b"null",
        b'"a string"',
        b'{"prompt": "a"',
        json.dumps({"prompt": "a" * 70_000}).encode(),
        json.dumps({"prompt": "a", "seed": 2**64}).encode(),
    ]
    cases = [("POST", g, b, JSON) for b in bodies]
    cases += [("POST", "/v1/stream", b, JSON) for b in bodies[:8]]
    cases += [("POST", "/v1/models/textgen:predict", b, JSON) for b in (
        b'{"instances": [{"prompt": "a", "top_p": 1e-50}]}',
        b'{"instances": [{"prompt": "a", "num_samples": 16}]}',
        b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"inputs": {"prompt": ["a"], "length": [1, 2]}}',
        b'{"instances": []}',
    )]  # fmt: skip
    cases += [
        ("POST", g, b'{"prompt": "a"}', {}),
        ("POST", g, b'{"prompt": "a"}', {"Content-Type": "text/plain"}),
        ("POST", g, b"prompt=a", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("GET", g, b"", {}),
        ("PUT", "/v1/stream", b"{}", JSON),
        ("DELETE", "/healthz", b"", {}),
    ]
    return cases


async def sweep(port: int) -> dict:
    """Every hostile body once; statuses counted, and whether each error was one JSON line."""
    statuses: dict[str, int] = {}
    one_line = 0
    cases = hostile_bodies()
    for method, path, body, headers in cases:
        status, _, payload, _ = await http(port, method, path, body, headers)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        try:
            answer = json.loads(payload)
            one_line += list(answer) == ["error"] and "\n" not in answer["error"]
        except ValueError:
            pass
    return {"requests": len(cases), "statuses": statuses, "one_json_error_line": one_line}


async def poison(port: int) -> dict:
    """15 normal requests with one that used to fail its batch, all at once."""
    normal = [post(port, {"prompt": "And God said", "length": 200, "seed": s}) for s in range(15)]
    bad = post(port, {"prompt": "And God said", "length": 200, "top_p": 1e-50})
    results = await asyncio.gather(*normal, bad)
    return {"normal_200": sum(r[0] == 200 for r in results[:15]), "poison_status": results[15][0]}


FLOOD_BODY = {"prompt": "And God said", "length": 200, "temperature": 0.8}  # 200 tokens each


def refused_latency(seconds: list[float]) -> dict:
    """p50, p90 and max of the 503s' latencies, in ms (None without any)."""
    ordered = sorted(seconds)
    at = {"p50": len(ordered) // 2, "p90": int(0.9 * (len(ordered) - 1)), "max": -1}
    return {f"refused_{name}_ms": round(1000 * ordered[i], 1) if ordered else None
            for name, i in at.items()}  # fmt: skip


async def flood(port: int, pid: int, n: int) -> dict:
    """n concurrent 200-token requests; /healthz every 100 ms meanwhile."""
    rss_before = rss_mb(pid)
    health_times: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            health_times.append((await healthz(port))["seconds"])
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    results = await asyncio.gather(*(post(port, {**FLOOD_BODY, "seed": i}, timeout=300)
                                     for i in range(n)))  # fmt: skip
    seconds = time.perf_counter() - started
    done.set()
    await watcher
    refused = [r for r in results if r[0] == 503]
    after = await healthz(port)
    return {
        "requests": n,
        "ok_200": sum(r[0] == 200 for r in results),
        "refused_503": len(refused),
        "refused_with_retry_after": sum("retry-after" in r[1] for r in refused),
        "other": sum(r[0] not in (200, 503) for r in results),
        **refused_latency([r[3] for r in refused]),
        "seconds": round(seconds, 2),
        "healthz_checks": len(health_times),
        "healthz_p50_ms": round(1000 * statistics.median(health_times), 1),
        "healthz_max_ms": round(1000 * max(health_times), 1),
        "rss_growth_mb": round(rss_mb(pid) - rss_before, 1),
        "up_after": after.get("status") == "ok",
    }  # fmt: skip


def _burst_once(port: int, n: int) -> list[tuple[int, float]]:
    """n connections opened, then a request written on each in one go; (status, seconds from
    the write to the answer's first bytes) each. Raw sockets and epoll: a lean client, so the
    latency is the server's, not the client's own Python on the same cores."""
    body = json.dumps(FLOOD_BODY).encode()
    request = (f"POST /v1/generate HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body  # fmt: skip
    sockets = {}
    for _ in range(n):
        sock = socket.create_connection((HOST, port), timeout=30)
        sockets[sock.fileno()] = sock
    time.sleep(0.5)  # the server accepts them all before the burst
    poller, sent, answers = select.epoll(), {}, {}
    for fd, sock in sockets.items():
        sock.setblocking(False)
        poller.register(fd, select.EPOLLIN)
    for fd, sock in sockets.items():
        sock.send(request)
        sent[fd] = time.perf_counter()
    deadline = time.monotonic() + 300
    while len(answers) < n and time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            head = sockets[fd].recv(64)
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
            answers[fd] = (status, time.perf_counter() - sent[fd])
            poller.unregister(fd)
    for sock in sockets.values():
        sock.close()
    poller.close()
    return list(answers.values()) + [(0, 300.0)] * (n - len(answers))


async def burst(port: int, n: int, rounds: int = 3) -> dict:
    """`rounds` bursts of n requests, each once the server is idle again; 503 latency from the
    write, per round."""
    per_round = []
    for _ in range(rounds):
        results = await asyncio.to_thread(_burst_once, port, n)
        refused = [seconds for status, seconds in results if status == 503]
        per_round.append({
            "ok_200": sum(status == 200 for status, _ in results),
            "refused_503": len(refused),
            "other": sum(status not in (200, 503) for status, _ in results),
            **refused_latency(refused),
        })  # fmt: skip
        while (now := await healthz(port)).get("active_rows") or now.get("waiting_requests"):
            await asyncio.sleep(0.5)  # drained: the next round starts from an idle server
    return {"requests": n, "rounds": per_round}


async def long_prompt(port: int) -> dict:
    """A 200-token request alone, then beside a 64 KB prompt (median of 3 each)."""
    short = {"prompt": "And God said", "length": 200, "seed": 1}
    alone = [(await post(port, short))[3] for _ in range(3)]
    text = ("In the beginning God created the heaven and the earth. " * 2000)[:64_000]
    beside = []
    for _ in range(3):
        heavy = asyncio.create_task(post(port, {"prompt": text, "length": 10}))
        await asyncio.sleep(0.05)  # the long prompt is in first
        beside.append((await post(port, short))[3])
        heavy_result = await heavy
    return {
        "prompt_chars": len(text),
        "short_alone_ms": round(1000 * statistics.median(alone)),
        "short_beside_64kb_ms": round(1000 * statistics.median(beside)),
        "added_delay_ms": round(1000 * (statistics.median(beside) - statistics.median(alone))),
        "long_status": heavy_result[0],
        "long_seconds": round(heavy_result[3], 2),
    }


async def leavers(port: int, n: int = 20) -> dict:
    """n clients leave /v1/generate after 1 s: seconds and calls until their rows are free."""
    before = await healthz(port)
    writers = []
    for i in range(n):
        _, writer = await asyncio.open_connection(HOST, port)
        body = json.dumps({"prompt": "a", "length": 100_000, "seed": i}).encode()
        head = (f"POST /v1/generate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        writer.write(head.encode() + body)
        writers.append(writer)
    await asyncio.sleep(1.0)
    busy = await healthz(port)
    for writer in writers:
        writer.close()
    left = time.perf_counter()
    for _ in range(600):  # at most ~60 s
        now = await healthz(port)
        if now["cancelled_requests"] - before["cancelled_requests"] >= n:
            break
        await asyncio.sleep(0.1)
    return {
        "clients": n,
        "active_rows_before_leaving": busy["active_rows"],
        "cancelled": now["cancelled_requests"] - before["cancelled_requests"],
        "rows_free_seconds": round(time.perf_counter() - left, 2),
        "calls_until_free": now["calls"] - busy["calls"],
        "active_rows_after": now["active_rows"],
    }


async def slowloris(port: int, n: int, seconds: float) -> dict:
    """n sockets that send a header byte every 2 s for `seconds`: how many the server closes."""
    conns = [await asyncio.open_connection(HOST, port) for _ in range(n)]
    head = b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    closed: set[int] = set()
    started = time.perf_counter()
    step = 0
    while time.perf_counter() - started < seconds and len(closed) < n:
        for k, (reader, writer) in enumerate(conns):
            if k in closed:
                continue
            try:
                writer.write(head if step == 0 else b"a")
                await writer.drain()
                if reader.at_eof() or await _closed(reader):
                    closed.add(k)
            except OSError:
                closed.add(k)
        step += 1
        await asyncio.sleep(2.0)
    for _, writer in conns:
        writer.close()
    return {"sockets": n, "closed_by_server": len(closed),
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


async def _closed(reader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), 0.01)
        return data == b""
    except TimeoutError:
        return False


async def slow_readers(port: int, n: int, seconds: float) -> dict:
    """n streams whose clients read nothing (small receive buffers): how many are dropped."""
    before = await healthz(port)
    socks = []
    body = json.dumps({"prompt": "a", "length": 1_000_000}).encode()
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        sock.connect((HOST, port))
        head = (f"POST /v1/stream HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode() + body)
        socks.append(sock)
    started = time.perf_counter()
    now = before
    while time.perf_counter() - started < seconds:
        now = await healthz(port)
        if now["dropped_requests"] - before["dropped_requests"] >= n:
            break
        await asyncio.sleep(0.5)
    for sock in socks:
        sock.close()
    return {"streams": n, "dropped": now["dropped_requests"] - before["dropped_requests"],
            "timed_out": now["timed_out_requests"] - before["timed_out_requests"],
            "seconds": round(time.perf_counter() - started, 1),
            "active_rows_after": now["active_rows"]}  # fmt: skip


PHASES = ("sweep", "poison", "flood", "burst", "long_prompt", "leavers", "slowloris",
          "slow_readers")  # fmt: skip


async def drill(port: int, pid: int, quick: bool, phases: list[str]) -> dict:
    runs = {
        "sweep": lambda: sweep(port),
        "poison": lambda: poison(port),
        "flood": lambda: flood(port, pid, 200 if quick else 1000),
        "burst": lambda: burst(port, 200 if quick else 1000),
        "long_prompt": lambda: long_prompt(port),
        "leavers": lambda: leavers(port),
        "slowloris": lambda: slowloris(port, 20 if quick else 100, 30),
        "slow_readers": lambda: slow_readers(port, 4 if quick else 8, 180),
    }
    out = {name: await runs[name]() for name in phases}
    out["server_up_at_end"] = (await healthz(port)).get("status") == "ok"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 x 64 units, smaller floods")
    parser.add_argument("--max-queue", type=int, default=256, help="the server's --max-queue")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    args = parser.parse_args()
    units, layers = (64, 1) if args.quick else (384, 2)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = make_export(Path(tmp), units, layers)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "textgen.serve", str(export_dir), "--host", HOST,
             "--port", "0", "--max-queue", str(args.max_queue), "--max-length", "1000000"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            port = int(proc.stdout.readline().split("http://")[1].split("/")[0].split(":")[1])
            result = asyncio.run(drill(port, proc.pid, args.quick, args.phases))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    five_hundreds = result.get("sweep", {}).get("statuses", {}).get("500", 0)
    summary = {"model": f"{layers} x {units}", "max_queue": args.max_queue,
               "status_500": five_hundreds, **result}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
