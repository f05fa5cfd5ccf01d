"""Fixtures for the HTTP side: an app on a real store, the node admin's and enterprises' credentials."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from registry.uscc import uscc_check_char
from resolver.config import load_config
from resolver.http import hot_path
from resolver.http.app import create_app
from tests.conftest import ADMIN_SECRET, REDIS_URL

NODE_PREFIX = "88.118.8"
NODE_ADMIN = f"300:0.NA/{NODE_PREFIX}"


def basic(identity: str, secret: str) -> dict[str, str]:
    """The Authorization header pyhandle sends: the identity percent-encoded as a whole."""
    token = base64.b64encode(f"{quote(identity, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def make_uscc(n: int, kind: str = "91") -> str:
    """A valid unified social credit code, distinct for each ``n``."""
    body = f"{kind}440111{n:09d}"[:17]
    return body + uscc_check_char(body)


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def client(tmp_path, monkeypatch, config_overrides) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    store = config_overrides.pop("store", None) or f"sqlite:///{tmp_path}/idnode.db"
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "store": store, **config_overrides})
    async with TestClient(TestServer(create_app(config))) as c:
        hot_path.install(c.server.runner)  # as idnode serve runs it: ready replies in front of the app
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    return basic(NODE_ADMIN, ADMIN_SECRET)


@pytest.fixture
def onboard(client: TestClient, admin: dict[str, str]) -> Callable[..., Any]:
    """``await onboard()`` → the enterprise reply (prefix, admin identity, secret, headers)."""
    counter = iter(range(1, 10_000))

    async def make(promoter: int | None = None, **extra: Any) -> dict[str, Any]:
        n = next(counter)
        if promoter is None:
            r = await client.post(
                "/api/promoters", json={"name": f"Promoter {n}", "uscc": make_uscc(n, "92")}, headers=admin
            )
            assert r.status == 201, await r.text()
            promoter = (await r.json())["id"]
        body = {"name": f"Enterprise {n}", "uscc": make_uscc(n), "promoter": promoter, **extra}
        r = await client.post("/api/enterprises", json=body, headers=admin)
        assert r.status == 201, await r.text()
        reply = await r.json()
        reply["headers"] = basic(reply["admin"], reply["secret"])
        return reply

    return make


@pytest.fixture
async def redis(redis_prefix: str) -> AsyncIterator[Redis]:
    """A client of the machine's Redis; the keys under this test's prefix are removed afterwards."""
    client = Redis.from_url(REDIS_URL)
    yield client
    names = [k async for k in client.scan_iter(match=redis_prefix + "*", count=1000)]
    if names:
        await client.unlink(*names)
    await client.aclose()
