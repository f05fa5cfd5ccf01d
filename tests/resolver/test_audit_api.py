"""The audit log on both stores: every administrative change made through the API is in it, stored
with the change (a refused change leaves no entry), with actor, action, target and source; ``GET
/api/audit`` reads it for the node administrator and the auditor, newest first, paged and narrowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.auth import Identity
from resolver.config import load_config
from resolver.http.app import create_app
from resolver.http.keys import STATE_KEY
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import NODE_ADMIN, basic, make_uscc

ADMIN = basic(NODE_ADMIN, ADMIN_SECRET)


@pytest.fixture
async def node(tmp_path, monkeypatch, store_url) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", ADMIN_SECRET)
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "store": store_url, "native_port": 0})
    async with TestClient(TestServer(create_app(config))) as client:
        yield client


async def entries(client: TestClient, query: str = "", headers: dict[str, str] = ADMIN) -> list[dict[str, Any]]:
    r = await client.get(f"/api/audit{query}", headers=headers)
    assert r.status == 200, await r.text()
    return (await r.json())["entries"]


async def ok(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def test_every_administrative_change_is_recorded(node):
    promoter = await ok(
        await node.post("/api/promoters", json={"name": "P", "uscc": make_uscc(1, "92")}, headers=ADMIN), 201
    )
    other = await ok(
        await node.post("/api/promoters", json={"name": "Q", "uscc": make_uscc(2, "92")}, headers=ADMIN), 201
    )
    body = {"name": "E", "uscc": make_uscc(1), "promoter": promoter["id"]}
    ent = await ok(await node.post("/api/enterprises", json=body, headers=ADMIN), 201)
    prefix = ent["prefix"]
    await ok(await node.patch(f"/api/enterprises/{prefix}", json={"promoter": other["id"]}, headers=ADMIN))
    await ok(await node.patch(f"/api/enterprises/{prefix}", json={"status": "disabled"}, headers=ADMIN))
    await ok(await node.patch(f"/api/enterprises/{prefix}", json={"status": "active"}, headers=ADMIN))
    auditor = await ok(await node.post("/api/auditors", json={"name": "baiyun"}, headers=ADMIN), 201)
    template = {"id": "sku", "fields": [{"index": 2001, "name": "batch", "type": "BATCH"}], "prefix": prefix}
    enterprise = basic(ent["admin"], ent["secret"])
    await ok(await node.post("/api/templates", json=template, headers=enterprise), 201)
    await ok(await node.put(f"/api/templates/sku?prefix={prefix}", json=template, headers=enterprise), 201)
    job = await ok(
        await node.post(
            f"/api/jobs?prefix={prefix}",
            data=b"suffix,URL\nA,https://e.com/a\n",
            headers={**enterprise, "Content-Type": "text/csv"},
        ),
        202,
    )
    for _ in range(500):
        if (await ok(await node.get(job["status_url"], headers=enterprise)))["state"] == "done":
            break
        await asyncio.sleep(0.01)
    await ok(await node.delete("/api/auditors/baiyun", headers=ADMIN))
    registry = node.app[STATE_KEY].registry
    assert registry is not None
    secret = await registry.reset_admin_secret(await registry.caller_of(Identity.parse(NODE_ADMIN)))  # as the CLI

    log = list(reversed(await entries(node, "", basic(NODE_ADMIN, secret))))
    assert [(e["action"], e["target"]) for e in log] == [
        ("promoter.add", make_uscc(1, "92")),
        ("promoter.add", make_uscc(2, "92")),
        ("enterprise.add", prefix),
        ("enterprise.move", prefix),
        ("enterprise.disable", prefix),
        ("enterprise.enable", prefix),
        ("auditor.add", auditor["identity"]),
        ("template.create", "sku@1"),
        ("template.version", "sku@2"),
        ("job.submit", job["id"]),
        ("job.done", job["id"]),
        ("auditor.revoke", auditor["identity"]),
        ("admin.reset-secret", "0.NA/88.118.8"),
    ]
    actors = {e["action"]: e["actor"] for e in log}
    assert actors["enterprise.add"] == NODE_ADMIN and actors["template.create"] == ent["admin"]
    assert actors["job.done"] == ent["admin"]  # on whose behalf the job ran
    sources = {e["action"]: e["source"] for e in log}
    assert sources["enterprise.move"] == "127.0.0.1" and sources["job.done"].startswith("idnode job runner ")
    details = {e["action"]: e["detail"] for e in log}
    assert details["enterprise.move"]["from"] == promoter["id"] and details["enterprise.move"]["to"] == other["id"]
    assert details["enterprise.disable"] == {"was": "active"}
    assert details["job.done"]["created"] == 1 and details["template.version"] == {"prefix": prefix}
    assert ent["secret"] not in str(log) and auditor["secret"] not in str(log)
    assert [e["id"] for e in log] == sorted(e["id"] for e in log)


async def test_a_refused_change_leaves_no_entry(node):
    await ok(await node.post("/api/promoters", json={"name": "P", "uscc": make_uscc(1, "92")}, headers=ADMIN), 201)
    before = await entries(node)
    r = await node.post("/api/promoters", json={"name": "P again", "uscc": make_uscc(1, "92")}, headers=ADMIN)
    assert r.status == 400  # the credit code exists: refused in the store's transaction
    body = {"name": "E", "uscc": make_uscc(1), "promoter": 1, "prefix": "88.118.8.1001"}
    await ok(await node.post("/api/enterprises", json=body, headers=ADMIN), 201)
    r = await node.post("/api/enterprises", json={**body, "uscc": make_uscc(2)}, headers=ADMIN)
    assert r.status == 400  # the prefix is allocated
    after = await entries(node)
    assert [e["action"] for e in after] == ["enterprise.add", *(e["action"] for e in before)]


async def test_reading_the_log(node):
    for n in range(7):
        await ok(
            await node.post("/api/promoters", json={"name": f"P{n}", "uscc": make_uscc(n, "92")}, headers=ADMIN), 201
        )
    page = await (await node.get("/api/audit?limit=3", headers=ADMIN)).json()
    assert len(page["entries"]) == 3 and f"before={page['entries'][-1]['id']}" in page["next"]
    rest = await entries(node, f"?limit=10&before={page['entries'][-1]['id']}")
    assert len(rest) == 4 and "next" not in await (await node.get("/api/audit?limit=10", headers=ADMIN)).json()
    assert [e["target"] for e in await entries(node, f"?target={make_uscc(3, '92')}")] == [make_uscc(3, "92")]
    assert len(await entries(node, "?action=promoter.add")) == 7 and await entries(node, "?action=store.backup") == []
    assert len(await entries(node, f"?actor={quote(NODE_ADMIN)}&action=promoter.add")) == 7
    assert await entries(node, "?actor=300:0.NA/88.118.8.1001") == []
    assert (
        await entries(node, "?since=9000-01-01") == [] and len(await entries(node, "?since=2000-01-01T00:00:00Z")) == 7
    )
    auditor = await ok(await node.post("/api/auditors", json={"name": "b"}, headers=ADMIN), 201)
    assert len(await entries(node, "", basic(auditor["identity"], auditor["secret"]))) == 8
    body = {"name": "E", "uscc": make_uscc(1), "promoter": 1}
    ent = await ok(await node.post("/api/enterprises", json=body, headers=ADMIN), 201)
    assert (await node.get("/api/audit", headers=basic(ent["admin"], ent["secret"]))).status == 403
    assert (await node.get("/api/audit")).status == 401
    for query in ("?limit=0", "?limit=1001", "?since=yesterday", "?before=0", "?before=²"):
        r = await node.get(f"/api/audit{query}", headers=ADMIN)
        assert r.status == 400 and (await r.json())["responseCode"] == 4, query


async def test_secret_rotations_are_recorded_with_the_new_key_never(node):
    """The console's "rotate my key" and "reset an enterprise's key" (registry.secret_rotation)."""
    await ok(await node.post("/api/promoters", json={"name": "P", "uscc": make_uscc(1, "92")}, headers=ADMIN), 201)
    ent = await ok(
        await node.post("/api/enterprises", json={"name": "E", "uscc": make_uscc(1), "promoter": 1}, headers=ADMIN), 201
    )
    registry = node.app[STATE_KEY].registry
    assert registry is not None
    _, reset = await registry.reset_enterprise_secret(
        await registry.caller_of(Identity.parse(NODE_ADMIN)), ent["prefix"]
    )
    rotated = await registry.rotate_own_secret(await registry.caller_of(Identity.parse(ent["admin"])))
    log = await entries(node, "?limit=2")
    assert [(e["action"], e["target"], e["actor"]) for e in log] == [
        ("secret.rotate", ent["admin"], ent["admin"]),
        ("enterprise.reset-secret", ent["admin"], NODE_ADMIN),
    ]
    assert reset not in str(log) and rotated not in str(log)
