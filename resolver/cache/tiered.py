"""The tiered read cache: local LRU ─► Redis ─► store, with correct invalidation.

:class:`TieredCache` implements the Resolver's ``CacheTier`` protocol (``lookup(key, load)``, ``cached(key)``) and
subscribes to the write service's events (``on_commit``: ``invalidate`` of the changed keys).

Correctness rules, in one place:

- *Local fills carry a ticket* taken when the lookup started. An invalidation of that key (or a
  whole-tier drop) after the ticket refuses the fill, so a reader that fetched the old record
  before a write cannot put it in the local tier after the write's invalidation.
- *Concurrent misses of one key share one store load*; an invalidation detaches the key's load, so
  a lookup that starts after a write never joins a load that started before it.
- *Redis fills are conditional on versions* (see :mod:`resolver.cache.redis_tier`): records carry their
  version, negative entries the store's ``current_version()`` read before the load, writers leave
  version tombstones; the local tier is only filled from a load if Redis accepted it (or Redis is
  not in use).
- *The local tier is used only while the invalidation subscription is up* (always, without Redis and
  without other workers; with other workers and no Redis, while connected to the supervisor's worker
  hub, :mod:`resolver.cache.worker_hub`, and with its stale flag checked before every local read);
  it is dropped whole whenever the subscription is (re)established.
- *Degraded, never down*: any Redis failure sends the lookup to the store; the breaker keeps a dead
  Redis from costing every request a timeout. Store failures propagate (the caller answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.model import Record
from registry.packing import PackError
from resolver.cache.breaker import CircuitBreaker
from resolver.cache.decoded import DecodedRecords
from resolver.cache.invalidation import InvalidationBus
from resolver.cache.local_tier import MISS, NEGATIVE, LocalTier, _Marker
from resolver.cache.redis_tier import FillResult, RedisTier, RedisUnavailable, negative_entry, open_redis
from resolver.cache.worker_bus import WorkerBus
from resolver.cache.worker_hub import HUB_ENV
from resolver.ops import metrics

if TYPE_CHECKING:
    from registry.stores.base import HandleStore
    from registry.write_events import Commit
    from resolver.config import Config

__all__ = ["CacheStats", "TieredCache", "build_cache", "record_ttl"]

log = logging.getLogger("idnode.cache")
Loader = Callable[[str], Awaitable[bytes | None]]
RECENT_MAX = 65_536  # invalidated keys remembered for refusing late local fills
TOMBSTONE_TTL = 10.0  # seconds a write's tombstone outlives it in Redis
SLOW_LOAD = TOMBSTONE_TTL / 2  # a load slower than this never fills Redis (its tombstone may be gone)


# Counters bound once: the hot path only increments.
_COUNT = {
    (tier, result): metrics.CACHE_REQUESTS.labels(tier, result)
    for tier in ("local", "redis")
    for result in ("hit", "negative", "miss")
}


def record_ttl(record: Record, wall_now: float) -> float:
    """Seconds a cache may keep ``record``: the shortest relative TTL of its values, also bounded
    by any absolute expiry."""
    ttl = float(record.max_ttl)
    for v in record.values:
        if v.ttl_absolute:
            ttl = min(ttl, v.ttl - wall_now)
    return ttl


@dataclass
class CacheStats:
    local_hits: int = 0
    redis_hits: int = 0
    negative_hits: int = 0
    store_loads: int = 0
    redis_errors: int = 0
    fills_refused: int = 0
    local_drops: int = 0  # whole-tier drops (subscription re-established)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Flight:
    ticket: int
    task: asyncio.Task[bytes | None] | None = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared load's failure as seen even when every waiter went away."""
    if not task.cancelled():
        task.exception()


class TieredCache:
    def __init__(
        self,
        *,
        local: LocalTier | None = None,
        redis: RedisTier | None = None,
        current_version: Callable[[], Awaitable[int]] | None = None,
        redis_url: str = "",
        max_staleness: float = 60.0,
        negative_ttl: float = 5.0,
        redis_max_ttl: float = 3600.0,
        ack_wait: float = 1.0,
        tombstone_ttl: float = TOMBSTONE_TTL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        node_id: str | None = None,
        records: DecodedRecords | None = None,
        peers: str | None = None,
    ) -> None:
        if redis is not None and current_version is None:
            raise ValueError("a Redis tier needs the store's current_version")
        self.local = local
        self.redis = redis
        self.max_staleness = max_staleness
        self.negative_ttl = negative_ttl
        self.redis_max_ttl = redis_max_ttl
        self.tombstone_ttl = tombstone_ttl
        self.clock = clock
        self.wall = wall
        self.stats = CacheStats()
        # Packed bytes to records, shared with the Resolver (``records``): the version and TTL a
        # fill needs come from the record the Resolver then serves, unpacked once.
        self.records = records if records is not None else DecodedRecords()
        self._current_version = current_version
        self._flights: dict[str, _Flight] = {}
        self._version_read: asyncio.Future[int] | None = None
        self._seq = 0  # bumped by every invalidation
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._floor = 0  # tickets below this cannot be checked any more: refuse their fills
        self.bus: InvalidationBus | None = None
        # Without Redis the only writers are in this process (listener calls), or in the other workers
        # of this node (``peers``: their hub's address), whose invalidations arrive once connected.
        self._local_usable = local is not None and redis is None and peers is None
        self.peers: WorkerBus | None = None
        if peers is not None and local is not None and redis is None:
            self.peers = WorkerBus(
                peers,
                on_keys=self._remote_keys,
                on_connected=self._subscribed,
                on_disconnected=self._unsubscribed,
                ack_wait=ack_wait,
            )
        if redis is not None:
            assert current_version is not None
            self.bus = InvalidationBus(
                redis,
                redis_url,
                on_keys=self._remote_keys,
                on_connected=self._subscribed,
                on_disconnected=self._unsubscribed,
                current_version=current_version,
                tombstone_ttl=tombstone_ttl,
                ack_wait=ack_wait,
                node_id=node_id,
            )

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, wait: float = 2.0) -> None:
        if self.bus is not None:
            await self.bus.start(wait)
        if self.peers is not None:
            await self.peers.start(wait)

    async def close(self) -> None:
        flights = [f.task for f in self._flights.values() if f.task is not None]
        for task in flights:
            task.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        if self.bus is not None:
            await self.bus.close()
        if self.peers is not None:
            await self.peers.close()
        if self.redis is not None:
            await self.redis.close()

    # -- the read path -------------------------------------------------------------------------
    def _readable(self) -> LocalTier | None:
        """The local tier, if it may be read now (a stale flag from the worker hub drops it whole)."""
        if not self._local_usable:
            return None
        peers = self.peers
        if peers is not None and peers.stale():
            self.drop_local(None)
        return self.local

    async def lookup(self, key: str, load: Loader) -> bytes | None:
        local = self._readable()
        if local is not None:
            hit = local.get(key, self.clock())
            if hit is not MISS:
                self.stats.local_hits += 1
                if hit is NEGATIVE:
                    self.stats.negative_hits += 1
                    _COUNT["local", "negative"].inc()
                    return None
                _COUNT["local", "hit"].inc()
                return hit  # type: ignore[return-value]
            _COUNT["local", "miss"].inc()
        ticket = self._seq
        redis = self.redis
        use_redis = redis is not None and redis.breaker.allow()
        if use_redis:
            assert redis is not None
            try:
                raw = await redis.get(key)
            except RedisUnavailable:
                self.stats.redis_errors += 1
                use_redis = False
            else:
                if raw is not None:
                    first = raw[:1]
                    if first == b"-":
                        self.stats.redis_hits += 1
                        self.stats.negative_hits += 1
                        _COUNT["redis", "negative"].inc()
                        self._fill_local(key, NEGATIVE, self.negative_ttl, ticket)
                        return None
                    if first != b"~":  # a tombstone is a miss
                        try:
                            record = self.records.decode(raw)
                        except PackError:  # not a record (another program's key?): read the store
                            log.debug("cache: redis entry of %s is not a packed record", key)
                        else:
                            self.stats.redis_hits += 1
                            _COUNT["redis", "hit"].inc()
                            if self._local_usable:
                                self._fill_local(key, raw, record_ttl(record, self.wall()), ticket)
                            return raw
                _COUNT["redis", "miss"].inc()
        return await self._load(key, load, use_redis)

    def cached(self, key: str) -> bytes | _Marker | None:
        """The local tier's answer without awaiting (the native listeners answer hits in their
        receive callback): the packed record, None for a cached "no such handle", or :data:`MISS`
        (then ``lookup``, which counts the miss). A hit is counted in ``stats``; the caller counts it
        in ``idnode_cache_requests_total`` (the native listeners do, in bulk: one counter increment
        is a tenth of what such a reply costs)."""
        local = self._readable()
        if local is None:
            return MISS
        hit = local.get(key, self.clock())
        if hit is MISS:
            return MISS
        self.stats.local_hits += 1
        if hit is NEGATIVE:
            self.stats.negative_hits += 1
            return None
        return hit

    def local_packed(self, key: str) -> bytes | None:
        """The packed record the local tier would answer ``key`` with now (None: it would not), for
        rendering a reply once (:mod:`resolver.http.hot_path`); nothing is counted."""
        local = self._readable()
        if local is None:
            return None
        hit = local.get(key, self.clock())
        return hit if isinstance(hit, bytes) else None

    def local_hit(self, key: str, packed: bytes) -> bool:
        """A local-tier hit on ``key`` if it still holds ``packed`` (the record a ready reply was
        rendered from), counted in :attr:`stats`; the caller counts it in ``idnode_cache_requests_total``
        (:mod:`resolver.ops.rest_meter`, in bulk). False: the reply is stale, or the tier is not in use."""
        if not self._local_usable:  # (_readable and LocalTier.holds, inlined: the native hot path's)
            return False
        peers = self.peers
        if peers is not None and peers.stale():
            self.drop_local(None)
            return False
        local = self.local
        assert local is not None
        if not local.holds(key, packed, self.clock()):
            return False
        self.stats.local_hits += 1
        return True

    async def _load(self, key: str, load: Loader, use_redis: bool) -> bytes | None:
        """One store load per key at a time; later misses of the key wait for it."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(ticket=self._seq)
            self._flights[key] = flight
            flight.task = asyncio.get_running_loop().create_task(self._fly(key, load, use_redis, flight))
            flight.task.add_done_callback(_retrieve)
        assert flight.task is not None
        return await asyncio.shield(flight.task)

    async def _fly(self, key: str, load: Loader, use_redis: bool, flight: _Flight) -> bytes | None:
        try:
            started = self.clock()
            floor = 0
            if use_redis:
                assert self._current_version is not None
                floor = await self._version_floor()  # read *before* the load: see negative entries
            packed = await load(key)
            self.stats.store_loads += 1
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
        record: Record | None = None
        if packed is not None:
            try:
                record = self.records.decode(packed)
            except PackError:  # not cacheable; the Resolver's own decode reports it
                return packed
        accepted = True
        if use_redis and self.clock() - started < SLOW_LOAD:
            accepted = await self._fill_redis(key, packed, record, floor)
        if accepted:
            if packed is None:
                self._fill_local(key, NEGATIVE, self.negative_ttl, flight.ticket)
            elif self._local_usable:
                assert record is not None
                self._fill_local(key, packed, record_ttl(record, self.wall()), flight.ticket)
        return packed

    async def _version_floor(self) -> int:
        """The store's current version, one query for all misses that need it at the same time.

        Joining a query already running is sound: its answer was read before this load begins, and
        a floor read earlier is only more cautious."""
        read = self._version_read
        if read is None:
            assert self._current_version is not None
            read = self._version_read = asyncio.ensure_future(self._current_version())
            read.add_done_callback(self._version_done)
        return await asyncio.shield(read)

    def _version_done(self, read: asyncio.Future[int]) -> None:
        if self._version_read is read:
            self._version_read = None
        if not read.cancelled():
            read.exception()

    async def _fill_redis(self, key: str, packed: bytes | None, record: Record | None, floor: int) -> bool:
        """Offer the loaded state (``record``, decoded from ``packed``) to Redis; False when Redis
        holds something newer."""
        redis = self.redis
        assert redis is not None
        if packed is None or record is None:  # no such handle: a negative entry
            value, version, ttl = negative_entry(floor), floor, min(self.negative_ttl, self.redis_max_ttl)
            if ttl <= 0:
                return True
        else:
            version = record.version
            value, ttl = packed, min(record_ttl(record, self.wall()), self.redis_max_ttl)
            if ttl <= 0:
                return True  # not cacheable; nothing to refuse
        try:
            result = await redis.fill(key, value, version, ttl)
        except RedisUnavailable:
            self.stats.redis_errors += 1
            return True  # the local tier's tickets still guard it
        if result == FillResult.REFUSED:
            self.stats.fills_refused += 1
            return False
        return True

    def _fill_local(self, key: str, value: Any, ttl: float, ticket: int) -> None:
        local = self.local
        if local is None or not self._local_usable or ttl <= 0:
            return
        if ticket != self._seq:
            if ticket < self._floor:
                return
            seen = self._recent.get(key)
            if seen is not None and seen > ticket:
                return
        local.put(key, value, min(ttl, self.max_staleness), self.clock())

    # -- invalidation --------------------------------------------------------------------------
    def ticket(self) -> int:
        return self._seq

    def drop_local(self, keys: Sequence[str] | None) -> None:
        """Forget ``keys`` here (None: everything): local entries, shared loads, pending fills.

        In bulk (a batch's commit is 100,000 keys, mostly of new handles that no tier holds): only
        the keys held are touched, and ``keys`` as long as :data:`RECENT_MAX` raise the floor to this
        invalidation instead of being remembered one by one (the same refusals: every ticket taken
        before it is refused, which is what remembering them all would end in)."""
        self._seq += 1
        seq = self._seq
        if keys is None:
            if self.local is not None:
                self.local.clear()
            self._recent.clear()
            self._floor = seq
            self._flights.clear()
            self.stats.local_drops += 1
            return
        if self.local is not None:
            self.local.discard_many(keys)
        flights = self._flights
        if flights:
            for key in [k for k in keys if k in flights]:
                del flights[key]
        recent = self._recent
        if len(keys) >= RECENT_MAX:
            recent.clear()
            self._floor = seq
            return
        if recent:
            for key in [k for k in keys if k in recent]:
                del recent[key]  # re-added at the end, as the newest
        recent.update(dict.fromkeys(keys, seq))
        while len(recent) > RECENT_MAX:
            _, old = recent.popitem(last=False)
            self._floor = max(self._floor, old)

    async def on_commit(self, commit: Commit) -> None:
        """The write-event subscriber: every key a commit changed is invalidated before the write
        is acknowledged (here, in Redis and in every subscribed process)."""
        await self.invalidate(commit.keys)

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Forget ``keys`` here and, through the bus, everywhere (after a committed write)."""
        self.drop_local(keys)
        if self.peers is not None:
            await self.peers.invalidate(keys)  # every other worker of this node dropped them
        if self.bus is not None:
            await self.bus.invalidate(keys)
            # Again, now that the tombstones are in Redis: a lookup here that read Redis before
            # them took its ticket after the first drop and may have put the old record back.
            self.drop_local(keys)

    def _remote_keys(self, keys: Sequence[str] | None) -> None:
        self.drop_local(keys)

    def _subscribed(self) -> None:
        self.drop_local(None)
        self._local_usable = self.local is not None

    def _unsubscribed(self) -> None:
        self._local_usable = False
        self.drop_local(None)

    # -- readiness -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.redis is None:
            out["redis"] = "disabled"
            out["breaker"] = "closed"
            if self.peers is None:
                out["invalidation"] = "in-process"
            else:
                out["invalidation"] = "workers" if self.peers.subscribed else "disconnected"
        else:
            breaker = self.redis.breaker
            bus = self.bus
            assert bus is not None
            ok = breaker.closed and bus.subscribed
            out["redis"] = "ok" if ok else "degraded"
            out["breaker"] = breaker.state
            out["invalidation"] = "subscribed" if bus.subscribed else "disconnected"
            out["pending_invalidations"] = bus.pending
            out["mget_batches"] = self.redis.batcher.batches
        local = self.local
        out["local"] = {
            "enabled": local is not None,
            "in_use": self._local_usable,
            "entries": len(local) if local is not None else 0,
            "bytes": local.bytes if local is not None else 0,
        }
        out["stats"] = self.stats.as_dict()
        return out

    def can_serve(self) -> bool:
        """Could a lookup be answered without the store (for readiness when the store is down)?"""
        if self.redis is not None and self.redis.breaker.closed:
            return True
        return self.local is not None and self._local_usable and len(self.local) > 0


async def build_cache(
    config: Config,
    store: HandleStore,
    *,
    clock: Callable[[], float] = time.monotonic,
    records: DecodedRecords | None = None,
) -> TieredCache | None:
    """The cache the settings ask for (None: no tier at all), started. ``records``: the decoded
    records it shares with the Resolver."""
    local: LocalTier | None = None
    # A worker of `idnode serve --workers N` without Redis: the supervisor's hub carries invalidations.
    hub = os.environ.get(HUB_ENV, "") if not config.redis and config.workers > 1 else ""
    if config.cache_local_entries > 0 and config.cache_local_bytes > 0:
        if config.redis or config.workers == 1 or hub:
            local = LocalTier(config.cache_local_entries, config.cache_local_bytes)
        else:
            log.warning("cache: local tier off: %d workers and no Redis to carry invalidations", config.workers)
    redis: RedisTier | None = None
    if config.redis:
        timeout = config.redis_timeout_ms / 1000
        breaker = CircuitBreaker(config.redis_breaker_failures, config.redis_breaker_cooldown_ms / 1000, clock)
        redis = RedisTier(
            open_redis(config.redis, timeout),
            config.redis_key_prefix,
            breaker=breaker,
            timeout=timeout,
            url=config.redis,
        )
    if local is None and redis is None:
        return None
    cache = TieredCache(
        local=local,
        redis=redis,
        current_version=store.current_version,
        redis_url=config.redis,
        max_staleness=float(config.cache_max_staleness),
        negative_ttl=float(config.cache_negative_ttl),
        redis_max_ttl=float(config.cache_redis_max_ttl),
        ack_wait=config.cache_invalidation_wait_ms / 1000,
        clock=clock,
        records=records,
        peers=hub if local is not None and hub else None,
    )
    await cache.start()
    return cache
