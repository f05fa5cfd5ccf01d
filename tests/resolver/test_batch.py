"""``POST /api/handles``: batch registration on both stores.

Every content type (NDJSON, JSON array, msgpack array), bodies streamed in many small chunks,
atomic and non-atomic batches, overwrite, duplicates, items outside the caller's prefix, broken
bodies, limits, Idempotency-Key and metadata templates. After every refused batch the tests check
that nothing was written: the handles do not resolve and the registration counters did not move.
No reply may be a 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.http.batch_routes import _json_array, _msgpack_array, _ndjson
from resolver.http.keys import STATE_KEY
from tests.resolver.conftest import NODE_PREFIX, basic

NDJSON = "application/x-ndjson"
JSON = "application/json"
MSGPACK = "application/msgpack"
FORMATS = [NDJSON, JSON, MSGPACK]
NODE_ADMIN_REF = {"handle": f"0.NA/{NODE_PREFIX}", "index": 300, "permissions": "011111111111"}


# -- fixtures: the client on SQLite and on PostgreSQL ---------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def limits() -> dict[str, Any]:
    """Extra settings for one test (``@pytest.mark.parametrize("limits", [{...}])``)."""
    return {}


@pytest.fixture
def config_overrides(request: pytest.FixtureRequest, store_kind: str, limits: dict[str, Any]) -> dict[str, Any]:
    out = dict(limits)
    if store_kind == "postgresql":
        out["store"] = request.getfixturevalue("pg_store_url")
    return out


# -- helpers --------------------------------------------------------------------------------------
def item(handle: str, n: int = 0, **extra: Any) -> dict[str, Any]:
    """A batch item with a URL value and one more value."""
    values = [
        {"index": 1, "type": "URL", "data": f"https://example.com/p/{n}"},
        {"index": 2, "type": "DESC", "data": f"产品 {n} — ünïcödé ✓ 🚀"},
    ]
    return {"handle": handle, "values": values, **extra}


def encode(items: list[Any], ctype: str) -> bytes:
    if ctype == NDJSON:
        return b"".join(json.dumps(i, ensure_ascii=False).encode() + b"\n" for i in items)
    if ctype == JSON:
        return json.dumps(items, ensure_ascii=False).encode()
    return msgpack.packb(items, use_bin_type=True)


async def trickle(data: bytes, size: int) -> AsyncIterator[bytes]:
    """The body in chunks of ``size`` bytes, yielding to the loop between them."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def post(
    client: TestClient,
    headers: dict[str, str],
    body: bytes,
    ctype: str | None = NDJSON,
    *,
    params: dict[str, str] | None = None,
    chunk: int | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    """POST a batch; (status, JSON reply, response headers). Never a 500, always JSON."""
    h = {**headers, **(extra_headers or {})}
    if ctype is not None:
        h["Content-Type"] = ctype
    data: Any = body if chunk is None else trickle(body, chunk)
    r = await client.post("/api/handles", data=data, headers=h, params=params or {})
    text = await r.text()
    assert r.status < 500, text
    assert r.content_type == "application/json", text
    return r.status, json.loads(text), r.headers


async def exists(client: TestClient, handle: str) -> bool:
    r = await client.get(f"/api/handles/{handle}", params={"auth": "true"})
    assert r.status in (200, 404), await r.text()
    return r.status == 200


async def values_of(client: TestClient, handle: str, headers: dict[str, str] | None = None) -> dict[int, Any]:
    r = await client.get(f"/api/handles/{handle}", params={"auth": "true"}, headers=headers or {})
    assert r.status == 200, await r.text()
    return {v["index"]: v for v in (await r.json())["values"]}


async def counts(client: TestClient) -> dict[int, int]:
    """The clause-8 registration counters, per enterprise id, over all time."""
    registry = client.app[STATE_KEY].registry
    assert registry is not None
    found = await registry.store.registration_counts(19700101, 99991231, 2**40)
    return {k: v for k, v in found.items() if v}


def failures_by_position(reply: dict[str, Any]) -> dict[int, dict[str, Any]]:
    out = {f["position"]: f for f in reply["failures"]}
    assert len(out) == len(reply["failures"]), "one failure per position"
    for f in reply["failures"]:
        assert set(f) == {"position", "handle", "responseCode", "message"}
        assert isinstance(f["message"], str) and f["message"]
    return out


@pytest.fixture
async def ent(onboard: Callable[..., Any]) -> dict[str, Any]:
    return await onboard()


# -- each content type, streamed in small chunks ----------------------------------------------------
@pytest.mark.parametrize("ctype", FORMATS)
@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
async def test_each_content_type_registers_every_item(client, ent, ctype, chunk):
    items = [item(f"{ent['prefix']}/SKU-{n:04d}-产品", n) for n in range(60)]
    status, reply, _ = await post(client, ent["headers"], encode(items, ctype), ctype, chunk=chunk)
    assert status == 201, reply
    assert reply["responseCode"] == 1
    assert (reply["total"], reply["created"], reply["replaced"], reply["failed"]) == (60, 60, 0, 0)
    assert reply["written"] is True and reply["failures"] == []
    for n in (0, 31, 59):
        vals = await values_of(client, f"{ent['prefix']}/SKU-{n:04d}-产品")
        assert vals[1]["data"] == {"format": "string", "value": f"https://example.com/p/{n}"} or vals[1]["data"] == (
            f"https://example.com/p/{n}"
        )
        text = vals[2]["data"]["value"] if isinstance(vals[2]["data"], dict) else vals[2]["data"]
        assert text == f"产品 {n} — ünïcödé ✓ 🚀"
        assert vals[100]["type"] == "HS_ADMIN"  # the caller's default admin, as for a single PUT
    assert await counts(client) == {ent["id"]: 60}


@pytest.mark.parametrize("ctype", FORMATS)
async def test_multibyte_characters_split_at_every_chunk_edge(client, ent, ctype):
    """Chunks of 1-5 bytes cut every 2-, 3- and 4-byte UTF-8 sequence somewhere in the middle."""
    handles = [f"{ent['prefix']}/标识-{n}-é€😀" for n in range(5)]
    for size in (1, 2, 3, 4, 5):
        items = [item(f"{h}-{size}", size) for h in handles]
        status, reply, _ = await post(client, ent["headers"], encode(items, ctype), ctype, chunk=size)
        assert status == 201, reply
        assert reply["created"] == 5
    for size in (1, 5):
        assert await exists(client, f"{handles[4]}-{size}")
    assert await counts(client) == {ent["id"]: 25}


async def test_ndjson_accepts_blank_lines_crlf_and_no_final_newline(client, ent):
    lines = [json.dumps(item(f"{ent['prefix']}/crlf-{n}", n)).encode() for n in range(3)]
    body = b"\r\n\r\n" + lines[0] + b"\r\n" + lines[1] + b"\n   \n" + lines[2]
    status, reply, _ = await post(client, ent["headers"], body, NDJSON, chunk=5)
    assert status == 201, reply
    assert reply["created"] == 3


@pytest.mark.parametrize("ctype", ["application/jsonl", "application/ndjson", "application/x-msgpack"])
async def test_alternative_content_type_names(client, ent, ctype):
    kind = MSGPACK if "msgpack" in ctype else NDJSON
    status, reply, _ = await post(client, ent["headers"], encode([item(f"{ent['prefix']}/alt")], kind), ctype)
    assert status == 201, reply


# -- atomic and non-atomic -------------------------------------------------------------------------
def _mixed(prefix: str) -> list[Any]:
    items: list[Any] = [item(f"{prefix}/ok-{n}", n) for n in range(10)]
    items[2] = {"handle": f"{prefix}/bad-value", "values": [{"index": "x", "type": "URL", "data": "u"}]}
    items[5] = {"handle": "no-slash-here", "values": []}
    items[7] = {"values": [{"index": 1, "type": "URL", "data": "u"}]}  # no handle
    items[8] = ["not", "an", "object"]
    return items


@pytest.mark.parametrize("ctype", FORMATS)
async def test_atomic_batch_with_bad_items_writes_nothing_and_lists_every_failure(client, ent, ctype):
    p = ent["prefix"]
    status, reply, _ = await post(client, ent["headers"], encode(_mixed(p), ctype), ctype)
    assert status == 400, reply
    assert reply["responseCode"] != 1
    assert (reply["total"], reply["created"], reply["failed"], reply["written"]) == (10, 0, 4, False)
    assert "nothing was written" in reply["message"]
    fails = failures_by_position(reply)
    assert sorted(fails) == [2, 5, 7, 8]
    assert fails[2]["handle"] == f"{p}/bad-value" and fails[2]["responseCode"] == 202
    assert fails[5]["handle"] == "no-slash-here" and fails[5]["responseCode"] == 102
    assert fails[7]["handle"] is None and fails[7]["responseCode"] == 4
    assert fails[8]["handle"] is None and fails[8]["responseCode"] == 4
    assert [f["position"] for f in reply["failures"]] == [2, 5, 7, 8]  # in order
    for n in (0, 1, 3, 9):
        assert not await exists(client, f"{p}/ok-{n}")
    assert await counts(client) == {}


@pytest.mark.parametrize("ctype", FORMATS)
async def test_non_atomic_batch_writes_the_valid_items(client, ent, ctype):
    p = ent["prefix"]
    params = {"atomic": "false"}
    status, reply, _ = await post(client, ent["headers"], encode(_mixed(p), ctype), ctype, params=params)
    assert status == 201, reply
    assert (reply["total"], reply["created"], reply["failed"], reply["written"]) == (10, 6, 4, True)
    assert reply["atomic"] is False
    assert sorted(failures_by_position(reply)) == [2, 5, 7, 8]
    for n in (0, 1, 3, 4, 6, 9):
        assert await exists(client, f"{p}/ok-{n}")
    assert await counts(client) == {ent["id"]: 6}


async def test_non_atomic_batch_where_everything_fails(client, ent):
    body = encode([{"handle": "x"}, {"handle": f"{ent['prefix']}/y"}], NDJSON)
    status, reply, _ = await post(client, ent["headers"], body, params={"atomic": "false"})
    assert status in (200, 400), reply
    assert (reply["created"], reply["failed"], reply["written"]) == (0, 2, False)
    assert await counts(client) == {}


async def test_per_item_value_errors_carry_the_value_checks_of_single_writes(client, ent):
    p = ent["prefix"]
    items = [
        {"handle": f"{p}/a", "values": [{"index": 1, "type": "URL", "data": "x" * 70_000}]},  # too large
        {"handle": f"{p}/b", "values": [{"index": 1, "type": "URL"}]},  # no data
        {"handle": f"{p}/c", "values": "not a list"},
        {"handle": f"{p}/d", "values": [{"index": 1, "type": "URL", "data": "u"}] * 2},  # same index twice
        {"handle": f"{p}/" + "s" * 300, "values": [{"index": 1, "type": "URL", "data": "u"}]},  # too long
        {"handle": f"0.NA/{p}", "values": [{"index": 1, "type": "URL", "data": "u"}]},  # prefix handle
        {"handle": 12345, "values": []},
    ]
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON))
    assert status == 400, reply
    fails = failures_by_position(reply)
    assert sorted(fails) == list(range(len(items)))
    assert fails[6]["handle"] is None
    assert await counts(client) == {}


# -- existing handles: overwrite=false (default) and overwrite=true -----------------------------------
async def _put(client: TestClient, handle: str, headers: dict[str, str], values: list[dict[str, Any]]) -> None:
    r = await client.put(f"/api/handles/{handle}", json={"values": values}, headers=headers)
    assert r.status in (200, 201), await r.text()


async def test_existing_handles_are_reported_as_101_by_default(client, ent):
    p = ent["prefix"]
    await _put(client, f"{p}/old-1", ent["headers"], [{"index": 1, "type": "URL", "data": "https://old/1"}])
    await _put(client, f"{p}/old-2", ent["headers"], [{"index": 1, "type": "URL", "data": "https://old/2"}])
    assert await counts(client) == {ent["id"]: 2}
    items = [item(f"{p}/old-1", 1), item(f"{p}/new-1", 2), item(f"{p}/old-2", 3), item(f"{p}/new-2", 4)]
    body = encode(items, NDJSON)

    status, reply, _ = await post(client, ent["headers"], body)  # atomic: nothing written
    assert status == 400, reply
    fails = failures_by_position(reply)
    assert sorted(fails) == [0, 2]
    assert {f["responseCode"] for f in fails.values()} == {101}
    assert fails[0]["handle"] == f"{p}/old-1"
    assert not await exists(client, f"{p}/new-1")
    assert (await values_of(client, f"{p}/old-1"))[1]["data"] in (
        "https://old/1",
        {"format": "string", "value": "https://old/1"},
    )
    assert await counts(client) == {ent["id"]: 2}

    status, reply, _ = await post(client, ent["headers"], body, params={"atomic": "false", "overwrite": "false"})
    assert status == 201, reply
    assert (reply["created"], reply["replaced"], reply["failed"]) == (2, 0, 2)
    assert {f["responseCode"] for f in reply["failures"]} == {101}
    assert await exists(client, f"{p}/new-2")
    assert await counts(client) == {ent["id"]: 4}


def _text(v: dict[str, Any]) -> str:
    return v["data"]["value"] if isinstance(v["data"], dict) else v["data"]


async def test_overwrite_replaces_and_counts_only_the_new_ones(client, ent):
    p = ent["prefix"]
    await _put(client, f"{p}/r-1", ent["headers"], [{"index": 1, "type": "URL", "data": "https://old/1"}])
    items = [item(f"{p}/r-1", 10), item(f"{p}/r-2", 11)]
    status, reply, _ = await post(client, ent["headers"], encode(items, JSON), JSON, params={"overwrite": "true"})
    assert status == 201, reply
    assert (reply["created"], reply["replaced"], reply["failed"], reply["overwrite"]) == (1, 1, 0, True)
    assert _text((await values_of(client, f"{p}/r-1"))[1]) == "https://example.com/p/10"
    assert await counts(client) == {ent["id"]: 2}  # a replacement is not a new registration

    # Replacing everything again (only replacements): 200, nothing new counted.
    status, reply, _ = await post(client, ent["headers"], encode(items, JSON), JSON, params={"overwrite": "true"})
    assert status == 200, reply
    assert (reply["created"], reply["replaced"]) == (0, 2)
    assert await counts(client) == {ent["id"]: 2}


async def test_overwrite_without_hs_admin_keeps_the_handles_administrators(client, ent):
    """As a single PUT does: a replacement that names no HS_ADMIN keeps the record's own."""
    p = ent["prefix"]
    await _put(client, f"{p}/keep", ent["headers"], [{"index": 1, "type": "URL", "data": "https://old"}])
    for n in (1, 2):  # the second overwrite needs the rights the first one must have kept
        body = encode([item(f"{p}/keep", n)], NDJSON)
        status, reply, _ = await post(client, ent["headers"], body, params={"overwrite": "true"})
        assert status == 200, reply
        assert reply["replaced"] == 1
        vals = await values_of(client, f"{p}/keep", ent["headers"])
        assert [v["type"] for v in vals.values()].count("HS_ADMIN") == 1
        assert _text(vals[1]) == f"https://example.com/p/{n}"


async def test_overwrite_needs_the_right_on_the_existing_record(client, ent, admin):
    """The node admin registers a handle under the enterprise's prefix whose HS_ADMIN names only the
    node admin: the enterprise may not replace it; the node admin may."""
    p = ent["prefix"]
    values = [
        {"index": 1, "type": "URL", "data": "https://locked"},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": NODE_ADMIN_REF}},
    ]
    await _put(client, f"{p}/locked", admin, values)
    items = [item(f"{p}/locked", 1), item(f"{p}/free", 2)]
    body = encode(items, NDJSON)

    status, reply, _ = await post(client, ent["headers"], body, params={"overwrite": "true"})
    assert status == 400, reply
    (fail,) = reply["failures"]
    assert (fail["position"], fail["handle"], fail["responseCode"]) == (0, f"{p}/locked", 400)
    assert not await exists(client, f"{p}/free")
    assert _text((await values_of(client, f"{p}/locked"))[1]) == "https://locked"

    status, reply, _ = await post(client, ent["headers"], body, params={"overwrite": "true", "atomic": "false"})
    assert (status, reply["created"], reply["replaced"], reply["failed"]) == (201, 1, 0, 1), reply
    assert _text((await values_of(client, f"{p}/locked"))[1]) == "https://locked"

    status, reply, _ = await post(client, admin, encode([item(f"{p}/locked", 3)], NDJSON), params={"overwrite": "true"})
    assert (status, reply["replaced"]) == (200, 1), reply
    assert _text((await values_of(client, f"{p}/locked"))[1]) == "https://example.com/p/3"


async def test_batch_default_admin_index_taken_by_another_value(client, ent):
    """A single PUT refuses values that occupy index 100 without an HS_ADMIN (where the default
    admin goes); a batch item must be refused the same way, not stored with two values at 100."""
    p = ent["prefix"]
    values = [{"index": 100, "type": "URL", "data": "https://at-100"}]
    r = await client.put(f"/api/handles/{p}/single-100", json={"values": values}, headers=ent["headers"])
    assert r.status == 400
    status, reply, _ = await post(
        client, ent["headers"], encode([{"handle": f"{p}/batch-100", "values": values}], NDJSON)
    )
    assert status == 400, reply
    assert reply["failures"][0]["responseCode"] == 202
    assert not await exists(client, f"{p}/batch-100")


# -- duplicates, prefixes and callers -------------------------------------------------------------
@pytest.mark.parametrize("atomic", ["true", "false"])
async def test_duplicates_inside_one_batch(client, ent, atomic):
    p = ent["prefix"]
    items = [item(f"{p}/dup", 1), item(f"{p}/other", 2), item(f"{p}/dup", 3), item(f"{p}/dup", 4)]
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON), params={"atomic": atomic})
    fails = failures_by_position(reply)
    assert sorted(fails) == [2, 3]
    assert all(f["responseCode"] == 4 and "duplicate of item 0" in f["message"] for f in fails.values())
    if atomic == "true":
        assert status == 400 and reply["created"] == 0
        assert not await exists(client, f"{p}/dup")
        assert await counts(client) == {}
    else:
        assert status == 201 and reply["created"] == 2
        assert _text((await values_of(client, f"{p}/dup"))[1]) == "https://example.com/p/1"  # the first wins
        assert await counts(client) == {ent["id"]: 2}


async def test_prefix_is_case_insensitive_for_duplicates(client, ent):
    p = ent["prefix"]
    items = [item(f"{p}/SKU-1"), item(f"{p.upper()}/SKU-1"), item(f"{p}/sku-1")]
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON), params={"atomic": "false"})
    assert status == 201, reply
    assert reply["created"] == 2  # suffixes are case-sensitive, prefixes are not
    assert sorted(failures_by_position(reply)) == [1]


async def test_items_outside_the_callers_prefix_fail_one_by_one(client, onboard):
    a, b = await onboard(), await onboard()
    items = [
        item(f"{a['prefix']}/mine-1"),
        item(f"{b['prefix']}/theirs-1"),
        item(f"{NODE_PREFIX}/node-level"),
        item("20.500.12345/elsewhere"),
        item(f"{NODE_PREFIX}.9999/unallocated"),
        item(f"{b['prefix']}/theirs-2"),
        item(f"{a['prefix']}/mine-2"),
    ]
    for atomic in ("true", "false"):
        status, reply, _ = await post(client, a["headers"], encode(items, NDJSON), params={"atomic": atomic})
        fails = failures_by_position(reply)
        assert sorted(fails) == [1, 2, 3, 4, 5], reply
        for pos in (1, 2, 5):
            assert fails[pos]["responseCode"] == 400, fails[pos]  # not authorised
            assert fails[pos]["handle"] == items[pos]["handle"]
        assert fails[3]["responseCode"] == 301  # not this node's namespace
        assert fails[4]["responseCode"] in (301, 400)
        assert status == (400 if atomic == "true" else 201)
    for h in (f"{b['prefix']}/theirs-1", f"{b['prefix']}/theirs-2", f"{NODE_PREFIX}/node-level"):
        assert not await exists(client, h)
    assert await exists(client, f"{a['prefix']}/mine-2")
    assert await counts(client) == {a["id"]: 2}


async def test_node_admin_writes_under_any_enterprise_prefix(client, onboard, admin):
    a, b = await onboard(), await onboard()
    items = [item(f"{a['prefix']}/x"), item(f"{b['prefix']}/y"), item(f"{NODE_PREFIX}/z")]
    status, reply, _ = await post(client, admin, encode(items, MSGPACK), MSGPACK)
    assert (status, reply["created"]) == (201, 3), reply
    assert await counts(client) == {a["id"]: 1, b["id"]: 1}  # node-level handles count for nobody


async def test_callers_who_may_not_batch(client, ent, admin):
    body = encode([item(f"{ent['prefix']}/anon")], NDJSON)
    status, reply, _ = await post(client, {}, body)
    assert status == 401, reply
    r = await client.post("/api/auditors", json={"name": "bureau"}, headers=admin)
    auditor = await r.json()
    status, reply, _ = await post(client, basic(auditor["identity"], auditor["secret"]), body)
    assert status == 403, reply
    status, reply, _ = await post(client, basic(ent["admin"], "wrong-secret"), body)
    assert status in (401, 403), reply
    assert not await exists(client, f"{ent['prefix']}/anon")


async def test_disabled_enterprise_cannot_batch(client, ent, admin):
    r = await client.patch(f"/api/enterprises/{ent['id']}", json={"status": "disabled"}, headers=admin)
    assert r.status == 200, await r.text()
    status, reply, _ = await post(client, ent["headers"], encode([item(f"{ent['prefix']}/x")], NDJSON))
    assert status in (400, 403), reply
    assert not await exists(client, f"{ent['prefix']}/x")


# -- broken bodies ---------------------------------------------------------------------------------
async def test_truncated_ndjson_fails_the_last_line_and_writes_nothing(client, ent):
    body = encode([item(f"{ent['prefix']}/t-{n}", n) for n in range(5)], NDJSON)
    cut = body[: len(body) - 20]
    status, reply, _ = await post(client, ent["headers"], cut, chunk=64)
    assert status == 400, reply
    (fail,) = reply["failures"]
    assert fail["position"] == 4 and fail["responseCode"] == 4
    assert "line 5" in fail["message"] and "not JSON" in fail["message"]
    assert not await exists(client, f"{ent['prefix']}/t-0")
    assert await counts(client) == {}


async def test_a_line_that_is_not_json(client, ent):
    lines = [json.dumps(item(f"{ent['prefix']}/l-{n}", n)).encode() for n in range(4)]
    lines[1] = b"this is not json"
    lines.insert(3, b"\xff\xfe not utf-8")
    body = b"\n".join(lines) + b"\n"
    status, reply, _ = await post(client, ent["headers"], body)
    assert status == 400, reply
    fails = failures_by_position(reply)
    assert sorted(fails) == [1, 3]
    assert "line 2" in fails[1]["message"] and "line 4" in fails[3]["message"]
    assert not await exists(client, f"{ent['prefix']}/l-0")

    status, reply, _ = await post(client, ent["headers"], body, params={"atomic": "false"})
    assert (status, reply["created"], reply["failed"]) == (201, 3, 2), reply


@pytest.mark.parametrize(
    ("ctype", "mangle", "words"),
    [
        (JSON, lambda b: b[:-1], "truncated"),  # no closing bracket
        (JSON, lambda b: b[: len(b) // 2], ""),  # cut inside an item
        (JSON, lambda b: b[:-1] + b",", "truncated"),
        (JSON, lambda b: b[:-1] + b",]", "malformed"),
        (JSON, lambda b: b + b"[]", "after the JSON array"),
        (JSON, lambda b: b.replace(b"},", b"}", 1), "malformed"),
        (JSON, lambda b: b'{"handle": "x"}', "array"),
        (JSON, lambda b: b[:1] + b"\xff" + b[1:], "UTF-8"),
        (MSGPACK, lambda b: b[:-3], "truncated"),
        (MSGPACK, lambda b: b[: len(b) // 2], "truncated"),
        (MSGPACK, lambda b: b + b"\x01", "after the msgpack array"),
        (MSGPACK, lambda b: msgpack.packb({"handle": "x"}), "msgpack"),
        (MSGPACK, lambda b: b"\xc1" + b, "msgpack"),  # 0xc1 is never used
        (MSGPACK, lambda b: b"", ""),
    ],
)
async def test_broken_array_bodies_refuse_the_whole_batch(client, ent, ctype, mangle, words):
    items = [item(f"{ent['prefix']}/b-{n}", n) for n in range(8)]
    body = mangle(encode(items, ctype))
    for chunk in (None, 3):
        status, reply, _ = await post(client, ent["headers"], body, ctype, chunk=chunk)
        assert status == 400, reply
        assert reply["responseCode"] == 4
        assert words.lower() in reply["message"].lower(), reply
    assert not await exists(client, f"{ent['prefix']}/b-0")
    assert await counts(client) == {}


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/xml", "multipart/form-data", "application/cbor"])
async def test_wrong_content_type(client, ent, ctype):
    status, reply, _ = await post(client, ent["headers"], encode([item(f"{ent['prefix']}/w")], NDJSON), ctype)
    assert status == 400, reply
    assert "Content-Type" in reply["message"]
    assert not await exists(client, f"{ent['prefix']}/w")


async def test_mixed_content_types(client, ent):
    """An NDJSON body sent as JSON, and a JSON array sent as NDJSON or as msgpack."""
    items = [item(f"{ent['prefix']}/m-{n}", n) for n in range(3)]
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON), JSON)
    assert status == 400, reply
    status, reply, _ = await post(client, ent["headers"], encode(items, JSON), NDJSON)
    assert status == 400, reply
    assert reply["total"] == 1 and reply["failures"][0]["responseCode"] == 4
    status, reply, _ = await post(client, ent["headers"], encode(items, JSON), MSGPACK)
    assert status == 400, reply
    status, reply, _ = await post(client, ent["headers"], encode(items, MSGPACK), NDJSON)
    assert status == 400, reply
    assert not await exists(client, f"{ent['prefix']}/m-0")
    assert await counts(client) == {}


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        (NDJSON, b""),
        (NDJSON, b"\n \n\r\n"),
        (JSON, b"[]"),
        (JSON, b"  [ ]  "),
        (JSON, b""),
        (MSGPACK, msgpack.packb([])),
    ],
)
async def test_empty_batch(client, ent, ctype, body):
    status, reply, _ = await post(client, ent["headers"], body, ctype)
    assert status == 400, reply
    assert reply["responseCode"] == 4


# -- limits ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("limits", [{"batch_max_items": 5}])
@pytest.mark.parametrize("ctype", FORMATS)
async def test_over_the_item_limit(client, ent, ctype):
    p = ent["prefix"]
    status, reply, _ = await post(client, ent["headers"], encode([item(f"{p}/i-{n}") for n in range(5)], ctype), ctype)
    assert status == 201, reply
    body = encode([item(f"{p}/j-{n}") for n in range(6)], ctype)
    for atomic in ("true", "false"):
        status, reply, _ = await post(client, ent["headers"], body, ctype, params={"atomic": atomic})
        assert status == 400, reply
        assert "at most 5 items" in reply["message"]
    assert not await exists(client, f"{p}/j-0")
    assert await counts(client) == {ent["id"]: 5}


@pytest.mark.parametrize("limits", [{"batch_max_bytes": 4000}])
@pytest.mark.parametrize("ctype", FORMATS)
@pytest.mark.parametrize("chunk", [None, 512])
async def test_over_the_body_size_limit(client, ent, ctype, chunk):
    p = ent["prefix"]
    body = encode([item(f"{p}/s-{n}", n) for n in range(40)], ctype)
    assert len(body) > 4000
    status, reply, _ = await post(client, ent["headers"], body, ctype, chunk=chunk, params={"atomic": "false"})
    assert status == 413, reply
    assert reply["responseCode"] == 4 and "4000 bytes" in reply["message"]
    assert not await exists(client, f"{p}/s-0")
    assert await counts(client) == {}
    small = encode([item(f"{p}/s-ok")], ctype)
    status, reply, _ = await post(client, ent["headers"], small, ctype)
    assert status == 201, reply


@pytest.mark.parametrize("limits", [{"max_body_bytes": 2000}])
async def test_an_item_larger_than_the_single_write_limit(client, ent):
    """Items are bounded by max_body_bytes (a single PUT's limit) even inside a larger batch."""
    p = ent["prefix"]
    big = {"handle": f"{p}/big", "values": [{"index": 1, "type": "URL", "data": "u" * 5000}]}
    for ctype in (NDJSON, JSON):
        status, reply, _ = await post(client, ent["headers"], encode([item(f"{p}/small"), big], ctype), ctype)
        assert status == 400, reply
    assert not await exists(client, f"{p}/small")


# -- Idempotency-Key -------------------------------------------------------------------------------
async def test_a_retried_batch_returns_the_first_result_and_writes_nothing_twice(client, ent):
    p = ent["prefix"]
    body = encode([item(f"{p}/idem-{n}", n) for n in range(20)], NDJSON)
    key = {"Idempotency-Key": "batch-2025-06-01-0001"}
    status, first, headers = await post(client, ent["headers"], body, extra_headers=key)
    assert status == 201 and first["created"] == 20, first
    assert "Idempotent-Replayed" not in headers
    assert await counts(client) == {ent["id"]: 20}
    for chunk in (None, 17):
        status, again, headers = await post(client, ent["headers"], body, extra_headers=key, chunk=chunk)
        assert status == 201
        assert again == first
        assert headers["Idempotent-Replayed"] == "true"
    assert await counts(client) == {ent["id"]: 20}
    # Without the key the same batch is a new request: every handle exists now.
    status, reply, headers = await post(client, ent["headers"], body)
    assert status == 400 and reply["failed"] == 20 and "Idempotent-Replayed" not in headers
    assert await counts(client) == {ent["id"]: 20}


async def test_the_same_key_with_another_request_is_refused(client, ent):
    p = ent["prefix"]
    key = {"Idempotency-Key": "k-1"}
    body = encode([item(f"{p}/k-{n}", n) for n in range(3)], NDJSON)
    status, _, _ = await post(client, ent["headers"], body, extra_headers=key)
    assert status == 201
    other = encode([item(f"{p}/other-{n}", n) for n in range(3)], NDJSON)
    status, reply, _ = await post(client, ent["headers"], other, extra_headers=key)
    assert status == 400 and "Idempotency-Key" in reply["message"], reply
    status, reply, _ = await post(client, ent["headers"], body, extra_headers=key, params={"atomic": "false"})
    assert status == 400 and "Idempotency-Key" in reply["message"], reply
    assert not await exists(client, f"{p}/other-0")
    assert await counts(client) == {ent["id"]: 3}


async def test_a_failed_batch_replays_its_failure(client, ent):
    p = ent["prefix"]
    body = encode([item(f"{p}/f-0"), {"handle": "broken"}], NDJSON)
    key = {"Idempotency-Key": "failing"}
    status, first, _ = await post(client, ent["headers"], body, extra_headers=key)
    assert status == 400
    status, again, headers = await post(client, ent["headers"], body, extra_headers=key)
    assert (status, again, headers["Idempotent-Replayed"]) == (400, first, "true")
    assert await counts(client) == {}


async def test_idempotency_keys_belong_to_their_caller(client, onboard):
    a, b = await onboard(), await onboard()
    key = {"Idempotency-Key": "shared-key"}
    status, _, _ = await post(client, a["headers"], encode([item(f"{a['prefix']}/x")], NDJSON), extra_headers=key)
    assert status == 201
    status, rb, headers = await post(
        client, b["headers"], encode([item(f"{b['prefix']}/x")], NDJSON), extra_headers=key
    )
    assert status == 201 and "Idempotent-Replayed" not in headers, rb
    assert await counts(client) == {a["id"]: 1, b["id"]: 1}


@pytest.mark.parametrize("key", ["", "   ", "x" * 256, "tab\there"])
async def test_bad_idempotency_keys(client, ent, key):
    status, reply, _ = await post(
        client, ent["headers"], encode([item(f"{ent['prefix']}/bk")], NDJSON), extra_headers={"Idempotency-Key": key}
    )
    assert status == 400, reply
    assert not await exists(client, f"{ent['prefix']}/bk")


async def test_concurrent_retries_with_one_key_count_once(client, ent):
    p = ent["prefix"]
    body = encode([item(f"{p}/c-{n}", n) for n in range(50)], NDJSON)
    key = {"Idempotency-Key": "concurrent"}
    results = await asyncio.gather(*(post(client, ent["headers"], body, extra_headers=key) for _ in range(4)))
    first = [r for r in results if "Idempotent-Replayed" not in r[2]]
    assert len(first) == 1 and first[0][0] == 201 and first[0][1]["created"] == 50
    # The others waited for the first and replay its reply; none raced it into 101 failures.
    assert all(r[:2] == first[0][:2] and r[2]["Idempotent-Replayed"] == "true" for r in results if r is not first[0])
    assert await counts(client) == {ent["id"]: 50}


# -- metadata templates inside a batch ---------------------------------------------------------------
TEMPLATE = {
    "id": "sku-basic",
    "description": "产品基本信息",
    "fields": [
        {"index": 2001, "name": "model", "type": "MODEL", "required": True, "min_length": 2, "max_length": 10},
        {"index": 2002, "name": "batch", "type": "BATCH", "pattern": "B[0-9]{4}"},
        {"index": 2003, "name": "colour", "type": "COLOUR", "enum": ["red", "green"]},
    ],
}


def templated(handle: str, ref: str = "sku-basic@1", **fields: Any) -> dict[str, Any]:
    values: list[dict[str, Any]] = [
        {"index": 1, "type": "URL", "data": "https://example.com/t"},
        {"index": 1001, "type": "TEMPLATE", "data": ref},
    ]
    indexes = {"model": (2001, "MODEL"), "batch": (2002, "BATCH"), "colour": (2003, "COLOUR")}
    for name, data in fields.items():
        index, type_ = indexes.get(name, (int(name[1:]) if name.startswith("i") else 0, "X"))
        values.append({"index": index, "type": type_, "data": data})
    return {"handle": handle, "values": values}


@pytest.mark.parametrize("ctype", FORMATS)
async def test_template_violations_inside_a_batch(client, ent, admin, ctype):
    r = await client.post("/api/templates", json=TEMPLATE, headers=admin)
    assert r.status == 201, await r.text()
    p = ent["prefix"]
    items = [
        templated(f"{p}/t0", model="M100", batch="B0001", colour="red"),
        templated(f"{p}/t1"),  # required model missing
        templated(f"{p}/t2", model="M"),  # too short
        templated(f"{p}/t3", model="M" * 11),  # too long
        templated(f"{p}/t4", model="M100", batch="X1"),  # pattern
        templated(f"{p}/t5", model="M100", colour="blue"),  # enum
        templated(f"{p}/t6", model="M100", i2500="?"),  # not a field
        templated(f"{p}/t7", "sku-basic@9", model="M100"),  # no such version
        templated(f"{p}/t8", "no-such@1", model="M100"),
        templated(f"{p}/t9", "sku-basic", model="M100"),  # not <id>@<version>
        templated(f"{p}/t10", model="M200"),
    ]
    status, reply, _ = await post(client, ent["headers"], encode(items, ctype), ctype)
    assert status == 400, reply
    fails = failures_by_position(reply)
    assert sorted(fails) == list(range(1, 10))
    assert all(f["responseCode"] == 202 for f in fails.values()), fails
    assert "model" in fails[1]["message"] and "required" in fails[1]["message"]
    assert "item 1" in fails[1]["message"]
    assert "shorter" in fails[2]["message"] and "longer" in fails[3]["message"]
    assert "match" in fails[4]["message"] and "one of" in fails[5]["message"]
    assert "2500" in fails[6]["message"]
    assert "sku-basic@9" in fails[7]["message"] and "no-such@1" in fails[8]["message"]
    assert not await exists(client, f"{p}/t0")
    assert await counts(client) == {}

    status, reply, _ = await post(client, ent["headers"], encode(items, ctype), ctype, params={"atomic": "false"})
    assert (status, reply["created"], reply["failed"]) == (201, 2, 9), reply
    assert await exists(client, f"{p}/t10")


# -- no 500, whatever the body -----------------------------------------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ctype=st.sampled_from([*FORMATS, "application/x-msgpack"]),
    body=st.binary(max_size=300)
    | st.lists(_json_values, max_size=5).map(lambda xs: json.dumps(xs).encode())
    | st.lists(_json_values, max_size=5).map(lambda xs: msgpack.packb(xs))
    | st.lists(_json_values, max_size=5).map(lambda xs: b"\n".join(json.dumps(x).encode() for x in xs)),
)
async def test_no_body_makes_a_500(client, ent, ctype, body):
    await post(client, ent["headers"], body, ctype)
    await post(client, ent["headers"], body, ctype, params={"atomic": "false", "overwrite": "true"})


# -- the streaming parsers, at every split point (no I/O) -------------------------------------------------
class _Chunks:
    """Stands in for the request body: yields the given chunks."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        if p > last:
            out.append(data[last:p])
            last = p
    return out


async def _parse(ctype: str, parts: list[bytes]) -> list[Any]:
    parser = {NDJSON: _ndjson, JSON: _json_array, MSGPACK: _msgpack_array}[ctype]
    return [x async for x in parser(_Chunks(parts), 1 << 20)]  # type: ignore[arg-type]


_items = st.lists(_json_values, min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(ctype=st.sampled_from(FORMATS), items=_items, cuts=st.lists(st.integers(0, 10_000), max_size=12))
async def test_parsers_yield_the_same_items_however_the_body_is_cut(ctype, items, cuts):
    if ctype == NDJSON:
        body = b"\n".join(json.dumps(i, ensure_ascii=False).encode() for i in items)
    elif ctype == JSON:
        body = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()
    else:
        body = msgpack.packb(items, use_bin_type=True)
    assert await _parse(ctype, _split(body, cuts)) == items


@pytest.mark.parametrize("ctype", [JSON, NDJSON])
async def test_parsers_every_single_split_of_a_multibyte_body(ctype):
    items: list[Any] = [{"handle": "88.118.8.1001/é€😀", "values": [1, 23, "产品"]}, 456, "ü", [7.5, True, None]]
    if ctype == NDJSON:
        body = b"\n".join(json.dumps(i, ensure_ascii=False).encode() for i in items)
    else:
        body = json.dumps(items, ensure_ascii=False).encode()
    for cut in range(1, len(body)):
        for cut2 in (cut, min(cut + 1, len(body)), min(cut + 3, len(body))):
            parts = [body[:cut], body[cut:cut2], body[cut2:]]
            assert await _parse(ctype, [p for p in parts if p]) == items, (cut, cut2)


async def test_a_line_with_two_values_is_not_json(client, ent):
    p = ent["prefix"]
    line = json.dumps(item(f"{p}/two")) + " " + json.dumps(item(f"{p}/three"))
    status, reply, _ = await post(client, ent["headers"], line.encode() + b"\n")
    assert status == 400, reply
    (fail,) = reply["failures"]
    assert fail["position"] == 0 and "line 1 is not JSON" in fail["message"]
    assert not await exists(client, f"{p}/two")


def test_gc_pauses_nest_and_restore_the_collectors_state():
    import gc

    from registry.batch import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer batch is still running
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # disabled before, disabled after
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError
    assert gc.isenabled()


# -- written while read: chunks in one transaction, a client that stalls -----------------------------
@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows go to the store 8 at a time, so a batch of a few dozen items spans several chunks."""
    import registry.write_stream

    monkeypatch.setattr(registry.write_stream, "CHUNK", 8)


@pytest.mark.parametrize("bad", ["exists", "invalid"])
async def test_an_atomic_batch_failing_after_chunks_were_written_writes_nothing(client, ent, small_chunks, bad):
    p = ent["prefix"]
    await _put(client, f"{p}/old-1", ent["headers"], [{"index": 1, "type": "URL", "data": "https://old/1"}])
    items: list[Any] = [item(f"{p}/chunked-{n}", n) for n in range(50)]
    items[40] = item(f"{p}/old-1", 40) if bad == "exists" else {"handle": f"{p}/bad", "values": [{"index": 0}]}
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON), chunk=300)
    assert status == 400, reply
    assert sorted(failures_by_position(reply)) == [40]
    assert reply["written"] is False and reply["created"] == 0
    assert not await exists(client, f"{p}/chunked-0")
    assert await counts(client) == {ent["id"]: 1}
    # Not atomic: the others are written, in one transaction all the same.
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON), params={"atomic": "false"}, chunk=300)
    assert status == 201, reply
    assert (reply["created"], reply["failed"]) == (49, 1)
    assert await exists(client, f"{p}/chunked-0") and await exists(client, f"{p}/chunked-49")
    assert await counts(client) == {ent["id"]: 50}


async def test_an_atomic_batch_after_chunks_still_lists_every_existing_handle(client, ent, small_chunks):
    p = ent["prefix"]
    for n in (3, 45):
        await _put(client, f"{p}/pre-{n}", ent["headers"], [{"index": 1, "type": "URL", "data": "https://old"}])
    items: list[Any] = [item(f"{p}/pre-{n}", n) for n in range(50)]
    items[20] = {"handle": f"{p}/bad"}  # refused: from here on nothing is written, keys are only checked
    status, reply, _ = await post(client, ent["headers"], encode(items, NDJSON))
    assert status == 400, reply
    fails = failures_by_position(reply)
    assert sorted(fails) == [3, 20, 45]
    assert fails[3]["responseCode"] == fails[45]["responseCode"] == 101
    assert not await exists(client, f"{p}/pre-0")


async def test_a_stalling_client_does_not_hold_the_store(client, ent, small_chunks, monkeypatch):
    """While the body stops arriving, the batch's transaction is rolled back, so other writes go on;
    the batch is then written whole when its body is complete."""
    import resolver.http.batch_routes

    monkeypatch.setattr(resolver.http.batch_routes, "STALL", 0.05)
    p = ent["prefix"]
    body = encode([item(f"{p}/slow-{n}", n) for n in range(40)], NDJSON)
    half = body.index(b"\n", len(body) // 2) + 1
    meanwhile: list[int] = []

    async def stalling() -> AsyncIterator[bytes]:
        yield body[:half]
        await asyncio.sleep(0.3)  # the batch has chunks in the store by now, and waits for us
        values = [{"index": 1, "type": "URL", "data": "https://example.com/meanwhile"}]
        r = await asyncio.wait_for(
            client.put(f"/api/handles/{p}/meanwhile", json={"values": values}, headers=ent["headers"]), 10
        )
        meanwhile.append(r.status)
        yield body[half:]

    h = {**ent["headers"], "Content-Type": NDJSON}
    r = await client.post("/api/handles", data=stalling(), headers=h)
    reply = await r.json()
    assert r.status == 201, reply
    assert reply["created"] == 40
    assert meanwhile == [201]
    assert await exists(client, f"{p}/slow-0") and await exists(client, f"{p}/slow-39")
    assert await counts(client) == {ent["id"]: 41}


async def test_concurrent_streamed_batches_each_get_their_transaction(client, ent, small_chunks):
    p = ent["prefix"]
    bodies = [encode([item(f"{p}/c{k}-{n}", n) for n in range(30)], NDJSON) for k in range(3)]
    replies = await asyncio.gather(*(post(client, ent["headers"], b, chunk=200) for b in bodies))
    assert [(status, reply["created"]) for status, reply, _ in replies] == [(201, 30)] * 3
    assert await counts(client) == {ent["id"]: 90}
    assert await exists(client, f"{p}/c2-29")


async def test_an_overwrite_that_races_a_creation_says_retry_not_exists(client, ent, monkeypatch):
    """``overwrite=true`` planned an item as a creation; another writer created the handle before the
    batch wrote it. The item fails with "changed by another writer meanwhile; retry" (its write was
    refused), not "handle already exists", which an overwrite never means."""
    from registry.batch import CHANGED_MEANWHILE

    p = ent["prefix"]
    registry = client.app[STATE_KEY].registry
    apply = registry.writes.apply

    async def racing_apply(plan):  # type: ignore[no-untyped-def]
        await _put(client, f"{p}/raced", ent["headers"], [{"index": 1, "type": "URL", "data": "https://other/"}])
        return await apply(plan)

    monkeypatch.setattr(registry.writes, "apply", racing_apply)
    items = [item(f"{p}/raced", 1), item(f"{p}/calm", 2)]
    status, reply, _ = await post(
        client, ent["headers"], encode(items, NDJSON), params={"overwrite": "true", "atomic": "false"}
    )
    assert status == 201, reply
    assert (reply["created"], reply["failed"]) == (1, 1)
    (failure,) = reply["failures"]
    assert failure["position"] == 0 and failure["message"] == CHANGED_MEANWHILE
