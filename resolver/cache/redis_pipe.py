"""The Redis tier's reads on one pipelined connection of their own.

A Redis hit is most of what a resolve costs when the node keeps no local tier, and redis-py's
asyncio client spends ~90 µs of CPU on an MGET of eleven keys (connection pool, retry wrapper,
command packing in Python) where writing the command and parsing the reply with hiredis costs
~37 µs, most of it the two system calls. :class:`ReadPipe` sends the tier's MGETs (and only those)
on one connection, without waiting for earlier replies (Redis answers a connection's commands in
order, so a FIFO of futures pairs them), and parses replies with hiredis, redis-py's own parser.

It understands the URLs redis-py does for a single server: ``redis://`` and ``unix://`` with
username, password and database, and ``rediss://`` with the certificate options ``ssl_cert_reqs``
and ``ssl_ca_certs``. For anything else (a cluster, other TLS options, a CA file it cannot load)
:func:`pipe_options` says None and the tier reads through redis-py as before; so it does once
Redis refuses the pipe's ``AUTH`` or ``SELECT`` (a server older than Redis 6 given a username).
Errors surface as redis-py's exceptions (``ConnectionError``, ``ResponseError``), so
:meth:`RedisTier.call` treats them alike: timeout, breaker, metrics. A connection that fails or
times out is dropped and the next read opens a new one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["PipeOptions", "ReadPipe", "pipe_options"]

_SSL_QUERY = {"ssl_cert_reqs", "ssl_ca_certs"}
_KNOWN_QUERY = _SSL_QUERY | {"db", "socket_timeout", "socket_connect_timeout", "health_check_interval"}


@dataclass(frozen=True)
class PipeOptions:
    host: str | None = None
    port: int = 6379
    path: str | None = None  # a Unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


def pipe_options(url: str) -> PipeOptions | None:
    """How to reach the single server of ``url``, or None when the pipe cannot (read through redis-py)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return None
    if set(parse_qs(parts.query)) - _KNOWN_QUERY:
        return None
    try:
        kw: dict[str, Any] = parse_url(url)
    except ValueError:
        return None
    tls = None
    if parts.scheme == "rediss":
        try:
            tls = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
        except (OSError, ssl.SSLError, ValueError):  # a CA file that is not there: redis-py says so
            return None
        if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        elif kw.get("ssl_cert_reqs") not in (None, "required", ssl.CERT_REQUIRED):
            return None
    return PipeOptions(
        host=kw.get("host", "localhost") if parts.scheme != "unix" else None,
        port=int(kw.get("port", 6379)),
        path=kw.get("path"),
        db=int(kw.get("db") or 0),
        username=kw.get("username"),
        password=kw.get("password"),
        tls=tls,
    )


def _command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class ReadPipe(asyncio.Protocol):
    """One connection; :meth:`mget` may be called again before earlier calls are answered."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    @classmethod
    async def open(cls, options: PipeOptions) -> ReadPipe:
        """Connect and authenticate (the caller bounds the time)."""
        loop = asyncio.get_running_loop()
        pipe = cls()
        if options.path is not None:
            await loop.create_unix_connection(lambda: pipe, options.path)
        else:
            host = options.host
            await loop.create_connection(
                lambda: pipe, host, options.port, ssl=options.tls, server_hostname=host if options.tls else None
            )
        try:
            if options.password is not None:
                who = (options.username.encode(),) if options.username else ()
                await pipe._send(_command(b"AUTH", *who, options.password.encode()))
            if options.db:
                await pipe._send(_command(b"SELECT", str(options.db).encode()))
        except BaseException:
            pipe.close()
            raise
        return pipe

    def mget(self, names: list[bytes]) -> asyncio.Future[list[bytes | None]]:
        """The values of ``names`` (None for a missing key), in order."""
        out = [b"*%d\r\n$4\r\nMGET\r\n" % (len(names) + 1)]
        for name in names:
            out.append(b"$%d\r\n%s\r\n" % (len(name), name))
        return self._send(b"".join(out))

    def _send(self, command: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed or self._transport is None:
            fut.set_exception(RedisConnectionError("the read connection to Redis is closed"))
            return fut
        self._transport.write(command)
        self._waiting.append(fut)
        return fut

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                fut = waiting.popleft()
                if fut.done():  # its caller gave up (a timeout): the pipe is being closed anyway
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(ResponseError(str(reply)))
                else:
                    fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # not Redis speaking, or a reply nobody asked for
            self._fail(RedisConnectionError(f"unexpected data from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc}" if exc else "Redis closed the connection"))

    def _fail(self, error: Exception) -> None:
        self.close()
        waiting, self._waiting = self._waiting, deque()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
