"""The HTTP app (Starlette): JSON, Server-Sent Events, TF Serving's REST predict, a web page.

Routes: `POST /v1/generate`, `POST /v1/stream` (SSE), `POST /v1/models/textgen:predict`
(`{"instances": [...]}` -> `{"predictions": [...]}`, or `{"inputs": {...}}` -> `{"outputs":
{...}}`), `GET /` (static/index.html), `GET /healthz`. Every request is checked in Python
(`requests.py`) before it reaches the model; a bad one is HTTP 400 (413, 415, 408) with
`{"error": "<one line>"}`. Requests become `batcher.Job`s, so concurrent requests share
compiled calls; a sample that writes a stop string or the end-of-text token leaves the batch,
and the answers say how each ended (`stopped`) and its `tokens`. `"novelty": true` adds a
report per sample (`data.novelty`), from the served run's index: a run dir only. Overload is
explicit: a full wait queue or a request past its deadline is 503 with `Retry-After`. A client
that leaves (any route) frees its rows at the next call; a stream whose client reads nothing
sits out calls and is dropped after the stall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from importlib import resources

from textgen.core.errors import TextgenError
from textgen.data.novelty import NoveltyIndex
from textgen.serving.batcher import Backend, Batcher, Job, JobError, Overloaded
from textgen.serving.requests import (
    FIELDS,
    BadRequest,
    Limits,
    Request,
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

    def __init__(self, request: Request, *, limits: Limits) -> None:
        loop = asyncio.get_running_loop()
        settings = request.settings
        self.request = request
        self.queue: asyncio.Queue = asyncio.Queue()
        self.texts = [""] * settings.num_samples
        self.settings = settings
        self.novelty: list[dict] | None = None  # the reports, when asked for and made
        self.started = time.perf_counter()
        self.sent = self.taken = 0  # events put (worker thread) and taken (event loop)

        def put(item) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        def emit(i: int, text: str) -> None:
            self.sent += 1
            put(("text", i, text))

        self.job = Job(
            prompt=request.prompt, settings=settings, emit=emit,
            finish=lambda err: put(("end", err)), deadline=time.monotonic() + limits.timeout,
            paused=lambda: self.sent - self.taken >= STREAM_BUFFER * settings.num_samples,
            stop=request.stop, stop_at_end=request.stop_at_end,
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
        """Tokens, stop reasons, seed, seconds (and novelty reports), as the answers say."""
        out = {"tokens": self.job.tokens(), "stopped": self.job.stopped(),
               "seed": self.settings.seed,
               "seconds": round(time.perf_counter() - self.started, 4)}  # fmt: skip
        if self.novelty is not None:
            out["novelty"] = self.novelty
        return out


class Novelty:
    """The served run's novelty index, opened (its suffix array built) on first use.

    Args:
        backend: The model; novelty needs `backend.run` (a run dir, not an export).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._index: NoveltyIndex | None = None
        self._lock = threading.Lock()  # one build, however many requests ask at once

    async def ready(self) -> None:
        """Opens the index (in a thread: a first build reads the whole training split).

        Raises:
            BadRequest: an export (no index), or a run whose index is gone.
        """
        if self.backend.run is None:
            raise BadRequest("novelty needs a run dir whose index exists; this server serves "
                             "an export (serve the run dir instead)")  # fmt: skip
        if self._index is None:
            await asyncio.to_thread(self._open)

    def _open(self) -> None:
        with self._lock:
            if self._index is not None:
                return
            try:
                self._index = NoveltyIndex.for_run(self.backend.run)
            except TextgenError as e:
                raise BadRequest(f"novelty: {e.line()}") from None

    async def report(self, streams: list[ClientStream]) -> None:
        """Sets the novelty reports of the streams that asked (binary searches in a thread)."""
        asked = [s for s in streams if s.request.novelty]

        def run() -> None:
            for stream in asked:
                stream.novelty = [self._index.report(text) for text in stream.texts]

        if asked:
            await asyncio.to_thread(run)


def _prediction(text: str, summary: dict) -> dict:
    """One predict answer: the text, its tokens and stop reason (and novelty when asked)."""
    out = {"text": text, "tokens": summary["tokens"][0], "stopped": summary["stopped"][0]}
    if "novelty" in summary:
        out["novelty"] = summary["novelty"][0]
    return out


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


def create_app(backend: Backend, *, limits: Limits | None = None, gate=None, **batcher_args):
    """The Starlette app serving `backend`; `batcher_args` go to `Batcher`. `gate`: the
    transport's `AdmissionGate`, whose refusals /healthz counts with the app's."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.routing import Route

    limits = limits or Limits()
    batcher = Batcher(backend, **batcher_args)
    novelty = Novelty(backend)
    if gate is not None:
        gate.queue_full = batcher.queue_is_full
    page = (
        resources.files("textgen.serving").joinpath("static/index.html").read_text(encoding="utf-8")
    )

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def checked(bodies: list, **options) -> list[ClientStream]:
        """Each request checked (the novelty index opened if asked), as a stream, queued."""
        requests = [check_request(b, backend, limits, **options) for b in bodies]
        if any(r.novelty for r in requests):
            await novelty.ready()
        streams = [ClientStream(r, limits=limits) for r in requests]
        submit(batcher, streams)
        return streams

    async def generate(request):
        refuse_if_full(batcher)
        [stream] = await checked([await read_json(request)])
        [texts] = await until_done(request, [stream])
        await novelty.report([stream])
        return JSONResponse({"texts": texts, **stream.summary()})

    async def stream(request):
        refuse_if_full(batcher)
        [client] = await checked([await read_json(request)])

        async def events():
            try:
                async for index, text in client.events():
                    yield f"data: {json.dumps({'index': index, 'text': text})}\n\n"
                await novelty.report([client])
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
        streams = await checked(rows, fields=one_each, padding=True)  # "" pads stop rows
        texts = await until_done(request, streams)
        await novelty.report(streams)
        preds = [_prediction(t[0], s.summary()) for t, s in zip(texts, streams, strict=True)]
        if "instances" in body:
            return JSONResponse({"predictions": preds})
        keys = ["text", "tokens", "stopped", *(["novelty"] if any("novelty" in p for p in preds)
                                               else [])]  # fmt: skip
        return JSONResponse({"outputs": {k: [p.get(k) for p in preds] for k in keys}})

    async def index(request):
        return HTMLResponse(page)

    async def healthz(request):
        stats = batcher.stats()
        if gate is not None:
            stats["refused_requests"] += gate.refused
        return JSONResponse({"status": "ok", "model": backend.source, **stats})

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
