"""Registration counts through the monthly roll-up equal a brute-force count of the same events,
for periods and cut-offs on and off month boundaries, on both stores."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator

import pytest

from registry.days import day_number, day_start, hour_of
from registry.model import HandleValue
from registry.stores import open_store, rollup
from registry.stores.base import HandleStore, HandleWrite

P = "88.118.8.1001"
START = day_start(dt.date(2024, 12, 20))
END = day_start(dt.date(2025, 4, 10))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[HandleStore]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


def _put(n: int, eid: int) -> HandleWrite:
    handle = f"{P}/{n}"
    return HandleWrite(handle, handle, P, (HandleValue(index=1, type="URL", data=b"https://e"),), enterprise_id=eid)


def _delete(n: int) -> HandleWrite:
    handle = f"{P}/{n}"
    return HandleWrite(handle, handle, P, None)


def test_plan_splits_a_period_into_whole_months_and_edges() -> None:
    cut = hour_of(day_start(dt.date(2025, 3, 10)))
    how = rollup.plan(20250115, 20250420, cut)
    assert how.full_months == (202502, 202504)
    assert how.edge_days == ((20250115, 20250201), (20250401, 20250420))
    assert how.before_change_month == 202503
    assert how.partial_hours == (hour_of(day_start(dt.date(2025, 3, 1))), cut)
    # A cut-off at the start of a month needs no detail rows for the whole months.
    assert rollup.plan(20250101, 20260101, hour_of(day_start(dt.date(2025, 6, 1)))).partial_hours is None
    # A period inside one month is all detail; an empty period reads nothing.
    assert rollup.plan(20250103, 20250120, cut) == rollup.CountPlan(None, 0, None, ((20250103, 20250120),))
    assert rollup.plan(20250103, 20250103, cut).edge_days == ()
    # Cut-offs beyond any date, or before 1970.
    assert rollup.plan(20250101, 20260101, 10**9).before_change_month > 999912
    assert rollup.plan(20250101, 20260101, 0) == rollup.CountPlan(None, 0, None, ())


async def test_rollup_counts_equal_brute_force(store: HandleStore) -> None:
    rng = random.Random(14)
    events: list[tuple[int, int, int, int]] = []  # (enterprise, creation day, hour of change, delta)
    alive: dict[int, tuple[int, int]] = {}  # handle number -> (enterprise, creation day)
    t, n = START, 0
    while t < END:
        t += rng.randrange(1, 40) * 3600 + rng.randrange(3600)
        if alive and rng.random() < 0.3:
            victims = rng.sample(sorted(alive), min(len(alive), rng.randrange(1, 4)))
            await store.write([_delete(v) for v in victims], now=t)
            for v in victims:
                eid, day = alive.pop(v)
                events.append((eid, day, hour_of(t), -1))
        else:
            eid = rng.choice((1, 2, 3))
            batch = list(range(n, n + rng.randrange(1, 6)))
            n += len(batch)
            await store.write([_put(b, eid) for b in batch], now=t)
            for b in batch:
                alive[b] = (eid, day_number(t))
                events.append((eid, day_number(t), hour_of(t), 1))

    def brute(from_day: int, to_day: int, before_hour: int) -> dict[int, int]:
        out: dict[int, int] = {}
        for eid, day, hour, delta in events:
            if from_day <= day < to_day and hour < before_hour:
                out[eid] = out.get(eid, 0) + delta
        return {k: v for k, v in out.items() if v}

    days = [20241201, 20241220, 20250101, 20250115, 20250201, 20250301, 20250302, 20250401, 20250501]
    cuts = [hour_of(START), hour_of(day_start(dt.date(2025, 2, 1))), hour_of(END), 10**9]
    cuts += [hour_of(rng.randrange(START, END)) for _ in range(12)]
    checked = 0
    for a in days:
        for b in days:
            if a >= b:
                continue
            for cut in cuts:
                got = {k: v for k, v in (await store.registration_counts(a, b, cut)).items() if v}
                assert got == brute(a, b, cut), (a, b, cut)
                checked += 1
    assert checked == 36 * len(cuts)
    assert sum(delta for *_, delta in events) > 0  # the data set is not trivially empty


async def test_migration_backfills_the_rollup_from_existing_counters(store_url: str) -> None:
    """A store created before the roll-up existed gets it filled from its counter rows."""
    rows = [(1, 20250105, hour_of(day_start(dt.date(2025, 1, 5))) + 3, 7)]
    rows.append((1, 20250105, hour_of(day_start(dt.date(2025, 3, 1))) - 1, -2))  # deleted on 28 Feb (Beijing)
    rows.append((2, 20250301, hour_of(day_start(dt.date(2025, 3, 1))), 4))
    if store_url.startswith("sqlite"):
        import sqlite3

        from registry.stores.sqlite import MIGRATIONS

        db = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        db.executemany("INSERT INTO registration_counts VALUES (?, ?, ?, ?)", rows)
        db.execute("PRAGMA user_version = 2")
        db.close()
    else:
        import asyncpg

        from registry.stores.postgres import MIGRATIONS as PG_MIGRATIONS

        conn = await asyncpg.connect(store_url)
        await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
        for number, sql in PG_MIGRATIONS[:2]:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, now())", number)
        await conn.executemany("INSERT INTO registration_counts VALUES ($1, $2, $3, $4)", rows)
        await conn.close()
    s = await open_store(store_url)
    try:
        feb = hour_of(day_start(dt.date(2025, 2, 15)))
        assert await s.registration_counts(20250101, 20250401, 10**9) == {1: 5, 2: 4}
        assert await s.registration_counts(20250101, 20250201, feb) == {1: 7}
        assert await s.registration_counts(20250101, 20250401, hour_of(day_start(dt.date(2025, 3, 2)))) == {1: 5, 2: 4}
    finally:
        await s.close()
