"""The tiered cache on the shared Redis: bounds, freshness, negative entries, MGET coalescing,
invalidation between two nodes, and the cache-aside race. Time is injected; nothing sleeps for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from registry.auth import Caller
from registry.model import HandleValue, Record
from registry.packing import pack_record, unpack_record
from registry.service import NodeSettings, Registry
from registry.stores import open_store
from resolver.cache.breaker import CircuitBreaker
from resolver.cache.local_tier import ENTRY_OVERHEAD, MISS, NEGATIVE, LocalTier
from resolver.cache.redis_pipe import ReadPipe
from resolver.cache.redis_tier import FILL_LUA, TOMBSTONE_LUA, RedisTier, open_redis
from resolver.cache.tiered import RECENT_MAX, TieredCache
from resolver.resolve import Resolver
from tests.conftest import ADMIN_SECRET, REDIS_URL

NODE = "88.118.8"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def packed(handle: str, version: int, ttl: int = 86400, data: bytes = b"https://example.com") -> bytes:
    return pack_record(
        Record(handle=handle, values=(HandleValue(index=1, type="URL", data=data, ttl=ttl),), version=version)
    )


class Loads:
    """A loader over a dict that counts its calls."""

    def __init__(self, data: dict[str, bytes] | None = None) -> None:
        self.data = data or {}
        self.calls: list[str] = []

    async def __call__(self, key: str) -> bytes | None:
        self.calls.append(key)
        return self.data.get(key)


def redis_tier(prefix: str, *, url: str = REDIS_URL, cooldown: float = 0.2) -> RedisTier:
    return RedisTier(open_redis(url, 0.5), prefix, breaker=CircuitBreaker(3, cooldown), timeout=0.5, url=url)


@dataclass
class Node:
    """One simulated idnode process: its Registry, cache and Resolver over a shared store."""

    registry: Registry
    cache: TieredCache
    resolver: Resolver
    admin: Caller

    async def put(self, handle: str, url: str, ttl: int = 86400) -> int:
        value = HandleValue(index=1, type="URL", data=url.encode(), ttl=ttl)
        report = await self.registry.put_handle(self.admin, self.registry.parse(handle), [value])
        return report.version

    async def url(self, handle: str) -> str | None:
        record = await self.resolver.lookup(self.registry.parse(handle).key)
        if record is None:
            return None
        value = record.value_at(1)
        return value.data.decode() if value else None


@pytest.fixture
async def nodes(tmp_path, redis_prefix, redis) -> AsyncIterator[Callable[..., Awaitable[Node]]]:  # type: ignore[no-untyped-def]
    """``await nodes(local=True, redis=True)``: another node on the same store and Redis prefix."""
    store = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    made: list[TieredCache] = []

    async def make(*, local: bool = True, use_redis: bool = True, **kw: Any) -> Node:
        registry = Registry(store, NodeSettings(prefix=NODE))
        await registry.bootstrap(ADMIN_SECRET, None)
        cache = TieredCache(
            local=LocalTier(10_000, 1 << 24) if local else None,
            redis=redis_tier(redis_prefix) if use_redis else None,
            current_version=store.current_version,
            redis_url=REDIS_URL,
            **kw,
        )
        await cache.start()
        made.append(cache)
        registry.add_listener(cache.invalidate)
        admin = await registry.caller_for(f"300:0.NA/{NODE}", ADMIN_SECRET)
        return Node(registry, cache, Resolver(registry.store, cache), admin)

    yield make
    for cache in made:
        await cache.close()
    await store.close()


# -- the local tier -----------------------------------------------------------------------------
def test_local_tier_is_bounded_in_entries_lru_first():
    tier = LocalTier(max_entries=3, max_bytes=1 << 20)
    for k in "abc":
        tier.put(k, b"x", 60, 0)
    assert tier.get("a", 1) == b"x"  # a is now the most recently used
    tier.put("d", b"x", 60, 1)
    assert len(tier) == 3 and "b" not in tier and {"a", "c", "d"} <= {k for k in "abcd" if k in tier}
    assert tier.evictions == 1


def test_local_tier_is_bounded_in_bytes():
    entry = ENTRY_OVERHEAD + 2 + 1000  # one-character key, 1000-byte value
    tier = LocalTier(max_entries=1000, max_bytes=entry * 3)
    for k in "abcd":
        tier.put(k, b"x" * 1000, 60, 0)
    assert len(tier) == 3 and "a" not in tier
    assert tier.bytes == entry * 3 <= tier.max_bytes
    assert not tier.put("big", b"x" * (entry * 3), 60, 0)  # larger than the whole tier: not cached
    assert "big" not in tier and tier.bytes <= tier.max_bytes
    tier.put("b", b"y", 60, 0)  # replacing an entry gives its bytes back
    assert tier.bytes == entry * 2 + ENTRY_OVERHEAD + 2 + 1


def test_local_tier_expiry_is_a_function_of_now():
    tier = LocalTier(10, 1 << 20)
    tier.put("a", b"x", 30, now=100)
    tier.put("n", NEGATIVE, 5, now=100)
    assert tier.get("a", 129.9) == b"x" and tier.get("n", 104.9) is NEGATIVE
    assert tier.get("a", 130) is MISS and tier.get("n", 105) is MISS
    assert len(tier) == 0 and tier.bytes == 0
    assert not tier.put("z", b"x", 0, now=100)  # TTL 0: never cached


async def test_local_ttl_follows_the_values_bounded_by_max_staleness():
    clock = Clock()
    loads = Loads({"88.118.8/short": packed("88.118.8/short", 1, ttl=30), "88.118.8/long": packed("88.118.8/long", 2)})
    cache = TieredCache(local=LocalTier(100, 1 << 20), max_staleness=60, clock=clock)
    for key in loads.data:
        await cache.lookup(key, loads)
    clock.now += 29
    for key in loads.data:
        await cache.lookup(key, loads)
    assert len(loads.calls) == 2  # both still fresh
    clock.now += 1  # 30 s: the short TTL is over, the long one is bounded by max_staleness (60 s)
    await cache.lookup("88.118.8/short", loads)
    await cache.lookup("88.118.8/long", loads)
    assert loads.calls[2:] == ["88.118.8/short"]
    clock.now += 30
    await cache.lookup("88.118.8/long", loads)
    assert loads.calls[3:] == ["88.118.8/long"]


async def test_not_found_is_cached_briefly():
    clock = Clock()
    loads = Loads()
    cache = TieredCache(local=LocalTier(100, 1 << 20), negative_ttl=5, clock=clock)
    for _ in range(10):
        assert await cache.lookup("88.118.8/nope", loads) is None
    assert loads.calls == ["88.118.8/nope"]
    assert cache.stats.local_hits == 9
    clock.now += 5
    await cache.lookup("88.118.8/nope", loads)
    assert len(loads.calls) == 2


async def test_concurrent_misses_of_one_key_share_one_load():
    gate = asyncio.Event()
    calls = 0

    async def slow(key: str) -> bytes | None:
        nonlocal calls
        calls += 1
        await gate.wait()
        return packed(key, 7)

    cache = TieredCache(local=LocalTier(100, 1 << 20))
    lookups = [asyncio.create_task(cache.lookup("88.118.8/hot", slow)) for _ in range(50)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*lookups)
    assert calls == 1 and all(unpack_record(r).version == 7 for r in results)  # type: ignore[arg-type]


def test_breaker_opens_fails_fast_probes_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=2.0, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # consecutive failures only
    breaker.failure()
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.9
    assert not breaker.probe_due()
    clock.now += 0.1
    assert breaker.probe_due() and breaker.state == "half-open" and not breaker.allow()
    breaker.probe_result(False)
    assert breaker.state == "open" and not breaker.probe_due()
    clock.now += 2
    assert breaker.probe_due()
    breaker.probe_result(True)
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure(timeout=True)  # one timeout is enough
    assert breaker.state == "open" and breaker.opened_count == 2


# -- the Redis tier -----------------------------------------------------------------------------
async def test_redis_holds_the_packed_record_with_a_bounded_ttl(nodes, redis, redis_prefix):
    node = await nodes(local=False, redis_max_ttl=120)
    await node.put("88.118.8/a", "https://example.com/a", ttl=600)
    await node.put("88.118.8/b", "https://example.com/b", ttl=60)
    await redis.delete(f"{redis_prefix}h:88.118.8/a", f"{redis_prefix}h:88.118.8/b")
    assert await node.url("88.118.8/a") == "https://example.com/a"
    assert await node.url("88.118.8/b") == "https://example.com/b"
    stored = await node.registry.store.get("88.118.8/a")
    assert await redis.get(f"{redis_prefix}h:88.118.8/a") == stored.packed  # msgpack bytes as-is
    assert 110_000 < await redis.pttl(f"{redis_prefix}h:88.118.8/a") <= 120_000  # bounded by redis_max_ttl
    assert 50_000 < await redis.pttl(f"{redis_prefix}h:88.118.8/b") <= 60_000  # bounded by the values' TTL
    assert await node.url("88.118.8/a") == "https://example.com/a"
    assert node.cache.stats.redis_hits == 1 and node.cache.stats.store_loads == 2


async def test_redis_negative_entry_keeps_floods_off_the_store(nodes, redis, redis_prefix):
    node = await nodes(local=False, negative_ttl=5)
    version = await node.registry.store.current_version()
    assert await node.url("88.118.8/missing") is None
    entry = await redis.get(f"{redis_prefix}h:88.118.8/missing")
    assert entry == b"-%d" % version
    assert 0 < await redis.pttl(f"{redis_prefix}h:88.118.8/missing") <= 5000
    loads = node.cache.stats.store_loads
    for _ in range(20):
        assert await node.url("88.118.8/missing") is None
    assert node.cache.stats.store_loads == loads
    assert node.cache.stats.negative_hits == 20


async def test_concurrent_lookups_share_one_mget(nodes, redis, redis_prefix, monkeypatch):
    node = await nodes(local=False)
    keys = [f"88.118.8/m{i}" for i in range(200)]
    await redis.mset({f"{redis_prefix}h:{k}": packed(k, i + 1) for i, k in enumerate(keys)})
    tier = node.cache.redis
    assert tier is not None
    calls: list[int] = []
    mget = ReadPipe.mget  # the tier's reads go on its pipelined connection (resolver.cache.redis_pipe)

    def counting_mget(pipe: ReadPipe, names: list[bytes]) -> Any:
        calls.append(len(names))
        return mget(pipe, names)

    monkeypatch.setattr(ReadPipe, "mget", counting_mget)
    loads = Loads()
    results = await asyncio.gather(*(node.cache.lookup(k, loads) for k in keys + keys[:50]))
    assert calls == [200]  # 250 lookups, 200 distinct keys, one MGET
    assert [unpack_record(r).handle for r in results] == keys + keys[:50]  # type: ignore[arg-type]
    assert loads.calls == [] and node.cache.stats.redis_hits == 250
    # Lookups in different ticks are separate batches.
    for k in keys[:3]:
        await node.cache.lookup(k, loads)
    assert calls == [200, 1, 1, 1]


async def test_fill_and_tombstone_scripts_never_go_back_in_version(redis, redis_prefix):
    key = f"{redis_prefix}h:88.118.8/v"

    async def fill(value: bytes, version: int) -> int:
        return int(await redis.eval(FILL_LUA, 1, key, value, version, 60_000))

    async def tombstone(version: int) -> None:
        await redis.eval(TOMBSTONE_LUA, 1, key, version, 60_000)

    assert await fill(packed("88.118.8/v", 5), 5) == 1
    assert await fill(packed("88.118.8/v", 3), 3) == 0  # older: refused
    assert await fill(packed("88.118.8/v", 5), 5) == 2  # the same: already there
    big = 2**40 + 3  # versions past 32 bits are read back correctly
    assert await fill(packed("88.118.8/v", big), big) == 1
    assert await fill(packed("88.118.8/v", big - 1), big - 1) == 0
    await tombstone(big + 10)
    assert await redis.get(key) == b"~%d" % (big + 10)
    await tombstone(big + 4)  # never lowers
    assert await redis.get(key) == b"~%d" % (big + 10)
    assert await fill(b"-%d" % (big + 9), big + 9) == 0  # older than the write: refused
    assert await fill(packed("88.118.8/v", big + 10), big + 10) == 1  # the write's own record
    await tombstone(big + 10)  # an entry as new as the tombstone stays
    assert unpack_record(await redis.get(key)).version == big + 10


async def test_auth_true_bypasses_every_tier(nodes):
    node = await nodes()
    await node.put("88.118.8/auth", "https://example.com/1")
    await node.url("88.118.8/auth")
    before = node.cache.stats.as_dict()
    record = await node.resolver.lookup("88.118.8/auth", authoritative=True)
    assert record is not None and node.cache.stats.as_dict() == before


# -- invalidation -------------------------------------------------------------------------------
async def test_a_write_through_one_node_is_seen_by_the_other_on_its_next_lookup(nodes):
    a, b = await nodes(), await nodes()
    handles = [f"88.118.8/inv{i}" for i in range(5)]
    for h in handles:
        await a.put(h, "https://example.com/0")
    stop = asyncio.Event()
    errors: list[BaseException] = []

    async def hammer() -> None:  # concurrent readers keep both tiers of both nodes hot
        while not stop.is_set():
            try:
                await asyncio.gather(*(n.url(h) for n in (a, b) for h in handles))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            await asyncio.sleep(0)

    readers = [asyncio.create_task(hammer()) for _ in range(4)]
    try:
        for i in range(1, 101):
            writer, reader = (a, b) if i % 2 else (b, a)
            h = handles[i % len(handles)]
            await reader.url(h)  # the reader has it cached
            await writer.put(h, f"https://example.com/{i}")
            assert await reader.url(h) == f"https://example.com/{i}", f"pair {i}"
            assert await writer.url(h) == f"https://example.com/{i}"
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert not errors
    assert a.cache.stats.local_hits > 0 and b.cache.stats.local_hits > 0
    assert a.cache.bus is not None and a.cache.bus.ack_timeouts == 0


async def test_a_delete_and_a_create_are_seen_across_nodes(nodes):
    a, b = await nodes(), await nodes()
    assert await b.url("88.118.8/later") is None  # negative entries in both tiers of b
    await a.put("88.118.8/later", "https://example.com/new")
    assert await b.url("88.118.8/later") == "https://example.com/new"
    await b.registry.delete(b.admin, b.registry.parse("88.118.8/later"))
    assert await a.url("88.118.8/later") is None
    assert await b.url("88.118.8/later") is None


async def test_stale_fill_after_a_write_is_refused(nodes, redis, redis_prefix):
    """The cache-aside race: a slow reader loads v1, a writer commits v2 and invalidates, then the
    reader tries to fill v1 into both tiers. Neither may take it."""
    a, b = await nodes(), await nodes()
    await a.put("88.118.8/race", "https://example.com/v1")
    await asyncio.sleep(0)
    loaded = asyncio.Event()
    release = asyncio.Event()
    store = b.registry.store

    async def slow_load(key: str) -> bytes | None:
        row = await store.get(key)
        loaded.set()
        await release.wait()  # the writer commits meanwhile
        return row.packed if row else None

    await redis.delete(f"{redis_prefix}h:88.118.8/race")  # b misses in every tier
    reader = asyncio.create_task(b.cache.lookup("88.118.8/race", slow_load))
    await loaded.wait()
    v2 = await a.put("88.118.8/race", "https://example.com/v2")
    release.set()
    old = await reader
    assert old is not None and unpack_record(old).value_at(1).data == b"https://example.com/v1"  # type: ignore[union-attr]
    assert b.cache.stats.fills_refused == 1
    entry = await redis.get(f"{redis_prefix}h:88.118.8/race")
    assert entry == b"~%d" % v2 or unpack_record(entry).version == v2
    assert "88.118.8/race" not in b.cache.local  # type: ignore[operator]
    assert await b.url("88.118.8/race") == "https://example.com/v2"
    assert await a.url("88.118.8/race") == "https://example.com/v2"


async def test_stale_not_found_after_a_create_is_refused(nodes, redis, redis_prefix):
    a, b = await nodes(), await nodes()
    loaded = asyncio.Event()
    release = asyncio.Event()
    store = b.registry.store

    async def slow_load(key: str) -> bytes | None:
        row = await store.get(key)
        loaded.set()
        await release.wait()
        return row.packed if row else None

    reader = asyncio.create_task(b.cache.lookup("88.118.8/born", slow_load))
    await loaded.wait()
    await a.put("88.118.8/born", "https://example.com/hello")
    release.set()
    assert await reader is None  # it started before the create
    entry = await redis.get(f"{redis_prefix}h:88.118.8/born")
    assert entry is not None and not entry.startswith(b"-")
    assert await b.url("88.118.8/born") == "https://example.com/hello"


async def test_late_local_fill_from_redis_is_refused():
    """A Redis read that returned the old record before the invalidation arrived must not reach the
    local tier after it (tickets)."""
    cache = TieredCache(local=LocalTier(100, 1 << 20))
    ticket = cache.ticket()
    cache.drop_local(["88.118.8/t"])
    cache._fill_local("88.118.8/t", packed("88.118.8/t", 1), 60, ticket)
    assert "88.118.8/t" not in cache.local  # type: ignore[operator]
    cache._fill_local("88.118.8/u", packed("88.118.8/u", 1), 60, ticket)  # other keys are fine
    assert "88.118.8/u" in cache.local  # type: ignore[operator]
    cache.drop_local(None)
    cache._fill_local("88.118.8/u", packed("88.118.8/u", 1), 60, ticket)
    assert len(cache.local) == 0  # type: ignore[arg-type]


async def test_bulk_drop_of_a_batchs_keys():
    """A batch's commit drops 100,000 keys at once: the entries held among them go (NEGATIVE ones of
    new handles included), the others stay; a fill with a ticket from before the drop is refused for
    every one of them, also when they are more than the tier remembers key by key."""
    cache = TieredCache(local=LocalTier(1000, 1 << 20))
    now = cache.clock()
    keys = [f"88.118.8/n-{n}" for n in range(RECENT_MAX + 10)]
    cache.local.put(keys[5], NEGATIVE, 60, now)  # type: ignore[union-attr]
    cache.local.put("88.118.8/kept", packed("88.118.8/kept", 1), 60, now)  # type: ignore[union-attr]
    small_ticket = cache.ticket()
    cache.drop_local(keys[:3])  # a few keys: remembered one by one
    cache._fill_local(keys[0], NEGATIVE, 60, small_ticket)
    cache._fill_local(keys[3], NEGATIVE, 60, small_ticket)  # not dropped: its fill stands
    assert keys[0] not in cache.local and keys[3] in cache.local  # type: ignore[operator]
    ticket = cache.ticket()
    cache.drop_local(keys)
    assert keys[5] not in cache.local and keys[3] not in cache.local  # type: ignore[operator]
    assert "88.118.8/kept" in cache.local  # type: ignore[operator]
    for key in (keys[0], keys[-1], "88.118.8/other"):  # older tickets are refused for every key
        cache._fill_local(key, NEGATIVE, 60, ticket)
        assert key not in cache.local  # type: ignore[operator]
    cache._fill_local(keys[7], NEGATIVE, 60, cache.ticket())  # a lookup begun after the drop fills
    assert keys[7] in cache.local  # type: ignore[operator]
    assert cache.local.bytes == sum(  # type: ignore[union-attr]
        ENTRY_OVERHEAD + len(k) * 2 + (len(v[0]) if isinstance(v[0], bytes) else 0)
        for k, v in cache.local._data.items()  # type: ignore[union-attr]
    )


async def test_status_reports_tiers(nodes):
    node = await nodes()
    status = node.cache.status()
    assert status["redis"] == "ok" and status["breaker"] == "closed" and status["invalidation"] == "subscribed"
    assert status["local"]["enabled"] and status["local"]["in_use"]
    alone = TieredCache(local=LocalTier(10, 1 << 20))
    assert alone.status()["redis"] == "disabled"


async def test_a_batch_write_invalidates_every_key_on_every_node(nodes, redis, redis_prefix):
    from registry.batch import BatchValidator

    a, b = await nodes(), await nodes()
    keys = [f"88.118.8/batch-{i}" for i in range(3000)]
    assert not any(await asyncio.gather(*(b.url(k) for k in keys)))  # "not found" cached in both tiers
    assert b.cache.redis is not None and b.cache.redis.batcher.batches >= 3  # at most 1,000 keys a MGET
    batch = BatchValidator(a.registry.writes, a.admin, max_items=len(keys))  # one commit, one event list
    for k in keys:
        await batch.add({"handle": k, "values": [{"index": 1, "type": "URL", "data": "https://example.com/batch"}]})
    report = await batch.finish()
    assert report.created == len(keys) and not report.failures
    assert set(await asyncio.gather(*(b.url(k) for k in keys))) == {"https://example.com/batch"}
    assert a.cache.bus is not None and a.cache.bus.ack_timeouts == 0


async def test_a_writer_whose_breaker_is_open_still_invalidates_the_others(nodes):
    a, b = await nodes(), await nodes()
    await a.put("88.118.8/open", "https://example.com/1")
    assert await b.url("88.118.8/open") == "https://example.com/1"  # b's local tier holds it
    assert a.cache.redis is not None
    a.cache.redis.breaker.trip()  # a saw one timeout; Redis itself is fine
    await a.put("88.118.8/open", "https://example.com/2")
    assert await b.url("88.118.8/open") == "https://example.com/2"
    assert await a.url("88.118.8/open") == "https://example.com/2"  # a reads the store meanwhile
