"""The worker hub that carries invalidations between the workers of one node without Redis: keys
reach every other worker before the write returns, and every failure fails closed (the other
workers' tiers are dropped before their next read)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.model import HandleValue, Record
from registry.packing import pack_record
from resolver.cache.local_tier import LocalTier
from resolver.cache.tiered import TieredCache
from resolver.cache.worker_hub import WorkerHub, read_frame, write_frame

KEY = "88.118.8/A"


def _packed(n: int) -> bytes:
    value = HandleValue(index=1, type="URL", data=f"https://x/{n}".encode())
    return pack_record(Record(handle=KEY, values=(value,), version=n))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[WorkerHub]:
    hub = WorkerHub(str(tmp_path), ack_wait=0.3)
    hub.start()
    yield hub
    hub.close()


async def _worker(hub: WorkerHub, slot: int) -> TieredCache:
    cache = TieredCache(local=LocalTier(100, 1 << 20), peers=hub.address(slot))
    await cache.start()
    assert cache.peers is not None and cache.peers.subscribed
    return cache


async def _fill(cache: TieredCache, packed: bytes) -> None:
    async def load(key: str) -> bytes:
        return packed

    assert await cache.lookup(KEY, load) is packed
    assert cache.local_packed(KEY) is packed


async def test_a_write_reaches_every_other_worker_before_it_returns(hub: WorkerHub) -> None:
    a, b, c = await _worker(hub, 0), await _worker(hub, 1), await _worker(hub, 2)
    try:
        for cache in (b, c):
            await _fill(cache, _packed(1))
        await a.invalidate([KEY])
        assert b.local_packed(KEY) is None and c.local_packed(KEY) is None
        assert hub.timeouts == 0 and a.peers is not None and a.peers.fenced == 0
    finally:
        for cache in (a, b, c):
            await cache.close()


async def test_a_worker_that_does_not_answer_drops_its_tier_before_its_next_read(hub: WorkerHub) -> None:
    a, b = await _worker(hub, 0), await _worker(hub, 1)
    # Worker 2 is connected but its event loop is "blocked": it never answers.
    reader, writer = await asyncio.open_unix_connection(hub.path)
    write_frame(writer, ["hello", 2, 0])
    assert await read_frame(reader) == ["welcome"]
    try:
        await _fill(b, _packed(1))
        await a.invalidate([KEY])  # returns after ack_wait, with worker 2's stale flag set
        assert hub.timeouts == 1 and hub.flags[2] == 1 and hub.flags[1] == 0
        assert b.local_packed(KEY) is None
    finally:
        writer.close()
        for cache in (a, b):
            await cache.close()


async def test_without_the_hub_a_write_fences_every_other_worker(hub: WorkerHub) -> None:
    a, b = await _worker(hub, 0), await _worker(hub, 1)
    try:
        await _fill(b, _packed(1))
        await _fill(a, _packed(1))
        drops = b.stats.local_drops
        assert a.peers is not None
        a.peers._writer = None  # as if its connection to the hub were gone, unnoticed by worker 1
        a.peers.subscribed = False
        await a.invalidate([KEY])
        assert a.peers.fenced == 1
        # Worker 1 never heard of the write; its flag makes it drop its tier before reading it.
        assert b.local_packed(KEY) is None
        assert b.stats.local_drops == drops + 1
        assert a.local_packed(KEY) is None  # the writer's own tier dropped the key as always
    finally:
        for cache in (a, b):
            await cache.close()


async def test_a_worker_away_from_the_hub_keeps_no_local_tier(tmp_path: Path) -> None:
    hub = WorkerHub(str(tmp_path), ack_wait=0.3)  # not started: nothing listens
    cache = TieredCache(local=LocalTier(100, 1 << 20), peers=hub.address(0))
    await cache.start(wait=0.2)
    try:
        assert cache.peers is not None and not cache.peers.subscribed
        assert cache.status()["invalidation"] == "disconnected"

        async def load(key: str) -> bytes:
            return _packed(1)

        await cache.lookup(KEY, load)
        assert cache.local_packed(KEY) is None and cache.stats.store_loads == 1
    finally:
        await cache.close()
