"""The shared cache tier in Redis (standalone or Redis Cluster).

Key layout (``P`` is the configured key prefix):

- ``P h:<normalised handle>``: the packed record exactly as the store holds it (msgpack
  ``[FORMAT, version, handle, values]``, first byte 0x94), or ``-<v>``: "no such handle" as of
  store version ``v``, or ``~<v>``: a tombstone left by a write that committed at or before store
  version ``v``.

Every entry carries a version, and fills go through :data:`FILL_LUA`, which writes only what is
newer than what is there: a reader that loaded the old record before a writer committed cannot put
it back after the writer's tombstone (the cache-aside race). Writers set tombstones with
:data:`TOMBSTONE_LUA` (never lowering a version) rather than deleting.

Lookups arriving in the same event-loop tick share one MGET, and fills one pipeline
(:class:`TickBatcher`); the MGETs go on a pipelined connection of their own
(:mod:`resolver.cache.redis_pipe`) when the URL names a single server. Every command
runs under a short timeout and behind a :class:`~resolver.cache.breaker.CircuitBreaker`; failures surface
as :class:`RedisUnavailable` so the caller goes to the store instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from resolver.cache.breaker import CircuitBreaker
from resolver.cache.redis_pipe import ReadPipe, pipe_options
from resolver.ops import metrics

__all__ = [
    "FILL_LUA",
    "TOMBSTONE_LUA",
    "FillResult",
    "RedisTier",
    "RedisUnavailable",
    "TickBatcher",
    "negative_entry",
    "open_redis",
    "tombstone_entry",
]

log = logging.getLogger("idnode.cache")
T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
TOMBSTONE_CHUNK = 500  # keys per tombstone script call
BREAKER_GAUGE = {"closed": 0, "half-open": 1, "open": 2}  # idnode_redis_breaker_state

# Version of a cache entry: records carry it at byte 3 (after 0x94 and FORMAT), markers after the
# first character. Unreadable entries count as -1 (any fill replaces them).
_VERSION_LUA = """
local function num(s, i, n)
  local x = 0
  for j = i, i + n - 1 do x = x * 256 + string.byte(s, j) end
  return x
end
local function ver(v)
  local c = string.byte(v, 1)
  if c == 45 or c == 126 then return tonumber(string.sub(v, 2)) or -1 end
  if c ~= 148 or #v < 3 then return -1 end
  local b = string.byte(v, 3)
  if b < 128 then return b end
  if b == 204 then return num(v, 4, 1) end
  if b == 205 then return num(v, 4, 2) end
  if b == 206 then return num(v, 4, 4) end
  if b == 207 then return num(v, 4, 8) end
  return -1
end
"""

# KEYS[1] entry; ARGV value, version, ttl ms. Returns 1 written, 2 already cached at that version,
# 0 refused: the entry there is newer (or a tombstone newer than this fill).
FILL_LUA = (
    _VERSION_LUA
    + """
local v = tonumber(ARGV[2])
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = ver(cur)
  if string.byte(cur, 1) == 126 then
    if v < c then return 0 end
  elseif v < c then return 0
  elseif v == c then return 2 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
)

# KEYS entries; ARGV version, ttl ms. Sets '~<version>' unless the entry there is at least as new.
TOMBSTONE_LUA = (
    _VERSION_LUA
    + """
local t = tonumber(ARGV[1])
local n = 0
for _, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if (not cur) or ver(cur) < t then
    redis.call('SET', k, '~' .. ARGV[1], 'PX', ARGV[2])
    n = n + 1
  end
end
return n
"""
)


class RedisUnavailable(Exception):
    """Redis did not answer in time, failed, or the breaker is open: use the store."""


class FillResult:
    REFUSED, WRITTEN, PRESENT = 0, 1, 2


def negative_entry(version: int) -> bytes:
    return b"-%d" % version


def tombstone_entry(version: int) -> bytes:
    return b"~%d" % version


def _client_kwargs(timeout: float) -> dict[str, Any]:
    # Short socket timeouts and no retries inside redis-py: a dead Redis costs one fast failure,
    # the breaker does the rest.
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def _plain_url(url: str, host: str | None = None, port: int | None = None) -> str:
    """``redis+cluster://u:p@h:1/0`` → ``redis://u:p@h:1/0`` (optionally pointing at another node)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    netloc = parts.netloc
    if host is not None:
        auth = netloc.rpartition("@")[0]
        netloc = (auth + "@" if auth else "") + (f"[{host}]" if ":" in host else host) + f":{port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def open_redis(url: str, timeout: float) -> Redis | RedisCluster:
    """A client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URLs."""
    if is_cluster_url(url):
        # require_full_coverage off: keys on live shards keep working while one shard is away.
        return RedisCluster.from_url(_plain_url(url), require_full_coverage=False, **_client_kwargs(timeout))
    return Redis.from_url(url, **_client_kwargs(timeout))


def node_client(url: str, host: str, port: int, timeout: float) -> Redis:
    """A plain client on one cluster node (the node that carries the invalidation channel)."""
    return Redis.from_url(_plain_url(url, host, port), **_client_kwargs(timeout))


class _Batch(Generic[K, R]):
    __slots__ = ("flushed", "items", "slots", "waiters")

    def __init__(self) -> None:
        self.items: list[K] = []
        self.waiters: list[list[asyncio.Future[R]]] = []
        self.slots: dict[K, int] = {}
        self.flushed = False


class TickBatcher(Generic[K, R]):
    """Coalesce calls made in the same event-loop tick into one ``fetch(items)``.

    The first caller of a tick schedules the flush with ``loop.call_soon``; later callers add their
    items; one fetch answers all of them (``fetch`` returns one result per item, in order). With
    ``dedupe`` equal items share one slot. Each caller gets its own future, so a cancelled request
    never cancels its neighbours. A batch that reaches ``max_batch`` items is sent at once.
    """

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[list[R]]], *, max_batch: int = 1000, dedupe: bool = True
    ) -> None:
        self._fetch = fetch
        self.max_batch = max_batch
        self.dedupe = dedupe
        self._open: _Batch[K, R] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # fetches made (for status and tests)

    def submit(self, item: K) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            loop.call_soon(self._flush, batch)
        fut: asyncio.Future[R] = loop.create_future()
        slot = batch.slots.get(item) if self.dedupe else None
        if slot is None:
            if self.dedupe:
                batch.slots[item] = len(batch.items)
            batch.items.append(item)
            batch.waiters.append([fut])
            if len(batch.items) >= self.max_batch:
                self._flush(batch)
        else:
            batch.waiters[slot].append(fut)
        return fut

    def _flush(self, batch: _Batch[K, R]) -> None:
        if self._open is batch:
            self._open = None
        if batch.flushed:
            return
        batch.flushed = True
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch[K, R]) -> None:
        try:
            results = await self._fetch(batch.items)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RedisUnavailable("cancelled")
            for waiters in batch.waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for waiters, result in zip(batch.waiters, results, strict=True):
            for fut in waiters:
                if not fut.done():
                    fut.set_result(result)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class RedisTier:
    """Reads, conditional fills and tombstones against Redis, behind a breaker and a timeout."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        key_prefix: str,
        *,
        breaker: CircuitBreaker,
        timeout: float = 0.25,
        max_batch: int = 1000,
        url: str | None = None,
    ) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        # Reads on a pipelined connection of their own when ``url`` names a server it can reach
        # (resolver.cache.redis_pipe); otherwise, and on a cluster, through ``client``.
        self._pipe_options = pipe_options(url) if url is not None and not self.cluster else None
        self._pipe: ReadPipe | None = None
        self._pipe_lock = asyncio.Lock()
        self.key_prefix = key_prefix
        self._entry_prefix = f"{key_prefix}h:".encode()  # entry_key's, for the pipe's MGETs
        self.breaker = breaker
        self.timeout = timeout
        self.batcher: TickBatcher[str, bytes | None] = TickBatcher(self._mget, max_batch=max_batch)
        self.fills: TickBatcher[tuple[str, bytes, int, int], int] = TickBatcher(
            self._fill_many, max_batch=max_batch, dedupe=False
        )
        self._shas: dict[str, str] = {}
        self.errors = 0

    def entry_key(self, key: str) -> str:
        return f"{self.key_prefix}h:{key}"

    # -- guarded calls -------------------------------------------------------------------------
    async def call(self, make: Callable[[], Awaitable[T]], *, guarded: bool = True, operation: str = "other") -> T:
        """Run one Redis operation under the timeout; failures feed the breaker.

        ``guarded`` calls are refused at once unless the breaker is closed (probes pass False)."""
        if guarded and not self.breaker.allow():
            raise RedisUnavailable(f"breaker {self.breaker.state}")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await make()
        except (TimeoutError, RedisError, OSError) as exc:
            self.errors += 1
            metrics.REDIS_ERRORS.labels(operation).inc()
            timed_out = isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__
            if guarded:
                self.breaker.failure(timeout=timed_out)
            self.report_breaker()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from None
        metrics.REDIS_LATENCY.labels(operation).observe(time.perf_counter() - started)
        if guarded:
            self.breaker.success()
        return result

    def report_breaker(self) -> None:
        metrics.REDIS_BREAKER.set(BREAKER_GAUGE.get(self.breaker.state, 2))

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = self._shas.get(script)
        if sha is not None:
            try:
                return await self.client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[misc]
            except NoScriptError:
                pass
        # EVAL also caches the script on the node that ran it; remember its digest for EVALSHA.
        self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        return await self.client.eval(script, len(keys), *keys, *args)  # type: ignore[misc]

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        """The raw entry for ``key`` (record bytes, ``-v``, ``~v``) or None; coalesced into MGETs."""
        if not self.breaker.allow():
            raise RedisUnavailable(f"breaker {self.breaker.state}")
        return await self.batcher.submit(key)

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        if self._pipe_options is not None:
            prefix = self._entry_prefix
            encoded = [prefix + k.encode() for k in keys]
            return await self.call(lambda: self._pipe_mget(encoded), operation="mget")
        names = [self.entry_key(k) for k in keys]
        if self.cluster:
            return await self.call(lambda: self.client.mget_nonatomic(names), operation="mget")  # type: ignore[union-attr]
        return await self.call(lambda: self.client.mget(names), operation="mget")

    async def _pipe_mget(self, names: list[bytes]) -> list[bytes | None]:
        pipe = self._pipe
        if pipe is None or pipe.closed:
            async with self._pipe_lock:  # one connection, opened by the first read that needs it
                pipe = self._pipe
                if pipe is None or pipe.closed:
                    try:
                        if self._pipe_options is not None:  # (None: given up meanwhile)
                            self._pipe = pipe = await ReadPipe.open(self._pipe_options)
                    except ResponseError as exc:  # AUTH or SELECT refused: redis-py reads from now on
                        log.warning("cache: Redis refused the read connection (%s); reading through redis-py", exc)
                        self._pipe_options = None
                    if self._pipe_options is None:
                        return list(await self.client.mget([n.decode() for n in names]))
        try:
            return await pipe.mget(names)
        except asyncio.CancelledError:
            pipe.close()  # timed out: Redis may be hung; the next read opens a new connection
            raise

    # -- writes --------------------------------------------------------------------------------
    async def fill(self, key: str, value: bytes, version: int, ttl: float) -> int:
        """Store ``value`` unless Redis holds something newer; a :class:`FillResult` code. Fills of
        the same tick share one pipeline."""
        if not self.breaker.allow():
            raise RedisUnavailable(f"breaker {self.breaker.state}")
        return await self.fills.submit((self.entry_key(key), value, version, max(1, int(ttl * 1000))))

    async def _fill_many(self, fills: list[tuple[str, bytes, int, int]]) -> list[int]:
        async def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for name, value, version, ms in fills:
                pipe.eval(FILL_LUA, 1, name, value, version, ms)  # EVAL: no NOSCRIPT after a restart
            return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

        results = await self.call(run, operation="fill")
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            log.warning("cache: %d of %d Redis fills failed: %s", len(errors), len(fills), errors[0])
        return [FillResult.REFUSED if isinstance(r, Exception) else int(r) for r in results]

    async def tombstone(self, keys: Sequence[str], version: int, ttl: float, *, guarded: bool = True) -> None:
        """Mark ``keys`` as changed at or before store version ``version`` (never lowering one)."""
        ms = max(1, int(ttl * 1000))
        names = [self.entry_key(k) for k in keys]
        groups: list[list[str]] = []
        if self.cluster:
            by_slot: dict[int, list[str]] = {}
            for name in names:
                by_slot.setdefault(self.client.keyslot(name), []).append(name)  # type: ignore[union-attr]
            for group in by_slot.values():
                groups += [group[i : i + TOMBSTONE_CHUNK] for i in range(0, len(group), TOMBSTONE_CHUNK)]
        else:
            groups = [names[i : i + TOMBSTONE_CHUNK] for i in range(0, len(names), TOMBSTONE_CHUNK)]

        # Each call (at most 16 groups, 8,000 keys) gets the timeout of its own: a big batch write
        # is many calls, not one that could never finish in time.
        for i in range(0, len(groups), 16):
            part = groups[i : i + 16]
            await self.call(
                lambda part=part: asyncio.gather(*(self._eval(TOMBSTONE_LUA, g, [version, ms]) for g in part)),
                guarded=guarded,
                operation="tombstone",
            )

    async def purge(self) -> int:
        """Delete every entry under this node's key prefix (after lost invalidations). Unguarded."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.entry_key("")) + "*"
        removed = 0
        batch: list[str] = []
        async for name in self.client.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 500:
                removed += await self._unlink(batch)
                batch = []
        if batch:
            removed += await self._unlink(batch)
        return removed

    async def _unlink(self, names: list[Any]) -> int:
        if self.cluster:
            return sum([await self.client.unlink(n) for n in names])
        return int(await self.client.unlink(*names))

    async def ping(self) -> None:
        await self.call(self.client.ping, guarded=False, operation="ping")

    async def reset_connections(self) -> None:
        """Close idle pooled connections: after an outage they may still point at a dead server,
        and each would cost the breaker a failure on first use. The read pipe too: the next read
        opens a new one."""
        if self._pipe is not None:
            self._pipe.close()
        try:
            if self.cluster:
                for node in self.client.get_nodes():  # type: ignore[union-attr]
                    await node.disconnect_free_connections()
            else:
                await self.client.connection_pool.disconnect(inuse_connections=False)  # type: ignore[union-attr]
        except Exception as exc:  # closing a dead socket may complain; that is fine
            log.debug("cache: closing idle Redis connections: %s", exc)

    async def close(self) -> None:
        await self.batcher.close()
        self._pipe_options = None  # no read opens another pipe
        if self._pipe is not None:
            self._pipe.close()
        await self.fills.close()
        await self.client.aclose()
