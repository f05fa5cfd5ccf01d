"""Degraded, never down: private Redis servers killed and restarted by PID, a Redis that never
answers, a store that goes away, and a three-master Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.model import HandleValue
from registry.service import NodeSettings, Registry
from registry.stores import open_store
from resolver.cache.breaker import CircuitBreaker
from resolver.cache.local_tier import LocalTier
from resolver.cache.redis_tier import RedisTier, open_redis
from resolver.cache.tiered import TieredCache
from resolver.config import load_config
from resolver.http.app import create_app
from resolver.http.keys import STATE_KEY
from resolver.resolve import Resolver
from tests.conftest import ADMIN_SECRET, free_port
from tests.resolver.conftest import NODE_ADMIN, basic

NODE = "88.118.8"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` on a loopback port, started and stopped by PID."""

    def __init__(self, workdir: Path, port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        self.workdir = workdir / f"redis-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.workdir), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def info(self, section: str) -> dict[str, str]:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "info", section], capture_output=True, text=True, check=True
        ).stdout
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith("#"))


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


async def _wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _fast_settings(url: str, prefix: str) -> dict[str, Any]:
    return {
        "redis": url,
        "redis_key_prefix": prefix,
        "redis_timeout_ms": 100,
        "redis_breaker_failures": 3,
        "redis_breaker_cooldown_ms": 200,
    }


@pytest.fixture
async def app_client(tmp_path, monkeypatch) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    """``await app_client(**settings)`` → a TestClient on a node with those settings."""
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    clients: list[TestClient] = []

    async def make(store: Any = None, **overrides: Any) -> TestClient:
        base = {"data_dir": str(tmp_path), "store": f"sqlite:///{tmp_path}/idnode.db", "native_port": 0}
        config = load_config(env={}, overrides={**base, **overrides})
        client = TestClient(TestServer(create_app(config, store)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def cache_of(client: TestClient) -> TieredCache:
    cache = client.server.app[STATE_KEY].resolver.cache  # type: ignore[union-attr]
    assert isinstance(cache, TieredCache)
    return cache


async def _register(client: TestClient, n: int) -> list[str]:
    handles = []
    for i in range(n):
        handle = f"{NODE}/deg-{i}"
        body = {"values": [{"index": 1, "type": "URL", "data": f"https://example.com/{i}"}]}
        r = await client.put(f"/api/handles/{handle}", json=body, headers=basic(NODE_ADMIN, ADMIN_SECRET))
        assert r.status in (200, 201), await r.text()
        handles.append(handle)
    return handles


class Load:
    """Concurrent resolvers hammering a set of handles (and some that do not exist)."""

    def __init__(self, client: TestClient, handles: list[str], workers: int = 16) -> None:
        self.client, self.handles, self.workers = client, handles, workers
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self) -> None:
        rng = random.Random()
        while not self._stop.is_set():
            missing = rng.random() < 0.1
            handle = f"{NODE}/absent-{rng.randrange(50)}" if missing else rng.choice(self.handles)
            try:
                r = await self.client.get(f"/api/handles/{handle}")
                body = await r.json()
                expected = 404 if missing else 200
                if r.status != expected or (not missing and body["handle"] != handle):
                    self.failures.append(f"{handle}: {r.status} {body}")
                else:
                    self.ok += 1
            except Exception as exc:
                self.failures.append(f"{handle}: {exc!r}")

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_redis_killed_under_load_then_back(app_client, private_redis, redis_prefix):
    client = await app_client(**_fast_settings(private_redis.url, redis_prefix))
    cache = cache_of(client)
    assert cache.bus is not None and cache.redis is not None
    await _wait_for(lambda: cache.bus.subscribed, what="subscription")
    handles = await _register(client, 30)
    r = await client.get("/readyz")
    assert r.status == 200 and (await r.json())["status"] == "ok"

    load = Load(client, handles)
    load.start()
    await asyncio.sleep(0.5)
    private_redis.kill()
    killed_at = load.ok
    await asyncio.sleep(1.5)
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 200 and body["status"] == "degraded" and "redis" in body["degraded"], body
    assert body["cache"]["breaker"] in ("open", "half-open")
    assert body["cache"]["local"]["in_use"] is False  # no invalidations arrive: the local tier is off
    await load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > killed_at + 100  # it kept resolving while Redis was dead

    drops_before = cache.stats.local_drops
    reconnects_before = cache.bus.reconnects
    private_redis.start()  # same port, empty
    await _wait_for(lambda: cache.status()["redis"] == "ok", what="the breaker to close")
    r = await client.get("/readyz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    assert cache.bus.reconnects == reconnects_before + 1
    assert cache.stats.local_drops > drops_before and len(cache.local or ()) == 0  # dropped on reconnect

    load = Load(client, handles)
    load.start()
    await asyncio.sleep(0.5)
    await load.stop()
    assert not load.failures, load.failures[:5]
    redis_hits = cache.stats.redis_hits
    cache.drop_local(None)  # force the next lookups past the local tier
    for handle in handles:
        assert (await client.get(f"/api/handles/{handle}")).status == 200
    assert cache.stats.redis_hits >= redis_hits + len(handles)  # the Redis tier is used again
    assert int(private_redis.info("stats")["keyspace_hits"]) >= len(handles)


async def test_redis_down_at_start_then_comes_up(app_client, tmp_path, redis_prefix):
    server = RedisServer(tmp_path)  # not started yet
    try:
        client = await app_client(**_fast_settings(server.url, redis_prefix))
        handles = await _register(client, 5)
        for handle in handles:
            assert (await client.get(f"/api/handles/{handle}")).status == 200
        body = await (await client.get("/readyz")).json()
        assert body["status"] == "degraded" and body["degraded"] == ["redis"]
        cache = cache_of(client)
        assert cache.bus is not None and cache.bus.pending >= len(handles)  # writes waiting to be re-sent
        server.start()
        await _wait_for(lambda: cache.status()["redis"] == "ok", what="the breaker to close")
        assert cache.bus.pending == 0
        for handle in handles:
            assert (await client.get(f"/api/handles/{handle}")).status == 200
        assert (await (await client.get("/readyz")).json())["status"] == "ok"
    finally:
        server.kill()


async def test_a_silent_redis_costs_one_timeout_not_one_per_request(tmp_path, redis_prefix):
    """A Redis that accepts connections and never answers: the first batch times out, the breaker
    opens, and the following lookups go straight to the store."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    port = silent.getsockname()[1]
    store = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    registry = Registry(store, NodeSettings(prefix=NODE))
    await registry.bootstrap(ADMIN_SECRET, None)
    url = f"redis://127.0.0.1:{port}"
    tier = RedisTier(open_redis(url, 0.1), redis_prefix, breaker=CircuitBreaker(5, 30), timeout=0.1, url=url)
    cache = TieredCache(local=None, redis=tier, current_version=store.current_version)
    await cache.start(wait=0)
    resolver = Resolver(registry.store, cache)
    try:
        started = time.monotonic()
        for _ in range(200):
            assert await resolver.lookup(f"0.NA/{NODE}") is not None
        elapsed = time.monotonic() - started
        assert tier.breaker.state == "open"
        assert elapsed < 1.5, elapsed  # 200 x 100 ms would be 20 s
        assert cache.status()["redis"] == "degraded"
    finally:
        await cache.close()
        await store.close()
        silent.close()


async def test_store_down_cached_handles_still_resolve(app_client, tmp_path, private_redis, redis_prefix):
    store = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    client = await app_client(store, **_fast_settings(private_redis.url, redis_prefix))
    handles = await _register(client, 3)
    for handle in handles[:2]:
        assert (await client.get(f"/api/handles/{handle}")).status == 200  # now cached
    await store.close()
    for handle in handles[:2]:
        r = await client.get(f"/api/handles/{handle}")
        assert r.status == 200, await r.text()
    r = await client.get(f"/api/handles/{handles[2]}")
    assert r.status == 503 and (await r.json())["responseCode"] == 3
    r = await client.get("/readyz")
    body = await r.json()
    assert r.status == 200 and body["status"] == "degraded" and body["degraded"] == ["store"], body


async def test_store_down_and_nothing_cached_is_not_ready(app_client, tmp_path):
    store = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    client = await app_client(store, cache_local_entries=0)
    assert (await client.get("/readyz")).status == 200
    await store.close()
    r = await client.get("/readyz")
    assert r.status == 503 and (await r.json())["degraded"] == ["store"]
    assert (await client.get("/healthz")).status == 200


async def test_two_apps_share_invalidations_over_http(app_client, tmp_path, private_redis, redis_prefix):
    a = await app_client(**_fast_settings(private_redis.url, redis_prefix))
    b = await app_client(**_fast_settings(private_redis.url, redis_prefix))
    for c in (a, b):
        bus = cache_of(c).bus
        await _wait_for(lambda bus=bus: bus.subscribed, what="subscription")
    headers = basic(NODE_ADMIN, ADMIN_SECRET)
    for i in range(30):
        body = {"values": [{"index": 1, "type": "URL", "data": f"https://example.com/{i}"}]}
        writer, reader = (a, b) if i % 2 else (b, a)
        assert (await reader.get(f"/api/handles/{NODE}/shared")).status in (200, 404)
        r = await writer.put(f"/api/handles/{NODE}/shared", json=body, headers=headers)
        assert r.status in (200, 201)
        values = (await (await reader.get(f"/api/handles/{NODE}/shared")).json())["values"]
        assert values[0]["data"]["value"] == f"https://example.com/{i}"


# -- Redis Cluster ------------------------------------------------------------------------------
@pytest.fixture
def redis_cluster(tmp_path) -> Iterator[list[RedisServer]]:  # type: ignore[no-untyped-def]
    if shutil.which("redis-cli") is None:
        pytest.skip("needs redis-cli")
    servers: list[RedisServer] = []
    try:
        for _ in range(3):
            port, bus_port = free_port(), free_port()  # the bus port given: port + 10000 may not exist
            server = RedisServer(
                tmp_path,
                port,
                *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
                *("--cluster-port", str(bus_port), "--cluster-node-timeout", "2000"),
            )
            server.start()
            servers.append(server)
        nodes = [f"127.0.0.1:{s.port}" for s in servers]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)

        def cluster_ok(server: RedisServer) -> bool:
            cmd = ["redis-cli", "-p", str(server.port), "cluster", "info"]
            return "cluster_state:ok" in subprocess.run(cmd, capture_output=True, text=True).stdout

        deadline = time.monotonic() + 30
        while not all(cluster_ok(s) for s in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield servers
    finally:
        for server in servers:
            server.kill()


async def test_resolve_and_invalidate_through_redis_cluster(redis_cluster, tmp_path, redis_prefix):
    url = f"redis+cluster://127.0.0.1:{redis_cluster[0].port}"
    store = await open_store(f"sqlite:///{tmp_path}/idnode.db")
    caches: list[TieredCache] = []

    async def node(local: bool) -> tuple[Registry, Resolver, TieredCache]:
        registry = Registry(store, NodeSettings(prefix=NODE))
        await registry.bootstrap(ADMIN_SECRET, None)
        tier = RedisTier(open_redis(url, 1.0), redis_prefix, breaker=CircuitBreaker(5, 0.5), timeout=1.0)
        cache = TieredCache(
            local=LocalTier(1000, 1 << 20) if local else None,
            redis=tier,
            current_version=store.current_version,
            redis_url=url,
        )
        await cache.start(wait=5)
        caches.append(cache)
        registry.add_listener(cache.invalidate)
        return registry, Resolver(registry.store, cache), cache

    try:
        (reg_a, res_a, cache_a), (reg_b, res_b, cache_b) = await node(True), await node(False)
        assert cache_a.redis is not None and cache_a.redis.cluster
        assert cache_a.bus is not None and cache_a.bus.subscribed and cache_b.bus is not None and cache_b.bus.subscribed
        admin = await reg_a.caller_for(f"300:0.NA/{NODE}", ADMIN_SECRET)
        handles = [f"{NODE}/c-{i}" for i in range(60)]
        for i, h in enumerate(handles):
            value = HandleValue(index=1, type="URL", data=f"https://example.com/{i}".encode())
            await reg_a.put_handle(admin, reg_a.parse(h), [value])
        # Concurrent lookups: one MGET batch spread over the shards (mget_nonatomic).
        records = await asyncio.gather(*(res_b.lookup(h) for h in handles))
        assert [r.handle for r in records] == handles  # type: ignore[union-attr]
        records = await asyncio.gather(*(res_b.lookup(h) for h in handles))
        assert cache_b.stats.redis_hits >= len(handles)
        per_node = [int(s.info("keyspace").get("db0", "keys=0").split(",")[0].split("=")[1]) for s in redis_cluster]
        assert sum(1 for n in per_node if n > 0) >= 2, per_node  # the entries live on several shards
        # A write through one node is seen on the other's very next lookup, both ways.
        for i in range(10):
            h = handles[i]
            for _ in range(2):
                assert (await res_a.lookup(h)) is not None  # a's local tier holds it
            value = HandleValue(index=1, type="URL", data=f"https://example.com/new-{i}".encode())
            await reg_b.put_handle(admin, reg_b.parse(h), [value])
            record = await res_a.lookup(h)
            assert record is not None and record.value_at(1).data == f"https://example.com/new-{i}".encode()  # type: ignore[union-attr]
            record = await res_b.lookup(h)
            assert record is not None and record.value_at(1).data == f"https://example.com/new-{i}".encode()  # type: ignore[union-attr]
        assert cache_a.stats.local_hits > 0
        assert cache_b.bus.ack_timeouts == 0 and cache_a.bus.ack_timeouts == 0
    finally:
        for cache in caches:
            await cache.close()
        await store.close()
