"""``idnode serve --workers 2`` without Redis keeps a local cache tier in each worker, and a write
acknowledged by one worker is never served stale by the other (real processes; the supervisor's
worker hub carries the invalidations: resolver.cache.worker_hub)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ADMIN_SECRET
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import basic

NODE = "88.118.8"
ADMIN = basic(f"300:0.NA/{NODE}", ADMIN_SECRET)
HANDLE = f"{NODE}/ryw"
READERS = 24  # reads after each acknowledged write, each on a new connection (SO_REUSEPORT spreads them)


def _values(n: int) -> dict[str, Any]:
    return {"values": [{"index": 1, "type": "URL", "data": f"https://example.com/v{n}"}]}


async def _read_many(url: str, path: str, count: int) -> list[tuple[int, str | None]]:
    """(status, URL value) of ``count`` concurrent anonymous reads on fresh connections."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=count)) as http:

        async def read() -> tuple[int, str | None]:
            async with http.get(url + path) as r:
                body = json.loads(await r.read())
            return r.status, body["values"][0]["data"]["value"] if r.status == 200 else None

        return list(await asyncio.gather(*(read() for _ in range(count))))


async def _ready_states(url: str, count: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        out = []
        for _ in range(count):
            async with http.get(url + "/readyz") as r:
                out.append((await r.json())["cache"])
        return out


async def _scenario(url: str) -> None:
    path = f"/api/handles/{HANDLE}"
    # One keep-alive connection for the writes: one worker acknowledges them all.
    async with aiohttp.ClientSession(headers=ADMIN) as writer:
        async with writer.put(url + path, json=_values(0)) as r:
            assert r.status == 201, await r.text()
        for _ in range(3):  # both workers cache version 0 (the second read of each is a local hit)
            assert {v for s, v in await _read_many(url, path, READERS) if s == 200} == {"https://example.com/v0"}
        for n in range(1, 16):
            async with writer.put(url + path, json=_values(n)) as r:
                assert r.status == 200, await r.text()
            seen = await _read_many(url, path, READERS)
            assert [(s, v) for s, v in seen] == [(200, f"https://example.com/v{n}")] * READERS, n
        async with writer.delete(url + path) as r:
            assert r.status == 200, await r.text()
        seen = await _read_many(url, path, READERS)
        assert [s for s, _ in seen] == [404] * READERS
        async with writer.put(url + path, json=_values(99)) as r:  # the negative entries go too
            assert r.status == 201, await r.text()
        seen = await _read_many(url, path, READERS)
        assert [(s, v) for s, v in seen] == [(200, "https://example.com/v99")] * READERS

    states = await _ready_states(url, 16)
    assert {s["invalidation"] for s in states} == {"workers"}
    assert all(s["local"]["in_use"] for s in states)
    assert max(s["stats"]["local_hits"] for s in states) > 0  # the reads above were served by the tier


def test_read_your_write_across_two_workers_without_redis(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", "--workers", "2", env={"IDNODE_REDIS": ""}).wait_ready()
    try:
        asyncio.run(_scenario(node.url))
        assert "local tier off" not in node.log()
    finally:
        assert node.stop() == 0
