"""Running the rows of a file through the registry, chunk by chunk, with a checkpoint after each.

The one machinery of ``idnode import`` (registry.importer) and the node's jobs (registry.jobs):

- rows are read with :class:`registry.rows.RowReader` and validated as they are read, through the
  same :class:`registry.batch.BatchValidator` as ``POST /api/handles`` (syntax, namespace, values,
  template, rights); a bulk delete goes through the write service's ``delete``, one handle at a time;
- a chunk is written in one transaction when it holds ``chunk`` rows, or once it is ``seconds`` old
  (slow rows — secret keys to hash, templates to check — still commit every second or so), or when
  ``stop`` is set (Ctrl-C, the node stopping): then the rows validated so far are written and the run
  returns. So an interruption loses at most the rows of the chunk being read, never a written one;
- a replace job creates or overwrites what is there when it writes: a row whose handle another
  writer created or changed between planning and writing is planned and written again
  (``RACE_RETRIES`` times), not refused;
- after each chunk the :class:`Checkpoint` gets the counts and the line and byte offset through
  which every row is written and counted, and the rows rejected in that chunk, by their line in the
  file. A resumed run starts after that line. A row written by a chunk whose checkpoint was lost
  (the process died between the two) is found present the second time: counted as ``present``
  (``absent`` for a delete), never registered twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from registry import valuedata
from registry.admin_values import ADMIN_INDEX, DEFAULT_HANDLE_ADMIN_PERMS, SECKEY_INDEX
from registry.auth import Caller
from registry.batch import CHANGED_MEANWHILE, BatchFailure, BatchValidator
from registry.errors import (
    RC_HANDLE_ALREADY_EXISTS,
    RC_NOT_AUTHORIZED,
    RC_PROTOCOL_ERROR,
    HandleError,
    HandleNotFound,
    InvalidRequest,
)
from registry.model import HandleValue, normalise_prefix, prefix_handle_of
from registry.rows import RowReader
from registry.stores.base import JobReject

__all__ = ["KINDS", "Checkpoint", "Tally", "enterprise_admin", "run_rows"]

KINDS = ("import", "replace", "delete")  # what a job does with its rows
YIELD_EVERY = 100  # rows between returns to the event loop (the node keeps answering meanwhile)
RACE_RETRIES = 3  # times a replace job's row is written again after another writer changed it meanwhile


@dataclass
class Tally:
    """How far a run got: counts, and the line (and byte offset after it) through which every row
    of the file is written and counted."""

    total: int | None = None
    processed: int = 0
    created: int = 0
    replaced: int = 0
    deleted: int = 0
    present: int = 0
    absent: int = 0
    rejected: int = 0
    line: int = 0
    offset: int = 0


class Checkpoint(Protocol):
    async def __call__(self, tally: Tally, rejects: list[JobReject]) -> None:
        """Keep ``tally`` and the chunk's rejected rows (durably, before the next chunk is read);
        raise to stop the run."""


async def enterprise_admin(registry: Any, caller: Caller, prefix: str) -> HandleValue | None:
    """Handles the node administrator registers under an enterprise prefix are administered by that
    enterprise, as if it had registered them itself (else it could not change its own)."""
    if not caller.node_admin:
        return None
    enterprise = await registry.store.get_enterprise(prefix)
    if enterprise is None:
        return None
    data = valuedata.encode_admin(prefix_handle_of(enterprise.prefix), SECKEY_INDEX, DEFAULT_HANDLE_ADMIN_PERMS)
    return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=data)


class _Chunk:
    """The rows of the chunk being read: items handed to the validator (by position), rejects."""

    def __init__(self, validator: BatchValidator | None) -> None:
        self.validator = validator
        self.lines: list[int] = []  # of the validator's items, by position
        self.items: list[Any] = []  # the items themselves, by position (a replace job's, for a retry)
        self.rejects: list[JobReject] = []
        self.rows = 0
        self.started = time.monotonic()


async def run_rows(
    registry: Any,
    caller: Caller,
    reader: RowReader,
    *,
    kind: str,
    tally: Tally,
    checkpoint: Checkpoint,
    chunk: int = 1000,
    seconds: float = 1.0,
    stop: asyncio.Event | None = None,
    default_admin: HandleValue | None = None,
) -> bool:
    """Run the rows of ``reader`` after ``tally.line``; True when the file is done, False when
    ``stop`` ended the run early (after writing and checkpointing what was read)."""
    if kind not in KINDS:
        raise InvalidRequest(f"unknown job kind {kind!r}: one of {', '.join(KINDS)}")
    target = normalise_prefix(reader.prefix)
    overwrite = kind == "replace"

    def new_chunk() -> _Chunk:
        if kind == "delete":
            return _Chunk(None)
        writes = registry.writes  # the one write service: BatchValidator plans through its BatchPlanner
        return _Chunk(
            BatchValidator(writes, caller, overwrite=overwrite, max_items=chunk + 1, default_admin=default_admin)
        )

    def reject(current: _Chunk, line: int, handle: str | None, code: int, message: str) -> None:
        current.rejects.append(JobReject(line, handle, code, message[:1000]))
        tally.rejected += 1

    def name_in_prefix(handle: Any) -> str | None:
        """Why a row's handle is refused before it is validated (None: it is not)."""
        if not isinstance(handle, str):
            return None  # the validator (or the delete) says what is wrong with it
        try:
            name = registry.parse(handle)
        except HandleError:
            return None
        if normalise_prefix(name.prefix) != target or name.is_prefix_handle:
            return f"{handle} is not under the prefix {reader.prefix}"
        return None

    async def flush(current: _Chunk) -> None:
        if current.validator is not None and current.lines:
            report = await current.validator.finish(atomic=False)
            tally.created += report.created
            tally.replaced += report.replaced
            failures = await retry_raced(current, report.failures) if overwrite else report.failures
            for failure in failures:
                if failure.code == RC_HANDLE_ALREADY_EXISTS and not overwrite:
                    tally.present += 1
                else:
                    reject(current, current.lines[failure.position], failure.handle, failure.code, failure.message)
        tally.processed += current.rows
        await checkpoint(tally, current.rejects)

    async def retry_raced(current: _Chunk, failures: list[BatchFailure]) -> list[BatchFailure]:
        """A replace job's rows that another writer changed between planning and writing (a handle
        created meanwhile, a version moved on) are planned and written again, up to RACE_RETRIES
        times: a replace creates or overwrites whatever is there when it writes."""
        for _ in range(RACE_RETRIES):
            raced = [f for f in failures if f.message == CHANGED_MEANWHILE]
            if not raced:
                break
            again = new_chunk().validator
            assert again is not None
            for failure in raced:
                await again.add(current.items[failure.position])
            report = await again.finish(atomic=False)
            tally.created += report.created
            tally.replaced += report.replaced
            moved = {id(f) for f in raced}
            failures = [f for f in failures if id(f) not in moved]
            failures += [replace(f, position=raced[f.position].position) for f in report.failures]
        return failures

    current = new_chunk()
    for n, row in enumerate(reader.rows(tally.line, tally.offset)):
        if n % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        current.rows += 1
        if row.error is not None:
            reject(current, row.line, None, RC_PROTOCOL_ERROR, row.error)
        else:
            handle = row.item.get("handle") if isinstance(row.item, dict) else row.item
            outside = name_in_prefix(handle)
            if outside is not None:
                reject(current, row.line, handle, RC_NOT_AUTHORIZED, outside)
            elif current.validator is not None:
                current.lines.append(row.line)
                if overwrite:
                    current.items.append(row.item)
                await current.validator.add(row.item)
            else:
                await _delete(registry, caller, row.line, row.item, tally, current, reject)
        tally.line, tally.offset = row.end, row.offset
        stopping = stop is not None and stop.is_set()
        if current.rows >= chunk or stopping or time.monotonic() - current.started >= seconds:
            await flush(current)
            if stopping:
                return False
            current = new_chunk()
    if current.rows:
        await flush(current)
    return True


async def _delete(
    registry: Any,
    caller: Caller,
    line: int,
    handle: Any,
    tally: Tally,
    current: _Chunk,
    reject: Callable[[_Chunk, int, str | None, int, str], None],
) -> None:
    """One row of a bulk delete: the handle goes through the write service as a DELETE does."""
    if not isinstance(handle, str) or not handle:
        reject(current, line, None, RC_PROTOCOL_ERROR, f"line {line}: a row names a suffix (or a handle)")
        return
    try:
        await registry.delete(caller, registry.parse(handle))
    except HandleNotFound:
        tally.absent += 1
    except HandleError as exc:
        reject(current, line, handle, exc.code, exc.message)
    else:
        tally.deleted += 1
