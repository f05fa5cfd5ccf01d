"""HS_PUBKEY challenge-response over HTTP (``Authorization: Handle …``), as HANDLE.NET clients do it."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from registry import valuedata
from registry.auth import Identity
from resolver.http.keys import STATE_KEY
from resolver.http.sessions import SessionStore
from tests.resolver.conftest import NODE_PREFIX


def jwk_of(key) -> dict:  # type: ignore[no-untyped-def]
    return valuedata.public_key_to_jwk(valuedata.encode_public_key(key.public_key()))


def sign(key, message: bytes) -> bytes:  # type: ignore[no-untyped-def]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(params=["ed25519", "rsa"])
def private_key(request):  # type: ignore[no-untyped-def]
    if request.param == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def setup_key_holder(client, onboard, key) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """An enterprise adds its public key to its prefix handle (HS_PUBKEY at 301) and makes that key an
    administrator of the prefix (HS_ADMIN at 101), as HANDLE.NET prefix owners do."""
    ent = await onboard()
    prefix_handle = f"0.NA/{ent['prefix']}"
    values = [
        {"index": 301, "type": "HS_PUBKEY", "data": {"format": "key", "value": jwk_of(key)}},
        {
            "index": 101,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": prefix_handle, "index": 301, "permissions": "011111110011"},
            },
        },
    ]
    r = await client.put(
        f"/api/handles/{prefix_handle}",
        params=[("index", "301"), ("index", "101")],
        json={"values": values},
        headers=ent["headers"],
    )
    assert r.status == 201, await r.text()
    r = await client.put(
        f"/api/handles/{ent['prefix']}/owned",
        json={"values": [{"index": 1, "type": "URL", "data": "https://example.com/a"}]},
        headers=ent["headers"],
    )
    assert r.status == 201, await r.text()
    return f"301:{prefix_handle}", ent["prefix"]


def challenge_params(header: str) -> tuple[str, str]:
    """(sessionId, nonce) of a ``WWW-Authenticate: Handle sessionId="…", nonce="…"`` header."""
    assert header.startswith("Handle "), header
    params = dict(part.strip().split("=", 1) for part in header[len("Handle ") :].split(","))
    return params["sessionId"].strip('"'), params["nonce"].strip('"')


def answer(session_id: str, nonce_b64: str, identity: str, key, alg: str = "SHA256") -> str:  # type: ignore[no-untyped-def]
    cnonce = os.urandom(16)
    signature = sign(key, base64.b64decode(nonce_b64) + cnonce)
    return (
        f'Handle sessionId="{session_id}", id="{identity}", type="HS_PUBKEY", '
        f'cnonce="{base64.b64encode(cnonce).decode()}", alg="{alg}", '
        f'signature="{base64.b64encode(signature).decode()}"'
    )


async def test_401_challenge_then_signed_answer_then_session(client, onboard, private_key):
    identity, prefix = await setup_key_holder(client, onboard, private_key)
    target = f"/api/handles/{prefix}/by-key"
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/b"}]}
    r = await client.put(target, json=body)
    assert r.status == 401 and (await r.json())["responseCode"] == 402
    challenges = r.headers.getall("WWW-Authenticate")
    assert any(c.startswith("Basic ") for c in challenges)
    session_id, nonce = challenge_params(next(c for c in challenges if c.startswith("Handle ")))

    r = await client.put(target, json=body, headers={"Authorization": answer(session_id, nonce, identity, private_key)})
    assert r.status == 201, await r.text()
    # The session is authenticated now, under a new id (no fixation) that the reply announces: that
    # sessionId alone is enough, and the new handle's default HS_ADMIN names the key that created it.
    new_id, _ = challenge_params(r.headers["WWW-Authenticate"])
    assert new_id != session_id
    session = {"Authorization": f'Handle sessionId="{new_id}"'}
    body["values"][0]["data"] = "https://example.com/c"
    r = await client.put(target, params={"index": "1"}, json=body, headers=session)
    assert r.status == 200, await r.text()
    record = await (await client.get(target)).json()
    assert record["values"][0]["data"]["value"] == "https://example.com/c"
    admin_value = next(v for v in record["values"] if v["type"] == "HS_ADMIN")
    assert admin_value["data"]["value"]["index"] == 301
    # Handle-level rights still apply: the handle made with the secret key names only 300.
    r = await client.put(f"/api/handles/{prefix}/owned", params={"index": "1"}, json=body, headers=session)
    assert r.status == 403
    # And nothing outside the enterprise's prefix.
    r = await client.put(f"/api/handles/{NODE_PREFIX}/not-its", json=body, headers=session)
    assert r.status == 403


async def test_sessions_resource(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, _ = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    r = await client.put(
        "/api/sessions/this", headers={"Authorization": answer(opened["sessionId"], opened["nonce"], identity, key)}
    )
    status = await r.json()
    assert r.status == 200 and status["authenticated"] is True and status["id"] == identity
    assert status["sessionId"] != opened["sessionId"]  # a new id once authenticated
    this = {"Authorization": f'Handle sessionId="{status["sessionId"]}"'}
    r = await client.get("/api/sessions/this", headers=this)
    assert r.status == 200 and (await r.json())["authenticated"] is True
    r = await client.delete("/api/sessions/this", headers=this)
    assert r.status == 200
    r = await client.get("/api/sessions/this", headers=this)
    assert r.status == 401


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.replace('type="HS_PUBKEY"', 'type="HS_SECKEY"'),
        lambda h: h.replace('alg="SHA256"', 'alg="MD4"'),
        lambda h: h.replace('sessionId="', 'sessionId="x'),
        lambda h: h[: h.index("signature=")] + 'signature="AAAA"',
        lambda h: h.replace('id="301:', 'id="300:'),
        lambda h: h + ", garbage",
        lambda h: h.replace('cnonce="', 'cnonce="%%%'),
    ],
)
async def test_bad_answers_are_refused_and_change_nothing(client, onboard, mutate):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, prefix = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    header = mutate(answer(opened["sessionId"], opened["nonce"], identity, key))
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/evil"}]}
    r = await client.put(
        f"/api/handles/{prefix}/owned", params={"index": "1"}, json=body, headers={"Authorization": header}
    )
    # Ed25519 takes no hash, so alg="MD4" still verifies and the handle's rights refuse (403).
    assert r.status in (401, 403), await r.text()
    assert (await r.json())["responseCode"] == (402 if r.status == 401 else 400)
    record = await (await client.get(f"/api/handles/{prefix}/owned")).json()
    assert record["values"][0]["data"]["value"] == "https://example.com/a"


async def test_signature_over_another_nonce_is_refused(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, _ = await setup_key_holder(client, onboard, key)
    first = await (await client.post("/api/sessions")).json()
    second = await (await client.post("/api/sessions")).json()
    replayed = answer(second["sessionId"], first["nonce"], identity, key)
    r = await client.put("/api/sessions/this", headers={"Authorization": replayed})
    assert r.status == 401 and (await r.json())["responseCode"] == 402


# -- single-use nonces, no fixation, bounded anonymous sessions (issue 10 §8) ----------------------


async def test_a_signed_answer_cannot_be_replayed(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, prefix = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    signed = {"Authorization": answer(opened["sessionId"], opened["nonce"], identity, key)}
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/once"}]}
    r = await client.put(f"/api/handles/{prefix}/replay-1", json=body, headers=signed)
    assert r.status == 201, await r.text()
    new_id, _ = challenge_params(r.headers["WWW-Authenticate"])
    # The same header again: its session id is gone (replaced on authentication).
    r = await client.put(f"/api/handles/{prefix}/replay-2", json=body, headers=signed)
    assert r.status == 401 and (await r.json())["responseCode"] == 402
    # The old signature under the new session id: that session's nonce is another one.
    moved = {"Authorization": signed["Authorization"].replace(opened["sessionId"], new_id)}
    r = await client.put(f"/api/handles/{prefix}/replay-3", json=body, headers=moved)
    assert r.status == 401
    for n in (2, 3):
        assert (await client.get(f"/api/handles/{prefix}/replay-{n}")).status == 404


async def test_a_nonce_answers_once_even_when_two_requests_race(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, _ = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    signed = {"Authorization": answer(opened["sessionId"], opened["nonce"], identity, key)}
    replies = await asyncio.gather(*(client.put("/api/sessions/this", headers=signed) for _ in range(5)))
    assert sorted(r.status for r in replies) == [200, 401, 401, 401, 401]


async def test_a_failed_answer_consumes_the_nonce(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, _ = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    bad = answer(opened["sessionId"], opened["nonce"], identity, ed25519.Ed25519PrivateKey.generate())
    assert (await client.put("/api/sessions/this", headers={"Authorization": bad})).status == 401
    late = answer(opened["sessionId"], opened["nonce"], identity, key)  # right key, spent nonce
    assert (await client.put("/api/sessions/this", headers={"Authorization": late})).status == 401


async def test_a_planted_session_id_is_worthless_after_authentication(client, onboard):
    """Fixation: an attacker hands the victim a session id it knows; once the victim authenticates,
    that id is gone and the victim's session lives under a new one only the victim has seen."""
    key = ed25519.Ed25519PrivateKey.generate()
    identity, prefix = await setup_key_holder(client, onboard, key)
    planted = await (await client.post("/api/sessions")).json()
    r = await client.put(
        "/api/sessions/this", headers={"Authorization": answer(planted["sessionId"], planted["nonce"], identity, key)}
    )
    status = await r.json()
    assert r.status == 200 and status["authenticated"] is True
    assert status["sessionId"] != planted["sessionId"]
    assert challenge_params(r.headers["WWW-Authenticate"])[0] == status["sessionId"]
    attacker = {"Authorization": f'Handle sessionId="{planted["sessionId"]}"'}
    body = {"values": [{"index": 1, "type": "URL", "data": "https://evil.example"}]}
    r = await client.put(f"/api/handles/{prefix}/fixated", json=body, headers=attacker)
    assert r.status == 401
    assert (await client.get(f"/api/handles/{prefix}/fixated")).status == 404
    victim = {"Authorization": f'Handle sessionId="{status["sessionId"]}"'}
    assert (await client.get("/api/sessions/this", headers=victim)).status == 200


async def test_ten_thousand_anonymous_sessions_do_not_evict_an_authenticated_one(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, prefix = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    r = await client.put(
        "/api/sessions/this", headers={"Authorization": answer(opened["sessionId"], opened["nonce"], identity, key)}
    )
    session = {"Authorization": f'Handle sessionId="{(await r.json())["sessionId"]}"'}
    first_anonymous = await (await client.post("/api/sessions")).json()

    async def open_many(n: int) -> None:
        for _ in range(n):
            r = await client.post("/api/sessions")
            assert r.status == 201
            r.release()

    await asyncio.gather(*(open_many(1000) for _ in range(10)))
    assert (await client.post("/api/sessions")).status == 201  # the 10,001st (and more)
    store = client.server.app[STATE_KEY].sessions
    assert len(store) - store.authenticated_count <= store.per_address  # bounded per address
    assert store.get(first_anonymous["sessionId"]) is None  # this address's oldest went first
    r = await client.get("/api/sessions/this", headers=session)
    assert r.status == 200 and (await r.json())["id"] == identity
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/still"}]}
    assert (await client.put(f"/api/handles/{prefix}/still", json=body, headers=session)).status == 201


def test_session_store_bounds() -> None:
    """Many addresses: the anonymous pool stays within its total bound (oldest first) and never
    takes an authenticated session with it."""
    store = SessionStore(size=3, anonymous_size=500, per_address=5)
    who = Identity.parse("301:0.NA/88.118.8.1001")
    kept = [store.authenticate(store.new("192.0.2.1"), who) for _ in range(3)]
    for i in range(20_000):
        store.new(f"10.{i % 250}.{i // 250 % 250}.1")
    assert len(store) - store.authenticated_count == 500
    assert all(store.get(s.id) is s for s in kept)
    assert store.authenticated_count == 3
    fourth = store.authenticate(store.new("192.0.2.1"), who)
    assert store.get(kept[0].id) is None and store.get(fourth.id) is fourth  # LRU among authenticated only


async def test_only_the_authenticating_reply_announces_a_session(client, onboard):
    key = ed25519.Ed25519PrivateKey.generate()
    identity, prefix = await setup_key_holder(client, onboard, key)
    opened = await (await client.post("/api/sessions")).json()
    r = await client.put(
        "/api/sessions/this", headers={"Authorization": answer(opened["sessionId"], opened["nonce"], identity, key)}
    )
    new_id, _ = challenge_params(r.headers["WWW-Authenticate"])
    r = await client.get(f"/api/handles/{prefix}/owned", headers={"Authorization": f'Handle sessionId="{new_id}"'})
    assert r.status == 200 and "WWW-Authenticate" not in r.headers


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE"])
@pytest.mark.parametrize("authorization", [None, "Basic c2NoZW1hdGhlc2lzOng=", "SCHEMATHESIS-INVALID-VALUE"])
async def test_the_session_resource_without_a_session_needs_authentication(client, method, authorization):
    """``/api/sessions/this`` names the caller's Handle session: without one (no credentials, Basic, an
    unknown scheme) authentication is needed, 401 with both challenges as wherever credentials are
    missing (it was a 400); the Handle challenge is a session to answer."""
    headers = {"Authorization": authorization} if authorization else {}
    r = await client.request(method, "/api/sessions/this", headers=headers)
    assert r.status == 401 and (await r.json())["responseCode"] == 402
    challenges = r.headers.getall("WWW-Authenticate")
    assert [c.split(" ", 1)[0] for c in challenges] == ["Basic", "Handle"]
    session_id, nonce = challenge_params(challenges[1])
    assert session_id and nonce
