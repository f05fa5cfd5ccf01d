"""Guessing is throttled: 429 with Retry-After after repeated wrong credentials for one identity
from one address (issue 10 §2), in process and shared through Redis by separate ``idnode serve``
processes."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ed25519

from registry.errors import InvalidCredential
from resolver.config import ConfigError, load_config
from resolver.http.app import create_app
from resolver.http.keys import STATE_KEY
from resolver.http.throttle import GuessThrottle, TooManyFailures, client_address
from tests.conftest import ADMIN_SECRET, REDIS_URL, free_port
from tests.nodeproc import NodeProcess
from tests.resolver.conftest import NODE_ADMIN, basic
from tests.resolver.test_challenge_auth import answer, setup_key_holder

PROBE = "/api/handles/0.NA/88.118.8"
ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)
WRONG = basic(NODE_ADMIN, "a-wrong-guess")


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"auth_throttle_failures": 3, "auth_throttle_window": 60, "auth_throttle_levels": 2}


@contextlib.asynccontextmanager
async def from_address(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from ``address`` (any 127/8 address works on loopback)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session:
        yield session


async def expect_429(resp: Any, window: int = 60) -> None:
    body = await resp.json()
    assert resp.status == 429, body
    assert body["responseCode"] == 3 and "retry after" in body["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= window


async def test_repeated_wrong_secrets_get_429_even_for_the_right_one(client: TestClient) -> None:
    hasher = client.server.app[STATE_KEY].registry.hasher
    for _ in range(3):
        r = await client.get(PROBE, headers=WRONG)
        assert r.status == 401 and (await r.json())["responseCode"] == 402
    jobs = hasher.jobs
    await expect_429(await client.get(PROBE, headers=WRONG))
    # While locked, the credential is not even checked: a right guess looks like a wrong one.
    await expect_429(await client.put("/api/handles/88.118.8/x", json=[], headers=ADMIN))
    assert hasher.jobs == jobs


async def test_the_rightful_holder_elsewhere_is_not_locked_out(client: TestClient, onboard) -> None:
    ent = await onboard()
    for _ in range(3):
        assert (await client.get(PROBE, headers=WRONG)).status == 401
    await expect_429(await client.get(PROBE, headers=ADMIN))
    async with from_address("127.0.0.2") as elsewhere, elsewhere.get(client.make_url(PROBE), headers=ADMIN) as r:
        assert r.status == 200, await r.text()
    # Another identity from the guesser's address is not affected either.
    assert (await client.get(PROBE, headers=ent["headers"])).status == 200


async def test_a_success_clears_the_count(client: TestClient) -> None:
    for _ in range(2):
        assert (await client.get(PROBE, headers=WRONG)).status == 401
    assert (await client.get(PROBE, headers=ADMIN)).status == 200
    for _ in range(2):
        assert (await client.get(PROBE, headers=WRONG)).status == 401
    assert (await client.get(PROBE, headers=ADMIN)).status == 200


async def test_handle_challenge_answers_are_throttled(client: TestClient, onboard) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    identity, _ = await setup_key_holder(client, onboard, key)
    wrong_key = ed25519.Ed25519PrivateKey.generate()
    for _ in range(3):
        opened = await (await client.post("/api/sessions")).json()
        header = answer(opened["sessionId"], opened["nonce"], identity, wrong_key)
        r = await client.put("/api/sessions/this", headers={"Authorization": header})
        assert r.status == 401, await r.text()
    opened = await (await client.post("/api/sessions")).json()
    right = answer(opened["sessionId"], opened["nonce"], identity, key)
    await expect_429(await client.put("/api/sessions/this", headers={"Authorization": right}))


async def test_back_off_grows_level_by_level() -> None:
    """Level k allows failures·2^k in window·4^k: after the first lock runs out, two more failures
    fill level 1 and the wait grows beyond the first window."""
    throttle = GuessThrottle(2, 1, 3)
    try:
        for _ in range(2):
            await throttle.failed("300:0.NA/88.118.8", "192.0.2.1")
        with pytest.raises(TooManyFailures) as first:
            await throttle.check("300:0.NA/88.118.8", "192.0.2.1")
        assert first.value.retry_after == 1
        await asyncio.sleep(1.1)
        assert await throttle.check("300:0.NA/88.118.8", "192.0.2.1") is True  # level 0 free again
        for _ in range(2):
            await throttle.failed("300:0.NA/88.118.8", "192.0.2.1")
        with pytest.raises(TooManyFailures) as second:
            await throttle.check("300:0.NA/88.118.8", "192.0.2.1")
        assert 2 <= second.value.retry_after <= 4  # level 1: 4 failures in 4 s
    finally:
        await throttle.close()


async def test_guard_counts_only_invalid_credentials() -> None:
    throttle = GuessThrottle(1, 60, 1)

    async def wrong() -> None:
        raise InvalidCredential("wrong")

    async def right() -> str:
        return "ok"

    try:
        with pytest.raises(InvalidCredential):
            await throttle.guard("300:0.NA/x", "192.0.2.9", wrong)
        with pytest.raises(TooManyFailures):
            await throttle.guard("300:0.NA/x", "192.0.2.9", right)
        assert await throttle.guard("300:0.NA/x", "192.0.2.10", right) == "ok"
    finally:
        await throttle.close()


def test_client_address_groups_ipv6_by_64() -> None:
    assert client_address("2001:db8:1:2:3:4:5:6") == client_address("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:3::1") != client_address("2001:db8:1:2::1")
    assert client_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_address("192.0.2.7") == "192.0.2.7"
    assert client_address(None) == "unknown"


async def test_two_throttles_share_counts_through_redis(redis_prefix: str) -> None:
    a = GuessThrottle(3, 60, 2, redis_url=REDIS_URL, key_prefix=redis_prefix)
    b = GuessThrottle(3, 60, 2, redis_url=REDIS_URL, key_prefix=redis_prefix)
    try:
        await a.failed("300:0.NA/88.118.8", "192.0.2.1")
        await b.failed("300:0.NA/88.118.8", "192.0.2.1")
        await a.failed("300:0.NA/88.118.8", "192.0.2.1")
        for throttle in (a, b):
            with pytest.raises(TooManyFailures):
                await throttle.check("300:0.NA/88.118.8", "192.0.2.1")
            assert await throttle.check("300:0.NA/88.118.8", "192.0.2.2") is False
        await b.succeeded("300:0.NA/88.118.8", "192.0.2.1")
        assert await a.check("300:0.NA/88.118.8", "192.0.2.1") is False
    finally:
        await a.close()
        await b.close()


async def test_unreachable_redis_falls_back_to_counting_in_process() -> None:
    throttle = GuessThrottle(2, 60, 1, redis_url=f"redis://127.0.0.1:{free_port()}", timeout=0.2)
    try:
        for _ in range(2):
            await throttle.failed("300:0.NA/88.118.8", "192.0.2.1")
        with pytest.raises(TooManyFailures):
            await throttle.check("300:0.NA/88.118.8", "192.0.2.1")
    finally:
        await throttle.close()


@pytest.fixture
def two_nodes(tmp_path, pg_store_url, redis_prefix):  # type: ignore[no-untyped-def]
    args = (
        "--store",
        pg_store_url,
        "--redis",
        REDIS_URL,
        "--redis-key-prefix",
        redis_prefix,
        "--auth-throttle-failures",
        "3",
    )
    a = NodeProcess(tmp_path / "a", *args)
    b = NodeProcess(tmp_path / "b", *args)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


async def test_nodes_sharing_redis_share_the_throttle(two_nodes) -> None:  # type: ignore[no-untyped-def]
    """Two ``idnode serve`` processes on one store and one Redis: failures on either count for both."""
    a, b = two_nodes
    async with aiohttp.ClientSession() as here:
        for node in (a, b, a):
            async with here.get(f"{node.url}{PROBE}", headers=WRONG) as r:
                assert r.status == 401, await r.text()
        for node in (a, b):
            async with here.get(f"{node.url}{PROBE}", headers=ADMIN) as r:
                await expect_429(r, window=300)
    async with from_address("127.0.0.2") as elsewhere:
        for node in (a, b):
            async with elsewhere.get(f"{node.url}{PROBE}", headers=ADMIN) as r:
                assert r.status == 200, await r.text()


def test_client_address_through_trusted_proxies() -> None:
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_address("10.0.0.5", "203.0.113.9", proxies) == "203.0.113.9"
    # Entries left of the first untrusted hop were written by the client: they prove nothing.
    assert client_address("10.0.0.5", "198.51.100.1, 203.0.113.9, 10.0.0.7", proxies) == "203.0.113.9"
    assert client_address("192.0.2.1", "203.0.113.9", proxies) == "192.0.2.1"  # not from a proxy
    assert client_address("10.0.0.5", "garbage", proxies) == "10.0.0.5"
    assert client_address("10.0.0.5", "203.0.113.9", ()) == "10.0.0.5"


async def test_behind_a_trusted_proxy_clients_are_told_apart(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Behind nginx every request comes from the proxy: with ``trusted_proxies`` the throttle counts
    the client X-Forwarded-For names, so a guesser does not lock the rightful holder out."""
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    overrides = {"data_dir": str(tmp_path), "auth_throttle_failures": 3, "trusted_proxies": "127.0.0.0/8"}
    config = load_config(env={}, overrides=overrides)
    async with TestClient(TestServer(create_app(config))) as proxied:
        guesser = {**WRONG, "X-Forwarded-For": "203.0.113.66"}
        for _ in range(3):
            assert (await proxied.get(PROBE, headers=guesser)).status == 401
        await expect_429(await proxied.get(PROBE, headers={**ADMIN, "X-Forwarded-For": "203.0.113.66"}), window=300)
        r = await proxied.get(PROBE, headers={**ADMIN, "X-Forwarded-For": "198.51.100.7"})
        assert r.status == 200, await r.text()


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(client: TestClient) -> None:
    for n in range(3):
        assert (await client.get(PROBE, headers={**WRONG, "X-Forwarded-For": f"203.0.113.{n}"})).status == 401
    await expect_429(await client.get(PROBE, headers={**ADMIN, "X-Forwarded-For": "198.51.100.7"}))


@pytest.mark.parametrize("value", ["not-a-network", "10.0.0.0/33", "10.0.0.1,,::1/129"])
def test_malformed_trusted_proxies_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(env={"IDNODE_TRUSTED_PROXIES": value})
