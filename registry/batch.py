"""Batch registration: items checked as they arrive and written in one transaction.

Used by the HTTP batch endpoint and by ``idnode import``. Items are parsed and checked as they
arrive and planned by the write service with the same planner as a single write
(:mod:`registry.write_plan`: default HS_ADMIN, administrators kept on replacement, value-count
limit), with the same counters and events. ``atomic``: one failing item means nothing is written,
and the report lists every failing item.

A batch that only creates (``overwrite`` false) and says up front whether it is atomic is written
*while* it is read: each item becomes its packed record at once (the common shape through
:mod:`registry.batch_items`, in one pass; any other through the general parser and planner) and
the rows go to the store in chunks through the write service's
:class:`~registry.write_stream.CreateWriter`, one transaction committed at the end. Otherwise (a
batch that may replace handles, whose plans need the records as they are at the end) the plan is
made whole and written at the end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from registry.auth import Caller
from registry.batch_items import HANDLE_CONTROL, Item, ItemPacker
from registry.errors import RC_HANDLE_ALREADY_EXISTS, RC_PROTOCOL_ERROR, RC_SUCCESS, HandleError, InvalidRequest
from registry.jsonvalues import parse_values
from registry.model import HandleValue, normalise_prefix
from registry.packing import pack_tail
from registry.stores.base import NewHandle, WriteOutcome, WriteResult
from registry.write_plan import Mode, WriteRequest
from registry.write_stream import CreateWriter
from registry.writes import WriteService

__all__ = ["CHANGED_MEANWHILE", "BatchFailure", "BatchReport", "BatchValidator", "gc_paused"]

# The refusal of an item whose handle another writer changed between planning and writing.
CHANGED_MEANWHILE = "changed by another writer meanwhile; retry"

_outcome = operator.attrgetter("outcome")
_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is parsed, validated and written.

    A batch of 100,000 items is a few million objects that all live until the batch is written; the
    collector's repeated passes over them cost about a third of the batch's time (measured: 100,000
    items 6.3 s → 4.0 s). Reference counting still frees everything that is not a cycle; cycles made
    meanwhile are collected when the last concurrent batch is done. Nested and concurrent uses are
    counted; the collector's state from before the first one is restored after the last one.
    """
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class BatchFailure:
    position: int
    handle: str | None
    code: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "handle": self.handle, "responseCode": self.code, "message": self.message}


@dataclass
class BatchReport:
    total: int = 0
    created: int = 0
    replaced: int = 0
    failures: list[BatchFailure] = field(default_factory=list)
    written: bool = False
    atomic: bool = True
    overwrite: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_json(self) -> dict[str, Any]:
        if not self.failures:
            message = f"{self.total} items: {self.created} created, {self.replaced} replaced"
        elif self.atomic:
            message = f"{self.failed} of {self.total} items failed; nothing was written (atomic batch)"
        else:
            message = f"{self.failed} of {self.total} items failed; the other {self.total - self.failed} were written"
        return {
            "responseCode": RC_SUCCESS if not self.failures or not self.atomic else RC_PROTOCOL_ERROR,
            "message": message,
            "total": self.total,
            "created": self.created,
            "replaced": self.replaced,
            "failed": self.failed,
            "atomic": self.atomic,
            "overwrite": self.overwrite,
            "written": self.written,
            "failures": [f.to_json() for f in sorted(self.failures, key=lambda f: f.position)],
        }


class BatchValidator:
    """Takes items one at a time (so a stream never has to be held whole): parses and checks each,
    hands it to the write service's :class:`~registry.writes.BatchPlanner` (rights on its prefix,
    template, secret keys, the plan), and at the end has the plan applied
    (:meth:`~registry.writes.WriteService.apply`). A bad item is reported at its position without
    waiting for the rest; what the planner takes is held only as the store write it becomes."""

    def __init__(
        self,
        writes: WriteService,
        caller: Caller,
        *,
        overwrite: bool = False,
        max_items: int = 100_000,
        default_admin: HandleValue | None = None,
        atomic: bool | None = None,
    ) -> None:
        """``default_admin``: the HS_ADMIN value new handles without one get (default: the caller's).
        ``atomic`` given (and ``overwrite`` false): the batch is written while it is read, and
        :meth:`finish` must be called with the same ``atomic`` (and :meth:`close` in any case)."""
        self.writes = writes
        self.ns = writes.ns
        self.caller = caller
        self.overwrite = overwrite
        self.max_items = max_items
        self._now = self.ns.clock()
        self.planner = writes.plan_batch(caller, now=self._now, default_admin=default_admin)
        self.positions: list[int] = []  # of each item the planner took
        self.failures: list[BatchFailure] = []
        self.count = 0
        self._mode = Mode.REPLACE if overwrite else Mode.CREATE
        self._first: dict[str, int] = {}  # handle key → position of its item
        self._norm: dict[str, str] = {}  # prefix as written → normalised, for prefixes in this namespace
        self._limits = self.ns.settings.value_limits
        self.atomic = atomic
        self.writer: CreateWriter | None = None
        if atomic is not None and not overwrite:
            self.writer = writes.create_writer(atomic=atomic, now=self._now)
            self._packer = ItemPacker(self._limits, self._now, self.planner.admin)
            # Prefixes as written → (normalised, enterprise id), once an item under one was planned.
            self._fast: dict[str, tuple[str, int | None]] = {}
            settings = self.ns.settings
            self._max_handle = settings.max_handle_length
            self._case_sensitive = settings.case_sensitive_suffix

    def _fail(self, position: int, handle: str | None, exc: HandleError) -> None:
        self.failures.append(BatchFailure(position, handle, exc.code, exc.message))

    async def fail_item(self, message: str) -> None:
        """The next item could not be decoded: it fails at its position (protocol error)."""
        position = self.count
        self.count += 1
        self.failures.append(BatchFailure(position, None, RC_PROTOCOL_ERROR, message))
        if self.writer is not None and self.atomic:
            await self.writer.fail()

    async def add_common(self, item: Item) -> None:
        """An item of the common shape (:mod:`registry.batch_items`): packed in one pass when its
        prefix has been planned already and it needs nothing special, else the general path."""
        if not self.take_common(item):
            await self.add(msgspec.to_builtins(item))
        if self.writer is not None:
            await self.writer.send_due()

    def take_common(self, item: Item) -> bool:
        """:meth:`add_common` without waiting: False when the item needs the general path (then
        :meth:`add_common` it); the caller has the rows sent (:meth:`flush`) every so often."""
        writer = self.writer
        if writer is None:
            return False
        text = item.handle
        given, _, suffix = text.partition("/")
        known = self._fast.get(given)
        if (
            known is None
            or not suffix
            or len(text) > self._max_handle
            or HANDLE_CONTROL.search(text)
            or self.count >= self.max_items
        ):
            return False
        prefix, enterprise = known
        key = f"{prefix}/{suffix if self._case_sensitive else normalise_prefix(suffix)}"
        if key in self._first:  # refused by the general path as a duplicate
            return False
        tail = self._packer.tail(text, item.values)
        if tail is None:
            return False
        position = self.count
        self.count = position + 1
        self._first[key] = position
        self.positions.append(position)
        writer.rows.append(NewHandle(key, text, prefix, enterprise, tail))
        return True

    async def flush(self) -> None:
        """Hand the rows taken so far to the store when a chunk is due."""
        if self.writer is not None:
            await self.writer.send_due()

    async def add(self, obj: Any) -> None:
        """Validate one item ``{"handle": …, "values": […]}``; failures are recorded, not raised.

        What depends only on the item's prefix (namespace, rights, enterprise) is checked once per
        prefix and remembered; the rest is checked for every item."""
        position = self.count
        self.count += 1
        if self.count > self.max_items:
            raise InvalidRequest(f"a batch holds at most {self.max_items} items")
        handle = obj.get("handle") if isinstance(obj, dict) else None
        text = handle if isinstance(handle, str) else None
        try:
            if text is None:
                raise InvalidRequest('an item is {"handle": "<prefix>/<suffix>", "values": [...]}')
            if "values" not in obj:
                raise InvalidRequest("item has no values")
            name = self.ns.parse(text)
            if name.is_prefix_handle:
                self.ns.require_responsible(name)
                raise InvalidRequest("prefix handles are created by onboarding an enterprise, not in a batch")
            prefix = self._norm.get(name.prefix)
            if prefix is None:
                self.ns.require_responsible(name)  # depends on the prefix alone
                prefix = self._norm[name.prefix] = normalise_prefix(name.prefix)
            first = self._first.get(name.key)
            if first is not None:
                raise InvalidRequest(f"duplicate of item {first} in this batch")
            values = parse_values(obj["values"], self._limits, timestamp=self._now)
            request = WriteRequest(name, self._mode, tuple(values))
            if self.writer is None:
                refusal = await self.planner.add(request, position)
                if refusal is not None:
                    raise refusal
            else:
                w = await self.planner.plan_new(request, position)
                assert w.values is not None
                row = NewHandle(w.key, w.handle, w.prefix, w.enterprise_id, pack_tail(w.handle, w.values))
                self._fast.setdefault(name.prefix, (w.prefix, self.planner.enterprise_of(w.prefix)))
            self._first[name.key] = position
            self.positions.append(position)
            if self.writer is not None:
                await self.writer.add(row)
        except HandleError as exc:
            self._fail(position, text, exc)
            if self.writer is not None and self.atomic:
                await self.writer.fail()

    async def finish(self, *, atomic: bool = True) -> BatchReport:
        if self.writer is not None:
            if atomic is not self.atomic:
                raise ValueError("finish a streamed batch as atomic as it was begun")
            return await self._finish_streamed()
        report = BatchReport(total=self.count, atomic=atomic, overwrite=self.overwrite)
        positions, self.positions = self.positions, []
        plan = await self.planner.finish(atomic=atomic, failed=bool(self.failures))
        for position, refusal in zip(positions, plan.refusals, strict=True):
            if refusal is not None:
                self._fail(position, refusal.handle, refusal)
        results = await self.writes.apply(plan)
        for position, write, result in zip(positions, plan.planned, results, strict=True):
            if result is None or write is None:
                continue
            outcome = result.outcome
            if outcome is WriteOutcome.CREATED:
                report.created += 1
            elif outcome is WriteOutcome.REPLACED:
                report.replaced += 1
            elif outcome is WriteOutcome.EXISTS and not self.overwrite:
                self._fail(position, write.handle, _exists(write.handle))
            elif outcome is not WriteOutcome.NOT_WRITTEN:
                # (with overwrite, EXISTS too: the handle was created between planning and writing)
                self._fail(position, write.handle, InvalidRequest(CHANGED_MEANWHILE))
        report.written = report.created + report.replaced > 0
        report.failures = self.failures
        return report

    async def _finish_streamed(self) -> BatchReport:
        writer = self.writer
        assert writer is not None and self.atomic is not None
        report = BatchReport(total=self.count, atomic=self.atomic, overwrite=self.overwrite)
        if self.failures and self.atomic:
            await writer.fail()
        rows, positions = writer.rows, self.positions
        results: list[WriteResult] = await writer.finish()
        await asyncio.sleep(0)  # the end of a batch in turns of the event loop: resolves answered between
        tally = collections.Counter(map(_outcome, results))  # in C: a batch has 100,000 results
        report.created = tally[WriteOutcome.CREATED]
        if tally[WriteOutcome.EXISTS]:
            for position, row, result in zip(positions, rows, results, strict=True):
                if result.outcome is WriteOutcome.EXISTS:
                    self._fail(position, row.handle, _exists(row.handle))
        report.written = report.created > 0
        report.failures = self.failures
        return report

    async def close(self) -> None:
        """Release the store if the batch ends without :meth:`finish` (an error, a disconnect), and
        what the batch held: freed now, a few hundred thousand objects are not left for the cyclic
        garbage collector's first pass after :func:`gc_paused`."""
        self.positions, self._first = [], {}
        if self.writer is not None:
            await asyncio.sleep(0)  # freeing 100,000 rows takes a turn of its own
            await self.writer.close()


def _exists(handle: str) -> HandleError:
    return HandleError("handle already exists", handle, code=RC_HANDLE_ALREADY_EXISTS)
