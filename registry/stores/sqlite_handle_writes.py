"""Writing identifiers in the SQLite store: ``write`` and :func:`apply_writes`, which creates, replaces and
deletes handles and moves their listing buckets, registration counters and value-index queue in
the caller's transaction.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from registry.days import day_number, hour_of
from registry.errors import InvalidRequest
from registry.model import Record
from registry.packing import pack_record
from registry.stores.base import (
    LIST_BUCKET,
    MUST_NOT_EXIST,
    AuditRecord,
    HandleWrite,
    WriteOutcome,
    WriteResult,
)
from registry.stores.sqlite_audit import insert_audit
from registry.stores.sqlite_part import SQLitePart
from registry.stores.sqlite_values import queue_for_index

__all__ = ["SQLiteHandleWrites", "apply_writes", "existing_versions", "move_counters"]


class SQLiteHandleWrites(SQLitePart):
    """``registry.stores.base.HandleStore.write``: every identifier change goes through here."""

    async def write(
        self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True, audit: AuditRecord | None = None
    ) -> list[WriteResult]:
        def run(c: sqlite3.Connection) -> list[WriteResult]:
            results = apply_writes(c, writes, now, atomic)
            if audit is not None and any(r.ok for r in results):
                insert_audit(c, audit)
            return results

        async with self._write_lock:
            return await self._write(run)


def existing_versions(c: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        chunk = list(keys[i : i + 500])
        marks = ",".join("?" * len(chunk))
        out.update(c.execute(f"SELECT hkey, version FROM handles WHERE hkey IN ({marks})", chunk).fetchall())
    return out


def apply_writes(c: sqlite3.Connection, writes: Sequence[HandleWrite], now: int, atomic: bool) -> list[WriteResult]:
    """Apply ``writes`` inside the caller's transaction. Every expectation is checked before anything
    is written, so an atomic call with one failing item changes nothing."""
    keys = [w.key for w in writes]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("the same handle appears more than once in one write")
    current = existing_versions(c, keys)
    results: list[WriteResult | None] = []
    for w in writes:
        have = current.get(w.key)
        if w.expect == MUST_NOT_EXIST and have is not None:
            results.append(WriteResult(WriteOutcome.EXISTS, have))
        elif have is None and (w.values is None or w.expect >= 0):
            results.append(WriteResult(WriteOutcome.MISSING))
        elif w.expect >= 0 and have != w.expect:
            results.append(WriteResult(WriteOutcome.STALE, have))
        else:
            results.append(None)
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo or (atomic and len(todo) != len(writes)):
        return [r or WriteResult(WriteOutcome.NOT_WRITTEN) for r in results]
    version = int(c.execute("UPDATE meta SET value = value + 1 WHERE key = 'write_seq' RETURNING value").fetchone()[0])
    day_now = day_number(now)
    written: list[int] = []  # handle ids, for the value index
    counts: dict[tuple[int, int], int] = {}
    buckets: dict[tuple[str, int], int] = {}
    inserts: list[tuple] = []
    for i in todo:
        w = writes[i]
        if w.values is None:
            hid, prefix, eid, created_at = c.execute(
                "DELETE FROM handles WHERE hkey = ? RETURNING id, prefix, enterprise_id, created_at", (w.key,)
            ).fetchone()
            written.append(hid)
            bk = (prefix, hid // LIST_BUCKET)
            buckets[bk] = buckets.get(bk, 0) - 1
            if eid is not None:
                ck = (eid, day_number(created_at))
                counts[ck] = counts.get(ck, 0) - 1
            results[i] = WriteResult(WriteOutcome.DELETED, version)
            continue
        packed = pack_record(Record(handle=w.handle, values=w.values, version=version))
        if w.key in current:
            (hid,) = c.execute(
                "UPDATE handles SET record = ?, version = ?, updated_at = ? WHERE hkey = ? RETURNING id",
                (packed, version, now, w.key),
            ).fetchone()
            written.append(hid)
            results[i] = WriteResult(WriteOutcome.REPLACED, version)
            continue
        inserts.append((w.key, w.prefix, w.enterprise_id, now, now, version, packed))
        results[i] = WriteResult(WriteOutcome.CREATED, version)
        if w.enterprise_id is not None:
            ck = (w.enterprise_id, day_now)
            counts[ck] = counts.get(ck, 0) + 1
    if inserts:
        first = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM handles").fetchone()[0]
        rows = [(first + n, *row) for n, row in enumerate(inserts)]
        c.executemany(
            "INSERT INTO handles (id, hkey, prefix, enterprise_id, created_at, updated_at, version, record) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for row in rows:
            written.append(row[0])
            bk = (row[2], row[0] // LIST_BUCKET)
            buckets[bk] = buckets.get(bk, 0) + 1
    queue_for_index(c, written)
    move_counters(c, buckets, counts, now)
    return [r for r in results if r is not None]  # every entry is filled by now


def move_counters(
    c: sqlite3.Connection, buckets: dict[tuple[str, int], int], counts: dict[tuple[int, int], int], now: int
) -> None:
    """In the write's transaction: the listing buckets ((prefix, bucket) → delta) and registration
    counters ((enterprise id, creation day) → delta) a write moved."""
    day_now, hour_now = day_number(now), hour_of(now)
    if buckets:
        c.executemany(
            "INSERT INTO list_buckets (prefix, bucket, n) VALUES (?, ?, ?) "
            "ON CONFLICT (prefix, bucket) DO UPDATE SET n = n + excluded.n",
            [(p, b, n) for (p, b), n in buckets.items() if n],
        )
    if counts:
        c.executemany(
            "INSERT INTO registration_counts (enterprise_id, day, hour, delta) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (enterprise_id, day, hour) DO UPDATE SET delta = delta + excluded.delta",
            [(eid, day, hour_now, n) for (eid, day), n in counts.items() if n],
        )
        months: dict[tuple[int, int], int] = {}
        for (eid, day), n in counts.items():
            months[(day // 100, eid)] = months.get((day // 100, eid), 0) + n
        change = day_now // 100
        c.executemany(
            "INSERT INTO registration_months (month, change_month, enterprise_id, delta) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (enterprise_id, month, change_month) DO UPDATE SET delta = delta + excluded.delta",
            [(month, change, eid, n) for (month, eid), n in months.items() if n],
        )
