"""uvicorn's HTTP/1.1 protocol with a deadline for request headers and small send buffers.

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) but waits forever for the
headers of a request that arrive a byte at a time. `hardened_protocol` closes a connection
whose request headers are not complete `seconds` after its first byte (or after the connection
opened). It also bounds what waits to be sent to a client: `SEND_BUFFER` bytes in the kernel
(no autotuning to megabytes) and as much in the event loop's transport, so a stream whose
client reads nothing blocks within about a thousand events and its job sits out
(`server.ClientStream`), instead of filling megabytes first.
"""

from __future__ import annotations

import functools
import socket

SEND_BUFFER = 16 * 1024  # bytes: ~150 stream events; text is made far slower than it is sent


@functools.cache
def hardened_protocol(seconds: float) -> type:
    """An `H11Protocol` subclass: a headers deadline of `seconds`, bounded send buffers."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HardenedProtocol(H11Protocol):
        """H11Protocol plus a headers deadline and bounded send buffers."""

        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            transport.set_write_buffer_limits(high=SEND_BUFFER)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            waiting = self.conn.their_state == h11.IDLE  # headers not complete yet
            if waiting and self._header_timer is None:
                self._arm()
            elif not waiting:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

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
