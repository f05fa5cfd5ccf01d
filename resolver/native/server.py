"""The native Handle protocol listeners of one worker: UDP and TCP on ``config.host``/``config.native_port``.

``start_native`` binds both (with SO_REUSEPORT when the node runs several workers, so they share the
port) and returns a :class:`NativeServer`; ``close()`` stops accepting, aborts open connections and
cancels the requests still being answered. ``start_native_or_warn`` is what :func:`resolver.server.node_app`
calls: when the port cannot be bound (in use, no permission) it logs a warning and the node runs
without the native protocol, so the HTTP API still starts.

TCP connections are capped in total (``native_tcp_max_connections``) and per client address
(``native_tcp_max_per_address``). A new connection is always admitted: at a cap, the connection that
has gone longest without progress (a complete request or a reply written) is closed for it, among
the same address's connections when that address is at its cap, else among all. So a client that
keeps asking keeps its connection, whoever else holds (or dribbles bytes into) idle ones; many
clients behind one NAT address each get served as long as they ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import weakref
from collections import OrderedDict
from typing import Any, ClassVar

from resolver.config import Config
from resolver.native.handler import NativeHandler, NativeStats
from resolver.native.limits import UdpBudget
from resolver.native.protocol import TcpNativeProtocol, UdpNativeProtocol
from resolver.ops.native_meter import NATIVE

__all__ = ["NativeServer", "start_native", "start_native_or_warn"]

log = logging.getLogger("idnode.native")

DEFAULT_MAX_INFLIGHT = 4096
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


class NativeServer:
    """The UDP endpoint and TCP server of one worker, and the TCP connections it holds open.

    ``connections`` holds the open TCP connections, the one idle longest first; ``NativeServer.running``
    holds the servers of this process that are open (weakly), so tests and metrics can find the one
    ``resolver.server.node_app`` started (``NativeServer.on_port(port)``)."""

    running: ClassVar[weakref.WeakSet[NativeServer]] = weakref.WeakSet()

    def __init__(self, handler: NativeHandler, *, max_connections: int = 1024, max_per_address: int = 64) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.connections: OrderedDict[TcpNativeProtocol, None] = OrderedDict()
        self._by_address: dict[str, OrderedDict[TcpNativeProtocol, None]] = {}
        self.udp_transport: asyncio.DatagramTransport | None = None
        self.udp_protocol: UdpNativeProtocol | None = None
        self.tcp_server: asyncio.Server | None = None
        self._closed = False

    @classmethod
    def on_port(cls, port: int) -> NativeServer | None:
        """The open server of this process listening on ``port`` (UDP), if any."""
        for server in list(cls.running):
            address = server.udp_address
            if address is not None and address[1] == port:
                return server
        return None

    @property
    def stats(self) -> NativeStats:
        return self.handler.stats

    @property
    def udp_address(self) -> Any:
        return self.udp_transport.get_extra_info("sockname") if self.udp_transport else None

    @property
    def tcp_addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.tcp_server.sockets] if self.tcp_server else []

    @property
    def inflight(self) -> int:
        """UDP requests being answered."""
        return len(self.udp_protocol.tasks) if self.udp_protocol else 0

    def _opened(self, conn: TcpNativeProtocol) -> bool:
        if self._closed:
            NATIVE.refused("closing")
            return False
        group = self._by_address.get(conn.address, ())
        if len(group) >= self.max_per_address:
            self._evict(next(iter(group)))
        elif len(self.connections) >= self.max_connections:
            self._evict(next(iter(self.connections)))
        self.connections[conn] = None
        self._by_address.setdefault(conn.address, OrderedDict())[conn] = None  # after _evict may drop it
        NATIVE.tcp_open += 1
        return True

    def _progressed(self, conn: TcpNativeProtocol) -> None:
        if conn in self.connections:
            self.connections.move_to_end(conn)
            self._by_address[conn.address].move_to_end(conn)

    def _evict(self, conn: TcpNativeProtocol) -> None:
        log.debug("native tcp: connection cap reached; closing the idlest connection, from %s", conn.peer)
        self.handler.stats.evicted += 1
        NATIVE.refused("cap")
        self._lost(conn)
        if conn.transport is not None:
            conn.transport.abort()

    def _lost(self, conn: TcpNativeProtocol) -> None:
        if conn in self.connections:  # evicted connections are gone already
            del self.connections[conn]
            NATIVE.tcp_open -= 1
            group = self._by_address[conn.address]
            del group[conn]
            if not group:
                del self._by_address[conn.address]

    async def close(self) -> None:
        """Stop accepting, abort open connections, cancel requests in progress. Idempotent."""
        if self._closed:
            return
        self._closed = True
        NativeServer.running.discard(self)
        if self.tcp_server is not None:
            self.tcp_server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        tasks = list(self.udp_protocol.tasks) if self.udp_protocol else []
        if self.udp_transport is not None:
            self.udp_transport.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.tcp_server is not None:
            await self.tcp_server.wait_closed()
        for _ in range(10):  # connection_lost callbacks run on the next loop iterations
            if not self.connections:
                break
            await asyncio.sleep(0)
        NATIVE.tcp_open -= len(self.connections)
        self.connections.clear()
        self._by_address.clear()
        NATIVE.flush()


async def start_native(
    handler: NativeHandler,
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    idle_timeout: float | None = None,
    max_connections: int | None = None,
    max_per_address: int | None = None,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
) -> NativeServer:
    """Bind UDP and TCP on ``config.host``/``config.native_port`` (or ``host``/``port``) and serve with
    ``handler``; limits not given come from ``config``. Port 0 picks a port free for both (tests).
    Raises OSError when either cannot be bound (nothing is left open then)."""
    host = config.host if host is None else host
    port = config.native_port if port is None else port
    server = NativeServer(
        handler,
        max_connections=config.native_tcp_max_connections if max_connections is None else max_connections,
        max_per_address=config.native_tcp_max_per_address if max_per_address is None else max_per_address,
    )
    idle = float(config.native_tcp_idle_timeout if idle_timeout is None else idle_timeout)
    for attempt in range(20 if port == 0 else 1):
        try:
            await _bind(server, host, port, config, idle, max_inflight)
            break
        except OSError as exc:
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == 19:
                raise
    NativeServer.running.add(server)
    return server


async def _bind(
    server: NativeServer, host: str, port: int, config: Config, idle_timeout: float, max_inflight: int
) -> None:
    loop = asyncio.get_running_loop()
    reuse = (config.workers > 1 and hasattr(socket, "SO_REUSEPORT")) or None
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpNativeProtocol(
            server.handler,
            max_inflight=max_inflight,
            max_reply=config.native_udp_max_reply,
            budget=UdpBudget(config.native_udp_budget),
        ),
        local_addr=(host, port),
        reuse_port=reuse,
    )
    sock = transport.get_extra_info("socket")
    if sock is not None:  # room for bursts of datagrams (the kernel caps it at net.core.rmem_max)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    if port == 0:  # the TCP side takes the port the UDP side was given
        port = transport.get_extra_info("sockname")[1]
    try:
        tcp = await loop.create_server(
            lambda: TcpNativeProtocol(
                server.handler,
                idle_timeout=idle_timeout,
                on_open=server._opened,
                on_progress=server._progressed,
                on_close=server._lost,
            ),
            host,
            port,
            reuse_port=reuse,
            backlog=1024,
        )
    except BaseException:
        transport.close()
        raise
    server.udp_transport, server.udp_protocol, server.tcp_server = transport, protocol, tcp


async def start_native_or_warn(handler: NativeHandler, config: Config) -> NativeServer | None:
    """``start_native``, or None (with a warning) when the port cannot be bound: the HTTP API runs on."""
    try:
        server = await start_native(handler, config)
    except OSError as exc:
        log.warning(
            "native Handle protocol not started: cannot bind %s port %d (%s); serving HTTP only",
            config.host,
            config.native_port,
            exc.strerror or exc,
        )
        return None
    log.info("native Handle protocol on %s port %d (UDP and TCP)", config.host, config.native_port)
    return server
