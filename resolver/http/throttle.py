"""Throttling credential guesses: 429 with Retry-After after repeated failures.

Failures are counted per (identity, client address) in moving windows kept by the ``limits``
library, in Redis when the node has one (so every worker and every node sharing that Redis and key
prefix sees the same count) and in this process otherwise. Level ``k`` (0-based) allows
``failures * 2**k`` failures within ``window * 4**k`` seconds: a client that keeps guessing is
slowed by half at every level (defaults: 10 in 5 min, 20 in 20 min, 40 in 80 min, 80 in 5h20,
160 in 21h20). While any level is full, every attempt for that identity from that address is
answered 429 *without checking the credential* (so a right guess cannot be told from a wrong
one), with ``Retry-After`` saying when the fullest level frees a slot. A success clears the counts.
Counting per address means the rightful holder elsewhere is never locked out by a guesser; IPv6
clients are counted per /64, the block one subscriber usually holds.

:meth:`GuessThrottle.guard` wraps any credential check (HTTP Basic, a Handle challenge answer, and
a console sign-in later): it counts :class:`~registry.errors.InvalidCredential` as a failure.

If Redis fails, counting falls back to this process (logged, at most once a minute) rather than
letting guesses through or refusing everyone.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from registry.errors import RC_SERVER_TOO_BUSY, HandleError, InvalidCredential

__all__ = ["GuessThrottle", "Networks", "TooManyFailures", "client_address"]

log = logging.getLogger("idnode.auth")
T = TypeVar("T")
_WARN_EVERY = 60.0


class TooManyFailures(HandleError):
    """Too many wrong credentials for this identity from this address: HTTP 429 with Retry-After
    (responseCode 3, "try again later")."""

    code = RC_SERVER_TOO_BUSY

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentication attempts; retry after {retry_after} s")
        self.retry_after = retry_after


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(remote: str | None, forwarded_for: str | None = None, proxies: Networks = ()) -> str:
    """The address failures (and anonymous sessions) are counted under: IPv4 as is, IPv6 by its /64.

    When the peer ``remote`` is one of the trusted ``proxies``, the client is the rightmost
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left were written
    by the client and prove nothing)."""
    if not remote:
        return "unknown"
    ip = _ip(remote)
    if ip is None:
        return remote[:64]
    if proxies and forwarded_for and any(ip in net for net in proxies):
        for hop in reversed(forwarded_for.split(",")[-16:]):
            hop_ip = _ip(hop)
            if hop_ip is None:
                break
            ip = hop_ip
            if not any(hop_ip in net for net in proxies):
                break
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _redis_storage(url: str, key_prefix: str, timeout: float) -> tuple[Storage, ConnectionPool | None]:
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    parts = urlsplit(url)
    if parts.scheme.endswith("+cluster"):
        plain = urlunsplit((parts.scheme.removesuffix("+cluster"), *parts[1:]))
        storage = RedisClusterStorage(
            "async+redis+cluster://" + plain.partition("://")[2],
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=key_prefix,
            **options,
        )
        return storage, None
    pool = ConnectionPool.from_url(url, **options)
    storage = RedisStorage(
        "async+redis://", wrap_exceptions=True, implementation="redispy", key_prefix=key_prefix, connection_pool=pool
    )
    return storage, pool


class GuessThrottle:
    """Counts failed credential checks per (subject, address); see the module docstring."""

    def __init__(
        self,
        failures: int = 10,
        window: int = 300,
        levels: int = 5,
        *,
        redis_url: str = "",
        key_prefix: str = "idnode:",
        timeout: float = 0.25,
    ) -> None:
        if failures < 1 or window < 1 or levels < 1:
            raise ValueError("failures, window and levels must be at least 1")
        self.levels = [RateLimitItemPerSecond(failures * 2**k, window * 4**k, namespace="AUTH") for k in range(levels)]
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._pool: ConnectionPool | None = None
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            storage, self._pool = _redis_storage(redis_url, f"{key_prefix}throttle", timeout)
            self._shared = MovingWindowRateLimiter(storage)
        self._warned = -math.inf

    @staticmethod
    def _key(subject: str, address: str) -> str:
        # Digest: no handle names or addresses in Redis keys, and no separator ambiguity.
        return hashlib.blake2b(f"{subject}\n{address}".encode(), digest_size=16).hexdigest()

    async def _each(self, call: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        if self._shared is not None:
            try:
                return await call(self._shared)
            except (TimeoutError, StorageError, RedisError, OSError) as exc:
                now = time.monotonic()
                if now - self._warned > _WARN_EVERY:
                    self._warned = now
                    log.warning("credential throttle: Redis failed (%s); counting in this process", type(exc).__name__)
        return await call(self._local)

    async def _levels(self, limiter: MovingWindowRateLimiter, call: Callable[[RateLimitItem], Awaitable[T]]) -> list[T]:
        """``call`` for every level: one after the other in process (each is a few µs; tasks would
        cost more), concurrently against Redis (one round trip for all)."""
        if limiter is self._local:
            return [await call(item) for item in self.levels]
        return list(await asyncio.gather(*(call(item) for item in self.levels)))

    async def check(self, subject: str, address: str) -> bool:
        """Raise TooManyFailures while a level is full; True when some failures are on record."""
        key = self._key(subject, address)

        async def stats(limiter: MovingWindowRateLimiter) -> list[Any]:
            return await self._levels(limiter, lambda item: limiter.get_window_stats(item, key))

        windows = await self._each(stats)
        now = time.time()
        full = [w.reset_time - now for w in windows if w.remaining <= 0]
        if full:
            raise TooManyFailures(max(1, math.ceil(max(full))))
        return any(w.remaining < item.amount for w, item in zip(windows, self.levels, strict=True))

    async def failed(self, subject: str, address: str) -> None:
        key = self._key(subject, address)

        async def hit(limiter: MovingWindowRateLimiter) -> None:
            await self._levels(limiter, lambda item: limiter.hit(item, key))

        await self._each(hit)

    async def succeeded(self, subject: str, address: str) -> None:
        key = self._key(subject, address)

        async def clear(limiter: MovingWindowRateLimiter) -> None:
            await self._levels(limiter, lambda item: limiter.clear(item, key))

        await self._each(clear)

    async def guard(self, subject: str, address: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run the credential check ``attempt`` unless ``subject`` is locked for ``address``;
        InvalidCredential from it counts as a failure, success clears the count."""
        had_failures = await self.check(subject, address)
        try:
            result = await attempt()
        except InvalidCredential:
            await self.failed(subject, address)
            raise
        if had_failures:
            await self.succeeded(subject, address)
        return result

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
        elif self._shared is not None:
            client = getattr(getattr(self._shared.storage, "bridge", None), "storage", None)
            if client is not None:
                await client.aclose()
