"""The HTTP app (Starlette): JSON, Server-Sent Events, TF Serving's REST predict, a web page.

Routes: `POST /v1/generate`, `POST /v1/stream` (SSE), `POST /v1/models/textgen:predict`
(`{"instances": [...]}` -> `{"predictions": [...]}`, or `{"inputs": {...}}` -> `{"outputs":
{...}}`), `GET /` (static/index.html), `GET /healthz`. Every request is checked in Python
(`requests.py`) before it reaches the model; a bad one is HTTP 400 (413, 415, 408) with
`{"error": "<one line>"}`. Requests become `batcher.Job`s, so concurrent requests share
compiled calls. Overload is explicit: a full wait queue or a request past its deadline is 503
with `Retry-After`. A client that leaves (any route) frees its rows at the next call; a stream
whose client reads nothing sits out calls and is dropped after the stall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from importlib import resources

from textgen.core.sampling_settings import SamplingSettings
from textgen.serving.batcher import Backend, Batcher, Job, JobError, Overloaded
from textgen.serving.requests import (
    FIELDS,
    BadRequest,
    Limits,
    check_request,
    columns_to_rows,
    read_json,
)  # fmt: skip

RETRY_AFTER = 1  # seconds a refused client is told to wait: about one call for many rows
STREAM_BUFFER = 16  # calls of text a stream may hold unread per sample before it sits out


class Unavailable(Exception):
    """The server cannot take the request now: HTTP 503 with Retry-After and this message."""


class ClientStream:
    """One client's job, its events as an asyncio queue (filled from the worker thread).

    The queue is bounded in effect: once a client has `STREAM_BUFFER` calls of text per sample
    unread, the job sits out calls (`Job.paused`) until the client reads.
    """

    def __init__(self, prompt: str, settings: SamplingSettings, *, limits: Limits) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.texts = [""] * settings.num_samples
        self.settings = settings
        self.started = time.perf_counter()
        self.sent = self.taken = 0  # events put (worker thread) and taken (event loop)

        def put(item) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        def emit(i: int, text: str) -> None:
            self.sent += 1
            put(("text", i, text))

        self.job = Job(
            prompt=prompt, settings=settings, emit=emit, finish=lambda err: put(("end", err)),
            deadline=time.monotonic() + limits.timeout,
            paused=lambda: self.sent - self.taken >= STREAM_BUFFER * settings.num_samples,
        )  # fmt: skip

    async def events(self):
        """Yields (index, text) as sampled; cancels the job if the consumer stops early.

        Raises:
            Unavailable: the job ran past its deadline or was dropped.
            RuntimeError: sampling failed (its message is the client's).
        """
        try:
            while True:
                item = await self.queue.get()
                if item[0] == "end":
                    _raise_for(item[1])
                    return
                self.taken += 1
                self.texts[item[1]] += item[2]
                yield item[1], item[2]
        finally:
            self.job.cancel()  # no-op when done; stops the rows of a client that left

    async def result(self) -> list[str]:
        """Every sample's whole text."""
        async for _ in self.events():
            pass
        return self.texts

    def summary(self) -> dict:
        """Tokens, seed and seconds, as the responses report them."""
        return {"tokens": [self.settings.length] * self.settings.num_samples,
                "seed": self.settings.seed,
                "seconds": round(time.perf_counter() - self.started, 4)}  # fmt: skip


def _raise_for(error: JobError | None) -> None:
    if error is None:
        return
    if error.status == 503:
        raise Unavailable(error.message)
    raise RuntimeError(error.message)


def refuse_if_full(batcher: Batcher) -> None:
    """503 before the body is even read while the wait queue is full (the cheap refusal)."""
    if batcher.full():
        raise Unavailable(f"the server is busy: {batcher.max_queue} requests are waiting; "
                          f"retry after {RETRY_AFTER} s")  # fmt: skip


def submit(batcher: Batcher, streams: list[ClientStream]) -> None:
    """Queues the streams' jobs, all or none; a full queue is 503."""
    try:
        batcher.submit(*(s.job for s in streams))
    except Overloaded as e:
        raise Unavailable(f"the server is busy: {e}; retry after {RETRY_AFTER} s") from None


async def until_done(request, streams: list[ClientStream]) -> list[list[str]]:
    """Every stream's texts; if the client leaves first, its jobs are cancelled (rows freed at
    the next call boundary) and the result is not sent anywhere."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the body is read: the next message is the disconnect
        for stream in streams:
            stream.job.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await asyncio.gather(*(s.result() for s in streams))
    finally:
        watcher.cancel()


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

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def generate(request):
        refuse_if_full(batcher)
        stream = ClientStream(*check_request(await read_json(request), backend, limits),
                              limits=limits)  # fmt: skip
        submit(batcher, [stream])
        [texts] = await until_done(request, [stream])
        return JSONResponse({"texts": texts, **stream.summary()})

    async def stream(request):
        refuse_if_full(batcher)
        client = ClientStream(*check_request(await read_json(request), backend, limits),
                              limits=limits)  # fmt: skip
        submit(batcher, [client])

        async def events():
            try:
                async for index, text in client.events():
                    yield f"data: {json.dumps({'index': index, 'text': text})}\n\n"
            except (Unavailable, RuntimeError) as e:
                yield f"event: error\ndata: {json.dumps({'error': str(e)})}\n\n"
                return
            yield f"event: done\ndata: {json.dumps(client.summary())}\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def predict(request):
        refuse_if_full(batcher)
        body = await read_json(request)
        if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
            raise BadRequest('the request must be {"instances": [...]} or {"inputs": {...}}')
        rows = body.get("instances")
        if rows is None:
            rows = columns_to_rows(body["inputs"])
        if not isinstance(rows, list) or not rows:
            raise BadRequest("instances must be a non-empty list")
        if len(rows) > limits.max_samples:
            raise BadRequest(f"at most {limits.max_samples} instances per request")
        rows = [{"prompt": r} if isinstance(r, str) else r for r in rows]
        one_each = tuple(f for f in FIELDS if f != "num_samples")  # one text per instance
        checked = [check_request(r, backend, limits, fields=one_each) for r in rows]
        streams = [ClientStream(*c, limits=limits) for c in checked]
        submit(batcher, streams)
        texts = await until_done(request, streams)
        preds = [{"text": t[0], "tokens": s.settings.length}
                 for t, s in zip(texts, streams, strict=True)]  # fmt: skip
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
        return error(exc.status, str(exc))

    async def unavailable(request, exc: Unavailable):
        return error(503, str(exc), {"Retry-After": str(RETRY_AFTER)})

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), exc.headers)

    async def crash(request, exc: Exception):
        return error(500, f"internal error: {exc.__class__.__name__}: {exc}"[:200])

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/v1/generate", generate, methods=["POST"]),
            Route("/v1/stream", stream, methods=["POST"]),
            Route("/v1/models/textgen:predict", predict, methods=["POST"]),
        ],
        exception_handlers={
            BadRequest: bad_request,
            Unavailable: unavailable,
            HTTPException: http_error,
            500: crash,
        },
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app
