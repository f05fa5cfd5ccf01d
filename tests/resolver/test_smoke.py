"""A first end-to-end pass through the REST API on the embedded store."""

from __future__ import annotations


async def test_prefix_handle_is_served(client):
    r = await client.get("/api/handles/0.NA/88.118.8")
    assert r.status == 200
    body = await r.json()
    assert body["handle"] == "0.NA/88.118.8"
    types = {v["type"] for v in body["values"]}
    assert "HS_ADMIN" in types and "HS_SITE" in types
    assert "HS_SECKEY" not in types  # not publicly readable


async def test_enterprise_registers_under_its_prefix_only(client, onboard):
    a = await onboard()
    b = await onboard()
    assert a["prefix"] == "88.118.8.1001" and b["prefix"] == "88.118.8.1002"
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/p/1"}]}
    r = await client.put(f"/api/handles/{a['prefix']}/SKU-1", json=body, headers=a["headers"])
    assert r.status == 201, await r.text()
    r = await client.put(f"/api/handles/{b['prefix']}/SKU-1", json=body, headers=a["headers"])
    assert r.status == 403
    assert (await r.json())["responseCode"] == 400
    r = await client.get(f"/api/handles/{b['prefix']}/SKU-1")
    assert r.status == 404
