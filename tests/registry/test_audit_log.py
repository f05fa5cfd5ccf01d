"""The audit log on both stores: append, read back newest first, page and filter; bad entries refused."""

from __future__ import annotations

import json

import pytest

from registry.audit import MAX_PAGE, AuditLog
from registry.errors import InvalidRequest
from registry.namespace import Namespace, NodeSettings
from registry.stores import open_store

CLI = "idnode CLI, operator@host"


@pytest.fixture
async def log(store_url):  # type: ignore[no-untyped-def]
    store = await open_store(store_url)
    clock = iter(range(1_700_000_000, 1_800_000_000, 60))
    yield AuditLog(Namespace(store, NodeSettings(), lambda: next(clock)))
    await store.close()


async def test_entries_come_back_newest_first_with_what_was_appended(log):
    first = await log.append("300:0.NA/88.118.8", "admin.reset-secret", "0.NA/88.118.8", source=CLI)
    second = await log.append(
        "300:0.NA/88.118.8", "store.backup", "/srv/backups/a.db", source=CLI, detail={"bytes": 4096, "名": "值"}
    )
    assert second.id > first.id and second.at > first.at
    entries = await log.entries()
    assert entries == [second, first]
    assert json.loads(entries[0].detail) == {"bytes": 4096, "名": "值"}
    assert entries[1].detail == "{}" and entries[1].source == CLI


async def test_pages_and_filters(log):
    made = []
    for n in range(7):
        action = "store.backup" if n % 2 else "admin.reset-secret"
        actor = "300:0.NA/88.118.8" if n < 5 else "300:0.NA/88.118.8.1001"
        made.append(await log.append(actor, action, f"target-{n % 3}", source=CLI))
    newest_first = list(reversed(made))
    page1 = await log.entries(limit=3)
    page2 = await log.entries(limit=3, before_id=page1[-1].id)
    page3 = await log.entries(limit=3, before_id=page2[-1].id)
    assert page1 + page2 + page3 == newest_first
    assert [e.id for e in await log.entries(action="store.backup")] == [
        e.id for e in newest_first if e.action == "store.backup"
    ]
    assert [e.id for e in await log.entries(target="target-1")] == [
        e.id for e in newest_first if e.target == "target-1"
    ]
    since = made[4].at
    assert [e.id for e in await log.entries(since=since)] == [e.id for e in newest_first if e.at >= since]
    both = await log.entries(action="admin.reset-secret", target="target-0")
    assert [e.id for e in both] == [made[6].id, made[0].id]
    assert await log.entries(action="no.such-action") == []
    assert [e.id for e in await log.entries(actor="300:0.NA/88.118.8.1001")] == [made[6].id, made[5].id]
    mine = await log.entries(actor="300:0.NA/88.118.8", action="store.backup")
    assert [e.id for e in mine] == [made[3].id, made[1].id]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("300:0.NA/88.118.8", "Reset Secret", "x"), {"source": CLI}, "audit action"),
        (("300:0.NA/88.118.8", "admin.", "x"), {"source": CLI}, "audit action"),
        (("", "admin.reset-secret", "x"), {"source": CLI}, "audit actor"),
        (("300:0.NA/88.118.8", "admin.reset-secret", "x" * 1001), {"source": CLI}, "audit target"),
        (("300:0.NA/88.118.8", "admin.reset-secret", "x"), {"source": ""}, "audit source"),
        (("300:0.NA/88.118.8", "admin.reset-secret", "x"), {"source": CLI, "detail": {"k": "v" * 9000}}, "detail"),
    ],
)
async def test_malformed_entries_are_refused_and_not_stored(log, args, kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        await log.append(*args, **kwargs)
    assert await log.entries() == []


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": MAX_PAGE + 1}, {"before_id": 0}])
async def test_query_bounds(log, kwargs):
    with pytest.raises(InvalidRequest):
        await log.entries(**kwargs)


async def test_the_actor_filter_reads_an_index(store_url):  # type: ignore[no-untyped-def]
    """Filtering by who did it must not scan a log of years: the store reads ``audit_log_actor``."""
    store = await open_store(store_url)
    try:
        sql = "SELECT id FROM audit_log WHERE actor = {m} ORDER BY id DESC LIMIT 50"
        if store_url.startswith("sqlite"):
            import sqlite3

            with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
                plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + sql.format(m="?"), ("x",)))
        else:
            import asyncpg

            conn = await asyncpg.connect(store_url)
            try:
                await conn.execute("SET enable_seqscan = off")  # an empty table: ask whether an index could serve
                rows = await conn.fetch("EXPLAIN " + sql.format(m="$1"), "x")
                plan = " ".join(r[0] for r in rows)
            finally:
                await conn.close()
        assert "audit_log_actor" in plan, plan
    finally:
        await store.close()
