"""Writing identifiers in the PostgreSQL store: ``write``, the version lock and existence check
(``_check``), the outcome rule (:func:`classify`) and ``_apply``, which runs the one statement of
:func:`_apply_sql` or COPYs large creations (:data:`COPY_THRESHOLD`) and moves listing buckets,
registration counters and the value-index queue in the same transaction. How and why: the
"Versions" and "Writes" parts of :mod:`registry.stores.postgres`.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from registry.days import day_number, hour_of
from registry.errors import InvalidRequest, ServerError
from registry.model import HandleValue, Record
from registry.packing import pack_head, pack_record, pack_tail
from registry.stores.base import LIST_BUCKET, MUST_NOT_EXIST, AuditRecord, HandleWrite, WriteOutcome, WriteResult
from registry.stores.postgres_audit import insert_audit
from registry.stores.postgres_part import Attempt, PostgresPart
from registry.stores.postgres_values import QUEUE_ROW

__all__ = [
    "COPY_THRESHOLD",
    "HANDLES_COPY_COLUMNS",
    "PACK_IN_THREAD",
    "PackedRecords",
    "PostgresHandleWrites",
    "WritePlan",
    "classify",
]

COPY_THRESHOLD = 1000  # created rows; from here on they go in with COPY rather than INSERT … unnest

PACK_IN_THREAD = 2000  # writes; from here on records are packed on a worker thread

_LOCK = "UPDATE idnode_state SET version = version + 1 RETURNING version, next_id"

# Key lookups are written as LATERAL … LIMIT 1 so that they stay one index probe per key whatever
# the planner estimates (a join it could flatten might become a hash join over the whole table).
_CHECK = (
    "SELECT k.ord - 1, h.version, h.prefix, h.id, h.enterprise_id, h.created_day "
    "FROM unnest($1::text[]) WITH ORDINALITY k(key, ord) CROSS JOIN LATERAL ("
    ' SELECT version, prefix, id, enterprise_id, created_day FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1'
    ") h"
)

# The columns a new row fills, in COPY order (the benchmarks' baseline COPYs the same).
HANDLES_COPY_COLUMNS = [
    "prefix",
    "id",
    "hkey",
    "handle",
    "enterprise_id",
    "created_at",
    "created_day",
    "updated_at",
    "version",
    "record",
]


@functools.cache
def _apply_sql(deletes: bool, replaces: bool, inserts: bool, ids: bool, buckets: bool, counters: bool) -> str:
    """The one statement that applies a checked call, with only the parts it needs. Placeholders are
    ``@name``; :func:`_numbered` turns them into ``$n``."""
    # Every handle written waits for the value index (registry.value_index), queued in this transaction:
    # a queue row holds the ids of up to QUEUE_ROW handles (a row per handle cost a batch a fifth more).
    ctes: list[str] = [
        "q AS (INSERT INTO value_index_queue (hids, prefixes)"
        " SELECT array_agg(u.h ORDER BY u.o), array_agg(u.p ORDER BY u.o)"
        " FROM unnest(@q_hids::bigint[], @q_prefixes::text[]) WITH ORDINALITY u(h, p, o)"
        f" GROUP BY (u.o - 1) / {QUEUE_ROW} RETURNING 1)"
    ]
    counts: list[str] = ["(SELECT count(*) FROM q) AS queued"]
    if deletes:
        ctes.append("d AS (DELETE FROM handles WHERE hkey = ANY(@del_keys::text[]) RETURNING 1)")
        counts.append("(SELECT count(*) FROM d) AS deleted")
    if replaces:
        ctes.append(
            "u AS (UPDATE handles h SET record = v.record, handle = v.handle, version = @version::bigint,"
            " updated_at = @now::bigint"
            " FROM unnest(@upd_keys::text[], @upd_handles::text[], @upd_records::bytea[]) v(key, handle, record)"
            ' WHERE h.hkey = (v.key COLLATE "C") RETURNING 1)'
        )
        counts.append("(SELECT count(*) FROM u) AS replaced")
    if inserts:
        ctes.append(
            "i AS (INSERT INTO handles (prefix, id, hkey, handle, enterprise_id, created_at, created_day,"
            " updated_at, version, record)"
            " SELECT v.prefix, v.id, v.key, v.handle, v.eid, @now::bigint, @day::integer, @now::bigint,"
            " @version::bigint, v.record"
            " FROM unnest(@ins_prefixes::text[], @ins_ids::bigint[], @ins_keys::text[], @ins_handles::text[],"
            " @ins_eids::bigint[], @ins_records::bytea[]) v(prefix, id, key, handle, eid, record) RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM i) AS created")
    if ids:
        ctes.append("s AS (UPDATE idnode_state SET next_id = next_id + @id_span::bigint RETURNING 1)")
        counts.append("(SELECT count(*) FROM s) AS state")
    if buckets:
        ctes.append(
            "b AS (INSERT INTO list_buckets (prefix, bucket, n)"
            " SELECT * FROM unnest(@b_prefixes::text[], @b_buckets::bigint[], @b_deltas::bigint[])"
            " ON CONFLICT (prefix, bucket) DO UPDATE SET n = list_buckets.n + excluded.n RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM b) AS buckets")
    if counters:
        ctes.append(
            "c AS (INSERT INTO registration_counts (enterprise_id, day, hour, delta)"
            " SELECT v.eid, v.day, @hour::bigint, v.delta"
            " FROM unnest(@c_eids::bigint[], @c_days::integer[], @c_deltas::bigint[]) v(eid, day, delta)"
            " ON CONFLICT (enterprise_id, day, hour)"
            " DO UPDATE SET delta = registration_counts.delta + excluded.delta RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM c) AS counters")
        ctes.append(
            "m AS (INSERT INTO registration_months (month, change_month, enterprise_id, delta)"
            " SELECT v.day / 100, @change_month::integer, v.eid, SUM(v.delta)"
            " FROM unnest(@c_eids::bigint[], @c_days::integer[], @c_deltas::bigint[]) v(eid, day, delta)"
            " GROUP BY 1, 3"
            " ON CONFLICT (enterprise_id, month, change_month)"
            " DO UPDATE SET delta = registration_months.delta + excluded.delta RETURNING 1)"
        )
        counts.append("(SELECT count(*) FROM m) AS months")
    return "WITH " + ",\n".join(ctes) + "\nSELECT " + ", ".join(counts)


@functools.cache
def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``@name`` placeholders → ``$n``: (sql, the argument names in order)."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"@([a-z_]+)", number, sql), tuple(names)


# -- packing: everything but the version is packed before the write lock -------------------------
_head = pack_head  # the bytes a packed record starts with, up to and including its version
_tail = pack_tail  # the bytes after it: _head(v) + _tail(h, vs) is pack_record(Record(h, vs, v))


def _splice_ok() -> bool:
    """True when ``_head(v) + _tail(...)`` is byte-for-byte ``pack_record`` (the layout is as assumed)."""
    try:
        values = (HandleValue(index=1, type="URL", data=b"x"), HandleValue(index=2, type="EMAIL", data=b"\xff"))
        return all(
            _head(v) + _tail(h, values) == pack_record(Record(handle=h, values=values, version=v))
            for v in (0, 1, 127, 128, 65536, 2**40)
            for h in ("0.NA/x", "88.118.8/é" * 10, "88.118.8/" + "x" * 300)
        )
    except Exception:  # pragma: no cover
        return False


# False only if packing.py changed its layout: then whole records are packed under the lock.
_SPLICE_OK = _splice_ok()


def _tails(writes: Sequence[HandleWrite]) -> list[bytes | None]:
    return [None if w.values is None else _tail(w.handle, w.values) for w in writes]


class PackedRecords:
    """The packed records of one write() call: tails packed once (on a worker thread for large calls,
    started before the transaction so it overlaps the lock and the existence check, and kept for a
    retry), the version head added under the lock."""

    def __init__(self, writes: Sequence[HandleWrite]) -> None:
        self.writes = writes
        self._tails: list[bytes | None] | None = None
        self._pending: asyncio.Future[list[bytes | None]] | None = None
        if not _SPLICE_OK:
            return
        if len(writes) >= PACK_IN_THREAD:
            self._pending = asyncio.get_running_loop().run_in_executor(None, _tails, writes)
        else:
            self._tails = _tails(writes)

    async def ready(self) -> None:
        if self._pending is not None:
            self._tails = await self._pending
            self._pending = None

    def record(self, i: int, version: int, head: bytes) -> bytes:
        if self._tails is None:  # pragma: no cover - only when packing.py changed its layout
            w = self.writes[i]
            assert w.values is not None
            return pack_record(Record(handle=w.handle, values=w.values, version=version))
        tail = self._tails[i]
        assert tail is not None
        return head + tail

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


class _NotWritten(Exception):
    """Raised inside a write transaction to roll it back and hand back the outcomes."""

    def __init__(self, results: list[WriteResult]) -> None:
        super().__init__("not written")
        self.results = results


@dataclass(slots=True)
class _Existing:
    version: int
    prefix: str
    id: int
    enterprise_id: int | None
    created_day: int


@dataclass(slots=True)
class WritePlan:
    """A checked call: the failed outcomes (None where the write goes ahead) and what to apply."""

    results: list[WriteResult | None]
    deletes: list[int] = field(default_factory=list)
    replaces: list[int] = field(default_factory=list)
    creates: list[int] = field(default_factory=list)


def classify(
    writes: Sequence[HandleWrite], have: Mapping[int, _Existing], atomic: bool
) -> WritePlan | list[WriteResult]:
    """The outcome rule of the SQLite store's ``apply_writes``. Returns the final results when nothing is
    to be written (nothing passed, or an atomic call with a failure), else the plan."""
    plan = WritePlan(results=[])
    for i, w in enumerate(writes):
        found = have.get(i)
        current = found.version if found is not None else None
        if w.expect == MUST_NOT_EXIST and current is not None:
            plan.results.append(WriteResult(WriteOutcome.EXISTS, current))
        elif current is None and (w.values is None or w.expect >= 0):
            plan.results.append(WriteResult(WriteOutcome.MISSING))
        elif w.expect >= 0 and current != w.expect:
            plan.results.append(WriteResult(WriteOutcome.STALE, current))
        else:
            plan.results.append(None)
            if w.values is None:
                plan.deletes.append(i)
            elif current is None:
                plan.creates.append(i)
            else:
                plan.replaces.append(i)
    todo = len(plan.deletes) + len(plan.replaces) + len(plan.creates)
    if not todo or (atomic and todo != len(writes)):
        return [r or WriteResult(WriteOutcome.NOT_WRITTEN) for r in plan.results]
    return plan


class PostgresHandleWrites(PostgresPart):
    """``registry.stores.base.HandleStore.write``: every identifier change goes through here."""

    async def write(
        self, writes: Sequence[HandleWrite], *, now: int, atomic: bool = True, audit: AuditRecord | None = None
    ) -> list[WriteResult]:
        keys = [w.key for w in writes]
        if len(set(keys)) != len(keys):
            raise InvalidRequest("the same handle appears more than once in one write")
        if not writes:
            return []
        records = PackedRecords(writes)

        async def run(conn: asyncpg.Connection, attempt: Attempt) -> list[WriteResult]:
            async with conn.transaction():
                version, next_id, have = await self._check(conn, writes)
                plan = classify(writes, have, atomic)
                if not isinstance(plan, WritePlan):
                    raise _NotWritten(plan)  # rolls back the version increment
                results = await self._apply(conn, writes, records, have, plan, version, next_id, now)
                await insert_audit(conn, audit)
                attempt.commit_sent = True
            return results

        try:
            return await self._run(run)
        except _NotWritten as nothing:
            return nothing.results
        finally:
            records.cancel()

    @staticmethod
    async def _check(conn: asyncpg.Connection, writes: Sequence[HandleWrite]) -> tuple[int, int, dict[int, _Existing]]:
        """Inside the caller's transaction: take the version lock (held until the transaction ends),
        then read which of the keys exist."""
        version, next_id = await conn.fetchrow(_LOCK)
        rows = await conn.fetch(_CHECK, [w.key for w in writes])
        have = {r[0]: _Existing(r[1], r[2], r[3], r[4], r[5]) for r in rows}
        return version, next_id, have

    @staticmethod
    async def _apply(
        conn: asyncpg.Connection,
        writes: Sequence[HandleWrite],
        records: PackedRecords,
        have: Mapping[int, _Existing],
        plan: WritePlan,
        version: int,
        next_id: int,
        now: int,
    ) -> list[WriteResult]:
        """Apply a checked plan (handles, listing buckets, counters) and build the results."""
        await records.ready()
        head = _head(version)
        day = day_number(now)
        args: dict[str, Any] = {
            "version": version,
            "now": now,
            "day": day,
            "hour": hour_of(now),
            "change_month": day // 100,
        }
        buckets: dict[tuple[str, int], int] = {}
        counts: dict[tuple[int, int], int] = {}
        queued = [(have[i].id, have[i].prefix) for i in (*plan.deletes, *plan.replaces)]
        queued += [(next_id + i, writes[i].prefix) for i in plan.creates]
        args["q_hids"], args["q_prefixes"] = [h for h, _ in queued], [p for _, p in queued]
        if plan.deletes:
            args["del_keys"] = [writes[i].key for i in plan.deletes]
            for i in plan.deletes:
                old = have[i]
                bk = (old.prefix, old.id // LIST_BUCKET)
                buckets[bk] = buckets.get(bk, 0) - 1
                if old.enterprise_id is not None:
                    ck = (old.enterprise_id, old.created_day)
                    counts[ck] = counts.get(ck, 0) - 1
        if plan.replaces:
            args["upd_keys"] = [writes[i].key for i in plan.replaces]
            args["upd_handles"] = [writes[i].handle for i in plan.replaces]
            args["upd_records"] = [records.record(i, version, head) for i in plan.replaces]
        copied = 0
        if plan.creates:
            args["id_span"] = plan.creates[-1] + 1
            for i in plan.creates:
                w = writes[i]
                bk = (w.prefix, (next_id + i) // LIST_BUCKET)
                buckets[bk] = buckets.get(bk, 0) + 1
                if w.enterprise_id is not None:
                    ck = (w.enterprise_id, day)
                    counts[ck] = counts.get(ck, 0) + 1
            if len(plan.creates) >= COPY_THRESHOLD:
                rows = (
                    (w.prefix, next_id + i, w.key, w.handle, w.enterprise_id, now, day, now, version, rec)
                    for i, w, rec in ((i, writes[i], records.record(i, version, head)) for i in plan.creates)
                )
                status = await conn.copy_records_to_table("handles", records=rows, columns=HANDLES_COPY_COLUMNS)
                copied = int(status.rsplit(" ", 1)[-1])
            else:
                args["ins_prefixes"] = [writes[i].prefix for i in plan.creates]
                args["ins_ids"] = [next_id + i for i in plan.creates]
                args["ins_keys"] = [writes[i].key for i in plan.creates]
                args["ins_handles"] = [writes[i].handle for i in plan.creates]
                args["ins_eids"] = [writes[i].enterprise_id for i in plan.creates]
                args["ins_records"] = [records.record(i, version, head) for i in plan.creates]
        bucket_rows = [(p, b, n) for (p, b), n in buckets.items() if n]
        if bucket_rows:
            args["b_prefixes"], args["b_buckets"], args["b_deltas"] = (list(c) for c in zip(*bucket_rows, strict=True))
        count_rows = [(e, d, n) for (e, d), n in counts.items() if n]
        if count_rows:
            args["c_eids"], args["c_days"], args["c_deltas"] = (list(c) for c in zip(*count_rows, strict=True))
        sql, names = _numbered(
            _apply_sql(
                bool(plan.deletes),
                bool(plan.replaces),
                "ins_keys" in args,
                bool(plan.creates),
                bool(bucket_rows),
                bool(count_rows),
            )
        )
        done = await conn.fetchrow(sql, *(args[n] for n in names))
        applied = (done.get("deleted", 0), done.get("replaced", 0), done.get("created", 0) + copied)
        expected = (len(plan.deletes), len(plan.replaces), len(plan.creates))
        if applied != expected:
            raise ServerError(f"store inconsistency: applied {applied} deletes/replaces/creates, expected {expected}")
        out: list[WriteResult] = []
        for i, (w, r) in enumerate(zip(writes, plan.results, strict=True)):
            if r is not None:
                out.append(r)
            elif w.values is None:
                out.append(WriteResult(WriteOutcome.DELETED, version))
            elif i in have:
                out.append(WriteResult(WriteOutcome.REPLACED, version))
            else:
                out.append(WriteResult(WriteOutcome.CREATED, version))
        return out
