"""uvicorn's HTTP/1.1 protocol with a headers deadline, small send buffers and an admission gate.

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) but waits forever for the
headers of a request that arrive a byte at a time. `hardened_protocol` closes a connection
whose request headers are not complete `seconds` after its first byte (or after the connection
opened). It also bounds what waits to be sent to a client: `SEND_BUFFER` bytes in the kernel
(no autotuning to megabytes) and as much in the event loop's transport, so a stream whose
client reads nothing blocks within about a thousand events and its job sits out
(`server.ClientStream`), instead of filling megabytes first.

The admission gate refuses a burst cheaply. The app refuses a request when the batcher's wait
queue is full, but only once the request's task runs, after every earlier request of the burst
has been parsed, routed and queued: under 1,000 simultaneous clients the refusals waited ~0.6 s
(docs/benchmarks.md). The gate counts generation requests (POST) in flight, from their first
bytes to their response's end; while `limit` of them (the queue plus the rows of one call) are
in flight, or the app's queue is full, it answers a new POST that arrived whole with the same
kind of 503 the app gives, before h11 or the app see it. A POST that arrives in pieces still
gets the app's 503.
"""

from __future__ import annotations

import functools
import json
import re
import socket
from collections.abc import Callable

SEND_BUFFER = 16 * 1024  # bytes: ~150 stream events; text is made far slower than it is sent
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,9})[ \t]*\r\n", re.IGNORECASE)


class AdmissionGate:
    """Generation requests in flight on one server, refused beyond `limit`.

    Args:
        limit: Most POST requests in flight at once (the wait queue plus the rows of a call).
        retry_after: Seconds a refused client is told to wait.
    """

    def __init__(self, limit: int, *, retry_after: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0  # reported by /healthz beside the app's own refusals
        self.queue_full: Callable[[], bool] = lambda: False  # set by the app (server.create_app)
        message = (f"the server is busy: its {limit} places (queue and batch) are taken; "
                   f"retry after {retry_after} s")  # fmt: skip
        body = json.dumps({"error": message}, separators=(",", ":")).encode()
        self.refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nretry-after: %d\r\nconnection: close\r\n\r\n%s"
            % (len(body), retry_after, body)
        )

    def admits(self, data: bytes) -> bool:
        """Whether a request that starts with `data` may go on (False: refuse it now)."""
        busy = self.in_flight >= self.limit or self.queue_full()
        return not busy or not _arrived_whole(data)


def yield_before_posts(app):
    """The ASGI `app`, its POST requests started one event-loop pass later.

    A burst's admitted requests are parsed in the pass that reads them, and their tasks (routing,
    JSON, checks, queueing: ~1 ms each) would all run in the next pass before the loop polls its
    sockets again, so the burst's later requests, which the gate refuses in microseconds, waited
    for them. Yielding once lets that poll, and the refusals, come first.
    """
    import asyncio

    async def yielding(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            await asyncio.sleep(0)  # one pass of the loop: newly readable sockets first
        await app(scope, receive, send)

    return yielding


def _arrived_whole(data: bytes) -> bool:
    """Whether `data` is a whole request with a Content-Length body (safe to answer and close)."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = _CONTENT_LENGTH.search(data, 0, head_end + 2)
    return length is not None and len(data) >= head_end + 4 + int(length.group(1))


@functools.cache
def hardened_protocol(seconds: float, gate: AdmissionGate | None = None) -> type:
    """An `H11Protocol` subclass: a headers deadline of `seconds`, bounded send buffers and,
    when given, the admission `gate`."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HardenedProtocol(H11Protocol):
        """H11Protocol plus a headers deadline, bounded send buffers and an admission gate."""

        _header_timer = None
        _holds_slot = False  # this connection's request counts in gate.in_flight

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            transport.set_write_buffer_limits(high=SEND_BUFFER)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if gate is not None and data.startswith(b"POST ") and self._between_requests():
                if not gate.admits(data):
                    gate.refused += 1
                    self.transport.write(gate.refusal)
                    self.transport.close()
                    return
                self._release()  # a keep-alive connection's earlier request
                gate.in_flight += 1
                self._holds_slot = True
            super().data_received(data)
            waiting = self.conn.their_state == h11.IDLE  # headers not complete yet
            if waiting and self._header_timer is None:
                self._arm()
            elif not waiting:
                self._disarm()

        def on_response_complete(self) -> None:
            self._release()
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._release()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            """No request of this connection is being read or answered."""
            idle = self.conn.their_state == h11.IDLE and not self.conn.trailing_data[0]
            return idle and (self.cycle is None or self.cycle.response_complete)

        def _release(self) -> None:
            if self._holds_slot:
                self._holds_slot = False
                gate.in_flight -= 1

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state == h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HardenedProtocol
