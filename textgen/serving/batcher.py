"""Continuous batching for the server: every waiting request joins one compiled sampler call.

`Backend` is the model the server runs: an export (`tf.saved_model.load`) or a run dir (the
same module built in memory), reached only through the module's `sampler`, `encode` and
`metadata` functions, so both behave alike. `Batcher` owns one worker thread. Each call of the
sampler advances every active row (a sample of a request) by up to `chunk` tokens; between
calls, finished and cancelled rows leave and waiting requests join (their prompts read in the
same call), up to `max_rows` rows. Rows keep their own temperature, top-k, top-p, seed and
position, so a request's text does not depend on which others share its calls.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textgen.core.errors import TextgenError
from textgen.serving import export


class Backend:
    """A loaded model: the sampler, the in-graph encoder and what the tokenizer's pieces read.

    Args:
        module: An `export.ExportModule` or what `tf.saved_model.load` returns for one.
        source: Where it came from (for /healthz).
    """

    def __init__(self, module, source: str) -> None:
        meta = {k: v.numpy() for k, v in module.metadata().items()}
        self.module, self.source = module, source
        self.kind = meta["kind"].decode()
        self.pieces = list(meta["pieces"])  # id -> bytes (a sentencepiece byte piece: one byte)
        self.block, self.layers, self.units = (int(meta[k]) for k in ("block", "layers", "units"))
        self.newline = int(meta["newline"])
        chars = [p.decode("utf-8") for p in self.pieces[1:]] if self.kind == "char" else None
        self.chars = None if chars is None else frozenset(chars)  # sentencepiece: every char

    @classmethod
    def load(cls, path: str | Path, checkpoint: str = "best") -> Backend:
        """Loads an export dir, or builds the module of a run dir.

        Raises:
            TextgenError: neither an export nor a usable run dir.
        """
        path = Path(path)
        if export.is_export(path):
            import tensorflow as tf

            try:
                return cls(tf.saved_model.load(str(path)), str(path))
            except Exception as e:  # TensorFlow raises many types for a damaged SavedModel
                what = f"cannot load the export: {e.__class__.__name__}"
                raise TextgenError(what, str(path)) from None
        if not path.is_dir():
            raise TextgenError("no such run dir or export", str(path))
        return cls(export.build_module(path, checkpoint), str(path))

    def unknown_chars(self, prompt: str) -> list[str]:
        """Distinct prompt characters outside the vocabulary, in order of appearance (none for
        sentencepiece: byte fallback encodes every character)."""
        if self.chars is None:
            return []
        return [c for c in dict.fromkeys(prompt) if c not in self.chars]

    def encode(self, prompts: list[str]) -> list[np.ndarray]:
        """Each prompt's ids (an empty prompt starts after a line break, as `Generator`)."""
        out = self.module.encode(np.array([p.encode("utf-8") for p in prompts], dtype=object))
        ids, lengths = out["ids"].numpy(), out["lengths"].numpy()
        start = np.array([self.newline] if self.newline >= 0 else [], np.int32)
        return [row[:n] if n else start for row, n in zip(ids, lengths, strict=True)]

    def zero_states(self, rows: int) -> np.ndarray:
        """(2 * layers, rows, units) zeros."""
        return np.zeros((2 * self.layers, rows, self.units), np.float32)


@dataclass(eq=False)
class Job:
    """One request: `samples` rows that share a prompt and settings.

    `emit(index, text)` is called from the worker thread for each sample's new text, and
    `finish(error)` once at the end (error None when done).
    """

    prompt: str
    length: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    samples: int
    emit: Callable[[int, str], None]
    finish: Callable[[str | None], None]
    cancelled: bool = False
    done: int = 0  # tokens sampled per row so far
    states: np.ndarray | None = None  # (2 * layers, samples, units) between calls
    feed: np.ndarray | None = None  # prompt ids still to read (the last block)
    decoders: list = field(init=False)  # per row: UTF-8 across calls (byte pieces)

    def __post_init__(self) -> None:
        utf8 = codecs.getincrementaldecoder("utf-8")
        self.decoders = [utf8(errors="replace") for _ in range(self.samples)]

    def text(self, row: int, data: bytes) -> str:
        """A row's new text: `data` decoded after what the row's earlier calls left partial."""
        return self.decoders[row].decode(data, final=self.done >= self.length)

    def cancel(self) -> None:
        """Stops the job at the next call boundary (e.g. its client left)."""
        self.cancelled = True


class Batcher:
    """Runs jobs on one worker thread, all active rows in each sampler call.

    Args:
        backend: The model.
        max_rows: Most rows (samples of all requests) in one call.
        chunk: Most tokens per call (a stream's granularity; joining waits at most one call).
        window: Seconds to wait for more requests when work arrives at an idle worker.
    """

    def __init__(
        self, backend: Backend, *, max_rows: int = 32, chunk: int = 64, window: float = 0.002
    ) -> None:
        self.backend, self.max_rows, self.window = backend, max_rows, window
        self.chunk = min(chunk, backend.block)
        self.waiting: list[Job] = []
        self.active: list[Job] = []
        self.calls = self.cancelled = self.completed = 0
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="textgen-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queues a job; it joins the next call that has room."""
        with self._wake:
            self.waiting.append(job)
            self._wake.notify()

    def stop(self) -> None:
        """Ends the worker thread after its current call."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def stats(self) -> dict:
        """Counters for /healthz."""
        rows = sum(j.samples for j in self.active)
        return {
            "active_rows": rows,
            "waiting_requests": len(self.waiting),
            "calls": self.calls,
            "completed_requests": self.completed,
            "cancelled_requests": self.cancelled,
        }

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self.waiting and not self.active:
                    self._wake.wait()
                if self._stop:
                    break
                idle = not self.active
            if idle and self.window > 0:
                time.sleep(self.window)  # let simultaneous requests share the first call
            try:
                self._step()
            except Exception as e:  # a failed call ends its jobs, never the server
                for job in self.active:
                    job.finish(f"sampling failed: {e.__class__.__name__}")
                self.active = []

    def _admit(self) -> list[Job]:
        """Moves waiting jobs that fit into the batch; reads their prompts' leading blocks."""
        with self._wake:
            room = self.max_rows - sum(j.samples for j in self.active)
            joining = []
            while self.waiting and self.waiting[0].samples <= room:
                job = self.waiting.pop(0)
                room -= job.samples
                if job.cancelled:
                    self.cancelled += 1
                    job.finish(None)
                else:
                    joining.append(job)
        if joining:
            ids = self.backend.encode([job.prompt for job in joining])
            for job, prompt_ids in zip(joining, ids, strict=True):
                job.states, job.feed = self._read_leading(job, prompt_ids)
        return joining

    def _read_leading(self, job: Job, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A prompt longer than a block: all but its last block, read alone; the rest to feed."""
        block, states = self.backend.block, self.backend.zero_states(1)  # (2L, 1, units)
        while len(ids) > block:
            _, out = self._call([ids[:block]], np.zeros(1, np.int32), states, 0, [job])
            states, ids = out.numpy(), ids[block:]
        return np.repeat(states, job.samples, axis=1), ids  # (2L, samples, units), (<= block,)

    def _step(self) -> None:
        """One sampler call for every active row; then emit and retire."""
        self.active = [j for j in self.active if not (j.cancelled and self._retire(j))]
        joining = self._admit()
        self.active += joining
        if not self.active:
            return
        jobs, feeds, feed_row = self.active, [], []
        for job in jobs:  # a joining job's rows read its prompt's last block in this call
            if job in joining and len(job.feed):
                feeds.append(job.feed)
            feed_row += [len(feeds) - 1 if job in joining and len(job.feed) else -1] * job.samples
        size = min(self.chunk, max(j.length - j.done for j in jobs))
        states = np.concatenate([j.states for j in jobs], axis=1)  # (2L, rows, units)
        tokens, states = self._call(feeds, np.array(feed_row, np.int32), states, size, jobs)
        tokens, states = tokens.numpy(), states.numpy()  # (rows, block), (2L, rows, units)
        offset = 0
        for job in jobs:
            rows = slice(offset, offset + job.samples)
            offset += job.samples
            job.states, job.feed = states[:, rows], job.feed[:0]
            take = min(size, job.length - job.done)
            job.done += take
            for i, row in enumerate(tokens[rows, :take]):
                job.emit(i, job.text(i, b"".join(self.backend.pieces[t] for t in row)))
        self.active = [j for j in jobs if not (j.done >= j.length and self._retire(j))]

    def _retire(self, job: Job) -> bool:
        """Ends a job (finished or cancelled); True, so that filters can drop it."""
        if job.cancelled:
            self.cancelled += 1
        else:
            self.completed += 1
        job.finish(None)
        return True

    def _call(self, feeds: list, feed_row: np.ndarray, states, size: int, jobs: list[Job]):
        """The sampler on these rows: (tokens (rows, block), states)."""
        block = self.backend.block
        feed = np.zeros((len(feeds), block), np.int32)  # (prompts, block)
        for k, ids in enumerate(feeds):
            feed[k, : len(ids)] = ids
        rows = [(j, i) for j in jobs for i in range(j.samples)] if size else [(jobs[0], 0)]

        def column(get, dtype):
            return np.array([get(j, i) for j, i in rows], dtype)  # (rows,)

        self.calls += 1
        return self.backend.module.sampler(
            feed,
            np.array([len(ids) for ids in feeds], np.int32),
            feed_row,
            states,
            np.int32(size),
            column(lambda j, i: j.done, np.int32),
            temperature=column(lambda j, i: j.temperature, np.float32),
            top_k=column(lambda j, i: min(j.top_k, len(self.backend.pieces)), np.int32),
            top_p=column(lambda j, i: j.top_p, np.float32),
            seed=column(lambda j, i: j.seed, np.int64),
            sample=column(lambda j, i: i, np.int32),
        )
