"""The HTTP app (Starlette): JSON, Server-Sent Events, TF Serving's REST predict, a web page.

Routes: `POST /v1/generate`, `POST /v1/stream` (SSE), `POST /v1/models/textgen:predict`
(`{"instances": [...]}` -> `{"predictions": [...]}`, or `{"inputs": {...}}` -> `{"outputs":
{...}}`), `GET /` (static/index.html), `GET /healthz`. Every request is checked in Python
before it reaches the model; a bad one is HTTP 400 with `{"error": "<one line>"}`. Requests
become `batcher.Job`s, so concurrent requests share compiled calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from dataclasses import dataclass
from importlib import resources

from textgen.serving.batcher import Backend, Batcher, Job

MAX_BODY = 64 * 1024  # bytes of a request body
INT64 = (-(1 << 63), (1 << 63) - 1)
FIELDS = ("prompt", "length", "temperature", "top_k", "top_p", "seed", "num_samples")


class BadRequest(Exception):
    """A request the server refuses: HTTP 400 with this one-line message."""


@dataclass(frozen=True)
class Limits:
    """What a request may ask for."""

    max_length: int = 2000
    max_samples: int = 16


@dataclass(frozen=True)
class Request:
    """A checked generation request."""

    prompt: str
    length: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    num_samples: int


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # TF Serving clients send JSON numbers from float arrays
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer, got {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{name} must be a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be finite")
    return float(value)


def check_request(body, backend: Backend, limits: Limits, *, extra: tuple = ()) -> Request:
    """A request object (parsed JSON) checked against the model and the limits.

    Raises:
        BadRequest: naming the field at fault.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    unknown = set(body) - {*FIELDS, "allow_unknown", *extra}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}; fields: {', '.join(FIELDS)}")
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("prompt is required (a string, may be empty)")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("prompt is not valid Unicode (a lone surrogate)") from None
    allow_unknown = body.get("allow_unknown", False)
    if not isinstance(allow_unknown, bool):
        raise BadRequest("allow_unknown must be true or false")
    missing = backend.unknown_chars(prompt)
    if missing and not allow_unknown:
        listed = " ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise BadRequest(
            f"prompt characters outside the model's vocabulary: {listed}{more} "
            '(send "allow_unknown": true to feed them as the unknown token)'
        )
    temperature, top_p = _number(body, "temperature", 1.0), _number(body, "top_p", 1.0)
    if temperature < 0:
        raise BadRequest(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise BadRequest(f"top_p must be in (0, 1], got {top_p}")
    seed = _integer(body, "seed", None, *INT64)
    return Request(
        prompt=prompt,
        length=_integer(body, "length", 200, 1, limits.max_length),
        temperature=temperature,
        top_k=_integer(body, "top_k", 0, 0, INT64[1]),
        top_p=top_p,
        seed=secrets.randbits(62) if seed is None else seed,
        num_samples=_integer(body, "num_samples", 1, 1, limits.max_samples),
    )


async def read_json(request) -> object:
    """The body as JSON, at most MAX_BODY bytes. Raises BadRequest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(f"the body is over {MAX_BODY // 1024} KiB")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise BadRequest(f"the body is over {MAX_BODY // 1024} KiB")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"invalid JSON: {e}") from None


class Session:
    """One request's job, its events as an asyncio queue (filled from the worker thread)."""

    def __init__(self, batcher: Batcher, req: Request) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.texts = [""] * req.num_samples
        self.started = time.perf_counter()

        def put(item) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        self.job = Job(
            prompt=req.prompt, length=req.length, temperature=req.temperature,
            top_k=req.top_k, top_p=req.top_p, seed=req.seed, samples=req.num_samples,
            emit=lambda i, text: put(("text", i, text)), finish=lambda err: put(("end", err)),
        )  # fmt: skip
        batcher.submit(self.job)

    async def events(self):
        """Yields (index, text) as sampled; cancels the job if the consumer stops early."""
        try:
            while True:
                item = await self.queue.get()
                if item[0] == "end":
                    if item[1]:
                        raise RuntimeError(item[1])
                    return
                self.texts[item[1]] += item[2]
                yield item[1], item[2]
        finally:
            self.job.cancel()  # no-op when done; stops the rows of a client that left

    async def result(self) -> list[str]:
        """Every sample's whole text."""
        async for _ in self.events():
            pass
        return self.texts


def create_app(backend: Backend, *, limits: Limits | None = None, **batcher_args):
    """The Starlette app serving `backend`; `batcher_args` go to `Batcher`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route

    limits = limits or Limits()
    batcher = Batcher(backend, **batcher_args)
    page = (
        resources.files("textgen.serving").joinpath("static/index.html").read_text(encoding="utf-8")
    )

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def generate(request):
        req = check_request(await read_json(request), backend, limits)
        session = Session(batcher, req)
        texts = await session.result()
        return JSONResponse(
            {"texts": texts, "tokens": [req.length] * req.num_samples, "seed": req.seed,
             "seconds": round(time.perf_counter() - session.started, 4)}
        )  # fmt: skip

    async def stream(request):
        req = check_request(await read_json(request), backend, limits)
        session = Session(batcher, req)

        async def events():
            async for index, text in session.events():
                yield f"data: {json.dumps({'index': index, 'text': text})}\n\n"
            done = {"tokens": [req.length] * req.num_samples, "seed": req.seed,
                    "seconds": round(time.perf_counter() - session.started, 4)}  # fmt: skip
            yield f"event: done\ndata: {json.dumps(done)}\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def predict(request):
        body = await read_json(request)
        if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
            raise BadRequest('the request must be {"instances": [...]} or {"inputs": {...}}')
        rows = body.get("instances")
        if rows is None:
            rows = _columns_to_rows(body["inputs"])
        if not isinstance(rows, list) or not rows:
            raise BadRequest("instances must be a non-empty list")
        if len(rows) > limits.max_samples:
            raise BadRequest(f"at most {limits.max_samples} instances per request")
        rows = [{"prompt": r} if isinstance(r, str) else r for r in rows]
        reqs = [check_request(r, backend, limits) for r in rows]
        texts = await asyncio.gather(*(Session(batcher, r).result() for r in reqs))
        preds = [{"text": t[0], "tokens": r.length} for t, r in zip(texts, reqs, strict=True)]
        if "instances" in body:
            return JSONResponse({"predictions": preds})
        return JSONResponse({"outputs": {k: [p[k] for p in preds] for k in ("text", "tokens")}})

    async def index(request):
        return HTMLResponse(page)

    async def healthz(request):
        return JSONResponse({"status": "ok", "model": backend.source, **batcher.stats()})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(batcher.stop)

    async def bad_request(request, exc: BadRequest):
        return error(400, str(exc))

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    async def crash(request, exc: Exception):
        return error(500, f"internal error: {exc.__class__.__name__}")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/v1/generate", generate, methods=["POST"]),
            Route("/v1/stream", stream, methods=["POST"]),
            Route("/v1/models/textgen:predict", predict, methods=["POST"]),
        ],
        exception_handlers={BadRequest: bad_request, HTTPException: http_error, 500: crash},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app


def _columns_to_rows(inputs) -> list:
    """TF Serving's columnar `inputs` ({name: [values]}) as a list of instances."""
    if not isinstance(inputs, dict) or not inputs:
        raise BadRequest("inputs must be an object of equally long lists")
    columns = {k: v if isinstance(v, list) else [v] for k, v in inputs.items()}
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise BadRequest("every input must have the same number of values")
    return [{k: v[i] for k, v in columns.items()} for i in range(sizes.pop())]
