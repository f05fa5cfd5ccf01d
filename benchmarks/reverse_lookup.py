"""Reverse lookup at scale (issue 13): what the value index costs writes, how fast it is filled, and
how fast ``*part*`` searches are against reading every value.

Per store (SQLite in a temporary directory, PostgreSQL in a database made for the run):

1. Writes: ``store.write`` of ``--handles`` new handles (URL and EMAIL values, 5,000 per call, as a
   batch writes them) with the value-index queue, as the store does it, and, in the same run on a fresh
   store, without it (the queue insert taken out): the ratio is what queueing costs a batch.
2. Indexing: ``ValueIndexer.run_once`` over the queue those writes left: values indexed per second.
3. Searches, each the median of ``--runs``: a ``*part*`` pattern with 1 hit and one with ~100 hits,
   an exact value, a fixed start, through ``store.search_values`` (the trigram and B-tree indexes);
   baseline: the same ``*part*`` patterns as a scan of every indexed value (``LIKE`` on the value
   table without its indexes), which is what a search costs without the index.

    .venv/bin/python -m benchmarks.reverse_lookup [--handles 200000] [--runs 7]
        [--pg-admin postgresql://postgres@127.0.0.1:5432/postgres] [--store-kind sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from registry.model import HandleValue, parse_handle
from registry.stores import open_store
from registry.stores import postgres_handle_writes as postgres
from registry.stores import sqlite_handle_writes as sqlite
from registry.stores.base import MUST_NOT_EXIST, HandleStore, HandleWrite, ValueCondition
from registry.value_index import ValueIndexer, condition

PREFIX = "88.118.8.1001"
CALL = 5000


def writes(start: int, count: int) -> list[HandleWrite]:
    out = []
    for n in range(start, start + count):
        values = (
            HandleValue(index=1, type="URL", data=f"https://shop.example-brand.com/p/sku-{n:08d}?ref=label".encode()),
            HandleValue(index=2, type="EMAIL", data=f"qa-{n % 1000:03d}@example-brand.com".encode()),
        )
        handle = f"{PREFIX}/SKU-{n:08d}"
        out.append(HandleWrite(parse_handle(handle).key, handle, PREFIX, values, MUST_NOT_EXIST))
    return out


@contextlib.contextmanager
def without_queue(kind: str) -> Iterator[None]:
    """The store's writes with the value-index queue taken out (the baseline)."""
    if kind == "sqlite":
        real = sqlite.queue_for_index
        sqlite.queue_for_index = lambda c, hids: None  # type: ignore[assignment]
        try:
            yield
        finally:
            sqlite.queue_for_index = real
        return
    real_sql = postgres._apply_sql

    def plain(*flags: bool) -> str:
        sql = real_sql(*flags)
        head, _, rest = sql.partition("q AS (")
        rest = rest.split("RETURNING 1),\n", 1)[1]
        return (head + rest).replace("(SELECT count(*) FROM q) AS queued, ", "")

    postgres._apply_sql = plain  # type: ignore[assignment]
    postgres._numbered.cache_clear()
    try:
        yield
    finally:
        postgres._apply_sql = real_sql
        postgres._numbered.cache_clear()


async def write_all(store: HandleStore, count: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, count, CALL):
        results = await store.write(writes(start, min(CALL, count - start)), now=1_790_000_000)
        assert all(r.ok for r in results)
    return time.perf_counter() - t0


async def median(fn: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


async def scan_sqlite(store: Any, like: str) -> int:
    sql = "SELECT COUNT(DISTINCT id >> 16) FROM handle_values NOT INDEXED WHERE type = 'URL' AND folded LIKE ?"
    return (await store._read(lambda c: c.execute(sql, (like,)).fetchone()))[0]


async def scan_pg(store: Any, like: str) -> int:
    async def run(conn: asyncpg.Connection, _: Any) -> int:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
            return await conn.fetchval(
                "SELECT COUNT(DISTINCT hid) FROM handle_values WHERE type = 'URL' AND folded LIKE $1 ESCAPE '\\'", like
            )

    return await store._run(run)


async def timed_writes(kind: str, url: str, handles: int, *, queue: bool) -> float:
    store = await open_store(url)
    try:
        with contextlib.nullcontext() if queue else without_queue(kind):
            return await write_all(store, handles)
    finally:
        await store.close()


async def bench(kind: str, fresh: Callable[[], Awaitable[str]], handles: int, runs: int) -> None:
    print(f"\n== {kind}: {handles:,} handles, {2 * handles:,} values")
    # Alternating fresh stores, the best of three each: the machine is shared and noisy.
    baseline = queued = float("inf")
    url = ""
    for _ in range(3):
        baseline = min(baseline, await timed_writes(kind, await fresh(), handles, queue=False))
        url = await fresh()
        queued = min(queued, await timed_writes(kind, url, handles, queue=True))
    print(
        f"writes: {handles / queued:,.0f} handles/s with the queue, {handles / baseline:,.0f} without "
        f"(ratio {queued / baseline:.2f}x the time; best of 3 each)"
    )
    store = await open_store(url)  # the last store written with the queue
    try:
        assert await store.value_index_backlog() == handles
        t0 = time.perf_counter()
        indexed = await ValueIndexer(store, chunk=5000).run_once()
        took = time.perf_counter() - t0
        print(f"indexing: {indexed:,} handles in {took:.1f} s, {2 * indexed / took:,.0f} values/s")

        scan = scan_sqlite if kind == "sqlite" else scan_pg
        cases: list[tuple[str, list[ValueCondition], str | None]] = [
            ("*part* 1 hit", [condition("URL", "*sku-00012345?ref*")], "%sku-00012345?ref%"),
            ("*part* ~100 hits", [condition("URL", "*sku-000123*")], "%sku-000123%"),
            (
                "exact value",
                [condition("URL", f"https://shop.example-brand.com/p/sku-{handles // 2:08d}?ref=label")],
                None,
            ),
            ("fixed start", [condition("URL", "https://shop.example-brand.com/p/sku-0000999*")], None),
        ]
        for label, conds, like in cases:
            took, found = await median(lambda conds=conds: store.search_values(conds, None, 1000, 0), runs)
            line = f"{label:18} {len(found):5} hits  {took * 1000:8.2f} ms"
            if like is not None:
                scanned, hits = await median(lambda like=like: scan(store, like), max(3, runs // 2))
                assert hits == len(found), (hits, len(found))
                line += f"   scan of every value {scanned * 1000:8.1f} ms   ({scanned / took:,.0f}x faster)"
            print(line)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handles", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--store-kind", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.store_kind in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            names = iter(range(100))

            async def fresh_sqlite() -> str:
                return f"sqlite:///{tmp}/store-{next(names)}.db"

            await bench("sqlite", fresh_sqlite, args.handles, args.runs)
    if args.store_kind in ("postgresql", "both"):
        made: list[str] = []
        base = args.pg_admin.rsplit("/", 1)[0]

        async def fresh_pg() -> str:
            name = f"idnode_bench_{uuid.uuid4().hex[:8]}"
            conn = await asyncpg.connect(args.pg_admin)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            made.append(name)
            return f"{base}/{name}"

        try:
            await bench("postgresql", fresh_pg, args.handles, args.runs)
        finally:
            conn = await asyncpg.connect(args.pg_admin)
            try:
                for name in made:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
