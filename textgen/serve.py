"""`python -m textgen.serve RUN_DIR_OR_EXPORT [--host H] [--port P]`: serve a model over HTTP.

Limits (see the README): --max-queue (503 with Retry-After beyond it), --timeout (per request),
--stall-timeout (unread streams), --max-connections (uvicorn's limit), --header-timeout.

Loads the model once (an export written by `textgen.export`, or a run dir), then serves
`POST /v1/generate`, `POST /v1/stream` (Server-Sent Events), `POST /v1/models/textgen:predict`
(TensorFlow Serving's REST format), a web page at `/` and `/healthz` (see textgen/server.py).
Binds to 127.0.0.1 unless told otherwise; `--port 0` picks a free port. Needs the `serve`
extra (`pip install .[serve]`).
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Sequence

from textgen import cli
from textgen.core.errors import TextgenError


def main(argv: Sequence[str] | None = None) -> int:
    """Serves a model until interrupted."""
    args = _arguments(argv)
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise TextgenError("serving needs the serve extra: pip install '.[serve]'", "") from None

    from textgen.serving.batcher import Backend
    from textgen.serving.requests import Limits
    from textgen.serving.server import RETRY_AFTER, create_app
    from textgen.serving.transport import AdmissionGate, hardened_protocol, yield_before_posts

    sock = _bind(args.host, args.port)  # before the slow part: a taken port fails fast
    cli.quiet_tensorflow()
    with cli.native_stderr_silenced():
        backend = Backend.load(args.model, args.checkpoint)
        gate = AdmissionGate(args.max_queue + args.max_batch, retry_after=RETRY_AFTER)
        app = create_app(
            backend, limits=Limits(args.max_length, args.max_samples, args.timeout), gate=gate,
            max_rows=args.max_batch, max_queue=args.max_queue, stall_timeout=args.stall_timeout,
        )  # fmt: skip
    host, port = sock.getsockname()[:2]
    _raise_open_files(args.max_connections + 256)  # + TensorFlow's own files
    print(f"serving {args.model} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(
        yield_before_posts(app), log_level="warning", timeout_graceful_shutdown=2,
        http=hardened_protocol(args.header_timeout, gate),
        limit_concurrency=args.max_connections,
        timeout_keep_alive=5,  # seconds an idle keep-alive connection stays open
        backlog=1024,  # connections the kernel queues before accept: bursts of clients
    )  # fmt: skip
    # The model, TensorFlow and the app are millions of long-lived objects: frozen, Python's full
    # collections skip them instead of pausing the event loop to scan them under a burst.
    gc.freeze()
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _arguments(argv: Sequence[str] | None):
    """The command line, parsed and checked (a TextgenError names the flag at fault)."""
    parser = cli.ArgumentParser(
        prog="textgen.serve", description="Serve a run or an export over HTTP."
    )
    parser.add_argument("model", help="an export dir (textgen.export) or a run dir")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free one)")
    parser.add_argument("--max-length", type=int, default=2000, help="most tokens a request asks")
    parser.add_argument("--max-samples", type=int, default=16, help="most samples per request")
    parser.add_argument("--max-batch", type=int, default=32, help="most rows in one call")
    parser.add_argument(
        "--max-queue", type=int, default=256,
        help="most requests waiting for a row; beyond it 503 with Retry-After (256: at the "
        "default --max-batch, a queue that drains in ~10 s; docs/benchmarks.md)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=120.0,
        help="seconds a request may take from arrival to its last token, else 503 (120: a "
        "full --max-length request behind a full queue)",
    )  # fmt: skip
    parser.add_argument(
        "--stall-timeout", type=float, default=10.0,
        help="seconds a stream may go unread before it is dropped and its row freed (10)",
    )  # fmt: skip
    parser.add_argument(
        "--max-connections", type=int, default=2048,
        help="open connections and requests in all; beyond it uvicorn answers 503 (2048: "
        "room for a full queue, the rows and /healthz)",
    )  # fmt: skip
    parser.add_argument(
        "--header-timeout", type=float, default=10.0,
        help="seconds to send a request's headers (slow clients are closed) (10)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="for a run dir: best (the default: model.keras, the lowest val loss the run "
        "reached), latest or RUN/checkpoints/ckpt-N",
    )
    args = parser.parse_args(argv)
    for name in ("max_length", "max_samples", "max_batch", "max_queue", "max_connections"):
        if getattr(args, name) < 1:
            raise TextgenError(f"--{name.replace('_', '-')} must be >= 1", "command line")
    for name in ("timeout", "stall_timeout", "header_timeout"):
        if not 0 < getattr(args, name) < 1e6:
            raise TextgenError(f"--{name.replace('_', '-')} must be in (0, 1e6) seconds",
                               "command line")  # fmt: skip
    if args.max_samples > args.max_batch:
        raise TextgenError("--max-samples must be <= --max-batch", "command line")
    if not 0 <= args.port <= 65535:
        raise TextgenError("--port must be in [0, 65535]", "command line")
    return args


def _raise_open_files(wanted: int) -> None:
    """Raises the open-files soft limit towards `wanted` (as far as the hard limit allows)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a TextgenError saying why not."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)  # a burst of clients waits in the kernel, not refused
    except OSError as e:
        raise TextgenError(f"cannot listen: {e.strerror or e}", f"{host}:{port}") from None
    return sock


if __name__ == "__main__":
    cli.run(main)
