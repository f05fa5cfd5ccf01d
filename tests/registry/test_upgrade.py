"""Schema migrations are forward-only: a store written by an earlier release upgrades in place with
nothing lost, and a store a newer release wrote is refused, untouched, with a clear message.

The SQLite store in ``tests/fixtures/release-0.1.0.db`` was written by idnode 0.1.0 (schema 3)
through its own API (``tests/fixtures/make_release_store.py``); ``release-0.1.0.json`` is what it
held then.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from registry.auth import Identity
from registry.errors import StoreTooNew
from registry.service import Registry
from registry.stores import open_store, postgres, sqlite
from resolver.config import load_config
from resolver.http.app import create_app
from tests.fixtures.make_release_store import snapshot
from tests.resolver.conftest import NODE_ADMIN, basic

FIXTURES = Path(__file__).parent.parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "release-0.1.0.json").read_text(encoding="utf-8"))


@pytest.fixture
def old_store(tmp_path) -> Path:  # type: ignore[no-untyped-def]
    db = tmp_path / "data" / "idnode.db"
    db.parent.mkdir(mode=0o700)
    shutil.copyfile(FIXTURES / "release-0.1.0.db", db)
    return db


def user_version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


async def test_the_fixture_is_what_the_release_wrote(old_store):
    assert user_version(old_store) == MANIFEST["schema_version"] == 3 < sqlite.SCHEMA_VERSION


async def test_a_release_0_1_0_store_upgrades_in_place_with_nothing_lost(old_store):
    url = f"sqlite:///{old_store}"
    after = await snapshot(url)  # opening it runs the migrations
    assert user_version(old_store) == sqlite.SCHEMA_VERSION
    for key in ("handles", "promoters", "enterprises", "attributions", "registration_counts", "templates"):
        assert after[key] == MANIFEST[key], key
    assert after["current_version"] == MANIFEST["current_version"]

    store = await open_store(url)
    try:
        with sqlite3.connect(old_store) as conn:
            (key,) = conn.execute("SELECT key FROM idempotency").fetchone()
        assert MANIFEST["idempotency_key"] in key and await store.get_idempotent(key) is not None
        registry = Registry(store)
        secrets = {NODE_ADMIN: MANIFEST["admin_secret"], MANIFEST["auditor"]["identity"]: MANIFEST["auditor"]["secret"]}
        secrets |= {f"300:0.NA/{p}": s for p, s in MANIFEST["enterprise_secrets"].items()}
        for identity, secret in secrets.items():
            assert await registry.authenticator.authenticate(identity, secret) == Identity.parse(identity)
        entry = await registry.audit.append(NODE_ADMIN, "store.upgrade-test", "0.NA/88.118.8", source="test")
        assert await registry.audit.entries() == [entry]  # the table the upgrade added
        registry.close()
    finally:
        await store.close()
    assert user_version(old_store) == sqlite.SCHEMA_VERSION  # opening again changes nothing


async def test_the_upgrade_queues_every_handle_for_the_value_index(old_store):
    """Migration 9 queues the release's handles: once the indexer has run, reverse lookup finds them."""
    from registry.value_index import ValueIndexer

    store = await open_store(f"sqlite:///{old_store}")
    try:
        assert await store.value_index_backlog() == len(MANIFEST["handles"])
        assert await ValueIndexer(store).run_once() == len(MANIFEST["handles"])
        registry = Registry(store)
        admin = await registry.caller_of(Identity.parse(NODE_ADMIN))
        found = await registry.search.search(
            admin, {"URL": "https://trace.example.com/*"}, prefix=None, page=0, limit=1000
        )
        urls = {
            handle
            for handle, record in MANIFEST["handles"].items()
            if any(
                v[1] == "URL" and bytes.fromhex(v[2]).startswith(b"https://trace.example.com/")
                for v in record["values"]
            )
        }
        assert urls and {h.upper() for h in found} == {h.upper() for h in urls}
        registry.close()
    finally:
        await store.close()


async def test_the_upgraded_store_serves_its_final_report_byte_for_byte_and_takes_writes(old_store, monkeypatch):
    monkeypatch.setenv("IDNODE_ADMIN_SECRET", "not-used: the store has its admin")
    config = load_config(
        env={}, overrides={"data_dir": str(old_store.parent), "store": f"sqlite:///{old_store}", "native_port": 0}
    )
    admin = basic(NODE_ADMIN, MANIFEST["admin_secret"])
    async with TestClient(TestServer(create_app(config))) as client:
        r = await client.get(f"/api/promotion/tallies?{MANIFEST['tally_query']}", headers=admin)
        assert r.status == 200
        assert hashlib.sha256(await r.read()).hexdigest() == MANIFEST["final_report_sha256"]
        prefix, secret = next(iter(MANIFEST["enterprise_secrets"].items()))
        creds = basic(f"300:0.NA/{prefix}", secret)
        r = await client.get(f"/api/handles/{prefix}/SKU-1-1")
        assert r.status == 200
        body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/after-upgrade"}]}
        r = await client.put(f"/api/handles/{prefix}/AFTER-UPGRADE", json=body, headers=creds)
        assert r.status == 201, await r.text()
        r = await client.get(f"/api/handles/{prefix}/AFTER-UPGRADE")
        assert (await r.json())["values"][0]["data"]["value"] == "https://example.com/after-upgrade"


async def test_a_sqlite_store_from_a_newer_release_is_refused_untouched(old_store):
    newer = sqlite.SCHEMA_VERSION + 1
    with sqlite3.connect(old_store) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    before = dump(old_store)
    with pytest.raises(StoreTooNew) as caught:
        await open_store(f"sqlite:///{old_store}")
    message = caught.value.message
    assert f"schema version {newer}, newer than this idnode knows (up to {sqlite.SCHEMA_VERSION})" in message
    assert str(old_store) in message and "restore a backup" in message
    assert dump(old_store) == before and user_version(old_store) == newer


async def test_a_postgresql_store_of_an_earlier_schema_upgrades_with_nothing_lost(pg_store_url, monkeypatch):
    earlier = [(n, sql) for n, sql in postgres.MIGRATIONS if n <= 3]
    monkeypatch.setattr(postgres, "MIGRATIONS", earlier)
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", 3)
    store = await open_store(pg_store_url)
    promoter = await store.add_promoter("Baiyun Promotion Co.", "92440111000000001X", now=1_736_128_800)
    await store.set_meta("report_signing_key", "kept")
    await store.close()

    monkeypatch.undo()
    store = await open_store(pg_store_url)
    try:
        assert await store.list_promoters() == [promoter]
        assert await store.get_meta("report_signing_key") == "kept"
        entry_id = await store.add_audit(1, NODE_ADMIN, "admin.reset-secret", "0.NA/88.118.8", "test", "{}")
        assert [e.id for e in await store.list_audit(limit=5)] == [entry_id]
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_store_url)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()
    assert versions == [n for n, _ in postgres.MIGRATIONS]


async def test_a_postgresql_store_from_a_newer_release_is_refused_untouched(pg_store_url):
    store = await open_store(pg_store_url)
    await store.close()
    newer = postgres.SCHEMA_VERSION + 1
    conn = await asyncpg.connect(pg_store_url)
    try:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", newer)
        await conn.execute("CREATE TABLE from_the_future (x INTEGER)")
        with pytest.raises(StoreTooNew, match=f"schema version {newer}, newer than this idnode knows"):
            await open_store(pg_store_url)
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [*(n for n, _ in postgres.MIGRATIONS), newer]
    finally:
        await conn.close()
