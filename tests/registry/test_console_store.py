"""The store queries the web console adds, on both backends (``store_url``): handles in a key range
(the console's list filtered by the start of a suffix, paged both ways), registrations per day of
one enterprise, and console sessions (kept by the hash of their id; idle and absolute expiry)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from registry.days import day_start
from registry.stores import open_store
from registry.stores.base import ConsoleSession, HandleStore
from tests.registry.test_stores import P, Q, delete, put

NOW = day_start(dt.date(2025, 3, 1)) + 3600  # 01:00 on 1 March in Shanghai


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[HandleStore]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


async def test_handles_in_a_key_range_paged_both_ways(store: HandleStore) -> None:
    suffixes = ["SKU-10", "SKU-2", "SKU-1", "sku-3", "BOX-1", "SKU-1/a", "批次-1", "SKU-"]
    await store.write([put(s) for s in suffixes], now=NOW)
    await store.write([put("SKU-9", prefix=Q)], now=NOW)  # another prefix: never listed under P
    await store.write([delete("SKU-2")], now=NOW)
    everything = await store.handles_in_range(P, f"{P}/", None, 100)
    keys = [k for k, _ in everything]
    assert keys == sorted(f"{P}/{s}" for s in suffixes if s != "SKU-2")  # code point order
    assert [h for _, h in everything] == keys  # the handles as written (here the same text)

    sku = (f"{P}/SKU", f"{P}/SKV")  # every suffix starting with "SKU" (case-sensitive)
    found = [k for k, _ in await store.handles_in_range(P, *sku, 100)]
    assert found == [f"{P}/SKU-", f"{P}/SKU-1", f"{P}/SKU-1/a", f"{P}/SKU-10"]
    first = await store.handles_in_range(P, *sku, 2)
    rest = await store.handles_in_range(P, *sku, 2, after=first[-1][0])
    assert [k for k, _ in first + rest] == found
    assert await store.handles_in_range(P, *sku, 2, after=rest[-1][0]) == []
    back = await store.handles_in_range(P, *sku, 2, before=rest[0][0])
    assert back == first  # the page before, still in key order
    assert await store.handles_in_range(P, *sku, 2, before=found[0]) == []
    assert [k for k, _ in await store.handles_in_range(P, f"{P}/批", f"{P}/扺", 10)] == [f"{P}/批次-1"]
    assert await store.handles_in_range(P, f"{P}/nothing", f"{P}/nothinh", 10) == []
    assert await store.handles_in_range(P, f"{P}/", None, 0) == []
    # ``after`` before the range start starts at the range start.
    assert await store.handles_in_range(P, *sku, 1, after=f"{P}/A") == first[:1]


async def test_registrations_by_day_of_one_enterprise(store: HandleStore) -> None:
    await store.write([put(f"a{i}", eid=7) for i in range(3)], now=NOW)
    await store.write([put(f"b{i}", eid=7) for i in range(2)], now=NOW + 86400)
    await store.write([put("c", eid=8)], now=NOW)
    await store.write([delete("a0")], now=NOW + 2 * 86400)  # counted off the day it was created
    assert await store.registrations_by_day(7, 20250301, 20250310) == {20250301: 2, 20250302: 2}
    assert await store.registrations_by_day(7, 20250302, 20250303) == {20250302: 2}
    assert await store.registrations_by_day(8, 20250301, 20250310) == {20250301: 1}
    assert await store.registrations_by_day(9, 20250301, 20250310) == {}


async def test_console_sessions(store: HandleStore) -> None:
    await store.put_console_session("h1", "300:0.NA/88.118.8.1001", '{"a":1}', now=NOW, expires_at=NOW + 100)
    assert await store.get_console_session("h1") == ConsoleSession(
        "300:0.NA/88.118.8.1001", '{"a":1}', NOW, NOW, NOW + 100
    )
    # A new write of the same session keeps its creation and expiry.
    await store.put_console_session("h1", "300:0.NA/88.118.8.1001", '{"a":2}', now=NOW + 5, expires_at=NOW + 999)
    assert await store.get_console_session("h1") == ConsoleSession(
        "300:0.NA/88.118.8.1001", '{"a":2}', NOW, NOW + 5, NOW + 100
    )
    await store.touch_console_session("h1", now=NOW + 9)
    got = await store.get_console_session("h1")
    assert got is not None and got.last_seen == NOW + 9
    await store.put_console_session("h2", "300:0.NA/88.118.8", "{}", now=NOW, expires_at=NOW + 50)
    await store.put_console_session("h3", "300:0.NA/88.118.8", "{}", now=NOW, expires_at=NOW + 500)
    # Purged: h2 past its expiry; h3 idle since before the cut; h1 seen recently enough.
    assert await store.purge_console_sessions(now=NOW + 60, idle_before=NOW + 1) == 2
    assert await store.get_console_session("h2") is None and await store.get_console_session("h3") is None
    assert await store.get_console_session("h1") is not None
    await store.delete_console_session("h1")
    await store.delete_console_session("h1")  # deleting what is gone is no error
    assert await store.get_console_session("h1") is None
    assert await store.get_console_session("never") is None
