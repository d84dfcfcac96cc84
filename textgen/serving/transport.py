"""uvicorn's HTTP/1.1 protocol with a deadline for request headers (slowloris clients).

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) but waits forever for the
headers of a request that arrive a byte at a time. `header_timeout_protocol` closes a
connection whose request headers are not complete `seconds` after its first byte (or after
the connection opened).
"""

from __future__ import annotations

import functools


@functools.cache
def header_timeout_protocol(seconds: float) -> type:
    """An `H11Protocol` subclass that closes connections slow to send their headers."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        """H11Protocol plus a headers deadline."""

        _header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
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

    return HeaderTimeoutProtocol
