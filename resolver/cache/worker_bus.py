"""A worker's side of the invalidations between workers without Redis (see :mod:`resolver.cache.worker_hub`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Sequence

from resolver.cache.worker_hub import MAX_SLOTS, open_flags, read_frame, write_frame

__all__ = ["WorkerBus"]

log = logging.getLogger("idnode.cache")
RECONNECT_DELAY = 0.2  # seconds between attempts to reach the hub
DONE_GRACE = 0.5  # seconds beyond ack_wait a writer waits for the hub's answer


class WorkerBus:
    """Connected to the supervisor's hub at ``address`` (``<socket path>#<slot>``). ``on_keys`` drops
    keys (None: everything) from the local tier; ``on_connected``/``on_disconnected`` switch the tier
    on (dropped whole first) and off."""

    def __init__(
        self,
        address: str,
        *,
        on_keys: Callable[[Sequence[str] | None], None],
        on_connected: Callable[[], None],
        on_disconnected: Callable[[], None],
        ack_wait: float = 1.0,
    ) -> None:
        path, _, slot = address.rpartition("#")
        self.path = path
        self.slot = int(slot)
        if not path or not 0 <= self.slot < MAX_SLOTS:
            raise ValueError(f"not a worker hub address: {address!r}")
        self.flags = open_flags(os.path.join(os.path.dirname(path), "stale"))
        self.on_keys = on_keys
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.ack_wait = ack_wait
        self.subscribed = False
        self._writer: asyncio.StreamWriter | None = None
        self._seq = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.fenced = 0  # writes after which the other workers' flags were set (no answer from the hub)

    def stale(self) -> bool:
        """Was this worker's stale flag set? (Cleared here: the caller drops its whole tier.)"""
        flags = self.flags
        if flags[self.slot]:
            flags[self.slot] = 0
            return True
        return False

    async def start(self, wait: float = 2.0) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait)
        if not self.subscribed:
            log.warning("cache: cannot reach the supervisor's worker hub yet: local tier off until it answers")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flags.close()

    async def invalidate(self, keys: Sequence[str] | None) -> None:
        """Tell every other worker to drop ``keys`` (None: everything); returns once each has, or once
        their tiers are sure to be dropped before their next read."""
        writer = self._writer
        if writer is None or not self.subscribed:
            self._fence_others()
            return
        seq = next(self._seq)
        done = asyncio.get_running_loop().create_future()
        self._waiting[seq] = done
        try:
            write_frame(writer, ["inv", seq, list(keys) if keys is not None else None])
            await asyncio.wait_for(done, self.ack_wait + DONE_GRACE)
        except (TimeoutError, ConnectionError, RuntimeError):
            self._fence_others()
            writer.close()  # the hub is not answering: reconnect (and drop this tier meanwhile)
        finally:
            self._waiting.pop(seq, None)

    def _fence_others(self) -> None:
        self.fenced += 1
        flags = self.flags
        for slot in range(MAX_SLOTS):
            if slot != self.slot:
                flags[slot] = 1

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
            except OSError:
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            try:
                write_frame(writer, ["hello", self.slot, os.getpid()])
                welcome = await read_frame(reader)
                if welcome != ["welcome"]:
                    raise ConnectionError("unexpected greeting from the worker hub")
                self._writer = writer
                self.subscribed = True
                self.stale()  # a flag set before this connection: covered by the drop below
                self.on_connected()
                self._connected.set()
                while True:
                    message = await read_frame(reader)
                    if message[0] == "inv":
                        self.on_keys(message[3])
                        write_frame(writer, ["ack", message[1], message[2]])
                    elif message[0] == "done":
                        done = self._waiting.get(message[1])
                        if done is not None and not done.done():
                            done.set_result(None)
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, IndexError, TypeError):
                pass
            finally:
                was = self.subscribed
                self.subscribed = False
                self._writer = None
                self._connected.clear()
                writer.close()
                for done in self._waiting.values():  # their writers fence the other workers
                    if not done.done():
                        done.set_exception(ConnectionError("worker hub connection lost"))
                if was:
                    self.on_disconnected()
                if was and not self._closing:
                    log.warning("cache: lost the supervisor's worker hub: local tier off until it is back")
            await asyncio.sleep(RECONNECT_DELAY)
