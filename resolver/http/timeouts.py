"""Time limits on reading HTTP requests, which aiohttp does not have.

aiohttp closes a connection that sits idle between requests (``keepalive_timeout``, also counted from
the connection's opening), but it waits for ever on a request line and headers that arrive a byte at a
time, and on a body that stops arriving. :class:`TimedSite` is a ``TCPSite`` whose connections are
each wrapped in a small watchdog protocol that sees the bytes arrive and knows (from a wrapper around
the app's request handler) when a request's headers have been read and when it has been answered:

- **headers** (``http_header_timeout``): from the connection's opening, or from the first byte after
  the previous request was answered, the request line and headers must be complete within the limit;
  else the node writes ``408 Request Timeout`` and closes the connection.
- **body** (``http_body_timeout``): while a handler reads a body that has not all arrived, the time
  between two arrivals may not exceed the limit (as nginx's ``client_body_timeout``); else the
  connection is aborted. Time when the node itself has paused reading (it is busy with what it has)
  does not count.
- **idle keep-alive** (``http_keepalive_timeout``): aiohttp's own timer, set by the runner; so is
  the time aiohttp spends draining a body the app answered without reading (``lingering_time``,
  the body limit or 10 s, whichever is shorter).

A request pipelined behind another one only starts its header clock when the first one is answered
and more bytes arrive; until then aiohttp's keep-alive timer bounds it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from resolver.http.parser_errors import json_parse_errors

__all__ = ["HttpTimeouts", "TimedSite"]

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _Phase(enum.Enum):
    HEAD = "head"  # a request line and headers are due
    REQUEST = "request"  # the app has the request (reading its body, or answering)
    IDLE = "idle"  # answered; nothing has arrived since


class HttpTimeouts:
    """The limits, the connections being watched (by transport) and what was closed, for tests and
    metrics."""

    def __init__(self, header_timeout: float, body_timeout: float) -> None:
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.tick = max(0.05, min(1.0, body_timeout / 8))  # how often a body read is looked at
        self.watched: dict[Any, _Watched] = {}
        self.closed_in_headers = 0
        self.closed_in_body = 0

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        return lambda: _Watched(json_parse_errors(server()), self)  # and parse errors answered as JSON

    def wrap(self, handler: _Handler) -> _Handler:
        """The app's request handler, telling each connection's watchdog when a request starts and ends."""

        @functools.wraps(handler)
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            conn = self.watched.get(request.transport)
            if conn is None:
                return await handler(request)
            conn.begin(request)
            try:
                return await handler(request)
            finally:
                conn.end()

        return handle


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the header and body clocks around it."""

    def __init__(self, inner: asyncio.Protocol, limits: HttpTimeouts) -> None:
        self.inner = inner
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.phase = _Phase.HEAD
        self.request: web.BaseRequest | None = None
        self.deadline = 0.0  # of the headers
        self.last_data = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _timer fires

    # -- the transport's callbacks, passed on -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self.limits.watched[transport] = self
        self._expect_head(self._loop.time())
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._loop is not None
        self.last_data = self._loop.time()
        if self.phase is _Phase.IDLE:
            self._expect_head(self.last_data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.limits.watched.pop(self.transport, None)
        self.request = None
        self.inner.connection_lost(exc)

    # -- what the request handler wrapper reports ---------------------------------------------------
    def begin(self, request: web.BaseRequest) -> None:
        assert self._loop is not None
        self.phase, self.request = _Phase.REQUEST, request
        self.last_data = self._loop.time()
        if not request.content.is_eof():  # a body to watch (a GET has none: no timer to set)
            self._arm(self.last_data + self.limits.tick)

    def end(self) -> None:
        # The timer stays: when it fires, _check finds nothing due (or the next request's headers).
        self.phase, self.request = _Phase.IDLE, None

    # -- the clocks ---------------------------------------------------------------------------------
    def _expect_head(self, now: float) -> None:
        self.phase = _Phase.HEAD
        self.deadline = now + self.limits.header_timeout
        self._arm(self.deadline)

    def _arm(self, when: float) -> None:
        """Make sure :meth:`_check` runs by ``when``. A timer already due earlier is kept (the check
        then re-arms for what is due), so a keep-alive connection's requests set no timer each."""
        assert self._loop is not None
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._check)
        self._timer_at = when

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        transport, loop = self.transport, self._loop
        if transport is None or loop is None or transport.is_closing():
            return
        now = loop.time()
        if self.phase is _Phase.HEAD:
            if now < self.deadline:
                self._arm(self.deadline)
                return
            self.limits.closed_in_headers += 1
            transport.write(_REQUEST_TIMEOUT)
            transport.close()
        elif self.phase is _Phase.REQUEST and self.request is not None and not self.request.content.is_eof():
            if not transport.is_reading():  # paused by the node: its own slowness is not the client's
                self.last_data = now
            elif now - self.last_data >= self.limits.body_timeout:
                self.limits.closed_in_body += 1
                transport.abort()
                return
            self._arm(min(self.last_data + self.limits.body_timeout, now + self.limits.tick))


class TimedSite(web.TCPSite):
    """``web.TCPSite`` with :class:`HttpTimeouts` on every connection (see the module's docstring)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, timeouts: HttpTimeouts, **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.timeouts = timeouts

    async def start(self) -> None:
        await web.BaseSite.start(self)  # TCPSite.start, with the watchdog's protocol factory
        server = self._runner.server
        assert server is not None
        if not hasattr(server.request_handler, "__wrapped__"):
            server.request_handler = self.timeouts.wrap(server.request_handler)
        self._server = await asyncio.get_running_loop().create_server(
            self.timeouts.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
