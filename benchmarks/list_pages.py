"""Listing a large prefix: page 5,000 must cost about what page 0 costs.

Seeds N handles (default 1,000,000) under one enterprise prefix, interleaved with N/3 under a second,
then times ``GET /api/handles?prefix=…&page=K&pageSize=100`` through the real app for page 0 and for
a deep page, and, as a baseline, the naive ``LIMIT … OFFSET`` query on the same table.

    .venv/bin/python -m benchmarks.list_pages [--handles 1000000] [--store URL]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import tempfile
import time
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer

from registry.model import HandleValue
from registry.stores import open_store
from registry.stores.base import MUST_NOT_EXIST, HandleWrite
from resolver.config import load_config
from resolver.http.app import create_app

SECRET = "bench-secret"
PAGE_SIZE = 100


async def seed(store_url: str, n: int) -> None:
    store = await open_store(store_url)
    value = (HandleValue(index=1, type="URL", data=b"https://example.com/p"),)
    t0 = time.perf_counter()
    chunk = 50_000
    for start in range(0, n, chunk):
        writes = []
        for i in range(start, min(n, start + chunk)):
            writes.append(
                HandleWrite(
                    f"88.118.8.1001/SKU-{i:08d}", f"88.118.8.1001/SKU-{i:08d}", "88.118.8.1001", value, MUST_NOT_EXIST
                )
            )
            if i % 3 == 0:  # a second prefix interleaved, so the listed prefix's ids are not contiguous
                writes.append(
                    HandleWrite(
                        f"88.118.8.1002/SKU-{i:08d}",
                        f"88.118.8.1002/SKU-{i:08d}",
                        "88.118.8.1002",
                        value,
                        MUST_NOT_EXIST,
                    )
                )
        await store.write(writes, now=int(time.time()))
    print(f"seeded {n:,} handles (+{(n + 2) // 3:,} under a second prefix) in {time.perf_counter() - t0:.1f}s")
    await store.close()


async def timed(client: TestClient, url: str, headers: dict[str, str], repeat: int) -> tuple[float, dict]:
    samples = []
    body: dict = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = await client.get(url, headers=headers)
        body = await r.json()
        samples.append(time.perf_counter() - t0)
        assert r.status == 200, body
    return statistics.median(samples), body


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store_url = args.store or f"sqlite:///{tmp}/bench.db"
        await seed(store_url, args.handles)
        os.environ["IDNODE_ADMIN_SECRET"] = SECRET
        config = load_config(env={}, overrides={"data_dir": tmp, "store": store_url})
        token = base64.b64encode(f"{quote('300:0.NA/88.118.8', safe='')}:{SECRET}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        # background=False: no value indexer working through the seeded handles while listing is timed.
        async with TestClient(TestServer(create_app(config, background=False))) as client:
            base = f"/api/handles?prefix=88.118.8.1001&pageSize={PAGE_SIZE}"
            await timed(client, base + "&page=0", headers, 5)  # warm up
            total = int((await timed(client, base + "&pageSize=0", headers, 1))[1]["totalCount"])
            deep = min(args.page, total // PAGE_SIZE - 1)
            t_first, b_first = await timed(client, base + "&page=0", headers, args.repeat)
            t_deep, b_deep = await timed(client, f"{base}&page={deep}", headers, args.repeat)
            t_last, _ = await timed(client, f"{base}&page={total // PAGE_SIZE - 1}", headers, args.repeat)
        assert len(b_first["handles"]) == PAGE_SIZE and len(b_deep["handles"]) == PAGE_SIZE
        naive_first = naive_deep = None
        if store_url.startswith("sqlite"):
            import sqlite3

            conn = sqlite3.connect(store_url.split("///", 1)[1])
            sql = "SELECT record FROM handles WHERE prefix = ? ORDER BY id LIMIT ? OFFSET ?"

            def naive(offset: int) -> float:
                samples = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    conn.execute(sql, ("88.118.8.1001", PAGE_SIZE, offset)).fetchall()
                    samples.append(time.perf_counter() - t0)
                return statistics.median(samples)

            naive_first, naive_deep = naive(0), naive(deep * PAGE_SIZE)
            conn.close()
    print(f"prefix 88.118.8.1001: {total:,} handles, pageSize {PAGE_SIZE}")
    print(f"GET page 0:        {t_first * 1000:7.2f} ms (median of {args.repeat})")
    print(f"GET page {deep}:    {t_deep * 1000:7.2f} ms")
    print(f"GET last page:     {t_last * 1000:7.2f} ms")
    print(f"ratio page {deep} / page 0: {t_deep / t_first:.2f}x")
    if naive_first is not None and naive_deep is not None:
        print(
            f"baseline LIMIT/OFFSET query alone: page 0 {naive_first * 1000:.2f} ms, "
            f"page {deep} {naive_deep * 1000:.2f} ms, ratio {naive_deep / naive_first:.1f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handles", type=int, default=1_000_000, help="handles to seed (default 1,000,000)")
    parser.add_argument("--page", type=int, default=5000, help="the deep page to time (default 5000)")
    parser.add_argument("--repeat", type=int, default=50, help="requests per page timed (median reported)")
    parser.add_argument("--store", default="", help="store URL (default: a temporary SQLite file)")
    asyncio.run(main(parser.parse_args()))
