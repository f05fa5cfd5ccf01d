"""No 500 for anything a client can send (issue 10, section 4 and the smaller holes of section 9).

One regression test per reproduction, on both stores: Unicode digits and overlong numbers in query
parameters and JSON bodies, JSON integers of more than 4,300 digits, unpaired surrogates, bodies
whose Content-Encoding is a lie (and zip bombs), references to promoters and enterprises that are
not ids, ids past 64 bits, JSONP with credentials, absolute TTLs the native protocol cannot carry
and templates written by a disabled enterprise. Every refusal is checked twice: the reply (status,
JSON with responseCode and message) and the store (nothing written or changed).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.errors import RC_SUCCESS
from registry.model import parse_handle
from resolver.config import load_config
from resolver.http.keys import STATE_KEY
from resolver.native.codec import (
    ENVELOPE_SIZE,
    ResolutionRequest,
    decode_envelope,
    decode_payload,
    encode_message,
    make_request,
)
from resolver.server import node_app
from tests.conftest import ADMIN_SECRET, free_port
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic, make_uscc

BIG = "7" * 5000  # more digits than Python's int() converts from text (4,300)
URL_VALUE = {"index": 1, "type": "URL", "data": "https://example.com/p/1"}


@pytest.fixture
def limits() -> dict[str, Any]:
    """Extra settings for one test (``@pytest.mark.parametrize("limits", [{...}])``)."""
    return {}


@pytest.fixture(params=["sqlite", "postgresql"])
def config_overrides(request: pytest.FixtureRequest, limits: dict[str, Any]) -> dict[str, Any]:
    if request.param == "postgresql":
        return {**limits, "store": request.getfixturevalue("pg_store_url")}
    return dict(limits)


@pytest.fixture
async def ent(onboard: Callable[..., Any]) -> dict[str, Any]:
    return await onboard()


# -- helpers --------------------------------------------------------------------------------------
async def refused(resp: Any, status: int, code: int) -> dict[str, Any]:
    """A refusal: the status, a short JSON message with the responseCode (never the input at length)."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    assert body["responseCode"] == code, body
    assert isinstance(body["message"], str) and 0 < len(body["message"]) < 300, body
    return body


async def stored(client: TestClient, handle: str) -> Any:
    return await client.server.app[STATE_KEY].registry.store.get(parse_handle(handle).key)


async def put_raw(client: TestClient, handle: str, text: str | bytes, headers: dict[str, str], **extra: str) -> Any:
    data = text.encode() if isinstance(text, str) else text
    return await client.put(
        f"/api/handles/{handle}", data=data, headers={**headers, "Content-Type": "application/json", **extra}
    )


async def post_batch(
    client: TestClient, headers: dict[str, str], body: bytes, ctype: str, atomic: bool = True, **extra: str
) -> tuple[int, dict[str, Any]]:
    r = await client.post(
        "/api/handles",
        data=body,
        params={"atomic": "true" if atomic else "false"},
        headers={**headers, "Content-Type": ctype, **extra},
    )
    text = await r.text()
    assert r.status < 500 and r.content_type == "application/json", text
    return r.status, json.loads(text)


def ndjson(*lines: str) -> bytes:
    return "\n".join(lines).encode() + b"\n"


def item_text(handle: str, value: str = json.dumps(URL_VALUE)) -> str:
    return f'{{"handle":"{handle}","values":[{value}]}}'


async def enterprises(client: TestClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/api/enterprises", headers=admin)
    assert r.status == 200, await r.text()
    return (await r.json())["enterprises"]


# == §4.1: numbers in query parameters ============================================================
@pytest.mark.parametrize("bad", ["%C2%B2", "%D9%A1", "9" * 5000, "-1", "%2B1", "1_0", "4294967296", "1.0", "x"])
async def test_index_filter_takes_ascii_digits_in_range_only(client, ent, bad):
    h = f"{ent['prefix']}/idx"
    r = await client.put(f"/api/handles/{h}", json={"values": [URL_VALUE]}, headers=ent["headers"])
    assert r.status == 201, await r.text()
    body = await refused(await client.get(f"/api/handles/{h}?index={bad}"), 400, 4)
    assert body["handle"] == h and "index" in body["message"]
    # The same rule on the writes' index= (PUT and DELETE), and nothing changes.
    before = await stored(client, h)
    await refused(await put_raw(client, f"{h}?index={bad}", json.dumps([URL_VALUE]), ent["headers"]), 400, 4)
    await refused(await client.delete(f"/api/handles/{h}?index={bad}", headers=ent["headers"]), 400, 4)
    assert await stored(client, h) == before
    r = await client.get(f"/api/handles/{h}?index=1")
    assert r.status == 200 and [v["index"] for v in (await r.json())["values"]] == [1]


@pytest.mark.parametrize(
    ("name", "bad"), [("page", "%C2%B2"), ("page", "9" * 30), ("pageSize", "%D9%A1"), ("page", "-1")]
)
async def test_list_paging_takes_ascii_digits_in_range_only(client, admin, name, bad):
    r = await client.get(f"/api/handles?prefix={NODE_PREFIX}&{name}={bad}", headers=admin)
    await refused(r, 400, 4)


# == §4.4: JSON integers of more than 4,300 digits ================================================
async def test_5000_digit_integer_in_a_single_write_is_a_400(client, ent):
    h = f"{ent['prefix']}/big"
    for field in ("index", "ttl"):
        value = {**URL_VALUE, field: "BIG"}
        body = await refused(
            await put_raw(client, h, json.dumps({"values": [value]}).replace('"BIG"', BIG), ent["headers"]), 400, 4
        )
        assert "4300 digits" in body["message"] and body["handle"] == h
    assert await stored(client, h) is None


async def test_5000_digit_integer_in_admin_and_template_bodies_is_a_400(client, admin, ent):
    before = await enterprises(client, admin)
    new = json.dumps({"name": "Big Co", "uscc": make_uscc(77), "promoter": 0}).replace(": 0}", f": {BIG}}}")
    for method, path, text in [
        ("POST", "/api/enterprises", new),
        ("PATCH", f"/api/enterprises/{ent['id']}", f'{{"promoter": {BIG}}}'),
        ("POST", "/api/promoters", f'{{"name": "P", "uscc": {BIG}}}'),
        ("POST", "/api/templates", f'{{"id": "big", "fields": [{{"index": {BIG}, "name": "n", "type": "T"}}]}}'),
    ]:
        r = await client.request(method, path, data=text, headers={**admin, "Content-Type": "application/json"})
        assert "4300 digits" in (await refused(r, 400, 4))["message"]
    assert await enterprises(client, admin) == before
    r = await client.get("/api/templates/big")
    await refused(r, 404, 100)


@pytest.mark.parametrize("ctype", ["application/x-ndjson", "application/json"])
@pytest.mark.parametrize("atomic", [True, False])
async def test_5000_digit_integer_fails_one_batch_item_at_its_position(client, ent, ctype, atomic):
    p = ent["prefix"]
    items = [
        item_text(f"{p}/b0"),
        item_text(f"{p}/b1", f'{{"index":{BIG},"type":"URL","data":"x"}}'),
        item_text(f"{p}/b2"),
    ]
    body = ndjson(*items) if ctype.endswith("ndjson") else ("[" + ",".join(items) + "]").encode()
    status, reply = await post_batch(client, ent["headers"], body, ctype, atomic)
    (failure,) = reply["failures"]
    assert failure["position"] == 1 and failure["responseCode"] == 4 and "4300 digits" in failure["message"]
    assert reply["total"] == 3
    if atomic:
        assert status == 400 and not reply["written"]
        assert await stored(client, f"{p}/b0") is None and await stored(client, f"{p}/b2") is None
    else:
        assert status == 201 and reply["created"] == 2
        assert await stored(client, f"{p}/b0") is not None and await stored(client, f"{p}/b2") is not None
    assert await stored(client, f"{p}/b1") is None


# == §4.5: Content-Encoding =======================================================================
@pytest.mark.parametrize("coding", ["gzip", "deflate", "x-gzip"])
async def test_body_that_is_not_what_its_content_encoding_says_is_a_json_400(client, ent, coding):
    h = f"{ent['prefix']}/enc"
    text = json.dumps({"values": [URL_VALUE]})
    body = await refused(await put_raw(client, h, text, ent["headers"], **{"Content-Encoding": coding}), 400, 4)
    assert "not valid" in body["message"]
    batch = ndjson(item_text(f"{ent['prefix']}/enc-b"))
    status, reply = await post_batch(
        client, ent["headers"], batch, "application/x-ndjson", **{"Content-Encoding": coding}
    )
    assert status == 400 and reply["responseCode"] == 4 and "not valid" in reply["message"]
    # A stream cut short is refused as well.
    cut = gzip.compress(text.encode())[:-6] if coding != "deflate" else zlib.compress(text.encode())[:-6]
    await refused(await put_raw(client, h, cut, ent["headers"], **{"Content-Encoding": coding}), 400, 4)
    assert await stored(client, h) is None and await stored(client, f"{ent['prefix']}/enc-b") is None


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "²"])
async def test_content_encodings_the_node_does_not_decode_are_415(client, ent, coding):
    h = f"{ent['prefix']}/enc"
    headers = {"Content-Encoding": coding.encode().decode("latin-1")}
    r = await put_raw(client, h, json.dumps({"values": [URL_VALUE]}), ent["headers"], **headers)
    await refused(r, 415, 4)
    assert r.headers["Accept-Encoding"] == "gzip, deflate"
    r = await client.post(
        "/api/handles",
        data=ndjson(item_text(f"{ent['prefix']}/enc-b")),
        headers={**ent["headers"], "Content-Type": "application/x-ndjson", **headers},
    )
    await refused(r, 415, 4)
    assert r.headers["Accept-Encoding"] == "gzip, deflate"
    assert await stored(client, h) is None and await stored(client, f"{ent['prefix']}/enc-b") is None


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda b: zlib.compress(b)[2:-4])],
)
async def test_gzip_and_deflate_bodies_are_decoded(client, ent, coding, compress):
    p = ent["prefix"]
    r = await put_raw(
        client,
        f"{p}/z",
        compress(json.dumps({"values": [URL_VALUE]}).encode()),
        ent["headers"],
        **{"Content-Encoding": coding},
    )
    assert r.status == 201, await r.text()
    for ctype, body in [
        ("application/x-ndjson", ndjson(*(item_text(f"{p}/zn{n}") for n in range(50)))),
        ("application/json", ("[" + ",".join(item_text(f"{p}/za{n}") for n in range(50)) + "]").encode()),
    ]:
        status, reply = await post_batch(client, ent["headers"], compress(body), ctype, **{"Content-Encoding": coding})
        assert status == 201 and reply["created"] == 50, reply
    r = await client.get(f"/api/handles/{p}/zn49")
    assert r.status == 200


@pytest.mark.parametrize("limits", [{"max_body_bytes": 100_000, "batch_max_bytes": 1_000_000}])
async def test_zip_bombs_stop_at_the_body_limits(client, ent):
    """A few KB of gzip that decode to 50 MB: refused once the decoded bytes pass the limit."""
    h = f"{ent['prefix']}/bomb"
    value = json.dumps({"values": [{**URL_VALUE, "data": "a" * 50_000_000}]}).encode()
    bomb = gzip.compress(value)
    assert len(bomb) < 100_000
    body = await refused(await put_raw(client, h, bomb, ent["headers"], **{"Content-Encoding": "gzip"}), 400, 4)
    assert "too large" in body["message"] and "100000" in body["message"]
    line = item_text(f"{ent['prefix']}/bomb-b", json.dumps({**URL_VALUE, "data": "a" * 1000})).encode() + b"\n"
    status, reply = await post_batch(
        client, ent["headers"], gzip.compress(line * 50_000), "application/x-ndjson", **{"Content-Encoding": "gzip"}
    )
    assert status == 413 and reply["responseCode"] == 4 and "1000000" in reply["message"]
    assert await stored(client, h) is None and await stored(client, f"{ent['prefix']}/bomb-b") is None


# == §4.6: Unicode digits where numbers are expected ==============================================
@pytest.mark.parametrize(
    "value",
    [
        {**URL_VALUE, "index": "²"},
        {**URL_VALUE, "index": "١"},
        {**URL_VALUE, "ttl": "²"},
        {**URL_VALUE, "ttl": "٣٦٠٠"},
        {**URL_VALUE, "references": [{"handle": "0.NA/x", "index": "²"}]},
        {**URL_VALUE, "references": [{"handle": "0.NA/x", "index": 2**70}]},
        {"index": 1, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"handle": "0.NA/x", "index": "١"}}},
        {"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": {"protocolVersion": "٢.١٠"}}},
    ],
)
async def test_unicode_digits_in_values_are_202_and_fail_one_batch_item(client, ent, value):
    h = f"{ent['prefix']}/uni"
    await refused(await client.put(f"/api/handles/{h}", json={"values": [value]}, headers=ent["headers"]), 400, 202)
    assert await stored(client, h) is None
    p = ent["prefix"]
    items = [item_text(f"{p}/u0"), json.dumps({"handle": f"{p}/u1", "values": [value]}), item_text(f"{p}/u2")]
    status, reply = await post_batch(client, ent["headers"], ndjson(*items), "application/x-ndjson", atomic=False)
    (failure,) = reply["failures"]
    assert status == 201 and failure["position"] == 1 and failure["responseCode"] == 202, reply
    assert await stored(client, f"{p}/u1") is None and await stored(client, f"{p}/u2") is not None


async def test_unpaired_surrogates_are_refused_not_stored(client, admin, ent):
    h = f"{ent['prefix']}/sur"
    text = json.dumps({"values": [{**URL_VALUE, "data": "SUR"}]}).replace("SUR", "\\ud800")
    body = await refused(await put_raw(client, h, text, ent["headers"]), 400, 4)
    assert "surrogate" in body["message"]
    paired = json.dumps({"values": [{**URL_VALUE, "data": "😀"}]}, ensure_ascii=True)  # \ud83d\ude00
    assert (await put_raw(client, h, paired, ent["headers"])).status == 201
    r = await client.post(
        "/api/promoters",
        data='{"name": "P\\udc00", "uscc": "x"}',
        headers={**admin, "Content-Type": "application/json"},
    )
    await refused(r, 400, 4)
    p = ent["prefix"]
    items = [item_text(f"{p}/s0"), item_text(f"{p}/s1", '{"index":1,"type":"\\udfff","data":"x"}')]
    for ctype, raw in [
        ("application/x-ndjson", ndjson(*items)),
        ("application/json", ("[" + ",".join(items) + "]").encode()),
    ]:
        status, reply = await post_batch(client, ent["headers"], raw, ctype)
        (failure,) = reply["failures"]
        assert status == 400 and failure["position"] == 1 and "surrogate" in failure["message"]
    assert await stored(client, f"{p}/s0") is None and await stored(client, f"{p}/s1") is None


# == §4.10 and §4.11 (admin routes): references and ids ===========================================
async def test_enterprise_and_promoter_references_are_checked_before_the_store(client, admin, ent):
    before = await enterprises(client, admin)
    for ref in ("%C2%B2", "%D9%A1", "99999999999999999999", "9223372036854775808", "%00", "x" * 300):
        await refused(await client.get(f"/api/enterprises/{ref}", headers=admin), 400, 4)
    for promoter in ("²", "١", 100000000000000000000, 2**63, -1, 1.5, True, None, [1], "\u0000"):
        r = await client.patch(
            f"/api/enterprises/{ent['id']}", json={"promoter": promoter, "status": "disabled"}, headers=admin
        )
        await refused(r, 400, 4)
        body = {"name": "New Co", "uscc": make_uscc(500), "promoter": promoter}
        await refused(await client.post("/api/enterprises", json=body, headers=admin), 400, 4)
    assert await enterprises(client, admin) == before  # nothing moved, disabled or created
    # The largest id passes the check and is simply unknown.
    r = await client.patch(f"/api/enterprises/{ent['id']}", json={"promoter": 2**63 - 1}, headers=admin)
    assert "unknown promoter" in (await refused(r, 400, 4))["message"]
    r = await client.get(f"/api/enterprises/{2**63 - 1}", headers=admin)
    assert "unknown enterprise" in (await refused(r, 400, 4))["message"]
    # Ids written as ASCII digits still work, as strings or numbers.
    r = await client.get(f"/api/enterprises/{ent['id']}", headers=admin)
    assert r.status == 200 and (await r.json())["prefix"] == ent["prefix"]


async def test_enterprise_prefix_is_ascii_so_numbering_goes_on(client, admin, onboard):
    first = await onboard()
    promoter = (await (await client.get(f"/api/enterprises/{first['id']}", headers=admin)).json())["promoter"]
    for n, prefix in enumerate(
        [f"{NODE_PREFIX}.²", f"{NODE_PREFIX}.١٢", f"{NODE_PREFIX}.ä", f"{NODE_PREFIX}.{'9' * 20}"]
    ):
        body = {"name": "Odd Co", "uscc": make_uscc(600 + n), "promoter": promoter, "prefix": prefix}
        await refused(await client.post("/api/enterprises", json=body, headers=admin), 400, 4)
    custom = await onboard(promoter, prefix=f"{NODE_PREFIX}.{'9' * 16}")
    assert custom["prefix"] == f"{NODE_PREFIX}.{'9' * 16}"
    after = await onboard(promoter)  # the next number after the highest, still exact
    assert after["prefix"] == f"{NODE_PREFIX}.{10**16}"


async def test_names_must_be_printable(client, admin):
    for name in ("P\u0000", "P\n", "\u200b" * 3 + "\x7f"):
        r = await client.post("/api/promoters", json={"name": name, "uscc": make_uscc(9, "92")}, headers=admin)
        await refused(r, 400, 4)
    r = await client.get("/api/promoters", headers=admin)
    assert (await r.json())["promoters"] == []


# == §9: JSONP only for anonymous GETs ============================================================
async def test_jsonp_is_refused_with_credentials(client, admin, ent):
    h = f"{ent['prefix']}/jsonp"
    r = await client.put(f"/api/handles/{h}", json={"values": [URL_VALUE]}, headers=ent["headers"])
    assert r.status == 201
    for headers, path in [
        (admin, "/api/enterprises"),
        (admin, f"/api/handles/0.NA/{ent['prefix']}"),  # holds the HS_SECKEY hash
        (ent["headers"], f"/api/handles/{h}"),
    ]:
        r = await client.get(path, params={"callback": "steal"}, headers=headers)
        text = await r.text()
        assert r.status == 400 and r.content_type == "application/json", text
        assert "steal" not in text and "scrypt" not in text and "JSONP" in json.loads(text)["message"]
    # An error reply to a request with credentials is plain JSON too.
    r = await client.get("/api/enterprises/nope", params={"callback": "steal"}, headers=admin)
    assert r.status == 400 and r.content_type == "application/json" and "steal" not in await r.text()
    r = await client.get(f"/api/handles/{h}", params={"callback": "cb"})  # anonymous: still JSONP
    assert r.status == 200 and r.content_type == "application/javascript"
    assert (await r.text()).startswith("/**/cb(")
    r = await client.get(f"/api/handles/{h}", params={"callback": "cb\n"})
    await refused(r, 400, 4)


# == §9: absolute TTLs the native protocol carries ================================================
@pytest.mark.parametrize(
    "ttl",
    ["9999-12-31T00:00:00Z", "2106-02-07T06:28:16Z", "2200-01-01", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"],
)
async def test_absolute_ttl_beyond_the_native_range_is_202(client, ent, ttl):
    h = f"{ent['prefix']}/ttl"
    body = await refused(
        await client.put(f"/api/handles/{h}", json={"values": [{**URL_VALUE, "ttl": ttl}]}, headers=ent["headers"]),
        400,
        202,
    )
    assert "ttl" in body["message"]
    assert await stored(client, h) is None
    item = json.dumps({"handle": h, "values": [{**URL_VALUE, "ttl": ttl}]})
    status, reply = await post_batch(client, ent["headers"], ndjson(item), "application/x-ndjson")
    assert status == 400 and reply["failures"][0]["responseCode"] == 202
    assert await stored(client, h) is None


async def test_latest_absolute_ttl_is_stored_and_resolves_natively(tmp_path, monkeypatch, config_overrides):
    """The last second the 4-byte absolute TTL holds goes through REST and the native protocol."""
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    port = free_port()
    store = config_overrides.get("store", f"sqlite:///{tmp_path}/idnode.db")
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "store": store, "native_port": port})
    async with TestClient(TestServer(node_app(config))) as client:
        h = f"{NODE_PREFIX}/ttl-native"
        value = {**URL_VALUE, "ttl": "2106-02-07T06:28:15Z"}
        r = await client.put(f"/api/handles/{h}", json={"values": [value]}, headers=basic(NODE_ADMIN, ADMIN_SECRET))
        assert r.status == 201, await r.text()
        r = await client.get(f"/api/handles/{h}", params={"index": "1"})
        assert (await r.json())["values"][0]["ttl"] == "2106-02-07T06:28:15Z"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(encode_message(make_request(ResolutionRequest(h, (1,), ()), request_id=7)))
            env = decode_envelope(await asyncio.wait_for(reader.readexactly(ENVELOPE_SIZE), 3))
            reply = decode_payload(env, await asyncio.wait_for(reader.readexactly(env.length), 3))
        finally:
            writer.close()
        assert reply.header.response_code == RC_SUCCESS, reply
        (got,) = reply.body.values
        assert got.ttl_absolute and got.ttl == 2**32 - 1


# == §9: a disabled enterprise writes no templates ================================================
TEMPLATE = {"id": "sku", "fields": [{"index": 2001, "name": "model", "type": "MODEL"}]}


async def test_disabled_enterprise_cannot_write_templates(client, admin, ent):
    r = await client.post("/api/templates", json={**TEMPLATE, "prefix": ent["prefix"]}, headers=ent["headers"])
    assert r.status == 201, await r.text()
    r = await client.patch(f"/api/enterprises/{ent['id']}", json={"status": "disabled"}, headers=admin)
    assert r.status == 200
    again = {**TEMPLATE, "id": "sku2", "prefix": ent["prefix"]}
    body = await refused(await client.post("/api/templates", json=again, headers=ent["headers"]), 403, 400)
    assert "disabled" in body["message"]
    version = {"fields": TEMPLATE["fields"] + [{"index": 2002, "name": "lot", "type": "LOT"}]}
    r = await client.put("/api/templates/sku", params={"prefix": ent["prefix"]}, json=version, headers=ent["headers"])
    await refused(r, 403, 400)
    r = await client.get("/api/templates/sku", params={"prefix": ent["prefix"]})
    assert (await r.json())["version"] == 1
    await refused(await client.get("/api/templates/sku2", params={"prefix": ent["prefix"]}), 404, 100)
    # The node administrator still may (as for handles under a disabled enterprise).
    r = await client.put("/api/templates/sku", params={"prefix": ent["prefix"]}, json=version, headers=admin)
    assert r.status == 201, await r.text()
