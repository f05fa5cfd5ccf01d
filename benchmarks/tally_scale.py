"""The bureau at scale: 100 promoters, 1,200 enterprises, two years of daily registration counts.

Times, on SQLite and PostgreSQL, the tally itself (``compute_tally``: counters, attributions, the award
of every promoter), the bureau page and the XLSX export through the real app (live, so each request
computes, signs and renders anew), and, as the baseline in the same run, the counter query the tally
used before the monthly roll-up (one scan of every counter row in the period). Growth is measured by
running the same at 300, 600 and 1,200 enterprises over two years and at 1,200 over one year, and
printing each time against enterprises x days.

Promoters, enterprises and attributions go in through the store's own methods; the counter rows (one
per enterprise and day, at 10:00 Beijing time, 0-60 registrations, and a deletion recorded 40 days
later on every 30th day) and their roll-up go in with SQL, the roll-up computed as migration 3 does.

    .venv/bin/python -m benchmarks.tally_scale [--store postgresql://postgres@127.0.0.1/postgres] [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient, TestServer

from promotion_tracker.policy import Policy
from promotion_tracker.tally import compute_tally
from registry.days import day_number, day_start
from registry.model import HandleValue
from registry.stores import open_store
from registry.stores.base import MUST_NOT_EXIST, HandleStore, HandleWrite
from resolver.config import load_config
from resolver.http.app import create_app

SECRET = "bench-secret"
END = dt.date(2026, 1, 1)  # the data ends on 31 December 2025 and goes back --sizes days
START = dt.date(2024, 1, 1)  # the two-year tally's period starts here
NOW = dt.datetime(2025, 12, 20, 3, 0, tzinfo=dt.UTC)  # a live tally late in the second year


def _sizes(promoter: int, enterprises: int, promoters: int) -> int:
    """Uneven promoters: every tenth brings 4x as many enterprises as the others."""
    weights = [4 if p % 10 == 0 else 1 for p in range(promoters)]
    share = enterprises * weights[promoter] // sum(weights)
    return share + (1 if promoter < enterprises - sum(enterprises * w // sum(weights) for w in weights) else 0)


async def seed(store: HandleStore, promoters: int, enterprises: int, days: int) -> int:
    """Returns the number of counter rows written."""
    rng = random.Random(14)
    created = int(dt.datetime(2023, 12, 1, tzinfo=dt.UTC).timestamp())
    value = (HandleValue(index=1, type="URL", data=b"https://example.com/"),)
    eids = []
    n = 0
    for p in range(promoters):
        promoter = await store.add_promoter(f"推广单位 {p + 1:03d}", f"92440111{p:09d}X", now=created)
        for _ in range(_sizes(p, enterprises, promoters)):
            n += 1
            prefix = f"88.118.8.{1000 + n}"
            write = HandleWrite(f"0.NA/{prefix}", f"0.NA/{prefix}", "0.NA", value, MUST_NOT_EXIST)
            e = await store.add_enterprise(
                f"应用企业 {n:04d}", f"91440111{n:09d}Y", prefix, promoter.id, write, now=created
            )
            eids.append(e.id)
    rows = []
    first = END - dt.timedelta(days=days)
    for eid in eids:
        for d in range(days):
            day = first + dt.timedelta(days=d)
            ts = day_start(day) + 2 * 3600  # 10:00 Beijing time
            k = rng.randrange(0, 61)
            if k:
                rows.append((eid, day_number(ts), ts // 3600, k))
            if d % 30 == 29 and k:
                rows.append((eid, day_number(ts), ts // 3600 + 40 * 24, -1))
    if store.url.startswith("postgres"):
        pool = store._pool  # type: ignore[attr-defined]
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "registration_counts", records=rows, columns=["enterprise_id", "day", "hour", "delta"]
            )
            await conn.execute(
                "INSERT INTO registration_months (month, change_month, enterprise_id, delta) "
                "SELECT day / 100, to_char(to_timestamp(hour * 3600) AT TIME ZONE 'Asia/Shanghai', 'YYYYMM')::int,"
                " enterprise_id, SUM(delta) FROM registration_counts GROUP BY 1, 2, 3"
            )
            await conn.execute("VACUUM ANALYZE")  # the steady state autovacuum keeps (index-only scans)
    else:

        def run(c):  # type: ignore[no-untyped-def]
            c.executemany("INSERT INTO registration_counts VALUES (?, ?, ?, ?)", rows)
            c.execute(
                "INSERT INTO registration_months (month, change_month, enterprise_id, delta) "
                "SELECT day / 100, CAST(strftime('%Y%m', hour * 3600 + 28800, 'unixepoch') AS INTEGER), "
                "enterprise_id, SUM(delta) FROM registration_counts GROUP BY 1, 2, 3"
            )
            c.execute("ANALYZE")

        await store._write(run)  # type: ignore[attr-defined]
    return len(rows)


async def median_ms(fn: Callable[[], Awaitable[object]], runs: int) -> float:
    await fn()  # warm
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def baseline(store: HandleStore, from_day: int, to_day: int) -> None:
    """The tally's counter query before the roll-up: every counter row of the period."""
    sql = (
        "SELECT enterprise_id, SUM(delta) FROM registration_counts WHERE day >= {} AND day < {} AND hour < {} "
        "GROUP BY enterprise_id"
    )
    if store.url.startswith("postgres"):
        await store._fetch(sql.format("$1", "$2", "$3"), from_day, to_day, 10**9)  # type: ignore[attr-defined]
    else:
        await store._read(lambda c: c.execute(sql.format("?", "?", "?"), (from_day, to_day, 10**9)).fetchall())  # type: ignore[attr-defined]


async def fresh_store(base_url: str | None, tmp: str) -> tuple[HandleStore, Callable[[], Awaitable[None]]]:
    if base_url is None:
        store = await open_store(f"sqlite:///{tmp}/tally-{uuid.uuid4().hex[:8]}.db")
        return store, store.close
    import asyncpg

    name = f"idnode_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = base_url.rsplit("/", 1)[0] + "/" + name
    store = await open_store(url)

    async def drop() -> None:
        await store.close()
        conn = await asyncpg.connect(base_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return store, drop


async def one_size(base_url: str | None, tmp: str, enterprises: int, days: int, runs: int, app_runs: int) -> dict:
    store, close = await fresh_store(base_url, tmp)
    try:
        t0 = time.perf_counter()
        rows = await seed(store, 100, enterprises, days)
        seeded = time.perf_counter() - t0
        policy = Policy()
        year = (dt.date(2025, 1, 1), dt.date(2026, 1, 1))
        both = (START, dt.date(2026, 1, 1))
        final_as_of = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
        out = {"enterprises": enterprises, "days": days, "rows": rows, "seed_s": seeded}
        out["tally_year"] = await median_ms(
            lambda: compute_tally(store, *year, final_as_of, policy, now=NOW + dt.timedelta(days=60)), runs
        )
        out["tally_all"] = await median_ms(
            lambda: compute_tally(store, *both, final_as_of, policy, now=NOW + dt.timedelta(days=60)), runs
        )
        out["tally_live"] = await median_ms(lambda: compute_tally(store, *both, None, policy, now=NOW), runs)
        out["baseline_all"] = await median_ms(lambda: baseline(store, 20240101, 20260101), runs)
        os.environ["IDNODE_ADMIN_SECRET"] = SECRET
        config = load_config(env={}, overrides={"data_dir": tmp, "native_port": 0})
        clock_now = int(NOW.timestamp())
        app = create_app(config, store, clock=lambda: clock_now)
        auth = "Basic " + base64.b64encode(f"300:0.NA/88.118.8:{SECRET}".encode()).decode()
        async with TestClient(TestServer(app)) as client:
            query = {"from": "2025-01-01", "to": "2026-01-01"}

            async def get(path: str, **extra: str) -> None:
                r = await client.get(path, params={**query, **extra}, headers={"Authorization": auth})
                assert r.status == 200, await r.text()
                await r.read()

            out["page"] = await median_ms(lambda: get("/bureau"), app_runs)
            out["xlsx"] = await median_ms(lambda: get("/api/promotion/tallies", format="xlsx"), app_runs)
            out["json"] = await median_ms(lambda: get("/api/promotion/tallies"), app_runs)
            first = await client.get("/api/promotion/tallies", params=query, headers={"Authorization": auth})
            out["promoters_with_award"] = sum(
                1 for p in (await first.json())["report"]["promoters"] if p["award_yuan"] > 0
            )
        return out
    finally:
        await close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="PostgreSQL admin URL (default: SQLite in a temp dir)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--app-runs", type=int, default=5)
    parser.add_argument("--sizes", default="300x730,600x730,1200x365,1200x730", help="enterprises x days, ...")
    args = parser.parse_args()
    backend = "PostgreSQL" if args.store else "SQLite"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            enterprises, days = (int(x) for x in size.split("x"))
            r = await one_size(args.store, tmp, enterprises, days, args.runs, args.app_runs)
            results.append(r)
            print(
                f"{backend} {enterprises:>5} enterprises x {days} days ({r['rows']:,} counter rows, seeded in "
                f"{r['seed_s']:.1f}s, {r['promoters_with_award']} promoters with an award): tally 1 year "
                f"{r['tally_year']:.1f} ms, 2 years {r['tally_all']:.1f} ms, live {r['tally_live']:.1f} ms; "
                f"baseline scan 2 years {r['baseline_all']:.1f} ms; page {r['page']:.0f} ms, "
                f"XLSX {r['xlsx']:.0f} ms, signed JSON {r['json']:.0f} ms",
                flush=True,
            )
    big = results[-1]
    print(
        f"\n| {backend} | enterprises x days | counter rows | tally 1 y | tally 2 y | live | baseline scan 2 y "
        "| page | XLSX | JSON |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| | {r['enterprises']:,} x {r['days']} | {r['rows']:,} | {r['tally_year']:.1f} ms | "
            f"{r['tally_all']:.1f} ms | {r['tally_live']:.1f} ms | {r['baseline_all']:.1f} ms | {r['page']:.0f} ms | "
            f"{r['xlsx']:.0f} ms | {r['json']:.0f} ms |"
        )
    print("\nper 1,000 enterprise-days (2-year tally, page, XLSX), and the baseline over the roll-up:")
    for r in results:
        k = r["enterprises"] * r["days"] / 1000
        print(
            f"  {r['enterprises']:>5} x {r['days']}: tally {r['tally_all'] / k * 1000:.1f} us, page "
            f"{r['page'] / k:.2f} ms, XLSX {r['xlsx'] / k:.2f} ms; "
            f"baseline / tally {r['baseline_all'] / r['tally_all']:.1f}x"
        )
    print(f"\nlargest size: tally {big['tally_all']:.1f} ms ({'under' if big['tally_all'] < 100 else 'OVER'} 100 ms)")


if __name__ == "__main__":
    asyncio.run(main())
