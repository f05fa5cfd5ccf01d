"""A batch of new handles written into SQLite while it is still being read: one ``BEGIN IMMEDIATE``
transaction on the writer thread, one chunk at a time.

:meth:`SQLiteCreateStream.add` queues a chunk on the single writer thread and returns at once, so
SQLite inserts it (``sqlite3`` lets go of the GIL while a statement runs) while the event loop
decodes and checks the next chunk. A chunk is inserted optimistically, under a savepoint, in
statements of thousands of rows (sqlite3 takes the GIL back from the event loop after every step);
only when a key exists (the unique index on ``hkey`` refuses it) is the savepoint rolled back and
the chunk's keys looked up. The outcomes are those of
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
import functools
import sqlite3
from collections import Counter, deque
from collections.abc import Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from registry.days import day_number
from registry.errors import InvalidRequest, StoreUnavailable
from registry.packing import pack_head
from registry.stores.base import LIST_BUCKET, NewHandle, WriteOutcome, WriteResult
from registry.stores.sqlite_handle_writes import existing_versions, move_counters
from registry.stores.sqlite_part import SQLitePart
from registry.stores.sqlite_values import queue_for_index

__all__ = ["SQLiteCreateStream"]

_COLUMNS = 8
# Rows in one INSERT statement: 4,000 (32,000 parameters: under SQLite's default limit, 32,766), the
# rest of a chunk in smaller statements, down to one row.
_STATEMENT_ROWS = (4000, 512, 64, 8, 1)


@functools.lru_cache(maxsize=len(_STATEMENT_ROWS))
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * rows)
    columns = "id, hkey, prefix, enterprise_id, created_at, updated_at, version, record"
    return f"INSERT INTO handles ({columns}) VALUES {values}"


_KEY, _PREFIX, _EID, _TAIL = (
    itemgetter(NewHandle._fields.index(f)) for f in ("key", "prefix", "enterprise_id", "tail")
)
_BUCKET = LIST_BUCKET.__rfloordiv__  # hid → its listing bucket (hid // LIST_BUCKET)


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
        if self._error is not None or not rows:
            return
        try:
            if not self._failed:
                # Optimistic, as on PostgreSQL: insert the whole chunk under a savepoint (the unique
                # index on hkey checks every key as it inserts, so no existence query goes first);
                # only when a key exists is the chunk checked and, unless atomic, inserted without it.
                c.execute("SAVEPOINT chunk")
                try:
                    self._insert_all(c, rows)
                except sqlite3.IntegrityError:
                    c.execute("ROLLBACK TO chunk")
                    c.execute("RELEASE chunk")
                else:
                    c.execute("RELEASE chunk")
                    return
            have = existing_versions(c, [r.key for r in rows])
            if not have and not self._failed:
                raise sqlite3.IntegrityError("a key twice in one chunk")
            for n, r in enumerate(rows):
                if r.key in have:
                    self._exists[first + n] = have[r.key]
            self._failed = self._failed or self._atomic
            if not self._failed:
                self._insert_all(c, [r for r in rows if r.key not in have])
        except BaseException as exc:
            self._error = exc

    def _insert_all(self, c: sqlite3.Connection, rows: Sequence[NewHandle]) -> None:
        """Insert ``rows`` (none exists) and queue them for the value index; the counters are moved
        only once the rows are in. Built with C-level iterators: this runs on the writer thread, and
        what it does in Python holds the GIL the event loop needs to read the next chunk."""
        n, now, hid = len(rows), self._now, self._next_id
        hids = range(hid, hid + n)
        prefixes = list(map(_PREFIX, rows))
        eids = list(map(_EID, rows))
        params = zip(
            hids,
            map(_KEY, rows),
            prefixes,
            eids,
            repeat(now, n),
            repeat(now, n),
            repeat(self._version, n),
            map(self._head.__add__, map(_TAIL, rows)),
            strict=True,
        )
        flat = list(chain.from_iterable(params))
        # Thousands of rows a statement: sqlite3 lets go of the GIL (and has to take it back from the
        # event loop) around every step, so one row a step doubled the insert's time while the loop
        # read the next chunk (10,000 rows: ~50 ms a row a step, ~21 ms 4,000 rows a step).
        # The statements come in a few fixed sizes (each size one cached statement): as many of the
        # largest as fit, then the rest in smaller ones.
        limit = c.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS
        done = 0
        for per in _STATEMENT_ROWS:
            per = min(per, limit)
            whole = (n - done) - (n - done) % per
            if whole:
                step = per * _COLUMNS
                start, done = done * _COLUMNS, done + whole
                c.executemany(_insert_sql(per), (flat[i : i + step] for i in range(start, done * _COLUMNS, step)))
        queue_for_index(c, hids)
        self._next_id = hid + n
        self._written += n
        buckets = self._buckets
        for bk, k in Counter(zip(prefixes, map(_BUCKET, hids), strict=True)).items():
            buckets[bk] = buckets.get(bk, 0) + k
        for eid, k in Counter(eids).items():
            if eid is not None:
                ck = (eid, self._day)
                self._counts[ck] = self._counts.get(ck, 0) + k

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
