"""The Store protocol, run against both backends (SQLite and PostgreSQL) through ``store_url``.

Both backends must give the same outcomes, versions, counters, listing pages and refusals; the
tests at the end are PostgreSQL-only (concurrent writers in two pools, an unreachable server, a
server that goes away and comes back).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from registry.days import day_number, day_start, hour_of
from registry.errors import HandleAlreadyExists, InvalidRequest, StoreUnavailable
from registry.model import HandleValue, Record, Reference
from registry.packing import pack_record, unpack_record
from registry.stores import open_store
from registry.stores.base import (
    ANY_VERSION,
    LIST_BUCKET,
    MUST_NOT_EXIST,
    RESOLUTION_BATCH_DAYS,
    Attribution,
    Gs1Prefix,
    HandleStore,
    HandleWrite,
    ResolutionCount,
    WriteOutcome,
    WriteResult,
)
from tests.conftest import free_port
from tests.nodeproc import TcpProxy

P = "88.118.8.1001"
Q = "88.118.8.1002"
# 2025-03-01 00:00 Asia/Shanghai (2025-02-28 16:00 UTC): counters change day here.
MIDNIGHT = day_start(dt.date(2025, 3, 1))
FEB28, MAR1, MAR2 = 20250228, 20250301, 20250302
NOW = MIDNIGHT - 7200  # 22:00 on 28 February in Shanghai
FAR = 10**9  # an hour cut-off after everything

CREATED, REPLACED, DELETED = WriteOutcome.CREATED, WriteOutcome.REPLACED, WriteOutcome.DELETED
EXISTS, MISSING, STALE = WriteOutcome.EXISTS, WriteOutcome.MISSING, WriteOutcome.STALE
NOT_WRITTEN = WriteOutcome.NOT_WRITTEN


def values(text: str = "x") -> tuple[HandleValue, ...]:
    return (
        HandleValue(index=1, type="URL", data=f"https://example.com/{text}".encode()),
        HandleValue(
            index=100,
            type="HS_ADMIN",
            data=b"\x00\x0f admin",
            ttl=3600,
            timestamp=1_700_000_000,
            references=(Reference("0.NA/88.118.8.1001", 300),),
        ),
    )


def put(
    suffix: str, *, prefix: str = P, expect: int = ANY_VERSION, eid: int | None = None, text: str = "x"
) -> HandleWrite:
    handle = f"{prefix}/{suffix}"
    return HandleWrite(handle, handle, prefix, values(text or suffix), expect, eid)


def delete(suffix: str, *, prefix: str = P, expect: int = ANY_VERSION) -> HandleWrite:
    handle = f"{prefix}/{suffix}"
    return HandleWrite(handle, handle, prefix, None, expect)


def outcomes(results: list[WriteResult]) -> list[WriteOutcome]:
    return [r.outcome for r in results]


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[HandleStore]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


async def listing(store: HandleStore, prefix: str = P) -> list[str]:
    """Every handle under ``prefix``, page by page."""
    total, _ = await store.list_handles(prefix, 0, 0)
    out: list[str] = []
    page = 0
    while True:
        t, items = await store.list_handles(prefix, page, 100)
        assert t == total
        if not items:
            break
        out += items
        page += 1
    assert len(out) == total
    return out


# -- outcomes ------------------------------------------------------------------------------------
async def test_create_replace_delete(store: HandleStore) -> None:
    (r,) = await store.write([put("a", eid=7, text="one")], now=NOW)
    assert r == WriteResult(CREATED, r.version) and r.ok and r.version > 0
    row = await store.get(f"{P}/a")
    assert row is not None
    assert (row.key, row.version, row.enterprise_id, row.created_at) == (f"{P}/a", r.version, 7, NOW)
    assert row.packed == pack_record(Record(handle=f"{P}/a", values=values("one"), version=r.version))
    assert unpack_record(row.packed).values == values("one")

    (r2,) = await store.write([put("a", eid=None, text="two")], now=NOW + 5)
    assert r2.outcome is REPLACED and r2.version > r.version
    row = await store.get(f"{P}/a")
    assert row is not None
    # A replace keeps the enterprise and the creation time; the record carries the new version.
    assert (row.version, row.enterprise_id, row.created_at) == (r2.version, 7, NOW)
    assert unpack_record(row.packed) == Record(handle=f"{P}/a", values=values("two"), version=r2.version)

    (r3,) = await store.write([delete("a")], now=NOW + 9)
    assert r3.outcome is DELETED and r3.version > r2.version
    assert await store.get(f"{P}/a") is None
    assert outcomes(await store.write([delete("a")], now=NOW)) == [MISSING]
    assert await store.current_version() == r3.version


async def test_compare_and_set(store: HandleStore) -> None:
    (v1,) = await store.write([put("a")], now=NOW)
    (v2,) = await store.write([put("a", expect=v1.version, text="b")], now=NOW)
    assert v2.outcome is REPLACED
    # A writer that read v1 lost the race: it is told the version that won.
    assert await store.write([put("a", expect=v1.version, text="c")], now=NOW) == [WriteResult(STALE, v2.version)]
    assert await store.write([delete("a", expect=v1.version)], now=NOW) == [WriteResult(STALE, v2.version)]
    row = await store.get(f"{P}/a")
    assert row is not None and unpack_record(row.packed).values == values("b")
    (v3,) = await store.write([delete("a", expect=v2.version)], now=NOW)
    assert v3.outcome is DELETED
    # Compare-and-set against a handle that is gone, or never was.
    assert await store.write([put("a", expect=v2.version)], now=NOW) == [WriteResult(MISSING)]
    assert await store.write([put("never", expect=1)], now=NOW) == [WriteResult(MISSING)]
    assert await store.get(f"{P}/a") is None and await store.get(f"{P}/never") is None


async def test_must_not_exist(store: HandleStore) -> None:
    (r,) = await store.write([put("a", expect=MUST_NOT_EXIST)], now=NOW)
    assert r.outcome is CREATED
    assert await store.write([put("a", expect=MUST_NOT_EXIST, text="z")], now=NOW) == [WriteResult(EXISTS, r.version)]
    row = await store.get(f"{P}/a")
    assert row is not None and row.version == r.version and unpack_record(row.packed).values == values("x")
    # ANY_VERSION creates or replaces.
    assert outcomes(await store.write([put("b")], now=NOW)) == [CREATED]
    assert outcomes(await store.write([put("b")], now=NOW)) == [REPLACED]


async def test_empty_write(store: HandleStore) -> None:
    before = await store.current_version()
    assert await store.write([], now=NOW) == []
    assert await store.current_version() == before


async def test_duplicate_keys_refused(store: HandleStore) -> None:
    before = await store.current_version()
    with pytest.raises(InvalidRequest, match="more than once"):
        await store.write([put("a"), put("b"), put("a", text="again")], now=NOW)
    with pytest.raises(InvalidRequest, match="more than once"):
        await store.write([put("a"), delete("a")], now=NOW, atomic=False)
    assert await store.get(f"{P}/a") is None and await store.get(f"{P}/b") is None
    assert await store.current_version() == before


# -- batches -------------------------------------------------------------------------------------
async def _batch_fixture(store: HandleStore) -> int:
    """a and e (enterprise 1) exist; returns their version."""
    (a, _) = await store.write([put("a", eid=1), put("e", eid=1)], now=NOW)
    return a.version


def _mixed_batch(version: int) -> list[HandleWrite]:
    return [
        put("b", eid=1, expect=MUST_NOT_EXIST),  # fine
        put("a", eid=1, expect=version + 100),  # stale
        delete("gone"),  # missing
        put("c", eid=1),  # fine
        put("e", expect=MUST_NOT_EXIST),  # exists
    ]


async def test_atomic_batch_with_a_failure_writes_nothing(store: HandleStore) -> None:
    a = await _batch_fixture(store)
    version = await store.current_version()
    counts = await store.registration_counts(FEB28, MAR2, FAR)
    results = await store.write(_mixed_batch(a), now=NOW + 60)
    assert results == [
        WriteResult(NOT_WRITTEN),
        WriteResult(STALE, a),
        WriteResult(MISSING),
        WriteResult(NOT_WRITTEN),
        WriteResult(EXISTS, a),
    ]
    assert not any(r.ok for r in results)
    assert await store.get_many([f"{P}/b", f"{P}/c"]) == {}
    assert await store.current_version() == version
    assert await store.registration_counts(FEB28, MAR2, FAR) == counts == {1: 2}
    assert await store.list_handles(P, 0, 10) == (2, [f"{P}/a", f"{P}/e"])


async def test_non_atomic_batch_writes_what_passed(store: HandleStore) -> None:
    a = await _batch_fixture(store)
    results = await store.write(_mixed_batch(a), now=NOW + 60, atomic=False)
    v = results[0].version
    assert v > a
    assert results == [
        WriteResult(CREATED, v),
        WriteResult(STALE, a),
        WriteResult(MISSING),
        WriteResult(CREATED, v),
        WriteResult(EXISTS, a),
    ]
    assert await store.current_version() == v
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: 4}
    assert await store.list_handles(P, 0, 10) == (4, [f"{P}/a", f"{P}/e", f"{P}/b", f"{P}/c"])


async def test_non_atomic_batch_where_everything_fails(store: HandleStore) -> None:
    a = await _batch_fixture(store)
    version = await store.current_version()
    results = await store.write([put("a", expect=MUST_NOT_EXIST), delete("x")], now=NOW, atomic=False)
    assert results == [WriteResult(EXISTS, a), WriteResult(MISSING)]
    assert await store.current_version() == version


async def test_atomic_batch_of_every_kind(store: HandleStore) -> None:
    await store.write([put("keep", eid=1), put("old", eid=1), put("drop", eid=1)], now=NOW)
    have = await store.exists_many([f"{P}/old", f"{P}/drop"])
    results = await store.write(
        [put("new", eid=1), put("old", expect=have[f"{P}/old"], text="v2"), delete("drop", expect=have[f"{P}/drop"])],
        now=NOW + 60,
    )
    v = results[0].version
    assert results == [WriteResult(CREATED, v), WriteResult(REPLACED, v), WriteResult(DELETED, v)]
    assert await listing(store) == [f"{P}/keep", f"{P}/old", f"{P}/new"]
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: 3}


# -- versions ------------------------------------------------------------------------------------
async def test_versions_strictly_increase(store: HandleStore) -> None:
    assert await store.current_version() == 0
    seen: list[int] = []
    for writes in (
        [put("a")],
        [put("a", text="2")],
        [put("b"), put("c")],
        [delete("a")],
        [put("a", expect=MUST_NOT_EXIST)],  # recreated after a delete
        [delete("b"), put("c", text="3")],
    ):
        results = await store.write(writes, now=NOW)
        assert all(r.ok for r in results)
        assert len({r.version for r in results}) == 1  # one call, one version
        seen.append(results[0].version)
        assert await store.current_version() == seen[-1]
    assert seen == sorted(set(seen))
    row = await store.get(f"{P}/a")
    assert row is not None and row.version == seen[4] > seen[3]
    # Failed writes do not move the version.
    await store.write([put("a", expect=MUST_NOT_EXIST)], now=NOW)
    assert await store.current_version() == seen[-1]


async def test_migrations_are_idempotent(store_url: str) -> None:
    first = await open_store(store_url)
    try:
        (r,) = await first.write([put("a")], now=NOW)
        await first.set_meta("k", "v")
    finally:
        await first.close()
    for _ in range(2):
        again = await open_store(store_url)
        try:
            assert (await again.get(f"{P}/a")) is not None
            assert await again.get_meta("k") == "v"
            assert await again.current_version() == r.version
        finally:
            await again.close()


async def test_stores_opening_together_migrate_once(store_url: str) -> None:
    stores = await asyncio.gather(*(open_store(store_url) for _ in range(3)))
    try:
        await stores[0].write([put("a")], now=NOW)
        for s in stores:
            assert await s.get(f"{P}/a") is not None
    finally:
        for s in stores:
            await s.close()


# -- reads ---------------------------------------------------------------------------------------
async def test_get_many_and_exists_many(store: HandleStore) -> None:
    (r1,) = await store.write([put("a", eid=3)], now=NOW)
    (r2,) = await store.write([put("b")], now=NOW + 1)
    keys = [f"{P}/a", f"{P}/missing", f"{P}/b", f"{Q}/a"]
    got = await store.get_many(keys)
    assert set(got) == {f"{P}/a", f"{P}/b"}
    assert (got[f"{P}/a"].version, got[f"{P}/a"].enterprise_id) == (r1.version, 3)
    assert got[f"{P}/b"] == await store.get(f"{P}/b")
    assert await store.exists_many(keys) == {f"{P}/a": r1.version, f"{P}/b": r2.version}
    assert await store.get_many([]) == {} and await store.exists_many([]) == {}
    many = [f"{P}/k{i}" for i in range(1200)]
    await store.write([put(k.split("/")[1]) for k in many[::2]], now=NOW)
    assert set(await store.exists_many(many)) == set(many[::2])
    assert set(await store.get_many(many)) == set(many[::2])


async def test_keys_are_exact(store: HandleStore) -> None:
    """The store compares keys byte for byte (normalising is the caller's job)."""
    await store.write([put("Abc")], now=NOW)
    assert await store.get(f"{P}/abc") is None
    assert await store.get(f"{P}/Abc") is not None
    assert await store.exists_many([f"{P}/ABC", f"{P}/Abc"]) == {f"{P}/Abc": 1}
    (r,) = await store.write([put("产品-001 ü")], now=NOW)
    row = await store.get(f"{P}/产品-001 ü")
    assert row is not None and unpack_record(row.packed).handle == f"{P}/产品-001 ü" and row.version == r.version
    assert await store.list_handles(P, 0, 10) == (2, [f"{P}/Abc", f"{P}/产品-001 ü"])


# -- listing -------------------------------------------------------------------------------------
async def test_listing_pages(store: HandleStore) -> None:
    names = [f"{P}/h{i:03d}" for i in range(25)]
    await store.write([put(n.split("/")[1]) for n in names[:10]], now=NOW)
    for n in names[10:]:
        await store.write([put(n.split("/")[1])], now=NOW)
    assert await store.list_handles(P, 0, 10) == (25, names[:10])
    assert await store.list_handles(P, 1, 10) == (25, names[10:20])
    assert await store.list_handles(P, 2, 10) == (25, names[20:])
    assert await store.list_handles(P, 3, 10) == (25, [])
    assert await store.list_handles(P, 1000, 10) == (25, [])
    assert await store.list_handles(P, 0, 0) == (25, [])  # page_size 0: count only
    assert await store.list_handles(P, 4, 0) == (25, [])
    assert await store.list_handles(P, 0, 1000) == (25, names)
    assert await store.list_handles(P, 3, 7) == (25, names[21:])
    assert await store.list_handles("88.118.8.9999", 0, 10) == (0, [])
    # Replacing does not move a handle; deleting and recreating puts it at the end.
    await store.write([put("h000", text="new")], now=NOW)
    assert (await store.list_handles(P, 0, 3))[1] == names[:3]
    await store.write([delete("h003"), delete("h004"), delete("h012")], now=NOW)
    rest = [n for n in names if n not in {f"{P}/h003", f"{P}/h004", f"{P}/h012"}]
    assert await store.list_handles(P, 0, 10) == (22, rest[:10])
    assert await store.list_handles(P, 2, 10) == (22, rest[20:])
    await store.write([put("h003")], now=NOW)
    assert await listing(store) == [*rest, f"{P}/h003"]


async def test_listing_interleaved_prefixes(store: HandleStore) -> None:
    ps, qs = [], []
    for i in range(30):
        batch = [put(f"p{i}")] if i % 3 else [put(f"p{i}"), put(f"q{i}", prefix=Q)]
        await store.write(batch, now=NOW)
        ps.append(f"{P}/p{i}")
        if i % 3 == 0:
            qs.append(f"{Q}/q{i}")
        await store.write([put(f"r{i}", prefix=Q)], now=NOW)
        qs.append(f"{Q}/r{i}")
    assert await listing(store, P) == ps
    assert await listing(store, Q) == qs
    assert await store.list_handles(P, 1, 7) == (30, ps[7:14])
    assert await store.list_handles(Q, 2, 11) == (40, qs[22:33])


async def test_listing_across_buckets(store: HandleStore) -> None:
    assert LIST_BUCKET == 1024
    first = [put(f"a{i:05d}", eid=1) for i in range(2300)]
    assert all(r.outcome is CREATED for r in await store.write(first, now=NOW))
    other = [put(f"o{i:04d}", prefix=Q) for i in range(700)]
    await store.write(other, now=NOW)
    second = [put(f"b{i:05d}") for i in range(500)]
    await store.write(second, now=NOW)
    expected = [w.handle for w in first + second]
    assert await listing(store, P) == expected
    # Delete around the bucket boundaries (and a whole run in the middle).
    gone = {expected[i] for i in [0, 1, 1022, 1023, 1024, 1025, 2047, 2048, 2299, 2300, *range(1500, 1700)]}
    await store.write([HandleWrite(h, h, P, None) for h in sorted(gone)], now=NOW)
    expected = [h for h in expected if h not in gone]
    total = len(expected)
    assert total == 2800 - len(gone)
    for size in (1, 100, 333, 1024, 5000):
        for page in (0, 1, 2, 3, total // size, total // size + 1):
            assert await store.list_handles(P, page, size) == (total, expected[page * size : (page + 1) * size])
    assert await listing(store, P) == expected
    assert await listing(store, Q) == [w.handle for w in other]
    assert (await store.registration_counts(FEB28, MAR2, FAR))[1] == 2300 - len(gone & {w.handle for w in first})


async def test_handles_from_a_handle_in_listing_order(store: HandleStore) -> None:
    """What a label sheet reads: records in listing order from one handle on, then past a position."""
    await store.write([put(f"h{i}") for i in range(6)], now=NOW)
    await store.write([put("other", prefix=Q)], now=NOW)
    await store.write([delete("h2")], now=NOW)
    await store.write([put("h2", text="again")], now=NOW)  # recreated: now at the end
    expected = await listing(store)
    assert expected == [f"{P}/h{i}" for i in (0, 1, 3, 4, 5, 2)]

    rows = await store.handles_from(P, 100)
    assert [r.handle for r in rows] == expected
    assert [r.position for r in rows] == sorted(r.position for r in rows)
    assert unpack_record(rows[-1].packed).values == values("again")
    assert [r.handle for r in await store.handles_from(P, 2, start=f"{P}/h3")] == [f"{P}/h3", f"{P}/h4"]
    first = await store.handles_from(P, 3, start=f"{P}/h1")
    rest = await store.handles_from(P, 10, after=first[-1].position)
    assert [r.handle for r in first + rest] == expected[1:]
    assert await store.handles_from(P, 10, start=f"{P}/missing") == []
    assert await store.handles_from(P, 10, start=f"{Q}/other") == []  # not under P
    assert await store.handles_from(P, 0) == []
    assert [r.handle for r in await store.handles_from(Q, 10)] == [f"{Q}/other"]


async def test_bulk_write_of_every_kind(store: HandleStore) -> None:
    """Large calls take the bulk paths (COPY, packing off the event loop in PostgreSQL)."""
    base = [put(f"k{i:05d}", eid=2) for i in range(3000)]
    results = await store.write(base, now=NOW)
    assert {r.outcome for r in results} == {CREATED} and len({r.version for r in results}) == 1
    have = await store.exists_many([w.key for w in base])
    writes = (
        [put(f"k{i:05d}", eid=2, expect=have[f"{P}/k{i:05d}"], text="r") for i in range(0, 1500)]
        + [delete(f"k{i:05d}") for i in range(1500, 2000)]
        + [put(f"n{i:05d}", eid=2, expect=MUST_NOT_EXIST) for i in range(2500)]
    )
    results = await store.write(writes, now=MIDNIGHT + 60)
    v = results[0].version
    assert outcomes(results) == [REPLACED] * 1500 + [DELETED] * 500 + [CREATED] * 2500
    assert {r.version for r in results} == {v}
    row = await store.get(f"{P}/k00001")
    assert row is not None and unpack_record(row.packed) == Record(f"{P}/k00001", values("r"), v)
    expected = [w.handle for w in base[:1500] + base[2000:]] + [f"{P}/n{i:05d}" for i in range(2500)]
    assert await listing(store) == expected
    assert await store.registration_counts(FEB28, MAR1, FAR) == {2: 2500}
    assert await store.registration_counts(MAR1, MAR2, FAR) == {2: 2500}
    # An atomic bulk call with one failure at the very end writes nothing.
    version = await store.current_version()
    late = [put(f"z{i:05d}", eid=2) for i in range(2999)] + [put("n00000", expect=MUST_NOT_EXIST)]
    results = await store.write(late, now=MIDNIGHT + 120)
    assert outcomes(results) == [NOT_WRITTEN] * 2999 + [EXISTS]
    assert await store.current_version() == version
    assert (await store.list_handles(P, 0, 0))[0] == len(expected)
    assert await store.registration_counts(MAR1, MAR2, FAR) == {2: 2500}


# -- counters ------------------------------------------------------------------------------------
async def test_counters_create_replace_delete(store: HandleStore) -> None:
    created = MIDNIGHT - 60  # 23:59 on 28 February, Shanghai
    assert day_number(created) == FEB28 and day_number(MIDNIGHT) == MAR1
    await store.write([put("a", eid=1), put("b", eid=1), put("c", eid=2), put("free")], now=created)
    assert await store.registration_counts(FEB28, MAR1, FAR) == {1: 2, 2: 1}
    assert await store.registration_counts(MAR1, MAR2, FAR) == {}
    # Half-open day ranges.
    assert await store.registration_counts(FEB28, FEB28, FAR) == {}
    assert await store.registration_counts(FEB28 - 1, FEB28, FAR) == {}
    # The hour cut-off: the creation is counted in its own hour.
    assert await store.registration_counts(FEB28, MAR2, hour_of(created)) == {}
    assert await store.registration_counts(FEB28, MAR2, hour_of(created) + 1) == {1: 2, 2: 1}

    # A replace the next day counts nothing.
    await store.write([put("a", eid=1, text="new")], now=MIDNIGHT + 60)
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: 2, 2: 1}

    # A delete counts -1 against the creation day, in the hour of the deletion.
    deleted = MIDNIGHT + 3 * 3600 + 5
    await store.write([delete("a")], now=deleted)
    assert await store.registration_counts(FEB28, MAR1, FAR) == {1: 1, 2: 1}
    assert await store.registration_counts(FEB28, MAR1, hour_of(deleted)) == {1: 2, 2: 1}
    assert await store.registration_counts(FEB28, MAR1, hour_of(deleted) + 1) == {1: 1, 2: 1}
    assert await store.registration_counts(MAR1, MAR2, FAR) == {}
    # Created and deleted again on 1 March: nets to zero for that day.
    await store.write([put("d", eid=1)], now=MIDNIGHT + 100)
    assert (await store.registration_counts(MAR1, MAR2, FAR)).get(1) == 1
    await store.write([delete("d"), delete("free")], now=MIDNIGHT + 200)
    assert (await store.registration_counts(MAR1, MAR2, FAR)).get(1, 0) == 0
    assert await store.registration_counts(FEB28, MAR1, FAR) == {1: 1, 2: 1}


async def test_counters_in_one_call(store: HandleStore) -> None:
    await store.write([put("old", eid=1)], now=NOW)  # 28 February
    # One call on 1 March: two creates for 1, one for 2, and a delete of a 28 February handle of 1.
    await store.write([put("x", eid=1), put("y", eid=2), delete("old"), put("z", eid=1)], now=MIDNIGHT + 10)
    assert await store.registration_counts(FEB28, MAR1, FAR) == {1: 0}
    assert await store.registration_counts(MAR1, MAR2, FAR) == {1: 2, 2: 1}
    assert await store.registration_counts(FEB28, MAR2, FAR) == {1: 2, 2: 1}


# -- promoters, enterprises, attributions --------------------------------------------------------
USCC_A = "91440101MA5CXXXX1A"
USCC_B = "91440101MA5CXXXX2B"
USCC_E = "91440101MA5CYYYY3C"
USCC_F = "91440101MA5CYYYY4D"
USCC_G = "91440101MA5CYYYY5E"


def prefix_write(prefix: str) -> HandleWrite:
    handle = f"0.NA/{prefix}"
    return HandleWrite(handle.upper(), handle, "0.NA", values("prefix"), MUST_NOT_EXIST)


async def test_promoters(store: HandleStore) -> None:
    assert await store.list_promoters() == []
    a = await store.add_promoter("Promoter A", USCC_A, now=NOW)
    b = await store.add_promoter("Promoter B", USCC_B, now=NOW + 1)
    assert (a.id, a.name, a.uscc, a.created_at) == (1, "Promoter A", USCC_A, NOW)
    assert b.id == 2
    assert await store.list_promoters() == [a, b]
    assert await store.get_promoter(2) == b
    assert await store.get_promoter(USCC_A) == a
    assert await store.get_promoter(99) is None and await store.get_promoter("nope") is None
    with pytest.raises(InvalidRequest) as err:
        await store.add_promoter("Again", USCC_A, now=NOW)
    assert err.value.message == f"a promoter with credit code {USCC_A} already exists"
    assert await store.list_promoters() == [a, b]
    c = await store.add_promoter("Promoter C", "91440101MA5CXXXX3C", now=NOW)
    assert c.id == 3


async def test_enterprises(store: HandleStore) -> None:
    a = await store.add_promoter("A", USCC_A, now=NOW)
    b = await store.add_promoter("B", USCC_B, now=NOW)
    version = await store.current_version()
    e = await store.add_enterprise("Factory", USCC_E, "88.118.8.1001", a.id, prefix_write("88.118.8.1001"), now=NOW)
    assert (e.id, e.name, e.uscc, e.prefix, e.status, e.promoter_id, e.created_at) == (
        1,
        "Factory",
        USCC_E,
        "88.118.8.1001",
        "active",
        a.id,
        NOW,
    )
    # The prefix handle is written in the same transaction, as a versioned write.
    row = await store.get("0.NA/88.118.8.1001")
    assert row is not None and row.version == version + 1 == await store.current_version()
    assert await store.list_handles("0.NA", 0, 10) == (1, ["0.NA/88.118.8.1001"])
    assert await store.get_enterprise(1) == e
    assert await store.get_enterprise("88.118.8.1001") == e
    assert await store.get_enterprise(USCC_E) == e
    assert await store.get_enterprise(USCC_E.lower()) == e
    assert await store.get_enterprise(2) is None and await store.get_enterprise("88.118.8.7") is None

    async def refused(message: str, uscc: str, prefix: str) -> None:
        with pytest.raises(InvalidRequest) as err:
            await store.add_enterprise("X", uscc, prefix, a.id, prefix_write(prefix), now=NOW)
        assert err.value.message == message

    await refused(f"an enterprise with credit code {USCC_E} already exists", USCC_E, "88.118.8.1002")
    await refused("prefix 88.118.8.1001 is already allocated", USCC_F, "88.118.8.1001")
    # The prefix handle exists already (made by hand): refused, and nothing of it is kept.
    await store.write([prefix_write("88.118.8.1003")], now=NOW)
    version = await store.current_version()
    await refused("prefix handle 0.NA/88.118.8.1003 already exists", USCC_F, "88.118.8.1003")
    assert await store.current_version() == version
    assert await store.list_enterprises() == [e]
    assert await store.attributions() == [Attribution(1, a.id, NOW)]

    f = await store.add_enterprise("Mill", USCC_F, "88.118.8.1002", b.id, prefix_write("88.118.8.1002"), now=NOW + 5)
    assert f.id == 2  # no id burnt by the refusals
    assert await store.list_enterprises() == [e, f]
    assert await store.enterprise_prefixes() == ["88.118.8.1001", "88.118.8.1002"]
    # Prefixes compare case-insensitively.
    g = await store.add_enterprise("Lab", USCC_G, "88.118.8.a7", a.id, prefix_write("88.118.8.a7"), now=NOW)
    assert g.id == 3 and await store.get_enterprise("88.118.8.A7") == g
    await refused("prefix 88.118.8.A7 is already allocated", "91440101MA5CYYYY6F", "88.118.8.A7")

    # Moving and disabling.
    await store.move_enterprise(e.id, b.id, effective_at=NOW + 100)
    await store.set_enterprise_status(f.id, "disabled")
    moved = await store.get_enterprise(e.id)
    assert moved is not None and moved.promoter_id == b.id
    disabled = await store.get_enterprise("88.118.8.1002")
    assert disabled is not None and disabled.status == "disabled"
    assert await store.attributions() == [
        Attribution(e.id, a.id, NOW),
        Attribution(g.id, a.id, NOW),
        Attribution(f.id, b.id, NOW + 5),
        Attribution(e.id, b.id, NOW + 100),
    ]
    with pytest.raises(InvalidRequest):
        await store.move_enterprise(e.id, 99, effective_at=NOW + 200)  # no such promoter
    assert len(await store.attributions()) == 4


# -- GS1 company prefixes ------------------------------------------------------------------------
async def test_gs1_prefixes(store: HandleStore) -> None:
    a = await store.add_promoter("A", USCC_A, now=NOW)
    e = await store.add_enterprise("Factory", USCC_E, P, a.id, prefix_write(P), now=NOW)
    f = await store.add_enterprise("Mill", USCC_F, Q, a.id, prefix_write(Q), now=NOW)
    assert await store.list_gs1_prefixes() == [] and await store.find_gs1_prefix(["6901234"]) is None

    mine = Gs1Prefix("6901234", e.id, P, NOW)
    assert await store.add_gs1_prefix(e.id, "6901234", now=NOW, limit=3) == (mine, True)
    # Registering it again changes nothing (and keeps the first time).
    assert await store.add_gs1_prefix(e.id, "6901234", now=NOW + 9, limit=3) == (mine, False)
    # The same enterprise may hold a prefix inside its own.
    inner = Gs1Prefix("69012345", e.id, P, NOW + 1)
    assert await store.add_gs1_prefix(e.id, "69012345", now=NOW + 1, limit=3) == (inner, True)

    async def refused(company_prefix: str, message: str) -> None:
        with pytest.raises(HandleAlreadyExists) as err:
            await store.add_gs1_prefix(f.id, company_prefix, now=NOW, limit=3)
        assert err.value.message == message

    # A GTIN has one owner: another enterprise may not take the prefix, a shorter one or a longer one.
    await refused("6901234", "GS1 company prefix 6901234 is registered by another enterprise")
    overlap = "overlaps {}, registered by another enterprise: a GTIN has one owner"
    await refused("690123", f"GS1 company prefix 690123 {overlap.format('6901234')}")
    await refused("690123456789", f"GS1 company prefix 690123456789 {overlap.format('6901234')}")
    # Neighbours are not overlaps (":" sorts right after "9", "69012339" right before).
    theirs = [await store.add_gs1_prefix(f.id, p, now=NOW + 2, limit=3) for p in ("6901235", "69012339")]
    assert [created for _, created in theirs] == [True, True]

    assert await store.list_gs1_prefixes(e.id) == [mine, inner]
    assert [p.company_prefix for p in await store.list_gs1_prefixes()] == ["69012339", "6901234", "69012345", "6901235"]
    assert await store.list_gs1_prefixes(99) == []

    # Resolution: the longest registered candidate wins.
    assert await store.find_gs1_prefix(["690123456789", "69012345", "6901234", "690123"]) == inner
    assert await store.find_gs1_prefix(["690123499999", "6901234"]) == mine
    found = await store.find_gs1_prefix(["6901235"])
    assert found is not None and (found.enterprise_id, found.enterprise_prefix) == (f.id, Q)
    assert await store.find_gs1_prefix(["5012345"]) is None and await store.find_gs1_prefix([]) is None

    # At most ``limit`` per enterprise; an existing one is still answered at the limit.
    assert await store.add_gs1_prefix(e.id, "6902000", now=NOW, limit=3) == (Gs1Prefix("6902000", e.id, P, NOW), True)
    with pytest.raises(InvalidRequest) as limit_err:
        await store.add_gs1_prefix(e.id, "6903000", now=NOW, limit=3)
    assert limit_err.value.message == "an enterprise may register at most 3 GS1 company prefixes"
    assert await store.add_gs1_prefix(e.id, "6902000", now=NOW, limit=3) == (Gs1Prefix("6902000", e.id, P, NOW), False)

    # Removing: only the enterprise's own; then the other enterprise may take it.
    assert await store.remove_gs1_prefix(f.id, "6901234") is False
    assert await store.remove_gs1_prefix(e.id, "69012345") is True
    assert await store.remove_gs1_prefix(e.id, "69012345") is False
    assert await store.remove_gs1_prefix(e.id, "6901234") is True
    assert await store.find_gs1_prefix(["69012345", "6901234"]) is None
    assert await store.add_gs1_prefix(f.id, "690123", now=NOW + 3, limit=3) == (
        Gs1Prefix("690123", f.id, Q, NOW + 3),
        True,
    )
    with pytest.raises(InvalidRequest):
        await store.add_gs1_prefix(99, "5012345", now=NOW, limit=3)  # no such enterprise
    assert await store.find_gs1_prefix(["5012345"]) is None


async def test_concurrent_overlapping_gs1_prefixes_have_one_owner(store_url: str) -> None:
    """Two stores (two processes) add overlapping prefixes for two enterprises at once: one wins."""
    first, second = await open_store(store_url), await open_store(store_url)
    try:
        a = await first.add_promoter("A", USCC_A, now=NOW)
        e = await first.add_enterprise("Factory", USCC_E, P, a.id, prefix_write(P), now=NOW)
        f = await first.add_enterprise("Mill", USCC_F, Q, a.id, prefix_write(Q), now=NOW)
        for n in range(10):
            short, long = f"69{n:02d}123", f"69{n:02d}1234"
            results = await asyncio.gather(
                first.add_gs1_prefix(e.id, short, now=NOW, limit=100),
                second.add_gs1_prefix(f.id, long, now=NOW, limit=100),
                return_exceptions=True,
            )
            assert sum(isinstance(r, HandleAlreadyExists) for r in results) == 1, results
            owners = {p.enterprise_id for p in await first.list_gs1_prefixes() if p.company_prefix.startswith(short)}
            assert len(owners) == 1
    finally:
        await first.close()
        await second.close()


# -- metadata ------------------------------------------------------------------------------------
async def test_meta(store: HandleStore) -> None:
    assert await store.get_meta("node-key") is None
    await store.set_meta("node-key", "pem one")
    assert await store.get_meta("node-key") == "pem one"
    await store.set_meta("node-key", "pem two")
    await store.set_meta("other", "")
    assert await store.get_meta("node-key") == "pem two"
    assert await store.get_meta("other") == ""


async def test_ping_and_closed_store(store_url: str) -> None:
    s = await open_store(store_url)
    await s.ping()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.get(f"{P}/a")
    with pytest.raises(StoreUnavailable):
        await s.ping()


# -- PostgreSQL only -----------------------------------------------------------------------------
async def test_pg_concurrent_compare_and_set_loses_no_update(pg_store_url: str) -> None:
    """Two stores (two pools, as two processes would have) increment the same counters with
    read / compare-and-set / retry. Every increment must survive, and versions never repeat."""
    one = await open_store(pg_store_url, max_size=4)
    two = await open_store(pg_store_url, max_size=4)
    keys = [f"{P}/counter{i}" for i in range(3)]
    rounds = 15
    versions: list[int] = []

    async def bump(s: HandleStore, key: str) -> None:
        for _ in range(rounds):
            while True:
                row = await s.get(key)
                if row is None:
                    write = HandleWrite(key, key, P, (HandleValue(1, "COUNT", b"1"),), MUST_NOT_EXIST, 1)
                else:
                    n = int(unpack_record(row.packed).values[0].data) + 1
                    write = HandleWrite(key, key, P, (HandleValue(1, "COUNT", str(n).encode()),), row.version, 1)
                (r,) = await s.write([write], now=NOW)
                if r.ok:
                    versions.append(r.version)
                    break
                assert r.outcome in (STALE, EXISTS)

    try:
        await asyncio.gather(*(bump(s, k) for s in (one, two) for k in keys for _ in range(2)))
        for k in keys:
            row = await one.get(k)
            assert row is not None and int(unpack_record(row.packed).values[0].data) == 2 * 2 * rounds
        assert len(versions) == len(set(versions)) == 3 * 2 * 2 * rounds
        assert await two.current_version() == max(versions)
        assert await one.registration_counts(FEB28, MAR2, FAR) == {1: 3}
        total, listed = await one.list_handles(P, 0, 10)
        assert total == 3 and sorted(listed) == keys
    finally:
        await one.close()
        await two.close()


async def test_pg_concurrent_creates_of_the_same_key(pg_store_url: str) -> None:
    stores = [await open_store(pg_store_url, max_size=3) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(s.write([put(f"k{i}", expect=MUST_NOT_EXIST, eid=1)], now=NOW) for i in range(20) for s in stores)
        )
        for i in range(20):
            pair = sorted(o.outcome.value for o in results[2 * i] + results[2 * i + 1])
            assert pair == ["created", "exists"]
        assert await stores[0].registration_counts(FEB28, MAR2, FAR) == {1: 20}
        assert (await stores[1].list_handles(P, 0, 0))[0] == 20
    finally:
        for s in stores:
            await s.close()


async def test_pg_unreachable_server_is_store_unavailable() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailable) as err:
        await open_store(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=2)
    assert f"127.0.0.1:{port}" in err.value.message and err.value.code == 3


async def test_pg_missing_database_is_store_unavailable(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + f"/idnode_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await open_store(missing)


async def test_pg_pool_survives_terminated_connections(pg_store_url: str) -> None:
    name = f"idnode-test-{uuid.uuid4().hex[:8]}"
    s = await open_store(pg_store_url, application_name=name, min_size=2, max_size=2)
    try:
        await s.write([put("a")], now=NOW)
        await asyncio.gather(s.get(f"{P}/a"), s.get(f"{P}/a"))  # both pooled connections in use once
        admin = await asyncpg.connect(pg_store_url)
        try:
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = $1",
                name,
            )
        finally:
            await admin.close()
        assert ended >= 1
        await asyncio.sleep(0.1)
        # Dead pooled connections are replaced transparently (reads and writes that did not commit).
        assert await s.get(f"{P}/a") is not None
        assert outcomes(await s.write([put("b")], now=NOW)) == [CREATED]
        assert (await s.list_handles(P, 0, 10))[0] == 2
    finally:
        await s.close()


async def test_pg_store_unavailable_while_down_and_recovers(pg_store_url: str) -> None:
    target = pg_store_url.rsplit("@", 1)[1].split("/", 1)[0]
    host, _, port = target.partition(":")
    assert host in ("127.0.0.1", "localhost")
    proxy = TcpProxy(int(port or 5432))
    await proxy.start()
    url = pg_store_url.replace(f"@{target}/", f"@127.0.0.1:{proxy.port}/")
    s = await open_store(url, connect_timeout=2, command_timeout=5)
    try:
        await s.write([put("a")], now=NOW)
        await proxy.stop()
        for call in (
            s.get(f"{P}/a"),
            s.write([put("b")], now=NOW),
            s.list_handles(P, 0, 10),
            s.current_version(),
            s.set_meta("k", "v"),
            s.ping(),
        ):
            with pytest.raises(StoreUnavailable) as err:
                await call
            assert f"127.0.0.1:{proxy.port}" in err.value.message
        await proxy.start()
        assert await s.get(f"{P}/a") is not None
        assert outcomes(await s.write([put("b")], now=NOW)) == [CREATED]
        await s.ping()
    finally:
        await s.close()
        await proxy.stop()


async def test_add_meta_keeps_the_first_value(store: HandleStore) -> None:
    assert await store.add_meta("signing", "first") == "first"
    assert await store.add_meta("signing", "second") == "first"
    assert await store.get_meta("signing") == "first"


async def test_templates_versions(store: HandleStore) -> None:
    from registry.errors import InvalidRequest

    assert await store.get_template("", "sku", None) is None
    await store.add_template("", "sku", 1, '{"v":1}', now=NOW)
    await store.add_template("", "sku", 2, '{"v":2}', now=NOW)
    await store.add_template("88.118.8.1001", "sku", 1, '{"own":1}', now=NOW)
    with pytest.raises(InvalidRequest):
        await store.add_template("", "sku", 2, '{"again":2}', now=NOW)
    assert await store.get_template("", "sku", None) == (2, '{"v":2}')
    assert await store.get_template("", "sku", 1) == (1, '{"v":1}')
    assert await store.get_template("88.118.8.1001", "sku", None) == (1, '{"own":1}')
    assert [(s, i, v) for s, i, v, _ in await store.list_templates()] == [
        ("", "sku", 1),
        ("", "sku", 2),
        ("88.118.8.1001", "sku", 1),
    ]


async def test_idempotent_replies(store: HandleStore) -> None:
    assert await store.get_idempotent("k") is None
    await store.add_idempotent("k", "hash-1", b'{"status":201}', now=NOW)
    await store.add_idempotent("k", "hash-2", b'{"status":400}', now=NOW)  # the first one wins
    assert await store.get_idempotent("k") == ("hash-1", b'{"status":201}')


# -- resolution statistics -------------------------------------------------------------------------
def rc(prefix: str, day: int, interface: str, found: int, not_found: int = 0) -> ResolutionCount:
    return ResolutionCount(prefix, day, interface, found, not_found)


async def test_resolution_counts_add_up_and_are_read_by_range(store: HandleStore) -> None:
    first = [rc(P, FEB28, "rest", 5, 1), rc(P, MAR1, "rest", 2), rc(P, MAR1, "native", 7), rc(Q, MAR1, "rest", 3)]
    assert await store.add_resolution_counts("flush-1", first, now=NOW)
    # Another worker's flush: the same rows grow, new ones appear.
    assert await store.add_resolution_counts(
        "flush-2", [rc(P, MAR1, "rest", 10, 4), rc(P, MAR2, "web", 1), rc(Q, MAR1, "rest", 1, 2)], now=NOW
    )
    assert await store.resolution_counts(FEB28, MAR2, P) == [
        rc(P, FEB28, "rest", 5, 1),
        rc(P, MAR1, "native", 7),
        rc(P, MAR1, "rest", 12, 4),
    ]
    assert await store.resolution_counts(MAR1, MAR1 + 1, Q) == [rc(Q, MAR1, "rest", 4, 2)]
    assert await store.resolution_counts(MAR1, MAR2, "88.118.8.9999") == []
    # Every prefix summed, per day and interface.
    assert await store.resolution_counts(FEB28, 20250303, None) == [
        rc("", FEB28, "rest", 5, 1),
        rc("", MAR1, "native", 7),
        rc("", MAR1, "rest", 16, 6),
        rc("", MAR2, "web", 1),
    ]
    # Per prefix and interface, summed over the days.
    assert await store.resolution_prefix_totals(FEB28, MAR2) == [
        rc(P, 0, "native", 7),
        rc(P, 0, "rest", 17, 5),
        rc(Q, 0, "rest", 4, 2),
    ]
    assert await store.resolution_prefix_totals(20250401, 20250501) == []


async def test_a_resolution_batch_is_added_once(store: HandleStore) -> None:
    """A flush retried after an unknown outcome (its COMMIT's answer lost) must not count twice."""
    batch = [rc(P, MAR1, "rest", 3, 1)]
    assert await store.add_resolution_counts("flush-a", batch, now=NOW) is True
    assert await store.add_resolution_counts("flush-a", batch, now=NOW + 5) is False
    assert await store.resolution_counts(MAR1, MAR2, P) == [rc(P, MAR1, "rest", 3, 1)]
    assert await store.add_resolution_counts("flush-b", [], now=NOW) is True  # an empty flush is harmless
    # Ids are forgotten after RESOLUTION_BATCH_DAYS (a retry comes within seconds, not days).
    later = NOW + RESOLUTION_BATCH_DAYS * 86400 + 1
    assert await store.add_resolution_counts("flush-c", [rc(P, MAR1, "rest", 1)], now=later) is True
    assert await store.add_resolution_counts("flush-a", batch, now=later) is True
    assert await store.resolution_counts(MAR1, MAR2, P) == [rc(P, MAR1, "rest", 7, 2)]


async def test_concurrent_resolution_flushes_lose_nothing(store_url: str) -> None:
    """Workers (here two stores, as two processes have) flush overlapping rows at the same time: every
    count arrives, and PostgreSQL does not deadlock on rows locked in different orders."""
    one, two = await open_store(store_url), await open_store(store_url)
    prefixes = [f"88.118.8.{1000 + i}" for i in range(20)]
    try:

        async def flush(s: HandleStore, worker: int) -> None:
            for n in range(10):
                rows = [rc(p, MAR1, i, 1, 1) for p in prefixes for i in ("rest", "native")]
                if (n + worker) % 2:
                    rows.reverse()
                assert await s.add_resolution_counts(f"w{worker}-{n}", rows, now=NOW)

        await asyncio.gather(flush(one, 1), flush(two, 2), flush(one, 3), flush(two, 4))
        totals = await one.resolution_prefix_totals(MAR1, MAR2)
        assert len(totals) == 40
        assert {(t.found, t.not_found) for t in totals} == {(40, 40)}
    finally:
        await one.close()
        await two.close()
