"""Continuous batching for the server: every waiting request joins one compiled sampler call.

`Backend` (`backend.py`) is the model the server runs. `Batcher` owns one worker thread. Each
call of the sampler advances every active row (a sample of a request) by up to `chunk` tokens;
between calls, finished and cancelled rows leave and waiting requests join (their prompts read
in the same call), up to `max_rows` rows. Rows keep their own temperature, top-k, top-p, seed and
position, so a request's text does not depend on which others share its calls. A job's stop
strings and end-of-text token are watched chunk by chunk as `Generator` does (the same
`generation.stops.RowStops`); a row that stops leaves the batch before the next call.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from textgen.core.sampling_settings import SamplingSettings, seed_value
from textgen.generation.stops import RowStops
from textgen.serving.backend import Backend

_OUTCOMES = ("completed", "cancelled", "timed_out", "dropped", "failed", "refused")
_IDLE_POLL = 0.05  # seconds between looks while every active job sits out (slow readers)


class Overloaded(Exception):
    """The wait queue is full: the request is refused (HTTP 503 with Retry-After)."""


@dataclass(frozen=True)
class JobError:
    """Why a job ended early: an HTTP status and one line for its client."""

    status: int
    message: str


@dataclass(eq=False)
class Job:
    """One request: `settings.num_samples` rows that share a prompt and settings.

    `emit(index, text)` is called from the worker thread for each sample's new text, and
    `finish(error)` once at the end (error None when done, else a `JobError`). `paused()` says
    whether the client's buffer is full: the job then sits out calls (keeping its row) until
    it reads, or is dropped after the batcher's `stall_timeout`. `stop` and `stop_at_end`
    stop rows early (as `Generator.samples`); once done, `stopped()` and `tokens()` say how
    each sample ended.
    """

    prompt: str
    settings: SamplingSettings  # checked (`check_sampling`), with a seed
    emit: Callable[[int, str], None]
    finish: Callable[[JobError | None], None]
    deadline: float = math.inf  # time.monotonic() after which the job is ended (503)
    paused: Callable[[], bool] = lambda: False
    cancelled: bool = False
    stop: tuple[str, ...] = ()  # checked stop strings
    stop_at_end: bool | None = None  # None: stop at end-of-text if the model has it
    done: int = 0  # tokens sampled per row so far
    states: np.ndarray | None = None  # (2 * layers, live rows, units) between calls
    feed: np.ndarray | None = None  # prompt ids still to read
    paused_since: float | None = None  # when the job began sitting out, while it does
    decoders: list = field(init=False)  # per row: UTF-8 across calls (byte pieces)
    live: list[int] = field(init=False)  # the rows still going, in order
    stops: RowStops | None = None  # set when the job joins the batch

    def __post_init__(self) -> None:
        self.settings = self.settings.resolved()  # one seed for all of the job's calls
        utf8 = codecs.getincrementaldecoder("utf-8")
        self.decoders = [utf8(errors="replace") for _ in range(self.rows)]
        self.live = list(range(self.rows))

    def stopped(self) -> list[str]:
        """How each sample ended: `stop`, `end` or `length`."""
        reasons = self.stops.reasons if self.stops is not None else [None] * self.rows
        return [r or "length" for r in reasons]

    def tokens(self) -> list[int]:
        """Tokens each sample wrote (a stop string's or end-of-text token included)."""
        if self.stops is None or not self.stops.active:
            return [self.settings.length] * self.rows
        return list(self.stops.tokens)

    @property
    def rows(self) -> int:
        """Rows (samples) the job takes in a call."""
        return self.settings.num_samples

    def text(self, row: int, data: bytes) -> str:
        """A row's new text: `data` decoded after what the row's earlier calls left partial."""
        return self.decoders[row].decode(data, final=self.done >= self.settings.length)

    def cancel(self) -> None:
        """Stops the job at the next call boundary (e.g. its client left)."""
        self.cancelled = True


class Batcher:
    """Runs jobs on one worker thread, all ready rows in each sampler call.

    Args:
        backend: The model.
        max_rows: Most rows (samples of all requests) in one call.
        chunk: Most tokens per call (a stream's granularity; joining waits at most one call).
        window: Seconds to wait for more requests when work arrives at an idle worker.
        max_queue: Most requests waiting for room; `submit` raises `Overloaded` beyond it.
        stall_timeout: Seconds a job may sit out (its client reads nothing) before it is dropped.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_rows: int = 32,
        chunk: int = 64,
        window: float = 0.002,
        max_queue: int = 256,
        stall_timeout: float = 10.0,
    ) -> None:
        self.backend, self.max_rows, self.window = backend, max_rows, window
        self.max_queue, self.stall_timeout = max_queue, stall_timeout
        self.chunk = min(chunk, backend.block)
        self.waiting: list[Job] = []
        self.active: list[Job] = []
        self.counts = dict.fromkeys(_OUTCOMES, 0)
        self.calls = 0
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="textgen-batcher", daemon=True)
        self._thread.start()

    def submit(self, *jobs: Job) -> None:
        """Queues jobs (all or none); each joins the next call that has room.

        Raises:
            Overloaded: the wait queue has no room for them all.
        """
        with self._wake:
            if len(self.waiting) + len(jobs) > self.max_queue:
                self.counts["refused"] += len(jobs)
                raise Overloaded(f"{len(self.waiting)} requests are waiting (the most: "
                                 f"{self.max_queue})")  # fmt: skip
            self.waiting += jobs
            self._wake.notify()

    def queue_is_full(self) -> bool:
        """Whether the wait queue is full now (a request would be refused)."""
        return len(self.waiting) >= self.max_queue

    def full(self) -> bool:
        """Whether the wait queue is full now (a request would be refused); counts a refusal."""
        if not self.queue_is_full():
            return False
        self.counts["refused"] += 1
        return True

    def stop(self) -> None:
        """Ends the worker thread after its current call."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def stats(self) -> dict:
        """Counters for /healthz."""
        return {
            "active_rows": sum(len(j.live) for j in self.active),
            "waiting_requests": len(self.waiting),
            "calls": self.calls,
            **{f"{k}_requests": v for k, v in self.counts.items()},
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
            if not self._step() and self.active:
                with self._wake:  # every active job sits out: wait for a reader or a request
                    self._wake.wait(timeout=_IDLE_POLL)

    def _step(self) -> bool:
        """Retires, admits, warms long prompts up, samples; False when nothing could run."""
        now = time.monotonic()
        self.active = [j for j in self.active if not self._ends(j, now)]
        self.active += self._admit(now)
        warming = [j for j in self.active if len(j.feed) > self.backend.block]
        ready = [j for j in self.active if j not in warming and not self._sits_out(j, now)]
        if warming:  # a block of each long prompt; a chunk while others sample
            self._guarded(self._warm_up, warming, self.backend.block if not ready else self.chunk)
        if ready:
            self._guarded(self._sample, ready)
        return bool(warming or ready)

    def _ends(self, job: Job, now: float) -> bool:
        """Finishes a job that is done, cancelled, past its deadline or stalled too long."""
        if job.cancelled:
            return self._finish(job, "cancelled")
        if job.done >= job.settings.length or not job.live:
            return self._finish(job, "completed")
        if now > job.deadline:
            what = "the request ran past the server's --timeout; retry later or ask for less"
            return self._finish(job, "timed_out", JobError(503, what))
        if job.paused_since is not None and now - job.paused_since > self.stall_timeout:
            what = f"dropped: the client read nothing for {self.stall_timeout:g} s"
            return self._finish(job, "dropped", JobError(503, what))
        return False

    def _sits_out(self, job: Job, now: float) -> bool:
        """Whether the job's client buffer is full (then it is not sampled this call)."""
        if job.paused():
            job.paused_since = job.paused_since or now
            return True
        job.paused_since = None
        return False

    def _finish(self, job: Job, outcome: str, error: JobError | None = None) -> bool:
        """Ends a job and counts its outcome; True, so that filters can drop it."""
        self.counts[outcome] += 1
        job.finish(error)
        return True

    def _admit(self, now: float) -> list[Job]:
        """Moves waiting jobs that fit into the batch and encodes their prompts."""
        with self._wake:  # clients that left or ran out of time while waiting free the queue
            self.waiting = [j for j in self.waiting if not self._ends(j, now)]
            room = self.max_rows - sum(len(j.live) for j in self.active)
            joining = []
            while self.waiting and self.waiting[0].rows <= room:
                job = self.waiting.pop(0)
                room -= job.rows
                joining.append(job)
        if joining:
            try:
                ids = self.backend.encode([job.prompt for job in joining])
            except Exception as e:  # a prompt the graph tokenizer refuses fails its jobs only
                return self._encode_alone(joining, e)
            for job, prompt_ids in zip(joining, ids, strict=True):
                self._begin(job, prompt_ids)
        return joining

    def _begin(self, job: Job, ids: np.ndarray) -> None:
        """A joining job's zero states, prompt and stop state."""
        job.states, job.feed = self.backend.zero_states(job.rows), ids
        job.stops = self.backend.row_stops(job.rows, job.stop, job.stop_at_end)

    def _encode_alone(self, jobs: list[Job], error: Exception) -> list[Job]:
        """Encodes each job's prompt alone; the ones that fail are finished."""
        if len(jobs) == 1:
            self._fail(jobs[0], error)
            return []
        admitted = []
        for job in jobs:
            admitted += self._admit_encoded(job)
        return admitted

    def _admit_encoded(self, job: Job) -> list[Job]:
        try:
            [ids] = self.backend.encode([job.prompt])
        except Exception as e:
            self._fail(job, e)
            return []
        self._begin(job, ids)
        return [job]

    def _fail(self, job: Job, error: Exception) -> None:
        """Ends a job whose rows made a call fail (it leaves the batch)."""
        what = f"sampling failed: {error.__class__.__name__}"
        self._finish(job, "failed", JobError(500, what))
        if job in self.active:
            self.active.remove(job)

    def _guarded(self, run, jobs: list[Job], *args) -> None:
        """`run(jobs)`; if the call fails, each job again alone, so a bad row fails only its own."""
        try:
            run(jobs, *args)
        except Exception as e:  # TensorFlow raises many types; the server must go on
            if len(jobs) == 1:
                self._fail(jobs[0], e)
                return
            for job in jobs:
                self._guarded(run, [job], *args)

    def _warm_up(self, jobs: list[Job], tokens: int) -> None:
        """Reads the next `tokens` of each long prompt (all but its last block), in one call."""
        feeds = [j.feed[: min(tokens, len(j.feed) - self.backend.block)] for j in jobs]
        feed_row = np.repeat(np.arange(len(jobs), dtype=np.int32), [len(j.live) for j in jobs])
        states = np.concatenate([j.states for j in jobs], axis=1)  # (2L, rows, units)
        _, states = self._call(feeds, feed_row, states, 0, jobs)
        states = states.numpy()  # (2L, rows, units)
        offset = 0
        for job, fed in zip(jobs, feeds, strict=True):
            job.states, job.feed = states[:, offset : offset + len(job.live)], job.feed[len(fed) :]
            offset += len(job.live)

    def _sample(self, jobs: list[Job]) -> None:
        """One sampler call for these rows (new ones read the rest of their prompts); emits."""
        feeds, feed_row = [], []
        for job in jobs:
            if len(job.feed):
                feeds.append(job.feed)
            feed_row += [len(feeds) - 1 if len(job.feed) else -1] * len(job.live)
        size = min(self.chunk, max(j.settings.length - j.done for j in jobs))
        states = np.concatenate([j.states for j in jobs], axis=1)  # (2L, rows, units)
        tokens, states = self._call(feeds, np.array(feed_row, np.int32), states, size, jobs)
        tokens, states = tokens.numpy(), states.numpy()  # (rows, block), (2L, rows, units)
        offset = 0
        for job in jobs:
            rows = slice(offset, offset + len(job.live))
            offset += len(job.live)
            job.states, job.feed = states[:, rows], job.feed[:0]
            take = min(size, job.settings.length - job.done)
            job.done += take
            self._emit(job, tokens[rows, :take], job.done - take)

    def _emit(self, job: Job, tokens: np.ndarray, before: int) -> None:
        """Gives out the new text of a job's live rows, (live rows, size) tokens; with stops,
        cut as `Generator` cuts it, and the rows that stopped leave."""

        def decode(i: int, row: np.ndarray) -> str:
            return job.text(i, b"".join(self.backend.pieces[t] for t in row))

        if not job.stops.active:  # nothing to watch for: no cost
            for i, row in zip(job.live, tokens, strict=True):
                job.emit(i, decode(i, row))
            return
        every = np.zeros((job.rows, tokens.shape[1]), np.int32)  # (rows, size); stopped: unread
        every[job.live] = tokens
        texts = job.stops.step(every, before, decode)
        if job.done >= job.settings.length:  # the cap: what the scanners held back
            tails = job.stops.finish(job.settings.length, [""] * job.rows)
            texts = [text + tail for text, tail in zip(texts, tails, strict=True)]
        for i, text in enumerate(texts):
            if text:
                job.emit(i, text)
        going = [k for k, i in enumerate(job.live) if job.stops.reasons[i] is None]
        job.states, job.live = job.states[:, going], [job.live[k] for k in going]

    def _call(self, feeds: list, feed_row: np.ndarray, states, size: int, jobs: list[Job]):
        """The sampler on these jobs' rows: (tokens (rows, block), states)."""
        block = self.backend.block
        feed = np.zeros((len(feeds), block), np.int32)  # (prompts, block)
        for k, ids in enumerate(feeds):
            feed[k, : len(ids)] = ids
        rows = [(j.settings, j.done, i) for j in jobs for i in j.live]

        def column(get, dtype):
            return np.array([get(s, done, i) for s, done, i in rows], dtype)  # (rows,)

        self.calls += 1
        return self.backend.module.sampler(
            feed,
            np.array([len(ids) for ids in feeds], np.int32),
            feed_row,
            states,
            np.int32(size),
            column(lambda s, done, i: done, np.int32),
            temperature=column(lambda s, done, i: s.temperature, np.float32),
            top_k=column(lambda s, done, i: s.top_k, np.int32),
            top_p=column(lambda s, done, i: s.top_p, np.float32),
            seed=column(lambda s, done, i: seed_value(s.seed), np.int64),
            sample=column(lambda s, done, i: i, np.int32),
        )
