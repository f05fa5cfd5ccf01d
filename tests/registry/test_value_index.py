"""The value index and reverse lookup on both stores: writes queue the handles they write (in their
transaction), the indexer indexes them, searches find them by exact value, fixed start or infix
pattern (the trigram index), only under what the caller administers; hits are checked against the
current record; secrets, keys and non-public values are never searchable."""

from __future__ import annotations

from typing import Any

import pytest

from registry.auth import Caller, Identity
from registry.errors import InvalidRequest, PermissionDenied
from registry.model import ADMIN_READ, ADMIN_WRITE, HandleValue, parse_handle, prefix_handle_of
from registry.service import NodeSettings, Registry
from registry.stores import open_store
from registry.value_index import ValueIndexer, condition, entries, matches
from tests.conftest import ADMIN_SECRET
from tests.resolver.conftest import make_uscc

NODE = "88.118.8"


def admin() -> Caller:
    handle = prefix_handle_of(NODE)
    return Caller(identity=Identity(300, handle, parse_handle(handle).key), node_admin=True)


def enterprise_caller(prefix: str) -> Caller:
    handle = prefix_handle_of(prefix)
    return Caller(identity=Identity(300, handle, parse_handle(handle).key))


def url(data: str, index: int = 1, **kw: Any) -> HandleValue:
    return HandleValue(index=index, type="URL", data=data.encode(), **kw)


@pytest.fixture
async def node(store_url):  # type: ignore[no-untyped-def]
    store = await open_store(store_url)
    registry = Registry(store, NodeSettings(prefix=NODE))
    await registry.bootstrap(ADMIN_SECRET, None)
    promoter = await registry.add_promoter(admin(), "P", make_uscc(1, "92"))
    a, _ = await registry.add_enterprise(admin(), "A", make_uscc(1), promoter.id)
    b, _ = await registry.add_enterprise(admin(), "B", make_uscc(2), promoter.id)
    indexer = ValueIndexer(store, chunk=7)  # small chunks: several transactions
    yield registry, indexer, a.prefix, b.prefix
    registry.close()
    await store.close()


async def put(registry: Registry, handle: str, *values: HandleValue, caller: Caller | None = None) -> None:
    await registry.put_handle(caller or admin(), registry.parse(handle), list(values))


async def search(registry: Registry, caller: Caller, prefix: str | None = None, **terms: str) -> list[str]:
    return await registry.search.search(caller, terms, prefix=prefix, page=0, limit=100)


async def test_writes_queue_handles_and_the_indexer_makes_them_searchable(node):
    registry, indexer, a, b = node
    for n in range(20):
        await put(registry, f"{a}/SKU-{n}", url(f"https://Shop.Example.com/p/{n}"), HandleValue(2, "EMAIL", b"qa@a.cn"))
    await put(registry, f"{b}/B-1", url("https://other.example.org/p/1"))
    assert await registry.store.value_index_backlog() >= 21
    assert await search(registry, admin(), URL="*example.com/p/1*") == []  # not indexed yet
    assert await indexer.run_once() >= 21
    assert await registry.store.value_index_backlog() == 0
    assert await indexer.run_once() == 0

    found = await search(registry, admin(), URL="*shop.example.com/p/1*")  # case does not matter
    assert found == [f"{a}/SKU-1", *(f"{a}/SKU-1{n}" for n in range(10))]  # listing order
    assert await search(registry, admin(), URL="https://shop.example.com/p/7") == [f"{a}/SKU-7"]  # exact
    assert await search(registry, admin(), URL="https://other*") == [f"{b}/B-1"]  # a fixed start
    assert await search(registry, admin(), url="*/p/1", EMAIL="QA@*") == [f"{a}/SKU-1"]  # every term holds
    assert await search(registry, admin(), URL="*example*") == [*(f"{a}/SKU-{n}" for n in range(20)), f"{b}/B-1"]
    page = await registry.search.search(admin(), {"URL": "*example*"}, prefix=None, page=2, limit=8)
    assert page == [f"{a}/SKU-{n}" for n in range(16, 20)] + [f"{b}/B-1"]


async def test_callers_see_what_they_administer(node):
    registry, indexer, a, b = node
    await put(registry, f"{a}/A-1", url("https://same.example/x"))
    await put(registry, f"{b}/B-1", url("https://same.example/x"))
    await indexer.run_once()
    assert await search(registry, admin(), URL="*same.example*") == [f"{a}/A-1", f"{b}/B-1"]
    assert await search(registry, enterprise_caller(a), URL="*same.example*") == [f"{a}/A-1"]
    assert await search(registry, enterprise_caller(b), URL="*same.example*") == [f"{b}/B-1"]
    assert await search(registry, admin(), prefix=b, URL="*same.example*") == [f"{b}/B-1"]
    with pytest.raises(PermissionDenied):
        await search(registry, enterprise_caller(a), prefix=b, URL="*same.example*")
    stranger = Caller(identity=Identity(300, f"{a}/somebody", parse_handle(f"{a}/somebody").key))
    assert await search(registry, stranger, URL="*same.example*") == []  # administers nothing
    with pytest.raises(PermissionDenied):
        await search(registry, Caller(identity=admin().identity, role="auditor"), URL="*same.example*")


async def test_hits_are_checked_against_the_record_as_it_is_now(node):
    registry, indexer, a, _ = node
    await put(registry, f"{a}/C-1", url("https://old.example/c"))
    await put(registry, f"{a}/C-2", url("https://old.example/d"))
    await indexer.run_once()
    await put(registry, f"{a}/C-1", url("https://new.example/c"))  # changed, not yet re-indexed
    await registry.delete(admin(), registry.parse(f"{a}/C-2"))
    assert await search(registry, admin(), URL="*old.example*") == []
    assert await search(registry, admin(), URL="*new.example*") == []  # found once it is indexed again
    await indexer.run_once()
    assert await search(registry, admin(), URL="*new.example*") == [f"{a}/C-1"]
    assert await search(registry, admin(), URL="*old.example*") == []


async def test_secrets_keys_and_private_values_are_not_searchable(node):
    registry, indexer, a, _ = node
    private = HandleValue(2, "EMAIL", b"hidden@example.com", permissions=ADMIN_READ | ADMIN_WRITE)
    await put(
        registry,
        f"{a}/D-1",
        url("https://d.example/1"),
        private,
        HandleValue(300, "HS_SECKEY", b"a-plain-secret-key"),
        HandleValue(4, "NOTE", "长城 汽车".encode()),
    )
    await indexer.run_once()
    record = await registry.read_record(registry.parse(f"{a}/D-1").key)
    assert record is not None
    indexed = {(kind, text) for _, kind, text in entries(await _packed(registry, f"{a}/D-1"))}
    assert indexed == {("URL", "https://d.example/1"), ("NOTE", "长城 汽车")}
    assert await search(registry, admin(), EMAIL="*hidden@example*") == []
    assert await search(registry, admin(), NOTE="*长城 汽*") == [f"{a}/D-1"]
    for type_ in ("HS_SECKEY", "HS_ADMIN", "hs_site"):
        with pytest.raises(InvalidRequest, match="not searchable"):
            await search(registry, admin(), **{type_: "*abc*"})


async def _packed(registry: Registry, handle: str) -> bytes:
    row = await registry.store.get(registry.parse(handle).key)
    assert row is not None
    return row.packed


@pytest.mark.parametrize(
    ("pattern", "words"),
    [("*ab*", "3 characters in a row"), ("*", "3 characters"), ("", "1-1024 characters"), ("x" * 1025, "1-1024")],
)
def test_patterns_the_index_cannot_serve_are_refused(pattern, words):
    with pytest.raises(InvalidRequest, match=words):
        condition("URL", pattern)


def test_wildcards_and_special_characters():
    record_values = ("https://e.com/a_b%c[d]?e", "plain")
    from registry.model import Record

    record = Record("88.118.8.1001/x", tuple(url(v, i + 1) for i, v in enumerate(record_values)))
    assert matches(record, [condition("URL", "*a_b%c[d]?e")])
    assert matches(record, [condition("URL", "https://e.com/*[d]*")])
    assert not matches(record, [condition("URL", "*axb*")])  # _ is no wildcard
    assert not matches(record, [condition("URL", "*a_b%c[x]*")])
    c = condition("URL", "*E.com/A_b%*")
    assert (c.glob, c.like, c.infix, c.exact) == ("*e.com/a_b%*", "%e.com/a\\_b\\%%", True, None)
    assert condition("URL", "ab[c]?").glob == "ab[[]c][?]"


async def test_a_postgresql_store_upgraded_to_the_value_index_queues_its_handles(pg_store_url, monkeypatch):
    """Migration 9 queues the handles a store already holds (in rows of 2,000 ids): the indexer then
    makes them searchable."""
    import asyncpg

    from registry.model import Record
    from registry.packing import pack_record, unpack_record
    from registry.stores import postgres
    from registry.stores.postgres_handle_writes import HANDLES_COPY_COLUMNS

    monkeypatch.setattr(postgres, "MIGRATIONS", [(n, sql) for n, sql in postgres.MIGRATIONS if n < 9])
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", 8)
    store = await open_store(pg_store_url)
    await store.close()
    conn = await asyncpg.connect(pg_store_url)
    try:  # rows as the release before wrote them
        rows = []
        for n in range(2500):
            handle = f"88.118.8.1001/OLD-{n}"
            record = pack_record(Record(handle, (url(f"https://old.example/{n}"),), 1))
            rows.append(("88.118.8.1001", n + 1, parse_handle(handle).key, handle, None, 0, 19700101, 0, 1, record))
        await conn.copy_records_to_table(
            "handles",
            records=rows,
            columns=HANDLES_COPY_COLUMNS,
        )
    finally:
        await conn.close()
    monkeypatch.undo()
    store = await open_store(pg_store_url)
    try:
        assert await store.value_index_backlog() == 2500
        assert await ValueIndexer(store).run_once() == 2500
        found = await store.search_values([condition("URL", "*old.example/249*")], None, 100, 0)
        handles = sorted(unpack_record(p).handle for p in found)
        assert handles == sorted(f"88.118.8.1001/OLD-{n}" for n in (249, *range(2490, 2500)))
    finally:
        await store.close()
