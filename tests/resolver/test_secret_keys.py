"""Secret keys: scrypt off the event loop in a bounded pool, node-chosen parameters, the verification
cache (issue 10 §1). Against the real app on SQLite through aiohttp's test client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from registry.errors import ServerBusy
from registry.model import HandleValue, parse_handle
from registry.secretkeys import SCRYPT_N, SCRYPT_P, SCRYPT_R, SecretHasher, hash_secret, verify_secret
from registry.stores.base import HandleWrite
from resolver.http.keys import STATE_KEY
from tests.resolver.conftest import basic

SECKEY_PERMS = "1100"


def registry(client: TestClient) -> Any:
    return client.server.app[STATE_KEY].registry


def foreign_hash(secret: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P, dklen: int = 32) -> str:
    """A hash made the way a client could make it, with parameters of its own choosing."""
    salt = os.urandom(16)
    key = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def seckey(data: str, index: int = 300) -> dict[str, Any]:
    return {"index": index, "type": "HS_SECKEY", "data": data, "permissions": SECKEY_PERMS}


async def put_key(client: TestClient, ent: dict[str, Any], data: str, index: int = 300) -> Any:
    return await client.put(
        f"/api/handles/0.NA/{ent['prefix']}",
        params={"index": str(index)},
        json=[seckey(data, index)],
        headers=ent["headers"],
    )


@pytest.mark.parametrize(
    "params",
    [
        {"p": 50},  # the 1.3 s per check
        {"n": 2**15},
        {"r": 4},
        {"dklen": 1},  # a one-byte key: one guess in 256 would pass
    ],
)
async def test_a_pre_hashed_key_with_other_parameters_is_refused_202(client, onboard, params):
    ent = await onboard()
    before = await registry(client).store.get(parse_handle(f"0.NA/{ent['prefix']}").key)
    r = await put_key(client, ent, foreign_hash("chosen-by-the-client", **params))
    body = await r.json()
    assert r.status == 400 and body["responseCode"] == 202, body
    assert "plain text" in body["message"]
    assert await registry(client).store.get(parse_handle(f"0.NA/{ent['prefix']}").key) == before


@pytest.mark.parametrize("data", ["scrypt$16384$8$1$not-base64!$AAAA", "scrypt$", "scrypt$16384$8$1$QUFBQQ==$QUFBQQ=="])
async def test_a_malformed_pre_hashed_key_is_refused_202(client, onboard, data):
    ent = await onboard()
    r = await put_key(client, ent, data)
    assert r.status == 400 and (await r.json())["responseCode"] == 202


async def test_a_pre_hashed_key_with_the_nodes_parameters_is_kept_and_works(client, onboard):
    """Moving a key between nodes: a hash exactly as this node makes them is stored as sent."""
    ent = await onboard()
    made = foreign_hash("moved-from-another-node")
    r = await put_key(client, ent, made)
    assert r.status == 200, await r.text()
    stored = await registry(client).read_record(parse_handle(f"0.NA/{ent['prefix']}").key)
    assert stored.value_at(300).data.decode() == made
    r = await client.put(
        f"/api/handles/{ent['prefix']}/moved",
        json=[{"index": 1, "type": "URL", "data": "https://example.com"}],
        headers=basic(ent["admin"], "moved-from-another-node"),
    )
    assert r.status == 201, await r.text()


async def test_a_stored_hash_with_other_parameters_never_verifies_and_costs_nothing(client, onboard):
    """A hash with foreign parameters already in the store (written before this check existed) is
    an invalid credential: the node never runs scrypt with parameters it did not choose."""
    ent = await onboard()
    reg = registry(client)
    key = parse_handle(f"0.NA/{ent['prefix']}").key
    current = await reg.read_record(key)
    costly = foreign_hash("legacy-secret", p=8)
    values = tuple(
        HandleValue(v.index, v.type, costly.encode(), timestamp=v.timestamp, permissions=v.permissions)
        if v.index == 300
        else v
        for v in current.values
    )
    # Straight into the store, as data from before this check: the write service refuses such a hash.
    (result,) = await reg.store.write(
        [HandleWrite(key, current.handle, "0.NA", values, current.version)], now=reg.clock()
    )
    assert result.ok
    jobs = reg.hasher.jobs
    r = await client.get(f"/api/handles/0.NA/{ent['prefix']}", headers=basic(ent["admin"], "legacy-secret"))
    assert r.status == 401 and (await r.json())["responseCode"] == 402
    assert reg.hasher.jobs == jobs  # refused without computing anything
    assert not verify_secret("legacy-secret", costly)


async def test_basic_on_every_request_pays_scrypt_once(client, onboard):
    """pyhandle sends Basic with every request: the node checks the secret once, then remembers it
    (keyed by an HMAC of the secret under a per-process key, never a plain digest)."""
    ent = await onboard()
    reg = registry(client)
    jobs = reg.hasher.jobs
    for i in range(20):
        r = await client.put(
            f"/api/handles/{ent['prefix']}/every-{i}",
            json=[{"index": 1, "type": "URL", "data": "https://example.com"}],
            headers=ent["headers"],
        )
        assert r.status == 201, await r.text()
    assert reg.hasher.jobs == jobs + 1
    entries = list(reg.authenticator._ok.values())
    assert entries and all(mac != hashlib.sha256(ent["secret"].encode()).digest() for _, mac, _ in entries)


async def test_concurrent_first_checks_of_one_secret_share_one_computation(client, onboard):
    ent = await onboard()
    reg = registry(client)
    jobs = reg.hasher.jobs
    replies = await asyncio.gather(
        *(client.get(f"/api/handles/0.NA/{ent['prefix']}", headers=ent["headers"]) for _ in range(12))
    )
    assert [r.status for r in replies] == [200] * 12
    assert reg.hasher.jobs == jobs + 1


async def test_a_changed_key_drops_the_remembered_check_at_once(client, onboard):
    ent = await onboard()
    reg = registry(client)
    probe = f"/api/handles/0.NA/{ent['prefix']}"
    assert (await client.get(probe, headers=ent["headers"])).status == 200  # now remembered
    r = await put_key(client, ent, "the-replacement-secret")
    assert r.status == 200, await r.text()
    r = await client.get(probe, headers=ent["headers"])
    assert r.status == 401 and (await r.json())["responseCode"] == 402
    assert (await client.get(probe, headers=basic(ent["admin"], "the-replacement-secret"))).status == 200
    # Changing another value of the record does not cost a new check.
    jobs = reg.hasher.jobs
    r = await client.put(
        probe,
        params={"index": "2"},
        json=[{"index": 2, "type": "EMAIL", "data": "a@example.com"}],
        headers=basic(ent["admin"], "the-replacement-secret"),
    )
    assert r.status in (200, 201), await r.text()
    assert (await client.get(probe, headers=basic(ent["admin"], "the-replacement-secret"))).status == 200
    assert reg.hasher.jobs == jobs


async def test_a_batch_of_200_plain_secret_keys_leaves_the_loop_free(client, onboard):
    """The keys are hashed in the scrypt pool: a resolution sent while the batch is being hashed is
    answered before the batch is done (on the loop, it would wait for all 200 hashes)."""
    ent = await onboard()
    items = [
        {"handle": f"{ent['prefix']}/key-holder-{i}", "values": [seckey(f"plain-secret-number-{i}")]}
        for i in range(200)
    ]
    body = "\n".join(json.dumps(item) for item in items).encode()
    reg = registry(client)
    batch = asyncio.create_task(
        client.post("/api/handles", data=body, headers={**ent["headers"], "Content-Type": "application/x-ndjson"})
    )
    before = reg.hasher.jobs
    for _ in range(3000):  # until the batch is hashing (at most 30 s)
        if reg.hasher.jobs >= before + 3 or batch.done():
            break
        await asyncio.sleep(0.01)
    r = await client.get(f"/api/handles/0.NA/{ent['prefix']}")
    assert r.status == 200
    assert not batch.done(), "the resolution waited for the whole batch"
    reply = await batch
    report = await reply.json()
    assert reply.status == 201 and report["created"] == 200, report
    record = await reg.read_record(parse_handle(f"{ent['prefix']}/key-holder-7").key)
    stored = record.value_at(300).data.decode()
    assert stored.startswith(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")
    assert verify_secret("plain-secret-number-7", stored)


async def test_a_full_pool_answers_busy_at_once() -> None:
    """Deterministic, on the pool itself: with both slots taken, the next check is refused before
    it is queued; a hash (an authenticated write) waits for a slot instead."""
    hasher = SecretHasher(threads=1, max_jobs=2, max_jobs_per_source=2)
    stored = hash_secret("s")
    try:
        running = [asyncio.create_task(hasher.verify(f"guess-{i}", stored)) for i in range(2)]
        await asyncio.sleep(0)  # both hold their slot now
        with pytest.raises(ServerBusy) as info:
            await hasher.verify("one-more", stored)
        assert info.value.retry_after == 1 and info.value.code == 3
        waiting = asyncio.create_task(hasher.hash("a-write"))
        assert await asyncio.gather(*running) == [False, False]
        assert verify_secret("a-write", await waiting)
        assert await hasher.verify("s", stored) is True
        assert hasher.refused == 1
    finally:
        hasher.close()


async def test_one_address_cannot_take_every_slot() -> None:
    hasher = SecretHasher(threads=1, max_jobs=8, max_jobs_per_source=2)
    stored = hash_secret("s")
    try:
        mine = [asyncio.create_task(hasher.verify(f"g{i}", stored, "10.0.0.1")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ServerBusy):
            await hasher.verify("g3", stored, "10.0.0.1")
        assert await hasher.verify("s", stored, "10.0.0.2") is True  # another address still gets a slot
        await asyncio.gather(*mine)
    finally:
        hasher.close()


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"auth_scrypt_threads": 1, "auth_scrypt_queue": 2}


async def test_guessing_flood_gets_503_with_retry_after_never_500(client, admin):
    """Distinct guesses beyond the pool's bound are answered 503 (responseCode 3) with Retry-After;
    the others 401; anonymous resolution keeps working."""
    guesses = [
        client.put("/api/handles/88.118.8/x", json=[], headers=basic("300:0.NA/88.118.8", f"guess-{i}"))
        for i in range(16)
    ]
    replies = await asyncio.gather(*guesses, client.get("/api/handles/0.NA/88.118.8"))
    *guessed, anonymous = replies
    assert anonymous.status == 200
    statuses = sorted(r.status for r in guessed)
    assert set(statuses) <= {401, 429, 503} and 503 in statuses, statuses
    for r in guessed:
        body = await r.json()
        if r.status == 503:
            assert body["responseCode"] == 3 and r.headers["Retry-After"] == "1"
        elif r.status == 401:
            assert body["responseCode"] == 402


async def test_scrypt_threads_yield_the_cpu_to_the_event_loop() -> None:
    """On Linux the pool's threads run at nice +10: short of CPU, serving goes first."""
    hasher = SecretHasher(threads=1)
    try:
        stored = await hasher.hash("s")
        (thread,) = [t for t in threading.enumerate() if t.name.startswith("scrypt")]
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        assert await hasher.verify("s", stored)
    finally:
        hasher.close()
