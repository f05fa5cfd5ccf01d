"""New handles of a batch written while the batch is still being read (made by
:meth:`registry.writes.WriteService.create_writer`, the one writer).

The batch's checked rows (:class:`~registry.stores.base.NewHandle`, records packed already) go to a
store :class:`~registry.stores.base.CreateStream` once :data:`CHUNK` of them have arrived, so the
store inserts one chunk while the caller decodes and checks the next; one transaction covers the whole batch and is
committed at the end, when the write events are published. The rows are kept until then, which
allows two retreats:

- :meth:`CreateWriter.suspend`: the caller has to wait for its input (a client sending slowly). The
  stream would hold the store's write lock all that time, so it is rolled back; the rows are
  written when the input is complete, in one go, as a batch was before streaming.
- :meth:`CreateWriter.fail`: an item of an atomic batch was refused, so nothing will be written; the
  stream is rolled back, and at the end the store only tells which of the keys exist (their items
  fail with 101 as well, as in a batch that was checked whole before writing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from registry.stores.base import CreateStream, NewHandle, WriteOutcome, WriteResult
from registry.write_events import Commit

__all__ = ["CHUNK", "CreateWriter"]

CHUNK = 10_000  # rows that make a chunk: what has arrived goes to the store once there are this many
_EXISTS_CHUNK = 5000  # keys per existence query when nothing is written


class CreateWriter:
    """Rows of one batch (``add``), written in one transaction (``finish``)."""

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[CreateStream]],
        exists: Callable[[Sequence[str]], Awaitable[dict[str, int]]],
        publish: Callable[[Commit], Awaitable[None]],
    ) -> None:
        self._open = open_stream
        self._exists = exists
        self._publish = publish
        self.rows: list[NewHandle] = []
        self._sent = 0  # rows handed to the current stream
        self._stream: CreateStream | None = None
        self._streaming = True  # False once suspended: everything is written at the end
        self._failed = False  # an atomic batch with a refused item: nothing is written
        self._done = False

    @property
    def holding(self) -> bool:
        """Whether a store transaction is open (the caller must not wait on a client meanwhile)."""
        return self._stream is not None

    async def add(self, row: NewHandle) -> None:
        self.rows.append(row)
        await self.send_due()

    async def send_due(self) -> None:
        """Hand the rows added since the last chunk to the store once they make a chunk (``rows``
        may be appended to directly, then this called)."""
        if len(self.rows) - self._sent >= CHUNK and self._streaming and not self._failed:
            await self._send()

    async def _send(self) -> None:
        if self._stream is None:
            self._stream = await self._open()
        stream, rows, sent = self._stream, self.rows, self._sent
        # What arrived since the last chunk goes as one chunk: a body's piece brings ~11,000 rows, and
        # split at CHUNK its remainder made a second, small chunk that the next piece had to wait for
        # (PostgreSQL: ~87k -> ~160k ids/s). Only rows held back (a suspended stream, the end of a
        # batch) are split, into near-equal chunks of at least CHUNK.
        new = len(rows) - sent
        if new:
            size = -(-new // max(1, new // CHUNK))
            for start in range(sent, len(rows), size):
                stream.add(rows[start : start + size])
        self._sent = len(rows)
        await asyncio.sleep(0)  # the chunk's task (PostgreSQL) starts sending
        await stream.drain(1)

    async def suspend(self) -> None:
        """Roll back what was streamed; write everything at the end instead."""
        self._streaming = False
        await self._drop_stream()

    async def fail(self) -> None:
        """An atomic batch will write nothing: roll back what was streamed."""
        self._failed = True
        await self._drop_stream()

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._sent = 0
        if stream is not None:
            await stream.abort()

    async def finish(self) -> list[WriteResult]:
        """Write (commit) the rows, publish the commit; the outcome of every row, in order."""
        if self._done:
            raise RuntimeError("a batch is written once")
        self._done = True
        rows = self.rows
        if self._failed:
            await self._drop_stream()
            return await self._unwritten(rows)
        if not rows:
            return []
        await self._send()
        stream, self._stream = self._stream, None
        assert stream is not None
        try:
            results = await stream.finish()
        finally:
            await stream.abort()  # releases the store if finishing failed; nothing after success
        commit = Commit(rows, results)
        await asyncio.sleep(0)  # the commit's keys and their invalidation in a turn of their own
        if commit:
            await self._publish(commit)
        return results

    async def _unwritten(self, rows: Sequence[NewHandle]) -> list[WriteResult]:
        """Nothing is written: which of the rows exist (EXISTS), the rest NOT_WRITTEN."""
        have: dict[str, int] = {}
        for start in range(0, len(rows), _EXISTS_CHUNK):
            have.update(await self._exists([r.key for r in rows[start : start + _EXISTS_CHUNK]]))
        not_written = WriteResult(WriteOutcome.NOT_WRITTEN)
        return [WriteResult(WriteOutcome.EXISTS, have[r.key]) if r.key in have else not_written for r in rows]

    async def close(self) -> None:
        """Release the store if the batch ended without :meth:`finish` (an error, a disconnect), and
        the rows (freed before the caller lets the cyclic garbage collector run again)."""
        self.rows = []
        await self._drop_stream()
