"""The batcher in-process, on a real exported model: a failing row fails only its request,
and a job whose client reads nothing is dropped with its row freed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from textgen.core.sampling_settings import SamplingSettings
from textgen.serving.batcher import Backend, Batcher, Job, JobError


class Client:
    """A job's texts and outcome, as a server's client would see them."""

    def __init__(self, prompt: str, settings: SamplingSettings, **job_args) -> None:
        self.texts: dict[int, str] = {}
        self.error: JobError | None = None
        self.ended = threading.Event()
        self.job = Job(prompt, settings, self._emit, self._finish, **job_args)

    def _emit(self, i: int, text: str) -> None:
        self.texts[i] = self.texts.get(i, "") + text

    def _finish(self, error: JobError | None) -> None:
        self.error = error
        self.ended.set()


@pytest.fixture(scope="module")
def backend(small_export: Path) -> Backend:
    return Backend.load(small_export)


def test_a_poison_row_fails_alone(backend: Backend) -> None:
    batcher = Batcher(backend, max_rows=32)
    try:
        normal = [Client("ab", SamplingSettings(length=120, seed=s)) for s in range(15)]
        # top_p 0 gets past no check (the dataclass is not checked): the compiled call fails.
        poison = Client("ab", SamplingSettings(length=120, top_p=0.0, seed=1))
        batcher.submit(*(c.job for c in normal[:7]), poison.job, *(c.job for c in normal[7:]))
        for client in [*normal, poison]:
            assert client.ended.wait(120)
        assert all(c.error is None and len(c.texts[0]) == 120 for c in normal)
        assert poison.error == JobError(500, "sampling failed: InvalidArgumentError")
        assert batcher.stats()["failed_requests"] == 1
        alone = Client("ab", SamplingSettings(length=120, seed=3))
        batcher.submit(alone.job)
        assert alone.ended.wait(60) and alone.texts == normal[3].texts  # same text as alone
    finally:
        batcher.stop()


def test_a_client_that_reads_nothing_is_dropped(backend: Backend) -> None:
    batcher = Batcher(backend, max_rows=2, stall_timeout=0.5)
    try:
        full = Client("ab", SamplingSettings(length=1_000_000, seed=1), paused=lambda: True)
        batcher.submit(full.job)
        assert full.ended.wait(30)
        assert full.error is not None and full.error.status == 503
        assert "read nothing" in full.error.message and not full.texts  # it never ran
        stats = batcher.stats()
        assert stats["dropped_requests"] == 1 and stats["active_rows"] == 0
    finally:
        batcher.stop()


def test_a_full_queue_refuses_and_a_deadline_ends_a_job(backend: Backend) -> None:
    from textgen.serving.batcher import Overloaded

    batcher = Batcher(backend, max_rows=1, max_queue=1)
    try:
        late = Client("ab", SamplingSettings(length=1_000_000, seed=1),
                      deadline=time.monotonic() + 1.0)  # fmt: skip
        batcher.submit(late.job)
        while batcher.stats()["active_rows"] == 0:  # it holds the only row
            time.sleep(0.01)
        waiting = Client("ab", SamplingSettings(length=5, seed=1))
        batcher.submit(waiting.job)
        with pytest.raises(Overloaded, match="1 requests are waiting"):
            batcher.submit(Client("ab", SamplingSettings(length=5)).job)
        assert late.ended.wait(30) and late.error.status == 503
        assert waiting.ended.wait(30) and waiting.error is None and len(waiting.texts[0]) == 5
    finally:
        batcher.stop()
