"""How long a client may take to send its request headers: uvicorn drops idle
keep-alive connections (`timeout_keep_alive`) but waits forever for headers that
trickle in a byte at a time. This protocol closes a connection whose request headers
have not all arrived `header_timeout` seconds after it opened (or after its previous
answer). The body's own time limit is the app's (`bot.api.bodies`).

When the server closes a connection whose client is still sending its body (a 408
for a body that trickles in, a 413 for one too large), closing the socket at once
would make the kernel answer the client's next bytes with a reset, and a reset can
destroy the answer before the client reads it. So such a close lingers, as nginx's
`lingering_close` does: the answer is flushed and the write side shut (the client sees
the answer and then end of stream), what still arrives is read and dropped, and the
socket is closed when the client closes or `LINGER_SECONDS` later, whichever is
first."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from bot.settings import Settings

LINGER_SECONDS = 5.0  # the most a closed connection still drains a client's bytes

_SENDING = (h11.SEND_BODY,)  # the client's request is still arriving


class _LingeringTransport:
    """The connection's transport, with `close` made lingering while the client is
    still sending (see the module's text); everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: HeaderTimeoutH11) -> None:
        self._transport = transport
        self._protocol = protocol
        self._lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._lingering or self._transport.is_closing():
            return
        if self._protocol.conn.their_state not in _SENDING or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._lingering = True
        self._transport.write_eof()  # after the buffered answer: the client reads it, then EOF
        self._protocol.loop.call_later(LINGER_SECONDS, self._transport.close)


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a time limit on the request headers."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _LingeringTransport(transport, self)  # type: ignore[assignment]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # a lingering close: the client's late bytes are read and dropped
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in: the app's body limit takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection gets the same limit

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutH11]:
    """The protocol class for uvicorn's `http=`, with this header time limit."""
    return type("ConveyorH11", (HeaderTimeoutH11,), {"header_timeout": seconds})


def connection_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn's keyword arguments that keep slow or idle clients from holding
    connections: a header time limit, the keep-alive timeout and a connection cap (503
    past it). The body time limit is the app's own."""
    server = settings.server
    return {
        "http": protocol_with_header_timeout(server.header_timeout_seconds),
        "timeout_keep_alive": server.keep_alive_seconds,
        "limit_concurrency": server.max_connections,
        "h11_max_incomplete_event_size": 64 * 1024,
    }
