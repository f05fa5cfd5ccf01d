"""A batch of new handles written into PostgreSQL while it is still being read: one transaction on
one pooled connection, one ``COPY`` per chunk.

:meth:`PostgresCreateStream.add` queues a chunk as a task and returns at once; each task COPYs the
chunk straight into ``handles`` under a savepoint, so the server inserts one chunk while the event
loop decodes and checks the next. No existence query goes first: the unique index on ``hkey`` checks
every key as the rows go in, and only when one exists (the COPY fails) is the savepoint rolled back,
the chunk's keys looked up, and the rest COPYed again (unless the stream is atomic). The
outcomes, ids (``idnode_state.next_id`` + the row's number), listing buckets, registration counters
and value-index queue are those of ``PostgresHandleWrites.write`` for the same creations, written by
the same statement (:func:`registry.stores.postgres_handle_writes._apply_sql`) when the stream
commits. A key that exists is EXISTS; in an atomic stream it stops all writing (later chunks are
only checked) and :meth:`finish` rolls back.

A process runs one stream at a time. The stream holds the version lock (the ``idnode_state`` row)
from :meth:`open` to :meth:`finish` or :meth:`abort`: other writes, in every process, wait for it
as they wait for a single large ``write``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from registry.days import day_number, hour_of
from registry.errors import ServerError, StoreUnavailable
from registry.packing import pack_head
from registry.stores.base import LIST_BUCKET, NewHandle, WriteOutcome, WriteResult
from registry.stores.postgres_handle_writes import _LOCK, HANDLES_COPY_COLUMNS, _apply_sql, _numbered
from registry.stores.postgres_values import QUEUE_ROW

__all__ = ["PostgresCreateStream"]

_TURN = 2500  # rows built between two turns of the event loop (resolves answered between)
_QUEUE = (
    "INSERT INTO value_index_queue (hids, prefixes)"
    " SELECT array_agg(u.h ORDER BY u.o), array_agg(u.p ORDER BY u.o)"
    " FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY u(h, p, o)"
    f" GROUP BY (u.o - 1) / {QUEUE_ROW}"
)
_EXISTING = (
    "SELECT k.ord - 1, h.version FROM unnest($1::text[]) WITH ORDINALITY k(key, ord) CROSS JOIN LATERAL ("
    ' SELECT version FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1) h'
)


class PostgresCreateStream:
    """``registry.stores.base.CreateStream`` on the PostgreSQL store (made by its ``create_stream``).
    ``error`` maps a driver exception to the registry's (as the store's ``_run`` does)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        now: int,
        atomic: bool,
        acquire_timeout: float | None,
        error: Callable[[BaseException], BaseException],
        gate: asyncio.Lock,
    ) -> None:
        self._pool = pool
        self._now = now
        self._day = day_number(now)
        self._atomic = atomic
        self._acquire_timeout = acquire_timeout
        self._error_of = error
        self._gate = gate
        self._gated = False
        self._conn: Any = None
        self._tr: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._rows = 0
        self._version = 0
        self._next_id = 0
        self._head = b""
        self._exists: dict[int, int] = {}
        self._failed = False
        self._created = 0
        self._buckets: dict[tuple[str, int], int] = {}
        self._counts: dict[tuple[int, int], int] = {}

    async def open(self) -> None:
        # One stream per process at a time: one waiting for the version lock would hold a pooled
        # connection, and the stream holding it still reads through the pool (prefixes, templates).
        await self._gate.acquire()
        self._gated = True
        try:
            self._conn = await self._pool.acquire(timeout=self._acquire_timeout)
            self._tr = self._conn.transaction()
            await self._tr.start()
            self._version, self._next_id = await self._conn.fetchrow(_LOCK)
        except BaseException as exc:
            await self._release()
            if isinstance(exc, Exception):
                raise self._error_of(exc) from None
            raise
        self._head = pack_head(self._version)

    def add(self, rows: Sequence[NewHandle]) -> None:
        if self._closed:
            raise StoreUnavailable("the write stream is finished")
        first = self._rows
        self._rows += len(rows)
        previous = self._tasks[-1] if self._tasks else None
        self._tasks.append(asyncio.get_running_loop().create_task(self._chunk(previous, rows, first)))

    async def _chunk(self, previous: asyncio.Task[None] | None, rows: Sequence[NewHandle], first: int) -> None:
        if previous is not None:
            await previous  # in order, on one connection; a failure stops every later chunk
        if not rows:
            return
        if self._failed:
            await self._check(rows, first)  # nothing more is written: the chunk's keys are only checked
            return
        # Optimistic: COPY the whole chunk under a savepoint (the unique index on hkey checks every key as
        # it inserts, so no existence query goes first); only when a key exists is the chunk checked and,
        # unless the stream is atomic, COPYed again without the keys that exist.
        try:
            async with self._conn.transaction():
                await self._write(rows, first, {})
        except asyncpg.UniqueViolationError:
            have = await self._check(rows, first)
            if not have:
                raise  # a key twice in the chunk: an error, as before
            if not self._failed:
                await self._write(rows, first, have)

    async def _check(self, rows: Sequence[NewHandle], first: int) -> dict[int, int]:
        have: dict[int, int] = dict(await self._conn.fetch(_EXISTING, [r.key for r in rows]))
        if have:
            for n, version in have.items():
                self._exists[first + n] = version
            self._failed = self._failed or self._atomic
        return have

    async def _write(self, rows: Sequence[NewHandle], first: int, have: dict[int, int]) -> None:
        now, day, version, head, base = self._now, self._day, self._version, self._head, self._next_id + first
        records = []
        buckets: dict[tuple[str, int], int] = {}
        queued, prefixes = [], []
        created: dict[int, int] = {}
        for n, r in enumerate(rows):
            if not n % _TURN and n:
                await asyncio.sleep(0)  # a chunk's rows are built in turns of the event loop
            if have and n in have:
                continue
            hid = base + n
            records.append((r.prefix, hid, r.key, r.handle, r.enterprise_id, now, day, now, version, head + r.tail))
            queued.append(hid)
            prefixes.append(r.prefix)
            bk = (r.prefix, hid // LIST_BUCKET)
            buckets[bk] = buckets.get(bk, 0) + 1
            if r.enterprise_id is not None:
                created[r.enterprise_id] = created.get(r.enterprise_id, 0) + 1
        if not records:
            return
        conn = self._conn
        status = await conn.copy_records_to_table("handles", records=records, columns=HANDLES_COPY_COLUMNS)
        if int(status.rsplit(" ", 1)[-1]) != len(records):
            raise ServerError(f"store inconsistency: copied {status}, expected {len(records)} rows")
        await conn.execute(_QUEUE, queued, prefixes)  # the value index's queue, as write() fills it
        # Counted only once the chunk is in (a savepoint rolled back leaves no count behind).
        self._created += len(records)
        for bk, n in buckets.items():
            self._buckets[bk] = self._buckets.get(bk, 0) + n
        for eid, n in created.items():
            self._counts[(eid, day)] = self._counts.get((eid, day), 0) + n

    async def drain(self, pending: int) -> None:
        while len(self._tasks) > pending:
            task = self._tasks.pop(0)
            try:
                await task
            except Exception:
                if not self._tasks:
                    raise
                # The later tasks fail with it (they await this one): the last one reports it.

    async def finish(self, *, commit: bool = True) -> list[WriteResult]:
        if self._closed:
            raise StoreUnavailable("the write stream is finished")
        try:
            await self.drain(0)
            self._closed = True
            written = commit and not self._failed and self._created > 0
            if written:
                await self._counters()
                await self._tr.commit()
            else:
                await self._tr.rollback()
            self._tr = None
        except Exception as exc:
            self._closed = True
            await self.abort()
            raise self._error_of(exc) from None
        finally:
            if self._tr is None:
                await self._release()
        done = WriteResult(WriteOutcome.CREATED, self._version) if written else WriteResult(WriteOutcome.NOT_WRITTEN)
        results = [done] * self._rows  # in C: a batch has 100,000 rows, few or none of them EXISTS
        for n, version in self._exists.items():
            results[n] = WriteResult(WriteOutcome.EXISTS, version)
        return results

    async def _counters(self) -> None:
        args: dict[str, Any] = {
            "q_hids": [],  # queued chunk by chunk already
            "q_prefixes": [],
            "id_span": self._rows,
            "hour": hour_of(self._now),
            "change_month": self._day // 100,
        }
        bucket_rows = [(p, b, n) for (p, b), n in self._buckets.items() if n]
        if bucket_rows:
            args["b_prefixes"], args["b_buckets"], args["b_deltas"] = (list(c) for c in zip(*bucket_rows, strict=True))
        count_rows = [(e, d, n) for (e, d), n in self._counts.items() if n]
        if count_rows:
            args["c_eids"], args["c_days"], args["c_deltas"] = (list(c) for c in zip(*count_rows, strict=True))
        sql, names = _numbered(_apply_sql(False, False, False, True, bool(bucket_rows), bool(count_rows)))
        await self._conn.fetchrow(sql, *(args[n] for n in names))

    async def abort(self) -> None:
        self._closed = True
        tasks, self._tasks = self._tasks, []
        busy = any(not task.done() for task in tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if busy and self._conn is not None:
            # Cut off in the middle of a COPY: the connection's state is unknown; the server rolls back.
            self._conn.terminate()
            self._tr = None
        if self._tr is not None:
            tr, self._tr = self._tr, None
            with contextlib.suppress(Exception):
                await asyncio.shield(tr.rollback())
        await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await self._pool.release(conn)
        finally:
            if self._gated:
                self._gated = False
                self._gate.release()
