"""A batch of new handles written into SQLite while it is still being read: one ``BEGIN IMMEDIATE``
transaction on the writer thread, one chunk at a time.

:meth:`SQLiteCreateStream.add` queues a chunk on the single writer thread and returns at once, so
SQLite inserts it (``sqlite3`` lets go of the GIL while a statement runs) while the event loop
decodes and checks the next chunk. The outcomes are those of
:func:`registry.stores.sqlite_handle_writes.apply_writes` for the same creations: a key that exists
is EXISTS; in an atomic stream it stops all writing (later chunks are only checked) and
:meth:`finish` rolls back. Ids, listing buckets, registration counters and the value-index queue
are those ``apply_writes`` gives; the version is taken once, at the start.

The stream holds the store's write lock from :meth:`open` to :meth:`finish` or :meth:`abort`:
other writes of this process wait for it, as they wait for a single large ``write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Sequence
from typing import Any

from registry.days import day_number
from registry.errors import InvalidRequest, StoreUnavailable
from registry.packing import pack_head
from registry.stores.base import LIST_BUCKET, NewHandle, WriteOutcome, WriteResult
from registry.stores.sqlite_handle_writes import existing_versions, move_counters
from registry.stores.sqlite_part import SQLitePart
from registry.stores.sqlite_values import queue_for_index

__all__ = ["SQLiteCreateStream"]

_INSERT = (
    "INSERT INTO handles (id, hkey, prefix, enterprise_id, created_at, updated_at, version, record) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteCreateStream:
    """``registry.stores.base.CreateStream`` on the SQLite store (made by its ``create_stream``)."""

    def __init__(self, store: SQLitePart, *, now: int, atomic: bool) -> None:
        self._store = store
        self._now = now
        self._day = day_number(now)
        self._atomic = atomic
        self._jobs: deque[asyncio.Future[Any]] = deque()
        self._locked = False
        self._closed = False
        # Kept by the writer thread.
        self._rows = 0  # rows added
        self._version = 0
        self._head = b""
        self._next_id = 0
        self._exists: dict[int, int] = {}  # row number → version of the handle that exists
        self._failed = False  # atomic, and a key exists: nothing more is written
        self._error: BaseException | None = None
        self._written = 0  # handles inserted (and queued for the value index)
        self._buckets: dict[tuple[str, int], int] = {}
        self._counts: dict[tuple[int, int], int] = {}

    async def open(self) -> None:
        await self._store._write_lock.acquire()
        self._locked = True
        try:
            await self._store._on_writer(self._begin)
        except BaseException:
            self._release()
            raise

    def _begin(self, c: sqlite3.Connection) -> None:
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("UPDATE meta SET value = value + 1 WHERE key = 'write_seq' RETURNING value").fetchone()
            self._version = int(row[0])
            self._head = pack_head(self._version)
            self._next_id = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM handles").fetchone()[0]
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def add(self, rows: Sequence[NewHandle]) -> None:
        if self._closed:
            raise StoreUnavailable("the write stream is finished")
        first = self._rows
        self._rows += len(rows)
        self._jobs.append(self._store._on_writer(lambda c: self._chunk(c, rows, first)))

    def _chunk(self, c: sqlite3.Connection, rows: Sequence[NewHandle], first: int) -> None:
        if self._error is not None:
            return
        try:
            have = existing_versions(c, [r.key for r in rows]) if rows else {}
            if have:
                for n, r in enumerate(rows):
                    if r.key in have:
                        self._exists[first + n] = have[r.key]
                self._failed = self._failed or self._atomic
            if self._failed:
                return
            now, version, head, hid = self._now, self._version, self._head, self._next_id
            params = []
            buckets, written = self._buckets, []
            created: dict[int, int] = {}
            for r in rows:
                if have and r.key in have:
                    continue
                params.append((hid, r.key, r.prefix, r.enterprise_id, now, now, version, head + r.tail))
                written.append(hid)
                bk = (r.prefix, hid // LIST_BUCKET)
                buckets[bk] = buckets.get(bk, 0) + 1
                if r.enterprise_id is not None:
                    created[r.enterprise_id] = created.get(r.enterprise_id, 0) + 1
                hid += 1
            self._next_id = hid
            c.executemany(_INSERT, params)
            queue_for_index(c, written)
            self._written += len(written)
            for eid, n in created.items():
                ck = (eid, self._day)
                self._counts[ck] = self._counts.get(ck, 0) + n
        except BaseException as exc:
            self._error = exc

    async def drain(self, pending: int) -> None:
        while len(self._jobs) > pending:
            await self._jobs.popleft()

    async def finish(self, *, commit: bool = True) -> list[WriteResult]:
        if self._closed:
            raise StoreUnavailable("the write stream is finished")
        await self.drain(0)
        self._closed = True
        written = commit and not self._failed and self._error is None and self._written > 0
        try:
            await self._store._on_writer(lambda c: self._end(c, written))
        except sqlite3.IntegrityError as exc:
            raise InvalidRequest(f"conflicting data: {exc}") from None
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {exc}") from None
        finally:
            self._release()
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, sqlite3.IntegrityError):
                raise InvalidRequest(f"conflicting data: {error}") from None
            if isinstance(error, sqlite3.OperationalError):
                raise StoreUnavailable(f"store unavailable: {error}") from None
            raise error
        done = WriteResult(WriteOutcome.CREATED, self._version) if written else WriteResult(WriteOutcome.NOT_WRITTEN)
        results = [done] * self._rows  # in C: a batch has 100,000 rows, few or none of them EXISTS
        for n, version in self._exists.items():
            results[n] = WriteResult(WriteOutcome.EXISTS, version)
        return results

    def _end(self, c: sqlite3.Connection, commit: bool) -> None:
        if not commit:
            if c.in_transaction:
                c.execute("ROLLBACK")
            return
        try:
            move_counters(c, self._buckets, self._counts, self._now)
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    async def abort(self) -> None:
        if not self._locked:
            return
        self._closed = True
        self._error = self._error or StoreUnavailable("the write stream was aborted")  # queued chunks do nothing

        def rollback(c: sqlite3.Connection) -> None:
            if c.in_transaction:
                c.execute("ROLLBACK")

        job = self._store._on_writer(rollback)
        job.add_done_callback(lambda _: self._release())  # even if this call is cancelled
        with contextlib.suppress(Exception):
            await asyncio.shield(job)

    def _release(self) -> None:
        if self._locked:
            self._locked = False
            self._store._write_lock.release()
