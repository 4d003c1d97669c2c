"""uvicorn's HTTP/1.1 protocol with a deadline on request headers (slowloris).

uvicorn times out an idle keep-alive connection, but not one that connects and sends nothing, nor
one that dribbles its request line and headers a byte at a time: either holds a connection (and a
file descriptor) for as long as the client likes. Here every request's headers must be complete
within STRATA_HEADER_TIMEOUT_S of the connection opening or of the request's first byte; past it
the client gets 408 and the connection is closed. The size of the headers is bounded by uvicorn
itself (``--h11-max-incomplete-event-size``, from STRATA_MAX_HEADER_BYTES). Body timeouts are the
application's (api/limits.py), where a route's own limits live.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.config import get_settings


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = get_settings().header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # a request has begun (or the connection waits for one): its headers are due
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timeout for the idle connection
        self._disarm()

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.conn.our_state is h11.IDLE:
            body = f"request headers not received within {self.header_timeout_s:g} s (STRATA_HEADER_TIMEOUT_S)"
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(body), body.encode()))
        self.transport.close()
