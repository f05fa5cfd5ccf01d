"""Two ``idnode serve`` processes sharing PostgreSQL and Redis, and a PostgreSQL connection cut.

These run real processes against the machine's PostgreSQL and Redis, each in this run's own
database and Redis key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest

from tests.conftest import ADMIN_SECRET, REDIS_URL
from tests.nodeproc import NodeProcess, TcpProxy
from tests.resolver.conftest import NODE_ADMIN, basic

ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)
HANDLES = [f"88.118.8/shared-{i}" for i in range(8)]


def url_value(data: str) -> dict:
    return {"values": [{"index": 1, "type": "URL", "data": data}]}


async def _put(session: aiohttp.ClientSession, base: str, handle: str, data: str) -> None:
    async with session.put(f"{base}/api/handles/{handle}", json=url_value(data), headers=ADMIN) as r:
        assert r.status in (200, 201), await r.text()


async def _read(session: aiohttp.ClientSession, base: str, handle: str) -> str:
    async with session.get(f"{base}/api/handles/{handle}", params={"index": "1"}) as r:
        body = await r.json()
        assert r.status == 200, body
        return body["values"][0]["data"]["value"]


@pytest.fixture
def two_nodes(tmp_path, pg_store_url, redis_prefix):  # type: ignore[no-untyped-def]
    args = ("--store", pg_store_url, "--redis", REDIS_URL, "--redis-key-prefix", redis_prefix)
    a = NodeProcess(tmp_path / "a", *args)
    b = NodeProcess(tmp_path / "b", *args)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


async def test_a_write_acknowledged_by_one_node_is_seen_by_the_other_at_once(two_nodes):
    a, b = two_nodes
    nodes = [a.url, b.url]
    stop = asyncio.Event()
    reader_errors: list[str] = []
    reads = 0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for h in HANDLES:
            await _put(session, a.url, h, "v-initial")

        async def hammer(base: str) -> None:
            nonlocal reads
            while not stop.is_set():
                for h in HANDLES:
                    try:
                        await _read(session, base, h)
                        reads += 1
                    except AssertionError as exc:  # pragma: no cover - reported below
                        reader_errors.append(str(exc))

        readers = [asyncio.create_task(hammer(nodes[i % 2])) for i in range(6)]
        try:
            for i in range(1000):
                writer, other = nodes[i % 2], nodes[(i + 1) % 2]
                handle = HANDLES[i % len(HANDLES)]
                data = f"https://example.com/v{i}"
                await _put(session, writer, handle, data)
                seen = await _read(session, other, handle)
                assert seen == data, f"pair {i}: wrote {data} through {writer}, read {seen} from {other}"
        finally:
            stop.set()
            await asyncio.gather(*readers)
    assert not reader_errors, reader_errors[:3]
    assert reads > 1000  # the readers really hammered the same handles meanwhile


@pytest.fixture
async def node_behind_proxy(tmp_path, pg_store_url, redis_prefix):  # type: ignore[no-untyped-def]
    target = pg_store_url.rsplit("@", 1)[1].split("/", 1)[0]
    port = int(target.partition(":")[2] or 5432)
    proxy = TcpProxy(port)
    await proxy.start()
    store = pg_store_url.replace(f"@{target}/", f"@127.0.0.1:{proxy.port}/")
    node = NodeProcess(tmp_path / "n", "--store", store, "--redis", REDIS_URL, "--redis-key-prefix", redis_prefix)
    try:
        await asyncio.get_running_loop().run_in_executor(None, node.wait_ready)
        yield node, proxy
    finally:
        await proxy.start() if proxy._server is None else None
        await asyncio.get_running_loop().run_in_executor(None, node.stop)
        await proxy.stop()


async def test_postgresql_cut_cached_handles_resolve_writes_get_503(node_behind_proxy):
    node, proxy = node_behind_proxy
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for h in HANDLES:
            await _put(session, node.url, h, f"https://example.com/{h}")
            assert await _read(session, node.url, h) == f"https://example.com/{h}"  # now cached

        await proxy.stop()  # every connection to PostgreSQL is cut, and new ones are refused

        for h in HANDLES:
            assert await _read(session, node.url, h) == f"https://example.com/{h}"
        async with session.put(
            f"{node.url}/api/handles/88.118.8/during-outage", json=url_value("x"), headers=ADMIN
        ) as r:
            assert r.status == 503, await r.text()
            assert (await r.json())["responseCode"] == 3
        batch = "\n".join(
            json.dumps({"handle": f"88.118.8/outage-batch-{i}", "values": url_value("y")["values"]}) for i in range(50)
        )
        async with session.post(
            f"{node.url}/api/handles",
            data=batch,
            headers={**ADMIN, "Content-Type": "application/x-ndjson"},
        ) as r:
            assert r.status == 503, await r.text()
            assert (await r.json())["responseCode"] == 3
        async with session.get(f"{node.url}/readyz") as r:
            ready = await r.json()
            assert ready["status"] != "ok", ready

        await proxy.start()
        # The node recovers by itself; nothing of the refused writes was half-written.
        for _ in range(100):
            with contextlib.suppress(AssertionError):
                await _put(session, node.url, "88.118.8/after-outage", "z")
                break
            await asyncio.sleep(0.2)
        async with session.get(f"{node.url}/api/handles/88.118.8/after-outage", params={"auth": "true"}) as r:
            assert r.status == 200
        for name in ["88.118.8/during-outage", *(f"88.118.8/outage-batch-{i}" for i in range(50))]:
            async with session.get(f"{node.url}/api/handles/{name}", params={"auth": "true"}) as r:
                assert r.status == 404, name
