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


@pytest.fixture(scope="module")
def docs_backend(docs_export: Path) -> Backend:
    return Backend.load(docs_export)


def test_rows_stop_as_the_generators_and_leave_the_batch(docs_backend, docs_run) -> None:
    from textgen.generation.generate import Generator

    generator = Generator.from_run(docs_run)
    batcher = Batcher(docs_backend, max_rows=3, chunk=8)
    try:
        # Three rows that would take minutes each, stopped by a stop string (after a few
        # names, each row at its own place) and the end-of-text token.
        names = Client("", SamplingSettings(length=1_000_000, num_samples=3, seed=5),
                       stop=("Gus",), stop_at_end=False)  # fmt: skip
        one = Client("Ad", SamplingSettings(length=1_000_000, seed=2))  # stops at the end
        batcher.submit(names.job, one.job)  # `one` waits for rows that `names` frees
        assert names.ended.wait(120) and one.ended.wait(120)
        assert names.error is None and one.error is None
        expected = generator.samples("", 1_000_000, num_samples=3, seed=5, stop=["Gus"],
                                     stop_at_end=False)  # fmt: skip
        assert [names.texts.get(i, "") for i in range(3)] == [s.text for s in expected]
        assert names.job.stopped() == ["stop"] * 3
        assert names.job.tokens() == [s.tokens for s in expected]
        [alone] = generator.samples("Ad", 1_000_000, seed=2)
        assert (one.texts[0], one.job.stopped(), one.job.tokens()) == (
            alone.text, ["end"], [alone.tokens]
        )  # fmt: skip
        assert "\n" not in alone.text and batcher.stats()["active_rows"] == 0
    finally:
        batcher.stop()


def test_stop_strings_across_chunks_and_the_length_cap(docs_backend, docs_run) -> None:
    from textgen.generation.generate import Generator

    generator = Generator.from_run(docs_run)
    batcher = Batcher(docs_backend, max_rows=8, chunk=3)  # a stop string spans chunks
    try:
        asks = [(("Hana\nAda",), 300), (("zz",), 50), (("Cleo", "Cl"), 200)]
        clients = [Client("", SamplingSettings(length=n, num_samples=2, seed=7), stop=stop,
                          stop_at_end=False) for stop, n in asks]  # fmt: skip
        batcher.submit(*(c.job for c in clients))
        for client, (stop, length) in zip(clients, asks, strict=True):
            assert client.ended.wait(120) and client.error is None
            expected = generator.samples("", length, num_samples=2, seed=7, stop=list(stop),
                                         stop_at_end=False)  # fmt: skip
            assert [client.texts.get(i, "") for i in range(2)] == [s.text for s in expected]
            assert client.job.stopped() == [s.stopped for s in expected]
            assert client.job.tokens() == [s.tokens for s in expected]
        assert clients[1].job.stopped() == ["length"] * 2 and clients[0].job.stopped()[0] == "stop"
    finally:
        batcher.stop()
