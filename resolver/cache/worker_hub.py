"""Invalidations between the workers of one ``idnode serve --workers N`` without Redis.

The supervisor runs a :class:`WorkerHub` (a thread with its own event loop, a Unix socket in a
private temporary directory) and every worker connects to it (:class:`~resolver.cache.worker_bus.WorkerBus`).
A worker that committed a write sends the changed keys; the hub passes them to every other worker,
each drops them from its local tier and answers, and once all have answered the hub tells the
writer, which only then acknowledges the write. So a write acknowledged by one worker is never
served stale by another.

Failing closed: the hub and the workers share a small file of *stale flags*, one byte per worker
(memory-mapped). A worker checks its byte before every local-tier read and, when it is set, clears
it and drops its whole tier. The hub sets a worker's byte when that worker has not answered within
``ack_wait`` (its event loop may be blocked: it will read its byte before serving from the tier
again) and when its connection is lost; a writer that hears nothing back from the hub in time
sets every other worker's byte itself. A worker not connected to the hub does not use its tier.

Frames: a 4-byte big-endian length, then msgpack. Worker to hub: ``["hello", slot, pid]``,
``["inv", seq, keys | None]`` (None: everything), ``["ack", origin, seq]``. Hub to worker:
``["welcome"]``, ``["inv", origin, seq, keys | None]``, ``["done", seq]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = ["HUB_ENV", "MAX_FRAME", "MAX_SLOTS", "WorkerHub", "open_flags", "read_frame", "write_frame"]

log = logging.getLogger("idnode.cache")
HUB_ENV = "IDNODE_WORKER_HUB"  # "<socket path>#<slot>", set by the supervisor for each worker
MAX_SLOTS = 1024  # bytes in the stale-flags file: one per worker number
MAX_FRAME = 256 * 1024 * 1024  # an invalidation of a whole batch is one frame
_LENGTH = struct.Struct(">I")


def open_flags(path: str) -> mmap.mmap:
    """The stale flags file, memory-mapped for reading and writing."""
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), MAX_SLOTS)


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return msgpack.unpackb(await reader.readexactly(size), use_list=True)


def write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    data = msgpack.packb(message, use_bin_type=True)
    writer.write(_LENGTH.pack(len(data)) + data)


@dataclass
class _Pending:
    waiting: set[int]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerHub:
    """The supervisor's side: see the module. ``start()`` returns once it listens."""

    def __init__(self, directory: str, *, ack_wait: float) -> None:
        self.path = os.path.join(directory, "hub.sock")
        self.flags_path = os.path.join(directory, "stale")
        self.ack_wait = ack_wait
        with open(self.flags_path, "wb") as f:
            f.write(bytes(MAX_SLOTS))
        self.flags = open_flags(self.flags_path)
        self._conns: dict[int, asyncio.StreamWriter] = {}
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.timeouts = 0  # workers that did not answer in time (their flags were set)

    def address(self, slot: int) -> str:
        """The value of :data:`HUB_ENV` for worker ``slot``."""
        if not 0 <= slot < MAX_SLOTS:
            raise ValueError(f"at most {MAX_SLOTS} workers")
        return f"{self.path}#{slot}"

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="idnode-worker-hub", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the worker hub did not start")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._serve, self.path)
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._conns.values()):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slot = -1
        try:
            hello = await read_frame(reader)
            if not (isinstance(hello, list) and hello[:1] == ["hello"] and 0 <= int(hello[1]) < MAX_SLOTS):
                return
            slot = int(hello[1])
            old = self._conns.get(slot)
            if old is not None:  # a restarted worker takes over its number
                old.close()
            self._conns[slot] = writer
            write_frame(writer, ["welcome"])
            while True:
                message = await read_frame(reader)
                kind = message[0]
                if kind == "inv":
                    asyncio.get_running_loop().create_task(self._fan_out(slot, message[1], message[2]))
                elif kind == "ack":
                    pending = self._pending.get((message[1], message[2]))
                    if pending is not None:
                        pending.waiting.discard(slot)
                        if not pending.waiting:
                            pending.done.set()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError, TypeError):
            pass
        except Exception:
            log.exception("worker hub: connection of worker %d", slot)
        finally:
            if slot >= 0 and self._conns.get(slot) is writer:
                del self._conns[slot]
                self.flags[slot] = 1  # it may not have noticed yet: its tier is dropped before its next read
                for pending in self._pending.values():
                    pending.waiting.discard(slot)
                    if not pending.waiting:
                        pending.done.set()
            writer.close()

    async def _fan_out(self, origin: int, seq: int, keys: list[str] | None) -> None:
        targets = [slot for slot in self._conns if slot != origin]
        pending = _Pending(set(targets))
        self._pending[origin, seq] = pending
        try:
            for slot in targets:
                write_frame(self._conns[slot], ["inv", origin, seq, keys])
            if pending.waiting:
                try:
                    await asyncio.wait_for(pending.done.wait(), self.ack_wait)
                except TimeoutError:
                    for slot in pending.waiting:
                        self.flags[slot] = 1
                        self.timeouts += 1
                    log.warning(
                        "worker hub: workers %s did not drop invalidated keys in time; their tiers are dropped",
                        sorted(pending.waiting),
                    )
        finally:
            del self._pending[origin, seq]
        writer = self._conns.get(origin)
        if writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                write_frame(writer, ["done", seq])
