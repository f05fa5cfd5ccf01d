"""Conformance of the Handle REST API (``/api/handles``, ``/api/prefixes``) and the admin API.

The contract is ``handle-rest-api.md`` (HANDLE.NET 9's JSON API as pyhandle uses it). Every refused
write is checked twice: the reply (HTTP status, JSON with ``responseCode`` and ``message``, and
``handle`` where there is one) and the store (the stored row, version included, is unchanged).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from registry.model import HandleValue, Record, parse_handle
from registry.packing import pack_record
from resolver.http.keys import STATE_KEY
from tests.resolver.conftest import NODE_ADMIN, NODE_PREFIX, basic, make_uscc

NODE_HANDLE = f"0.NA/{NODE_PREFIX}"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_MISSING = object()


# -- helpers -------------------------------------------------------------------------------------


def url(handle: str) -> str:
    return f"/api/handles/{handle}"


def registry(client: TestClient) -> Any:
    return client.server.app[STATE_KEY].registry


async def stored(client: TestClient, handle: str) -> Any:
    """The row as the store holds it (packed record and version), or None."""
    return await registry(client).store.get(parse_handle(handle).key)


@asynccontextmanager
async def unchanged(client: TestClient, *handles: str) -> AsyncIterator[None]:
    """Assert that nothing the block does changes the stored rows of ``handles``."""
    before = [await stored(client, h) for h in handles]
    yield
    after = [await stored(client, h) for h in handles]
    assert after == before, "a refused request changed stored data"


async def expect_error(resp: Any, status: int, code: int, handle: Any = _MISSING) -> dict[str, Any]:
    """A refusal: the HTTP status, a JSON body with responseCode and message (and handle)."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    assert body["responseCode"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    if handle is not _MISSING:
        assert body.get("handle") == handle, body
    return body


async def ok(resp: Any, status: int = 200) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body = json.loads(text)
    assert body["responseCode"] == 1, body
    return body


def by_index(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {v["index"]: v for v in body["values"]}


def url_value(index: int = 1, target: str = "https://example.com/p/1", **extra: Any) -> dict[str, Any]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": target}, **extra}


async def create(client: TestClient, handle: str, headers: dict[str, str], values: list | None = None) -> None:
    body = {"values": values if values is not None else [url_value()]}
    r = await client.put(url(handle), json=body, headers=headers)
    assert r.status == 201, await r.text()


async def resolve(client: TestClient, handle: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    r = await client.get(url(handle), headers=headers, params=params or None)
    return r


@pytest.fixture
async def ent(onboard: Callable[..., Any]) -> dict[str, Any]:
    return await onboard()


@pytest.fixture
async def other(onboard: Callable[..., Any], ent: dict[str, Any]) -> dict[str, Any]:
    return await onboard()


# == resolution ===================================================================================


async def test_resolve_record_shape(client, ent):
    h = f"{ent['prefix']}/SKU-1"
    values = [url_value(1), {"index": 2, "type": "EMAIL", "data": "ops@example.com"}]
    await create(client, h, ent["headers"], values)
    body = await ok(await resolve(client, h))
    assert set(body) == {"responseCode", "handle", "values"}
    assert body["handle"] == h
    vals = by_index(body)
    assert set(vals) == {1, 2, 100}  # the default HS_ADMIN went to index 100
    assert vals[1] == {
        "index": 1,
        "type": "URL",
        "data": {"format": "string", "value": "https://example.com/p/1"},
        "ttl": 86400,
        "timestamp": vals[1]["timestamp"],
    }
    assert vals[2]["data"] == {"format": "string", "value": "ops@example.com"}
    assert vals[100]["type"] == "HS_ADMIN"
    assert vals[100]["data"]["format"] == "admin"
    assert vals[100]["data"]["value"]["handle"] == f"0.NA/{ent['prefix']}"
    assert vals[100]["data"]["value"]["index"] == 300


async def test_timestamps_are_iso_utc_and_recent(client, ent):
    h = f"{ent['prefix']}/ts"
    await create(client, h, ent["headers"])
    body = await ok(await resolve(client, h))
    now = dt.datetime.now(dt.UTC)
    for v in body["values"]:
        assert ISO_Z.match(v["timestamp"]), v
        when = dt.datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00"))
        assert abs((now - when).total_seconds()) < 120


async def test_not_found_and_not_responsible(client, ent):
    await expect_error(await resolve(client, f"{ent['prefix']}/nothing"), 404, 100, f"{ent['prefix']}/nothing")
    await expect_error(await resolve(client, "10.1000/xyz"), 400, 301, "10.1000/xyz")
    # A prefix that merely starts with the node prefix's digits is not derived from it.
    await expect_error(await resolve(client, "88.118.80/xyz"), 400, 301, "88.118.80/xyz")


@pytest.fixture
async def typed(client, admin, ent) -> str:
    """A handle with URL, EMAIL, two HS_SITE-family values and a look-alike type."""
    node = await ok(await resolve(client, NODE_HANDLE))
    site = next(v for v in node["values"] if v["type"] == "HS_SITE")["data"]
    h = f"{ent['prefix']}/typed"
    values = [
        url_value(1),
        {"index": 2, "type": "EMAIL", "data": "a@example.com"},
        {"index": 3, "type": "HS_SITE", "data": site},
        {"index": 4, "type": "HS_SITE.PREFIX", "data": site},
        {"index": 5, "type": "HS_SITES", "data": "not a site"},
        url_value(6, "https://example.com/mirror"),
    ]
    await create(client, h, ent["headers"], values)
    return h


async def test_type_filter(client, typed):
    body = await ok(await resolve(client, typed, type="URL"))
    assert body["handle"] == typed
    assert sorted(v["index"] for v in body["values"]) == [1, 6]
    r = await client.get(url(typed), params=[("type", "URL"), ("type", "EMAIL")])
    assert sorted(v["index"] for v in (await ok(r))["values"]) == [1, 2, 6]
    # Types compare case-insensitively, as in HANDLE.NET.
    assert sorted(v["index"] for v in (await ok(await resolve(client, typed, type="url")))["values"]) == [1, 6]


async def test_type_filter_subtypes(client, typed):
    body = await ok(await resolve(client, typed, type="HS_SITE."))
    assert sorted(v["index"] for v in body["values"]) == [3, 4]  # not HS_SITES
    exact = await ok(await resolve(client, typed, type="HS_SITE"))
    assert [v["index"] for v in exact["values"]] == [3]
    for v in body["values"]:
        assert v["data"]["format"] == "site"


async def test_index_filter_and_union_with_type(client, typed):
    r = await client.get(url(typed), params=[("index", "2"), ("index", "5")])
    assert sorted(v["index"] for v in (await ok(r))["values"]) == [2, 5]
    r = await client.get(url(typed), params=[("index", "2"), ("type", "URL")])
    assert sorted(v["index"] for v in (await ok(r))["values"]) == [1, 2, 6]


async def test_filters_matching_nothing_answer_200_with_empty_values(client, typed):
    for params in ({"type": "NOPE"}, {"index": "77"}, {"type": "HS_SITE.X."}):
        r = await resolve(client, typed, **params)
        assert r.status == 200
        body = await r.json()
        assert body == {"responseCode": 200, "handle": typed, "values": []}


async def test_bad_index_filter_is_a_json_400(client, typed):
    await expect_error(await resolve(client, typed, index="abc"), 400, 4, typed)


async def test_auth_flag_bypasses_the_cache(client, ent):
    """``auth`` (authoritative) reads the store; without it a cache tier may answer."""
    h = f"{ent['prefix']}/auth"
    await create(client, h, ent["headers"])

    class StaleCache:
        async def lookup(self, key: str, load: Any) -> bytes | None:
            stale = HandleValue(index=1, type="URL", data=b"https://stale.example", timestamp=1)
            return pack_record(Record(handle=h, values=(stale,), version=0))

    client.server.app[STATE_KEY].resolver.cache = StaleCache()
    cached = by_index(await ok(await resolve(client, h)))
    assert cached[1]["data"]["value"] == "https://stale.example"
    for query in ("auth", "auth=true", "auth=yes"):
        body = await ok(await client.get(f"{url(h)}?{query}"))
        assert body["handle"] == h and by_index(body)[1]["data"]["value"] == "https://example.com/p/1"
    assert by_index(await ok(await client.get(f"{url(h)}?auth=false")))[1]["data"]["value"] == "https://stale.example"


async def test_pretty(client, ent):
    h = f"{ent['prefix']}/pretty"
    await create(client, h, ent["headers"])
    compact = await (await client.get(url(h))).text()
    assert "\n" not in compact
    for query in ("pretty", "pretty=true"):
        r = await client.get(f"{url(h)}?{query}")
        text = await r.text()
        assert r.status == 200 and "\n  " in text
        assert json.loads(text) == json.loads(compact)
    assert "\n" not in await (await client.get(f"{url(h)}?pretty=false")).text()


async def test_jsonp_callback(client, ent):
    h = f"{ent['prefix']}/jsonp"
    await create(client, h, ent["headers"])
    plain = await (await client.get(url(h))).json()
    for name in ("cb", "jQuery_123$", "ns.handler"):
        r = await client.get(url(h), params={"callback": name})
        assert r.status == 200
        assert r.content_type == "application/javascript"
        text = await r.text()
        m = re.fullmatch(r"/\*\*/" + re.escape(name) + r"\((.*)\);", text, re.S)
        assert m, text
        assert json.loads(m.group(1)) == plain
    # An error reply is wrapped too, keeping its status.
    r = await client.get(url(f"{ent['prefix']}/missing"), params={"callback": "cb"})
    assert r.status == 404 and (await r.text()).startswith("/**/cb(")


@pytest.mark.parametrize(
    "name", ["alert(document.cookie)//", "<script>x</script>", "a b", "1abc", "x;y", "a..b", "", "a" * 100]
)
async def test_jsonp_rejects_malicious_callback(client, ent, name):
    h = f"{ent['prefix']}/jsonp"
    await create(client, h, ent["headers"])
    r = await client.get(url(h), params={"callback": name})
    await expect_error(r, 400, 4, h)  # plain JSON, not script
    if name:
        assert name not in await r.text()  # never reflected


async def test_non_public_values_hidden_from_anonymous(client, admin, ent, other):
    h = f"{ent['prefix']}/private"
    values = [url_value(1), {"index": 2, "type": "NOTE", "data": "internal", "permissions": "1100"}]
    await create(client, h, ent["headers"], values)
    anon = by_index(await ok(await resolve(client, h)))
    assert 2 not in anon and 1 in anon
    # The handle's admin and the node admin see it, with its permissions.
    for headers in (ent["headers"], admin):
        mine = by_index(await ok(await resolve(client, h, headers=headers)))
        assert mine[2]["permissions"] == "1100"
        assert mine[2]["data"] == {"format": "string", "value": "internal"}
    # Another enterprise's admin is authenticated but not an admin of this handle.
    assert 2 not in by_index(await ok(await resolve(client, h, headers=other["headers"])))
    # publicOnly hides it even from the admin.
    assert 2 not in by_index(await ok(await resolve(client, h, headers=ent["headers"], publicOnly="true")))
    r = await client.get(f"{url(h)}?publicOnly", headers=ent["headers"])
    assert 2 not in by_index(await ok(r))
    # Asking for it by index as anonymous gives no values, not the secret.
    r = await resolve(client, h, index="2")
    assert (await r.json()) == {"responseCode": 200, "handle": h, "values": []}


async def test_value_without_any_read_permission_is_shown_to_nobody(client, admin, ent):
    h = f"{ent['prefix']}/writeonly"
    values = [
        url_value(1),
        {"index": 2, "type": "NOTE", "data": "admins only", "permissions": "1000"},
        {"index": 3, "type": "NOTE", "data": "nobody reads", "permissions": "0100"},
        {"index": 4, "type": "NOTE", "data": "public, not admin-read", "permissions": "0010"},
    ]
    await create(client, h, ent["headers"], values)
    assert set(by_index(await ok(await resolve(client, h)))) == {1, 4, 100}
    for headers in (ent["headers"], admin):
        seen = by_index(await ok(await resolve(client, h, headers=headers)))
        assert set(seen) == {1, 2, 4, 100}
        assert seen[2]["permissions"] == "1000" and seen[4]["permissions"] == "0010"
    # It is still there: the admin can replace or delete it by index.
    r = await client.delete(url(h), params={"index": "3"}, headers=ent["headers"])
    await ok(r)
    await expect_error(await client.delete(url(h), params={"index": "3"}, headers=ent["headers"]), 400, 200, h)


async def test_secret_keys_hidden_and_never_in_clear(client, admin, ent, other):
    ph = f"0.NA/{ent['prefix']}"
    anon = await ok(await resolve(client, ph))
    assert "HS_SECKEY" not in {v["type"] for v in anon["values"]}
    assert {"HS_ADMIN", "HS_SITE"} <= {v["type"] for v in anon["values"]}
    assert "HS_SECKEY" not in {
        v["type"] for v in (await ok(await resolve(client, ph, headers=other["headers"])))["values"]
    }
    for headers in (ent["headers"], admin):
        r = await resolve(client, ph, headers=headers)
        text = await r.text()
        seckey = by_index(json.loads(text))[300]
        assert seckey["type"] == "HS_SECKEY" and seckey["permissions"] == "1100"
        assert ent["secret"] not in text  # stored hashed only


async def test_node_prefix_handle_hides_its_key(client, admin):
    anon = await ok(await resolve(client, NODE_HANDLE))
    assert "HS_SECKEY" not in {v["type"] for v in anon["values"]}
    mine = await ok(await resolve(client, NODE_HANDLE, headers=admin))
    assert "HS_SECKEY" in {v["type"] for v in mine["values"]}


async def test_handle_echoed_as_sent_and_prefix_case_insensitive(client, onboard):
    e = await onboard(prefix="88.118.8.Acme")
    await create(client, "88.118.8.Acme/Item-1", e["headers"])
    seen = []
    for sent in ("88.118.8.Acme/Item-1", "88.118.8.acme/Item-1", "88.118.8.ACME/Item-1"):
        body = await ok(await resolve(client, sent))
        assert body["handle"] == sent
        seen.append(body["values"])
    assert seen[0] == seen[1] == seen[2]
    for sent in ("0.na/88.118.8.acme", "0.NA/88.118.8.ACME"):
        assert (await ok(await resolve(client, sent)))["handle"] == sent
    # The enterprise writes under its prefix whatever the case it uses.
    r = await client.put(url("88.118.8.ACME/Item-2"), json=[url_value()], headers=e["headers"])
    assert (await ok(r, 201))["handle"] == "88.118.8.ACME/Item-2"
    assert (await ok(await resolve(client, "88.118.8.acme/Item-2")))["handle"] == "88.118.8.acme/Item-2"


async def test_suffix_case_sensitive(client, ent):
    p = ent["prefix"]
    await create(client, f"{p}/Sku-A", ent["headers"])
    await expect_error(await resolve(client, f"{p}/SKU-A"), 404, 100, f"{p}/SKU-A")
    await expect_error(await resolve(client, f"{p}/sku-a"), 404, 100, f"{p}/sku-a")
    await create(client, f"{p}/sku-a", ent["headers"], [url_value(1, "https://example.com/lower")])
    upper = by_index(await ok(await resolve(client, f"{p}/Sku-A")))
    lower = by_index(await ok(await resolve(client, f"{p}/sku-a")))
    assert upper[1]["data"]["value"] == "https://example.com/p/1"
    assert lower[1]["data"]["value"] == "https://example.com/lower"


async def test_percent_encoded_and_unicode_suffixes(client, ent):
    p = ent["prefix"]
    r = await client.put(url(f"{p}/产品-1"), json=[url_value()], headers=ent["headers"])
    assert (await ok(r, 201))["handle"] == f"{p}/产品-1"
    assert (await ok(await resolve(client, f"{p}/产品-1")))["handle"] == f"{p}/产品-1"
    r = await client.put(url(f"{p}/a%20b%2Fc"), json=[url_value()], headers=ent["headers"])
    assert (await ok(r, 201))["handle"] == f"{p}/a b/c"
    assert (await ok(await client.get(url(f"{p}/a%20b%2Fc"))))["handle"] == f"{p}/a b/c"


@pytest.mark.parametrize("bad", ["%FF", "%C3%28", "abc%E2%82", "%ED%A0%80"])
async def test_invalid_utf8_in_path_is_invalid_handle(client, ent, bad):
    path = url(f"{ent['prefix']}/{bad}")
    await expect_error(await client.get(path), 400, 102)
    async with unchanged(client, f"0.NA/{ent['prefix']}"):
        await expect_error(await client.put(path, json=[url_value()], headers=ent["headers"]), 400, 102)
        await expect_error(await client.delete(path, headers=ent["headers"]), 400, 102)


@pytest.mark.parametrize(
    "handle",
    ["noslash", "88.118.8.1001/", "/suffix", "88.118.8..1001/x", ".88.118.8/x", "88.118.8.1001/a%01b", "88 118/x"],
)
async def test_invalid_handle_syntax(client, ent, handle):
    path = url(handle)
    await expect_error(await client.get(path), 400, 102)
    await expect_error(await client.put(path, json=[url_value()], headers=ent["headers"]), 400, 102)
    await expect_error(await client.delete(path, headers=ent["headers"]), 400, 102)


async def test_handle_too_long(client, ent):
    h = f"{ent['prefix']}/{'x' * 300}"
    await expect_error(await resolve(client, h), 400, 102)
    await expect_error(await client.put(url(h), json=[url_value()], headers=ent["headers"]), 400, 102)


# == create / replace ============================================================================


async def test_create_201_then_replace_200(client, ent):
    h = f"{ent['prefix']}/cr"
    r = await client.put(
        url(h), json={"values": [url_value(1), url_value(2, "https://example.com/2")]}, headers=ent["headers"]
    )
    assert await ok(r, 201) == {"responseCode": 1, "handle": h}
    admin_value = by_index(await ok(await resolve(client, h)))[100]
    replacement = [url_value(3, "https://example.com/3"), {k: admin_value[k] for k in ("index", "type", "data")}]
    r = await client.put(url(h), json={"values": replacement}, headers=ent["headers"])
    assert await ok(r, 200) == {"responseCode": 1, "handle": h}
    vals = by_index(await ok(await resolve(client, h)))
    assert set(vals) == {3, 100}  # replaced as a whole
    assert vals[3]["data"]["value"] == "https://example.com/3"
    assert vals[100]["data"] == admin_value["data"]


async def test_replace_without_hs_admin_keeps_the_handle_manageable(client, ent):
    h = f"{ent['prefix']}/noadmin"
    await create(client, h, ent["headers"])
    await ok(await client.put(url(h), json=[url_value(1, "https://example.com/v2")], headers=ent["headers"]))
    assert "HS_ADMIN" in {v["type"] for v in (await ok(await resolve(client, h)))["values"]}
    await ok(await client.put(url(h), json=[url_value(1, "https://example.com/v3")], headers=ent["headers"]))


@pytest.mark.parametrize(
    "shape",
    [
        lambda h: {"values": [url_value()]},
        lambda h: [url_value()],
        lambda h: url_value(),
        lambda h: {"handle": h, "values": [url_value()]},
        lambda h: {"handle": None, "values": [url_value()]},
        lambda h: [{"type": "URL", "data": "https://example.com/p/1"}],  # index assigned
    ],
    ids=["object", "array", "single", "handle-field", "handle-null", "no-index"],
)
async def test_body_shapes(client, ent, shape):
    h = f"{ent['prefix']}/shape"
    r = await client.put(url(h), json=shape(h), headers=ent["headers"])
    assert await ok(r, 201) == {"responseCode": 1, "handle": h}
    vals = by_index(await ok(await resolve(client, h)))
    assert vals[1]["type"] == "URL" and vals[1]["data"]["value"] == "https://example.com/p/1"


async def test_handle_field_case_of_prefix_may_differ(client, onboard):
    e = await onboard(prefix="88.118.8.Beta")
    r = await client.put(
        url("88.118.8.Beta/x"), json={"handle": "88.118.8.BETA/x", "values": [url_value()]}, headers=e["headers"]
    )
    await ok(r, 201)


@pytest.mark.parametrize("given", ["{p}/other", "{p}/X", "10.1000/x", "not a handle", 42, ["x"]])
async def test_handle_field_must_match(client, ent, given):
    h = f"{ent['prefix']}/x"
    other = given.format(p=ent["prefix"]) if isinstance(given, str) else given
    async with unchanged(client, h, f"{ent['prefix']}/other"):
        r = await client.put(url(h), json={"handle": other, "values": [url_value()]}, headers=ent["headers"])
        await expect_error(r, 400, 4, h)
    await expect_error(await resolve(client, h), 404, 100)


async def test_values_without_index_take_the_lowest_free_ones(client, ent):
    h = f"{ent['prefix']}/auto"
    body = [{"type": "A", "data": "a"}, {"index": 1, "type": "B", "data": "b"}, {"type": "C", "data": "c"}]
    await ok(await client.put(url(h), json=body, headers=ent["headers"]), 201)
    vals = by_index(await ok(await resolve(client, h)))
    assert {i: v["type"] for i, v in vals.items() if i < 100} == {1: "B", 2: "A", 3: "C"}


async def test_overwrite_false(client, ent):
    h = f"{ent['prefix']}/ow"
    r = await client.put(url(h), params={"overwrite": "false"}, json=[url_value()], headers=ent["headers"])
    await ok(r, 201)
    async with unchanged(client, h):
        r = await client.put(
            url(h), params={"overwrite": "false"}, json=[url_value(1, "https://evil.example")], headers=ent["headers"]
        )
        await expect_error(r, 409, 101, h)
    r = await client.put(
        url(h), params={"overwrite": "true"}, json=[url_value(1, "https://new.example")], headers=ent["headers"]
    )
    await ok(r, 200)
    assert by_index(await ok(await resolve(client, h)))[1]["data"]["value"] == "https://new.example"


async def test_put_with_indexes_adds_and_replaces_only_those(client, ent):
    h = f"{ent['prefix']}/idx"
    await create(client, h, ent["headers"], [url_value(1), url_value(2, "https://example.com/2")])
    body = {"values": [url_value(2, "https://example.com/2b"), {"index": 3, "type": "EMAIL", "data": "x@example.com"}]}
    r = await client.put(url(h), params=[("index", "2"), ("index", "3")], json=body, headers=ent["headers"])
    assert await ok(r, 201) == {"responseCode": 1, "handle": h}  # 201: a value was created
    vals = by_index(await ok(await resolve(client, h)))
    assert set(vals) == {1, 2, 3, 100}
    assert vals[1]["data"]["value"] == "https://example.com/p/1"
    assert vals[2]["data"]["value"] == "https://example.com/2b"
    assert vals[3]["data"]["value"] == "x@example.com"


async def test_put_with_index_ignores_body_values_not_named(client, ent):
    h = f"{ent['prefix']}/idx2"
    await create(client, h, ent["headers"], [url_value(1)])
    body = [url_value(1, "https://example.com/changed"), url_value(4, "https://example.com/4")]
    await ok(await client.put(url(h), params={"index": "4"}, json=body, headers=ent["headers"]), 201)
    vals = by_index(await ok(await resolve(client, h)))
    assert vals[1]["data"]["value"] == "https://example.com/p/1"
    assert vals[4]["data"]["value"] == "https://example.com/4"


async def test_adding_a_value_by_index_answers_201_changing_one_200(client, ent):
    h = f"{ent['prefix']}/idx201"
    await create(client, h, ent["headers"], [url_value(1)])
    r = await client.put(
        url(h), params={"index": "5", "overwrite": "false"}, json=[url_value(5)], headers=ent["headers"]
    )
    await ok(r, 201)
    r = await client.put(
        url(h), params={"index": "5"}, json=[url_value(5, "https://example.com/5b")], headers=ent["headers"]
    )
    await ok(r, 200)
    r = await client.put(
        url(h), params={"index": "various"}, json=[url_value(1, "https://example.com/1b")], headers=ent["headers"]
    )
    await ok(r, 200)


async def test_index_various(client, ent):
    h = f"{ent['prefix']}/various"
    await create(client, h, ent["headers"], [url_value(1), url_value(2, "https://example.com/2")])
    body = [url_value(2, "https://example.com/2b"), url_value(7, "https://example.com/7")]
    await ok(await client.put(url(h), params={"index": "various"}, json=body, headers=ent["headers"]), 201)
    vals = by_index(await ok(await resolve(client, h)))
    assert set(vals) == {1, 2, 7, 100}
    assert vals[2]["data"]["value"] == "https://example.com/2b"


async def test_overwrite_false_with_existing_index(client, ent):
    h = f"{ent['prefix']}/owidx"
    await create(client, h, ent["headers"], [url_value(1), url_value(2, "https://example.com/2")])
    async with unchanged(client, h):
        for idx in (["2"], ["3", "2"], ["various"]):
            r = await client.put(
                url(h),
                params=[("overwrite", "false"), *(("index", i) for i in idx)],
                json=[url_value(2, "https://evil.example"), url_value(3, "https://example.com/3")],
                headers=ent["headers"],
            )
            await expect_error(r, 409, 201, h)
    r = await client.put(
        url(h),
        params={"overwrite": "false", "index": "3"},
        json=[url_value(3, "https://example.com/3")],
        headers=ent["headers"],
    )
    await ok(r, 201)
    assert set(by_index(await ok(await resolve(client, h)))) == {1, 2, 3, 100}


async def test_put_index_refusals(client, ent):
    h = f"{ent['prefix']}/idxbad"
    await create(client, h, ent["headers"], [url_value(1)])
    async with unchanged(client, h):
        # index named but absent from the body
        await expect_error(
            await client.put(url(h), params={"index": "9"}, json=[url_value(1)], headers=ent["headers"]), 400, 202, h
        )
        for bad in ("0", "-1", "abc", "4294967296"):
            r = await client.put(url(h), params={"index": bad}, json=[url_value(1)], headers=ent["headers"])
            await expect_error(r, 400, 4, h)
    # index=N on a handle that does not exist
    missing = f"{ent['prefix']}/nohandle"
    r = await client.put(url(missing), params={"index": "1"}, json=[url_value(1)], headers=ent["headers"])
    await expect_error(r, 404, 100, missing)
    await expect_error(await resolve(client, missing), 404, 100)


async def test_mint_new_suffix(client, ent):
    base = f"{ent['prefix']}/batch-"
    made = set()
    for _ in range(2):
        r = await client.put(url(base), params={"mintNewSuffix": "true"}, json=[url_value()], headers=ent["headers"])
        body = await ok(r, 201)
        assert body["handle"].startswith(base) and len(body["handle"]) > len(base)
        made.add(body["handle"])
        assert (await ok(await resolve(client, body["handle"])))["handle"] == body["handle"]
    assert len(made) == 2
    await expect_error(await resolve(client, base), 404, 100)


async def test_mint_new_suffix_with_empty_suffix(client, ent):
    base = f"{ent['prefix']}/"
    r = await client.put(url(base), params={"mintNewSuffix": "true"}, json=[url_value()], headers=ent["headers"])
    body = await ok(r, 201)
    assert body["handle"].startswith(base) and len(body["handle"]) > len(base)
    assert (await ok(await resolve(client, body["handle"])))["handle"] == body["handle"]
    # Without mintNewSuffix an empty suffix stays invalid.
    await expect_error(await client.put(url(base), json=[url_value()], headers=ent["headers"]), 400, 102)


async def test_mint_new_suffix_needs_credentials(client, ent):
    base = f"{ent['prefix']}/batch-"
    r = await client.put(url(base), params={"mintNewSuffix": "true"}, json=[url_value()])
    await expect_error(r, 401, 402)
    total, _ = await registry(client).store.list_handles(ent["prefix"].upper(), 0, 10)
    assert total == 0


async def test_concurrent_creates_one_wins(client, ent):
    h = f"{ent['prefix']}/race"

    async def attempt(i: int) -> tuple[int, int]:
        r = await client.put(
            url(h),
            params={"overwrite": "false"},
            json=[url_value(1, f"https://example.com/{i}")],
            headers=ent["headers"],
        )
        return r.status, (await r.json())["responseCode"]

    results = await asyncio.gather(*(attempt(i) for i in range(6)))
    assert sorted(results) == [(201, 1)] + [(409, 101)] * 5


async def test_concurrent_value_adds_all_land(client, ent):
    h = f"{ent['prefix']}/adds"
    await create(client, h, ent["headers"], [url_value(1)])
    rs = await asyncio.gather(
        *(
            client.put(
                url(h),
                params={"index": str(i)},
                json=[url_value(i, f"https://example.com/{i}")],
                headers=ent["headers"],
            )
            for i in range(2, 10)
        )
    )
    assert [r.status for r in rs] == [201] * 8
    assert set(by_index(await ok(await resolve(client, h)))) == {1, *range(2, 10), 100}


async def test_secret_key_rotation(client, ent):
    """The enterprise replaces its HS_SECKEY: the new secret works at once, the old one no longer."""
    ph = f"0.NA/{ent['prefix']}"
    await create(client, f"{ent['prefix']}/before-rotation", ent["headers"])  # the old secret is now cached
    key = {"index": 300, "type": "HS_SECKEY", "data": "a-new-secret-of-enough-length", "permissions": "1100"}
    await ok(await client.put(url(ph), params={"index": "300"}, json=[key], headers=ent["headers"]))
    seckey = by_index(await ok(await resolve(client, ph, headers=basic(ent["admin"], key["data"]))))[300]
    assert seckey["data"]["value"].startswith("scrypt$") and key["data"] not in json.dumps(seckey)
    h = f"{ent['prefix']}/after-rotation"
    await expect_error(await client.put(url(h), json=[url_value()], headers=ent["headers"]), 401, 402, h)
    await create(client, h, basic(ent["admin"], key["data"]))


# == delete ======================================================================================


async def test_delete_handle(client, ent):
    h = f"{ent['prefix']}/del"
    await create(client, h, ent["headers"])
    r = await client.delete(url(h), headers=ent["headers"])
    assert await ok(r) == {"responseCode": 1, "handle": h}
    await expect_error(await resolve(client, h), 404, 100, h)
    await expect_error(await client.delete(url(h), headers=ent["headers"]), 404, 100, h)
    # The name can be registered again.
    await create(client, h, ent["headers"])


async def test_delete_values_by_index(client, ent):
    h = f"{ent['prefix']}/delidx"
    await create(client, h, ent["headers"], [url_value(i, f"https://example.com/{i}") for i in (1, 2, 3, 4)])
    await ok(await client.delete(url(h), params={"index": "2"}, headers=ent["headers"]))
    assert set(by_index(await ok(await resolve(client, h)))) == {1, 3, 4, 100}
    r = await client.delete(url(h), params=[("index", "3"), ("index", "4")], headers=ent["headers"])
    assert await ok(r) == {"responseCode": 1, "handle": h}
    assert set(by_index(await ok(await resolve(client, h)))) == {1, 100}


async def test_delete_missing_index_is_values_not_found(client, ent):
    h = f"{ent['prefix']}/delmiss"
    await create(client, h, ent["headers"], [url_value(1), url_value(2)])
    async with unchanged(client, h):
        await expect_error(await client.delete(url(h), params={"index": "9"}, headers=ent["headers"]), 400, 200, h)
        r = await client.delete(url(h), params=[("index", "1"), ("index", "9")], headers=ent["headers"])
        await expect_error(r, 400, 200, h)


async def test_delete_index_various_does_not_delete_the_handle(client, ent):
    h = f"{ent['prefix']}/delvar"
    await create(client, h, ent["headers"], [url_value(1), url_value(2)])
    async with unchanged(client, h):
        r = await client.delete(url(h), params={"index": "various"}, headers=ent["headers"])
        await expect_error(r, 400, 4, h)
        for bad in ("0", "x"):
            await expect_error(await client.delete(url(h), params={"index": bad}, headers=ent["headers"]), 400, 4, h)


async def test_node_prefix_handle_cannot_be_deleted(client, admin):
    async with unchanged(client, NODE_HANDLE):
        await expect_error(await client.delete(url(NODE_HANDLE), headers=admin), 403, 400, NODE_HANDLE)


# == listing =====================================================================================


async def test_list_handles_paging(client, ent, admin):
    p = ent["prefix"]
    names = {f"{p}/L{i}" for i in range(5)}
    for h in sorted(names):
        await create(client, h, ent["headers"])
    for headers in (ent["headers"], admin):
        body = await ok(await client.get("/api/handles", params={"prefix": p}, headers=headers))
        assert body["prefix"] == p
        assert body["totalCount"] == "5"  # a JSON string, as HANDLE.NET sends it
        assert set(body["handles"]) == names
    pages = []
    for page in range(4):
        r = await client.get("/api/handles", params={"prefix": p, "page": page, "pageSize": 2}, headers=ent["headers"])
        body = await ok(r)
        assert body["page"] == page and body["pageSize"] == 2 and body["totalCount"] == "5"
        pages.append(body["handles"])
    assert [len(x) for x in pages] == [2, 2, 1, 0]
    assert {h for x in pages for h in x} == names
    r = await client.get("/api/handles", params={"prefix": f"0.NA/{p}"}, headers=ent["headers"])
    assert set((await ok(r))["handles"]) == names


async def test_list_page_size_zero_counts_only(client, ent):
    p = ent["prefix"]
    for i in range(3):
        await create(client, f"{p}/C{i}", ent["headers"])
    r = await client.get("/api/handles", params={"prefix": p, "pageSize": 0}, headers=ent["headers"])
    body = await ok(r)
    assert body["totalCount"] == "3" and isinstance(body["totalCount"], str)
    assert body.get("handles", []) == []
    await ok(await client.delete(url(f"{p}/C0"), headers=ent["headers"]))
    r = await client.get("/api/handles", params={"prefix": p, "pageSize": 0}, headers=ent["headers"])
    assert (await ok(r))["totalCount"] == "2"


async def test_list_refusals(client, ent, other):
    p = ent["prefix"]
    await create(client, f"{p}/x", ent["headers"])
    await expect_error(await client.get("/api/handles", params={"prefix": p}), 401, 402)
    await expect_error(await client.get("/api/handles", params={"prefix": p}, headers=other["headers"]), 403, 400)
    await expect_error(await client.get("/api/handles", headers=ent["headers"]), 400, 4)
    for params in ({"page": "-1"}, {"pageSize": "x"}, {"pageSize": "10001"}, {"page": "1.5"}):
        await expect_error(
            await client.get("/api/handles", params={"prefix": p, **params}, headers=ent["headers"]), 400, 4
        )
    await expect_error(await client.get("/api/handles", params={"prefix": "10.1000"}, headers=ent["headers"]), 400, 301)


async def test_list_prefixes(client, onboard):
    a = await onboard()
    b = await onboard(prefix="88.118.8.Gamma")
    body = await ok(await client.get("/api/prefixes"))
    assert body["prefixes"][0] == NODE_HANDLE
    assert set(body["prefixes"]) == {NODE_HANDLE, f"0.NA/{a['prefix']}", f"0.NA/{b['prefix']}"}
    assert body["totalCount"] == "3"
    for p in body["prefixes"]:
        await ok(await resolve(client, p))


# == value data formats ==========================================================================


async def roundtrip(
    client: TestClient, ent: dict[str, Any], value: dict[str, Any], name: str = "fmt"
) -> dict[str, Any]:
    """PUT one value at index 1 and return it as resolved by the handle's admin."""
    h = f"{ent['prefix']}/{name}"
    r = await client.put(url(h), json={"values": [{"index": 1, **value}]}, headers=ent["headers"])
    assert r.status in (200, 201), await r.text()
    return by_index(await ok(await resolve(client, h, headers=ent["headers"])))[1]


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        ("URL", "https://example.com/x", {"format": "string", "value": "https://example.com/x"}),
        ("URL", {"format": "string", "value": "https://e.x/ü"}, {"format": "string", "value": "https://e.x/ü"}),
        ("DESC", {"value": "no format given"}, {"format": "string", "value": "no format given"}),
        ("DESC", {"format": "base64", "value": "aGVsbG8="}, {"format": "string", "value": "hello"}),
        ("BLOB", {"format": "base64", "value": "AP8Q"}, {"format": "base64", "value": "AP8Q"}),
        ("DESC", {"format": "hex", "value": "48656C6c6f"}, {"format": "string", "value": "Hello"}),
        ("BLOB", {"format": "hex", "value": "00ff10"}, {"format": "base64", "value": "AP8Q"}),
        ("EMPTY", "", {"format": "string", "value": ""}),
    ],
)
async def test_string_base64_hex(client, ent, type_, data, expected):
    v = await roundtrip(client, ent, {"type": type_, "data": data})
    assert v["type"] == type_ and v["data"] == expected


@pytest.mark.parametrize("index", ["200", 200, " 200 "])
async def test_admin_format(client, ent, index):
    p = ent["prefix"]
    data = {"format": "admin", "value": {"handle": f"0.NA/{p}", "index": index, "permissions": "011111110011"}}
    v = await roundtrip(client, ent, {"type": "HS_ADMIN", "data": data})
    assert v["data"] == {
        "format": "admin",
        "value": {"handle": f"0.NA/{p}", "index": 200, "permissions": "011111110011"},
    }


async def test_vlist_format(client, ent):
    refs = [{"handle": f"0.NA/{ent['prefix']}", "index": 300}, {"handle": f"{ent['prefix']}/g", "index": 1}]
    v = await roundtrip(client, ent, {"type": "HS_VLIST", "data": {"format": "vlist", "value": refs}})
    assert v["data"] == {"format": "vlist", "value": refs}


async def test_site_format_round_trips(client, ent):
    node = await ok(await resolve(client, NODE_HANDLE))
    site = next(v for v in node["values"] if v["type"] == "HS_SITE")["data"]
    assert site["format"] == "site"
    for t in ("HS_SITE", "HS_SITE.PREFIX"):
        v = await roundtrip(client, ent, {"type": t, "data": site}, name=f"site-{t}")
        assert v["data"] == site
    custom = {
        "format": "site",
        "value": {
            "version": 1,
            "protocolVersion": "2.10",
            "serialNumber": 3,
            "primarySite": False,
            "multiPrimary": False,
            "attributes": [{"name": "desc", "value": "mirror"}],
            "servers": [
                {
                    "serverId": 7,
                    "address": "2001:db8::1",
                    "publicKey": {"format": "base64", "value": ""},
                    "interfaces": [{"query": True, "admin": False, "protocol": "TCP", "port": 2641}],
                }
            ],
        },
    }
    v = await roundtrip(client, ent, {"type": "HS_SITE", "data": custom}, name="site-custom")
    assert v["data"] == custom


def _b64url(n: int) -> str:
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_key_format_jwk(client, ent):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pn = rsa_key.public_numbers()
    jwk = {"kty": "RSA", "n": _b64url(pn.n), "e": _b64url(pn.e)}
    v = await roundtrip(client, ent, {"type": "HS_PUBKEY", "data": {"format": "key", "value": jwk}}, name="rsa")
    assert v["data"] == {"format": "key", "value": jwk}
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    x = base64.urlsafe_b64encode(ed.public_bytes(Encoding.Raw, PublicFormat.Raw)).rstrip(b"=").decode()
    okp = {"kty": "OKP", "crv": "Ed25519", "x": x}
    v = await roundtrip(client, ent, {"type": "HS_PUBKEY", "data": {"format": "key", "value": okp}}, name="ed")
    assert v["data"] == {"format": "key", "value": okp}


async def test_output_format_follows_the_type(client, ent):
    """Typed data under an untyped type is shown as bytes; typed types decode their data."""
    admin_data = {"format": "admin", "value": {"handle": "0.NA/x", "index": 1, "permissions": "1"}}
    v = await roundtrip(client, ent, {"type": "NOT_ADMIN", "data": admin_data}, name="t1")
    assert v["data"]["format"] == "base64"
    raw = base64.b64decode(v["data"]["value"])
    # The same bytes sent as base64 under HS_ADMIN come back in the admin format.
    w = await roundtrip(
        client,
        ent,
        {"type": "HS_ADMIN", "data": {"format": "base64", "value": base64.b64encode(raw).decode()}},
        name="t2",
    )
    assert w["data"] == {"format": "admin", "value": {"handle": "0.NA/x", "index": 1, "permissions": "000000000001"}}


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (3600, 3600),
        ("7200", 7200),
        (0, 0),
        ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
        ("2030-01-01T08:00:00+08:00", "2030-01-01T00:00:00Z"),
        (None, 86400),
    ],
)
async def test_ttl(client, ent, ttl, expected):
    value: dict[str, Any] = {"type": "URL", "data": "https://example.com"}
    if ttl is not None:
        value["ttl"] = ttl
    v = await roundtrip(client, ent, value)
    assert v["ttl"] == expected


@pytest.mark.parametrize(
    ("perms", "shown"), [(None, None), ("1110", None), ("1111", "1111"), ("1100", "1100"), ("1010", "1010")]
)
async def test_permissions_output_only_when_not_default(client, ent, perms, shown):
    value: dict[str, Any] = {"type": "URL", "data": "https://example.com"}
    if perms is not None:
        value["permissions"] = perms
    v = await roundtrip(client, ent, value)
    assert v.get("permissions") == shown
    assert ("permissions" in v) == (shown is not None)


async def test_references(client, ent):
    refs = [{"handle": f"{ent['prefix']}/other", "index": 1}, {"handle": "10.1000/x", "index": 7}]
    v = await roundtrip(client, ent, {"type": "URL", "data": "https://example.com", "references": refs}, name="r1")
    assert v["references"] == refs
    w = await roundtrip(client, ent, {"type": "URL", "data": "https://example.com", "references": []}, name="r2")
    assert "references" not in w


# == bad input ===================================================================================


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{", 4),
        (b"", 4),
        (b"   ", 4),
        (b"\xff\xfe{}", 4),
        (b"[" * 100_000, 4),
        (b'"just a string"', 202),
        (b"42", 202),
        (b"null", 202),
        (b'{"values": "x"}', 202),
        (b'{"values": [1]}', 202),
    ],
)
async def test_malformed_bodies(client, ent, payload, code):
    h = f"{ent['prefix']}/bad"
    await create(client, h, ent["headers"])
    async with unchanged(client, h):
        r = await client.put(url(h), data=payload, headers={**ent["headers"], "Content-Type": "application/json"})
        await expect_error(r, 400, code, h)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
async def test_content_type_required(client, ent, ctype):
    h = f"{ent['prefix']}/ct"
    await create(client, h, ent["headers"])
    headers = dict(ent["headers"])
    if ctype:
        headers["Content-Type"] = ctype
    async with unchanged(client, h):
        r = await client.put(url(h), data=json.dumps([url_value(1, "https://evil")]).encode(), headers=headers)
        await expect_error(r, 400, 4, h)


async def test_content_type_with_charset_accepted(client, ent):
    h = f"{ent['prefix']}/ctcs"
    r = await client.put(
        url(h),
        data=json.dumps([url_value()]).encode(),
        headers={**ent["headers"], "Content-Type": "application/json; charset=utf-8"},
    )
    await ok(r, 201)


async def test_oversize_body(client, ent):
    h = f"{ent['prefix']}/big"
    await create(client, h, ent["headers"])
    big = json.dumps([url_value(1, "https://example.com/" + "x" * 2_000_000)]).encode()
    async with unchanged(client, h):
        r = await client.put(url(h), data=big, headers={**ent["headers"], "Content-Type": "application/json"})
        assert r.status in (400, 413)
        assert r.content_type == "application/json"
        body = await r.json()
        assert body["responseCode"] == 4 and body["message"]
        assert body.get("handle") == h
    r = await client.post(
        "/api/promoters", data=b"{" + b" " * 1_100_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert r.status in (400, 413) and (await r.json())["responseCode"] == 4


async def test_value_data_too_large(client, ent):
    h = f"{ent['prefix']}/bigvalue"
    await create(client, h, ent["headers"])
    async with unchanged(client, h):
        r = await client.put(url(h), json=[url_value(1, "x" * 70_000)], headers=ent["headers"])
        await expect_error(r, 400, 202, h)


@pytest.mark.parametrize(
    "values",
    [
        [url_value(0)],
        [url_value(-3)],
        [url_value(4294967296)],
        [url_value(1), url_value(1, "https://dup")],
        [url_value(2), {"index": "2", "type": "X", "data": "dup"}],
        [{"index": 1.5, "type": "URL", "data": "x"}],
        [{"index": True, "type": "URL", "data": "x"}],
        [{"index": 1, "type": "", "data": "x"}],
        [{"index": 1, "type": "A\nB", "data": "x"}],
        [{"index": 1, "type": "URL"}],
        [{"index": 1, "data": "x"}],
        [{"index": 1, "type": "URL", "data": {"format": "xml", "value": "<x/>"}}],
        [{"index": 1, "type": "URL", "data": {"format": "string"}}],
        [{"index": 1, "type": "URL", "data": {"format": "string", "value": 5}}],
        [{"index": 1, "type": "URL", "data": 12}],
        [{"index": 1, "type": "URL", "data": {"format": "base64", "value": "***"}}],
        [{"index": 1, "type": "URL", "data": {"format": "hex", "value": "abc"}}],
        [{"index": 1, "type": "HS_ADMIN", "data": "not admin data"}],
        [{"index": 1, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"handle": "0.NA/x", "index": "x"}}}],
        [{"index": 1, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"handle": "", "index": 1}}}],
        [
            {
                "index": 1,
                "type": "A",
                "data": {"format": "admin", "value": {"handle": "h", "index": 1, "permissions": "2"}},
            }
        ],
        [{"index": 1, "type": "HS_VLIST", "data": {"format": "vlist", "value": {"handle": "x"}}}],
        [{"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": {"servers": [{"address": "nope"}]}}}],
        [{"index": 1, "type": "HS_PUBKEY", "data": {"format": "key", "value": {"kty": "EC"}}}],
        [{"index": 1, "type": "HS_PUBKEY", "data": {"format": "key", "value": {"kty": "RSA", "n": "", "e": "AQAB"}}}],
        [{"index": 1, "type": "URL", "data": "x", "ttl": -1}],
        [{"index": 1, "type": "URL", "data": "x", "ttl": "tomorrow"}],
        [{"index": 1, "type": "URL", "data": "x", "permissions": "11"}],
        [{"index": 1, "type": "URL", "data": "x", "permissions": "1a10"}],
        [{"index": 1, "type": "URL", "data": "x", "references": [{"index": 1}]}],
        [{"index": 1, "type": "URL", "data": "x", "references": "h"}],
        [{"index": 1, "type": "HS_SECKEY", "data": ""}],
    ],
)
async def test_invalid_values_are_202(client, ent, values):
    h = f"{ent['prefix']}/inv"
    await create(client, h, ent["headers"])
    async with unchanged(client, h):
        r = await client.put(url(h), json={"values": values}, headers=ent["headers"])
        await expect_error(r, 400, 202, h)
        r = await client.put(url(h), params={"index": "various"}, json={"values": values}, headers=ent["headers"])
        await expect_error(r, 400, 202, h)


async def test_invalid_values_do_not_create(client, ent):
    h = f"{ent['prefix']}/inv-new"
    r = await client.put(url(h), json=[url_value(0)], headers=ent["headers"])
    await expect_error(r, 400, 202, h)
    await expect_error(await resolve(client, h), 404, 100)


async def test_default_admin_index_taken(client, ent):
    h = f"{ent['prefix']}/taken"
    r = await client.put(url(h), json=[url_value(100)], headers=ent["headers"])
    await expect_error(r, 400, 202, h)
    await expect_error(await resolve(client, h), 404, 100)


async def test_unknown_routes_and_methods_answer_json(client, ent):
    r = await client.post(url(f"{ent['prefix']}/x"), json=[url_value()], headers=ent["headers"])
    assert r.status == 405 and (await r.json())["responseCode"] == 4
    r = await client.get("/api/nothing-here")
    assert r.status == 404 and (await r.json())["responseCode"] == 4


# == authentication and authorisation ============================================================


async def test_missing_credentials_401(client, ent):
    h = f"{ent['prefix']}/auth"
    await create(client, h, ent["headers"])
    async with unchanged(client, h):
        r = await client.put(url(h), json=[url_value(1, "https://evil")])
        await expect_error(r, 401, 402, h)
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic")
        r = await client.delete(url(h))
        await expect_error(r, 401, 402, h)
        r = await client.delete(url(h), params={"index": "1"})
        await expect_error(r, 401, 402, h)
    new = f"{ent['prefix']}/anon-new"
    await expect_error(await client.put(url(new), json=[url_value()]), 401, 402, new)
    await expect_error(await resolve(client, new), 404, 100)


def _raw_basic(text: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


async def test_wrong_credentials_401(client, ent, admin):
    """Wrong, unknown or malformed credentials: 401 with responseCode 402 and both challenges, as
    HANDLE.NET's authentication filter answers (pyhandle raises HandleAuthenticationError on 401)."""
    h = f"{ent['prefix']}/cred"
    await create(client, h, ent["headers"])
    p = ent["prefix"]
    cases = [
        basic(ent["admin"], "wrong-secret"),
        basic(ent["admin"], ""),
        basic(f"301:0.NA/{p}", ent["secret"]),  # no key at that index
        basic(f"100:0.NA/{p}", ent["secret"]),  # not a key value
        basic(f"300:0.NA/{p}.9", ent["secret"]),  # no such identity handle
        basic(f"0.NA/{p}", ent["secret"]),  # no index
        basic(NODE_ADMIN, ent["secret"]),  # someone else's identity
        _raw_basic("no-colon-at-all"),
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer abc"},
    ]
    async with unchanged(client, h):
        for headers in cases:
            r = await client.put(url(h), json=[url_value(1, "https://evil")], headers=headers)
            body = await expect_error(r, 401, 402, h)
            assert ent["secret"] not in json.dumps(body)
            challenges = r.headers.getall("WWW-Authenticate")
            assert [c.split(" ", 1)[0] for c in challenges] == ["Basic", "Handle"], challenges
            await expect_error(await client.delete(url(h), headers=headers), 401, 402, h)


async def test_identity_sent_raw_or_percent_encoded(client, ent):
    """pyhandle percent-encodes the identity (``300%3A0.NA/…``); plain ``300:0.NA/…`` also works."""
    p = ent["prefix"]
    for i, headers in enumerate(
        [
            _raw_basic(f"300%3A0.NA%2F{p}:{ent['secret']}"),
            _raw_basic(f"300%3A0.NA/{p}:{ent['secret']}"),
            _raw_basic(f"300:0.NA/{p}:{ent['secret']}"),
        ]
    ):
        await ok(await client.put(url(f"{p}/enc{i}"), json=[url_value()], headers=headers), 201)


async def test_writing_under_someone_elses_prefix(client, ent, other):
    mine = f"{ent['prefix']}/mine"
    await create(client, mine, ent["headers"])
    theirs = f"{other['prefix']}/theirs"
    async with unchanged(client, mine, theirs, f"0.NA/{ent['prefix']}"):
        await expect_error(await client.put(url(theirs), json=[url_value()], headers=ent["headers"]), 403, 400, theirs)
        await expect_error(await client.put(url(mine), json=[url_value()], headers=other["headers"]), 403, 400, mine)
        r = await client.put(url(mine), params={"index": "5"}, json=[url_value(5)], headers=other["headers"])
        await expect_error(r, 403, 400, mine)
        await expect_error(await client.delete(url(mine), headers=other["headers"]), 403, 400, mine)
        r = await client.delete(url(mine), params={"index": "1"}, headers=other["headers"])
        await expect_error(r, 403, 400, mine)
        ph = f"0.NA/{ent['prefix']}"
        r = await client.put(url(ph), params={"index": "5"}, json=[url_value(5)], headers=other["headers"])
        await expect_error(r, 403, 400, ph)
    await expect_error(await resolve(client, theirs), 404, 100)


async def test_enterprise_cannot_write_node_or_new_prefixes(client, ent):
    for h in (f"{NODE_PREFIX}/x", f"0.NA/{ent['prefix']}.7", f"0.NA/{NODE_PREFIX}.4242", f"{ent['prefix']}.7/x"):
        async with unchanged(client, h, NODE_HANDLE):
            r = await client.put(url(h), json=[url_value()], headers=ent["headers"])
            await expect_error(r, 403, 400, h)
    async with unchanged(client, NODE_HANDLE):
        r = await client.put(url(NODE_HANDLE), params={"index": "9"}, json=[url_value(9)], headers=ent["headers"])
        await expect_error(r, 403, 400, NODE_HANDLE)
        await expect_error(await client.delete(url(NODE_HANDLE), headers=ent["headers"]), 403, 400, NODE_HANDLE)


async def test_unallocated_and_foreign_prefixes_refused(client, admin):
    for h in (f"{NODE_PREFIX}.9999/x", "10.1000/x", "0.NA/10.1000"):
        async with unchanged(client, h):
            await expect_error(await client.put(url(h), json=[url_value()], headers=admin), 400, 301, h)
    await expect_error(await resolve(client, f"{NODE_PREFIX}.9999/x"), 404, 100)
    await expect_error(await resolve(client, "0.NA/10.1000"), 400, 301, "0.NA/10.1000")


async def test_node_admin_writes_anywhere_on_the_node(client, admin, ent):
    h = f"{ent['prefix']}/by-node"
    await ok(await client.put(url(h), json=[url_value()], headers=admin), 201)
    await ok(await client.put(url(f"{NODE_PREFIX}/node-own"), json=[url_value()], headers=admin), 201)
    # The default HS_ADMIN names the writer, so the enterprise cannot change this handle.
    vals = by_index(await ok(await resolve(client, h)))
    assert vals[100]["data"]["value"] == {"handle": NODE_HANDLE, "index": 300, "permissions": "111111110011"}
    async with unchanged(client, h):
        r = await client.put(url(h), json=[url_value(1, "https://x")], headers=ent["headers"])
        await expect_error(r, 403, 400, h)
    # The node admin may still write under a disabled enterprise, and delete there.
    await ok(await client.patch(f"/api/enterprises/{ent['id']}", json={"status": "disabled"}, headers=admin))
    await ok(await client.put(url(h), params={"index": "2"}, json=[url_value(2)], headers=admin), 201)
    await ok(await client.delete(url(h), headers=admin))
    await expect_error(await resolve(client, h), 404, 100)


async def test_enterprise_manages_its_own_handles_through_hs_admin(client, ent):
    """A handle whose HS_ADMIN names nobody the enterprise controls is out of its reach."""
    h = f"{ent['prefix']}/locked"
    locked = {
        "index": 100,
        "type": "HS_ADMIN",
        "data": {"format": "admin", "value": {"handle": "0.NA/elsewhere", "index": 300, "permissions": "111111111111"}},
    }
    await create(client, h, ent["headers"], [url_value(), locked])
    async with unchanged(client, h):
        r = await client.put(url(h), params={"index": "1"}, json=[url_value(1, "https://new")], headers=ent["headers"])
        await expect_error(r, 403, 400, h)


def admin_value(handle: str, index: int, permissions: str, at: int = 100) -> dict[str, Any]:
    value = {"handle": handle, "index": index, "permissions": permissions}
    return {"index": at, "type": "HS_ADMIN", "data": {"format": "admin", "value": value}}


async def test_hs_admin_permission_bits_are_enforced(client, ent):
    """Only ADD_VALUE ("000001000000", LIST_HANDLES on the left … ADD_HANDLE on the right)."""
    h = f"{ent['prefix']}/addonly"
    secret = {"index": 2, "type": "NOTE", "data": "hidden", "permissions": "1100"}
    await create(
        client, h, ent["headers"], [url_value(1), secret, admin_value(f"0.NA/{ent['prefix']}", 300, "000001000000")]
    )
    r = await client.put(url(h), params={"index": "5"}, json=[url_value(5)], headers=ent["headers"])
    await ok(r, 201)
    async with unchanged(client, h):
        r = await client.put(url(h), params={"index": "1"}, json=[url_value(1, "https://x")], headers=ent["headers"])
        await expect_error(r, 403, 400, h)  # MODIFY_VALUE
        await expect_error(await client.delete(url(h), params={"index": "1"}, headers=ent["headers"]), 403, 400, h)
        await expect_error(await client.delete(url(h), headers=ent["headers"]), 403, 400, h)  # DELETE_HANDLE
        r = await client.put(
            url(h), params={"index": "101"}, json=[admin_value("0.NA/x", 300, "1", at=101)], headers=ent["headers"]
        )
        await expect_error(r, 403, 400, h)  # ADD_ADMIN
    # Without READ_VALUE the enterprise sees only public values.
    assert 2 not in by_index(await ok(await resolve(client, h, headers=ent["headers"])))


async def test_hs_admin_through_an_hs_vlist_group(client, ent, other):
    """HS_ADMIN may name an admin group: an HS_VLIST whose members are identities (HANDLE.NET's 200:0.NA/…)."""
    p = ent["prefix"]
    group = f"{p}/admins"
    members = [{"handle": f"0.NA/{p}", "index": 300}]
    await create(
        client,
        group,
        ent["headers"],
        [{"index": 200, "type": "HS_VLIST", "data": {"format": "vlist", "value": members}}],
    )
    h = f"{p}/grouped"
    await create(client, h, ent["headers"], [url_value(1), admin_value(group, 200, "011111110011")])
    await ok(await client.put(url(h), params={"index": "1"}, json=[url_value(1, "https://v2")], headers=ent["headers"]))
    assert by_index(await ok(await resolve(client, h)))[1]["data"]["value"] == "https://v2"
    # A group without the caller in it grants nothing.
    await ok(
        await client.put(
            url(group),
            params={"index": "200"},
            json=[
                {
                    "index": 200,
                    "type": "HS_VLIST",
                    "data": {"format": "vlist", "value": [{"handle": "0.NA/x", "index": 300}]},
                }
            ],
            headers=ent["headers"],
        )
    )
    async with unchanged(client, h):
        r = await client.put(url(h), params={"index": "1"}, json=[url_value(1, "https://v3")], headers=ent["headers"])
        await expect_error(r, 403, 400, h)


class TestCredentialsOffLoopback:
    """Bound to a public address, the node accepts credentials only over TLS (or when configured)."""

    @pytest.fixture
    def config_overrides(self) -> dict[str, Any]:
        return {"host": "0.0.0.0"}

    async def test_refused_over_plain_http(self, client, admin):
        h = f"{NODE_PREFIX}/plain"
        body = await expect_error(await client.put(url(h), json=[url_value()], headers=admin), 401, 402, h)
        assert "HTTPS" in body["message"]
        await expect_error(
            await client.post("/api/promoters", json={"name": "x", "uscc": make_uscc(3, "92")}, headers=admin), 401, 402
        )
        await expect_error(await resolve(client, h), 404, 100)
        await ok(await resolve(client, NODE_HANDLE))  # reading needs no credentials


class TestInsecureAuthConfigured:
    @pytest.fixture
    def config_overrides(self) -> dict[str, Any]:
        return {"host": "0.0.0.0", "insecure_auth": True}

    async def test_accepted(self, client, admin):
        await ok(await client.put(url(f"{NODE_PREFIX}/proxied"), json=[url_value()], headers=admin), 201)


async def test_401_offers_a_handle_challenge(client, ent):
    h = f"{ent['prefix']}/challenge"
    r = await client.put(url(h), json=[url_value()])
    await expect_error(r, 401, 402, h)
    challenge = r.headers.getall("WWW-Authenticate", [])
    assert any(c.startswith("Handle ") and "sessionId=" in c and "nonce=" in c for c in challenge), challenge


# == disabled enterprises and moves ==============================================================


async def test_disabled_enterprise_writes_refused_reads_kept(client, admin, ent):
    h = f"{ent['prefix']}/d1"
    await create(client, h, ent["headers"])
    r = await client.patch(f"/api/enterprises/{ent['id']}", json={"status": "disabled"}, headers=admin)
    assert (await ok(r))["status"] == "disabled"
    async with unchanged(client, h, f"{ent['prefix']}/d2"):
        await expect_error(
            await client.put(url(f"{ent['prefix']}/d2"), json=[url_value()], headers=ent["headers"]), 403, 400
        )
        await expect_error(
            await client.put(url(h), json=[url_value(1, "https://x")], headers=ent["headers"]), 403, 400, h
        )
        r = await client.put(url(h), params={"index": "3"}, json=[url_value(3)], headers=ent["headers"])
        await expect_error(r, 403, 400, h)
        await expect_error(await client.delete(url(h), headers=ent["headers"]), 403, 400, h)
        await expect_error(await client.delete(url(h), params={"index": "1"}, headers=ent["headers"]), 403, 400, h)
    # Its identifiers still resolve, for everybody.
    assert (await ok(await resolve(client, h)))["handle"] == h
    assert (await ok(await resolve(client, f"0.NA/{ent['prefix']}")))["handle"] == f"0.NA/{ent['prefix']}"
    r = await client.get(f"/api/enterprises/{ent['id']}", headers=admin)
    assert (await ok(r))["status"] == "disabled"
    # Re-enabled, it writes again.
    await ok(await client.patch(f"/api/enterprises/{ent['prefix']}", json={"status": "active"}, headers=admin))
    await create(client, f"{ent['prefix']}/d2", ent["headers"])


async def test_disabled_enterprise_cannot_edit_its_prefix_handle(client, admin, ent):
    ph = f"0.NA/{ent['prefix']}"
    await ok(await client.patch(f"/api/enterprises/{ent['id']}", json={"status": "disabled"}, headers=admin))
    async with unchanged(client, ph):
        r = await client.put(url(ph), params={"index": "7"}, json=[url_value(7)], headers=ent["headers"])
        await expect_error(r, 403, 400, ph)


async def test_enterprise_cannot_delete_its_prefix_handle(client, ent):
    ph = f"0.NA/{ent['prefix']}"
    async with unchanged(client, ph):
        await expect_error(await client.delete(url(ph), headers=ent["headers"]), 403, 400, ph)


async def test_move_enterprise(client, admin, ent):
    uscc = make_uscc(14, "92")  # check character "C"
    r = await client.post("/api/promoters", json={"name": "New Promoter", "uscc": uscc}, headers=admin)
    new = (await ok(r, 201))["id"]
    old = ent["promoter"]
    # The promoter named by its credit code (any case), the enterprise by its prefix.
    r = await client.patch(f"/api/enterprises/{ent['prefix']}", json={"promoter": uscc.lower()}, headers=admin)
    assert (await ok(r))["promoter"] == new
    body = await ok(await client.get(f"/api/enterprises/{ent['id']}", headers=admin))
    assert body["promoter"] == new
    assert [a["promoter"] for a in body["attributions"]] == [old, new]
    # Moving to the promoter it already has, or to nobody, is refused and records nothing.
    for target in (new, 9999, "no-such", None):
        r = await client.patch(f"/api/enterprises/{ent['id']}", json={"promoter": target}, headers=admin)
        await expect_error(r, 400, 4)
    body = await ok(await client.get(f"/api/enterprises/{ent['id']}", headers=admin))
    assert [a["promoter"] for a in body["attributions"]] == [old, new]
    # Moving does not touch the enterprise's identifiers or credentials.
    await create(client, f"{ent['prefix']}/after-move", ent["headers"])


async def test_all_digit_credit_codes_are_found(client, admin, ent):
    promoter_uscc = make_uscc(1, "92")  # the onboard fixture's first promoter
    assert ent["uscc"].isdigit() and promoter_uscc.isdigit()
    r = await client.post(
        "/api/enterprises", json={"name": "By code", "uscc": make_uscc(90), "promoter": promoter_uscc}, headers=admin
    )
    assert (await ok(r, 201))["promoter"] == ent["promoter"]
    assert (await ok(await client.get(f"/api/enterprises/{ent['uscc']}", headers=admin)))["id"] == ent["id"]


# == admin API ===================================================================================


async def test_promoters_create_and_list(client, admin):
    uscc = make_uscc(501, "92")
    r = await client.post(
        "/api/promoters", json={"name": "  Guangzhou Promoter  ", "uscc": uscc.lower()}, headers=admin
    )
    body = await ok(r, 201)
    assert body["name"] == "Guangzhou Promoter" and body["uscc"] == uscc
    assert isinstance(body["id"], int) and ISO_Z.match(body["created"])
    assert "secret" not in body
    listed = await ok(await client.get("/api/promoters", headers=admin))
    assert [p["id"] for p in listed["promoters"]] == [body["id"]]


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "X", "uscc": "91440111000000001X"},  # bad check character
        {"name": "X", "uscc": "123"},
        {"name": "X"},
        {"name": "", "uscc": make_uscc(1, "92")},
        {"name": "x" * 201, "uscc": make_uscc(1, "92")},
        {"uscc": make_uscc(1, "92")},
        {"name": 5, "uscc": make_uscc(1, "92")},
    ],
)
async def test_promoter_bad_input(client, admin, payload):
    await expect_error(await client.post("/api/promoters", json=payload, headers=admin), 400, 4)
    assert (await ok(await client.get("/api/promoters", headers=admin)))["promoters"] == []


async def test_admin_bodies_must_be_json_objects(client, admin):
    for data, ctype in ((b"[]", "application/json"), (b"{", "application/json"), (b"{}", "text/plain")):
        r = await client.post("/api/promoters", data=data, headers={**admin, "Content-Type": ctype})
        await expect_error(r, 400, 4)


async def test_enterprise_create_list_get(client, admin, ent):
    r = await client.post(
        "/api/enterprises",
        json={"name": "Foshan Works", "uscc": make_uscc(77), "promoter": ent["promoter"]},
        headers=admin,
    )
    assert r.headers.get("Cache-Control") == "no-store"
    created = await ok(r, 201)
    assert created["prefix"] == f"{NODE_PREFIX}.1002"
    assert created["admin"] == f"300:0.NA/{NODE_PREFIX}.1002"
    assert created["status"] == "active" and created["promoter"] == ent["promoter"]
    assert isinstance(created["secret"], str) and len(created["secret"]) >= 32
    listed = await ok(await client.get("/api/enterprises", headers=admin))
    assert [e["prefix"] for e in listed["enterprises"]] == [ent["prefix"], created["prefix"]]
    text = json.dumps(listed)
    assert "secret" not in text and created["secret"] not in text and ent["secret"] not in text
    for ref in (created["id"], created["prefix"], created["uscc"], created["prefix"].lower()):
        got = await ok(await client.get(f"/api/enterprises/{ref}", headers=admin))
        assert got["id"] == created["id"] and "secret" not in got
        assert got["attributions"][0]["promoter"] == ent["promoter"]
    await expect_error(await client.get("/api/enterprises/9999", headers=admin), 400, 4)
    # The new enterprise's credentials work at once.
    await create(client, f"{created['prefix']}/first", basic(created["admin"], created["secret"]))


async def test_enterprise_with_chosen_prefix(client, admin, ent):
    body = {"name": "Chosen", "uscc": make_uscc(78), "promoter": ent["promoter"], "prefix": f"{NODE_PREFIX}.Zeta"}
    created = await ok(await client.post("/api/enterprises", json=body, headers=admin), 201)
    assert created["prefix"] == f"{NODE_PREFIX}.Zeta"
    # The next allocated number is unaffected by a named prefix.
    body = {"name": "Next", "uscc": make_uscc(79), "promoter": ent["promoter"]}
    assert (await ok(await client.post("/api/enterprises", json=body, headers=admin), 201))[
        "prefix"
    ] == f"{NODE_PREFIX}.1002"


@pytest.mark.parametrize(
    "change",
    [
        {"promoter": 9999},
        {"promoter": "91440111MA0000000X"},
        {"promoter": None},
        {"uscc": "123"},
        {"uscc": "dup"},
        {"name": ""},
        {"prefix": "10.1000.5"},
        {"prefix": f"{NODE_PREFIX}"},
        {"prefix": f"{NODE_PREFIX}.1001"},  # taken by ent
        {"prefix": f"{NODE_PREFIX}.1001".replace("1001", "a/b")},
        {"prefix": f"{NODE_PREFIX}.a b"},
        {"prefix": 5},
    ],
)
async def test_enterprise_bad_input(client, admin, ent, change):
    body = {"name": "Bad", "uscc": make_uscc(80), "promoter": ent["promoter"], **change}
    if body["uscc"] == "dup":
        body["uscc"] = ent["uscc"]
    before = await ok(await client.get("/api/enterprises", headers=admin))
    async with unchanged(client, f"0.NA/{NODE_PREFIX}.1002"):
        await expect_error(await client.post("/api/enterprises", json=body, headers=admin), 400, 4)
    assert await ok(await client.get("/api/enterprises", headers=admin)) == before


async def test_patch_enterprise_bad_input(client, admin, ent):
    for body in ({}, {"status": "paused"}, {"name": "x"}, {"status": "disabled", "extra": 1}):
        await expect_error(await client.patch(f"/api/enterprises/{ent['id']}", json=body, headers=admin), 400, 4)
    await expect_error(await client.patch("/api/enterprises/9999", json={"status": "disabled"}, headers=admin), 400, 4)
    got = await ok(await client.get(f"/api/enterprises/{ent['id']}", headers=admin))
    assert got["status"] == "active" and len(got["attributions"]) == 1


@pytest.fixture
async def auditor(client, admin) -> dict[str, str]:
    """The bureau's identity (auditor role): it reads the admin lists and writes nothing."""
    r = await client.post("/api/auditors", json={"name": "baiyun"}, headers=admin)
    assert r.headers.get("Cache-Control") == "no-store"
    body = await ok(r, 201)
    return basic(body["identity"], body["secret"])


async def test_admin_api_access(client, admin, ent, auditor):
    promoter_body = {"name": "P", "uscc": make_uscc(600, "92")}
    enterprise_body = {"name": "E", "uscc": make_uscc(601), "promoter": ent["promoter"]}
    writes = [
        ("post", "/api/promoters", promoter_body),
        ("post", "/api/enterprises", enterprise_body),
        ("patch", f"/api/enterprises/{ent['id']}", {"status": "disabled"}),
        ("patch", f"/api/enterprises/{ent['id']}", {"promoter": ent["promoter"]}),
        ("post", "/api/auditors", {"name": "second"}),
    ]
    snapshot = [
        await ok(await client.get("/api/promoters", headers=admin)),
        await ok(await client.get("/api/enterprises", headers=admin)),
    ]
    for method, path, body in writes:
        await expect_error(await getattr(client, method)(path, json=body), 401, 402)
        await expect_error(await getattr(client, method)(path, json=body, headers=ent["headers"]), 403, 400)
        await expect_error(await getattr(client, method)(path, json=body, headers=auditor), 403, 400)
        await expect_error(await getattr(client, method)(path, json=body, headers=basic(NODE_ADMIN, "wrong")), 401, 402)
    for path in ("/api/promoters", "/api/enterprises", f"/api/enterprises/{ent['id']}"):
        await expect_error(await client.get(path), 401, 402)
        await expect_error(await client.get(path, headers=ent["headers"]), 403, 400)
        await ok(await client.get(path, headers=auditor))
    assert snapshot == [
        await ok(await client.get("/api/promoters", headers=admin)),
        await ok(await client.get("/api/enterprises", headers=admin)),
    ]


async def test_auditor_cannot_write_handles(client, auditor, ent):
    for h in (f"{NODE_PREFIX}/by-auditor", f"{ent['prefix']}/by-auditor"):
        await expect_error(await client.put(url(h), json=[url_value()], headers=auditor), 403, 400, h)
        await expect_error(await resolve(client, h), 404, 100)
    h = f"{ent['prefix']}/kept"
    await create(client, h, ent["headers"])
    async with unchanged(client, h):
        await expect_error(await client.delete(url(h), headers=auditor), 403, 400, h)


async def test_error_bodies_never_500(client, admin, ent):
    """A sweep of odd requests: each answer is JSON with a responseCode, none is a 500."""
    p = ent["prefix"]
    requests = [
        ("get", url(f"{p}/x?index=99999999999999999999"), None),
        ("get", url(f"{p}/x?type=%00"), None),
        ("get", "/api/handles?prefix=%FF", ent["headers"]),
        ("get", "/api/handles?prefix=0.NA/", ent["headers"]),
        ("get", "/api/handles?prefix=..", ent["headers"]),
        ("put", url(f"{p}/x?overwrite=maybe"), ent["headers"]),
        ("put", url(f"{p}/x?index=various&index=3"), ent["headers"]),
        ("delete", url(f"{p}/x?index="), ent["headers"]),
        ("get", "/api/enterprises/%FF", admin),
        ("get", "/api/handles/", None),
        ("get", "/api/handles//", None),
        ("delete", "/api/handles", ent["headers"]),
        ("patch", "/api/enterprises/1", admin),
    ]
    for method, path, headers in requests:
        r = await getattr(client, method)(path, headers=headers, json=[url_value()] if method != "get" else None)
        assert r.status < 500, (path, await r.text())
        assert r.content_type == "application/json", path
        body = await r.json()
        assert isinstance(body["responseCode"], int), (path, body)
        if r.status >= 400:
            assert isinstance(body.get("message"), str) and body["message"], (path, body)
