"""Resolution statistics on real ``idnode serve`` processes: counts reach the store by the periodic
flush while the node runs, and by the last flush on SIGTERM, from one worker or from each of two."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import requests

from registry.stores import open_store
from resolver.native.codec import OpFlag
from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.native_client import native_over_http, put_handle, resolution
from tests.resolver.test_metrics import _counts_by_pid

NODE = "88.118.8"
ADMIN = (f"300:0.NA/{NODE}", ADMIN_SECRET)
RESOLVE = "/api/handles/{handle}"


async def _resolve_many(url: str, paths: list[str]) -> list[int]:
    # A new connection per request, so SO_REUSEPORT spreads them over the workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=8)) as http:

        async def get(path: str) -> int:
            async with http.get(url + path) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(get(p) for p in paths)))


async def _stored(data_dir: Path) -> dict[tuple[str, str], tuple[int, int]]:
    store = await open_store(f"sqlite:///{data_dir}/idnode.db")
    try:
        rows = await store.resolution_prefix_totals(19700101, 99990101)
    finally:
        await store.close()
    return {(r.prefix, r.interface): (r.found, r.not_found) for r in rows}


def test_the_periodic_flush_makes_counts_readable(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path, "--stats-flush-seconds", "1").wait_ready()
    try:
        put_handle(node.url, f"{NODE}/periodic", [{"index": 1, "type": "URL", "data": "https://example.com/p"}])
        statuses = asyncio.run(_resolve_many(node.url, [f"/api/handles/{NODE}/periodic"] * 12))
        assert statuses == [200] * 12
        deadline = time.monotonic() + 30
        while True:  # flushed within a second or so; polled, not timed
            r = requests.get(f"{node.url}/api/stats/resolutions", params={"prefix": NODE}, auth=ADMIN, timeout=10)
            assert r.status_code == 200, r.text
            if r.json()["totals"]["resolutions"] == 12:
                break
            assert time.monotonic() < deadline, r.json()["totals"]
            time.sleep(0.2)
        assert r.json()["totals"]["by_interface"]["rest"] == {"resolutions": 12, "not_found": 0}
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_flushes_every_count(tmp_path: Path, workers: int) -> None:
    """No periodic flush happens (an hour apart): every count reaches the store on SIGTERM."""
    data = tmp_path / "data"
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    node = NodeProcess(
        data,
        "--workers",
        str(workers),
        "--stats-flush-seconds",
        "3600",
        env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)},
    ).wait_ready()
    handle = f"{NODE}/sigterm"
    try:
        put_handle(node.url, handle, [{"index": 1, "type": "URL", "data": "https://example.com/s"}])
        paths = [f"/api/handles/{handle}"] * 40 + [f"/api/handles/{handle}?type=URL"] * 10
        paths += [f"/api/handles/{NODE}/missing-{i}" for i in range(7)]
        statuses = asyncio.run(_resolve_many(node.url, paths))
        assert statuses.count(200) == 50 and statuses.count(404) == 7
        for i in range(5):
            reply = native_over_http(node.url, resolution(handle, request_id=i + 1, op_flags=OpFlag.REC))
            assert reply.header.response_code == 1
        if workers == 2:
            per_worker = _counts_by_pid(prom_dir, RESOLVE, "GET", None)
            assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker  # both workers counted some
        assert asyncio.run(_stored(data)) == {}  # nothing flushed yet
    finally:
        assert node.stop() == 0
    assert asyncio.run(_stored(data)) == {(NODE, "rest"): (50, 7), (NODE, "native"): (5, 0)}
