"""Resolution counts (解析量): counted in memory on the resolve paths, flushed to the store every few seconds.

The hot path pays one dict increment: :meth:`ResolutionCounter.count` adds 1 under the prefix exactly
as the client wrote it, in a dict per interface and outcome. Everything else happens off the request
path, in :class:`ResolutionFlusher`, every ``stats_flush_seconds`` and at each Beijing midnight:

1. ``take`` swaps the counter's dicts for empty ones (the event loop runs one thing at a time, so no
   increment falls between); the counts belong to the day the window began.
2. Each prefix is mapped to the prefix it counts for (:func:`registry.resolution_stats.counted_prefix`;
   not-found handles need the enterprise prefixes, read from the store at most once a minute), and
   added to the pending rows and to the Prometheus counters.
3. The pending rows become a batch with a unique id and go to the store as one additive upsert
   (``add_resolution_counts``). A failed flush keeps the batch, with the same id, and tries it again
   next time while new counts gather beside it; the id makes a retry after an unknown outcome count
   once. The store being down never reaches a request.

Every step keeps the counts in the object before it awaits anything, so cancelling a flush loses
nothing. ``close`` (the app's cleanup, after the last request) flushes what is left, trying for up
to ``CLOSE_TIMEOUT`` seconds. With ``--workers N`` each worker counts and flushes its own; the
upserts add up.

Memory is bounded: at most ``MAX_KEYS`` prefixes per interface and outcome between two flushes (more
count for the node prefix), and prefixes made up by clients never reach the store (step 2). The
Prometheus label of a prefix is its own for the first ``stats_metric_prefixes`` prefixes a worker
counts, ``other`` after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from registry.days import SHANGHAI, day_number, day_start
from registry.model import normalise_prefix
from registry.resolution_stats import INTERFACES, counted_prefix
from registry.stores.base import HandleStore, ResolutionCount
from registry.tasks import cancel_and_wait
from resolver.ops.metrics import RESOLUTION_MISSES, RESOLUTIONS

__all__ = ["OTHER_LABEL", "PrefixLabels", "ResolutionCounter", "ResolutionFlusher"]

log = logging.getLogger("idnode.stats")

MAX_KEYS = 10_000  # prefixes per interface and outcome held between two flushes
OVERFLOW = ""  # the key of counts beyond MAX_KEYS: counted for the node prefix
OTHER_LABEL = "other"  # the Prometheus label of prefixes beyond stats_metric_prefixes
KNOWN_TTL = 60.0  # seconds the enterprise prefixes read from the store are trusted
CLOSE_TIMEOUT = 10.0  # seconds the last flush may take at shutdown
_RETRY_LOG_EVERY = 60  # a failing flush is logged once, then every this many attempts

_Raw = dict[str, dict[str, int]]  # interface -> prefix as written -> count


def _empty() -> _Raw:
    return {interface: {} for interface in INTERFACES}


class ResolutionCounter:
    """Resolutions since the last flush, per interface, outcome and prefix as the client wrote it."""

    __slots__ = ("_found", "_missing", "max_keys")

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._found = _empty()
        self._missing = _empty()

    def count(self, prefix: str, interface: str, found: bool = True) -> None:
        """Count one resolution of a handle whose prefix is ``prefix`` (``HandleName.prefix``) through
        ``interface`` (``rest``, ``native`` or ``web``); ``found``: the record was there."""
        counts = (self._found if found else self._missing)[interface]
        n = counts.get(prefix)
        if n is not None:
            counts[prefix] = n + 1
        elif len(counts) < self.max_keys:
            counts[prefix] = 1
        else:
            counts[OVERFLOW] = counts.get(OVERFLOW, 0) + 1

    def take(self) -> tuple[_Raw, _Raw]:
        """(found, not found) counted so far; counting starts afresh."""
        found, missing = self._found, self._missing
        self._found, self._missing = _empty(), _empty()
        return found, missing


class PrefixLabels:
    """Bounded label values: the first ``limit`` prefixes get their own, the rest ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._own: set[str] = set()

    def __call__(self, prefix: str) -> str:
        if prefix in self._own:
            return prefix
        if len(self._own) < self.limit:
            self._own.add(prefix)
            return prefix
        return OTHER_LABEL


class ResolutionFlusher:
    """Moves a :class:`ResolutionCounter`'s counts to the store (see the module's docstring)."""

    def __init__(
        self,
        counter: ResolutionCounter,
        store: HandleStore,
        node_prefix: str,
        *,
        interval: float = 5.0,
        metric_prefixes: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counter = counter
        self.store = store
        self.node_prefix = normalise_prefix(node_prefix)
        self.interval = interval
        self.clock = clock
        self.labels = PrefixLabels(metric_prefixes)
        self.day = day_number(int(clock()))  # the day of the counter's current window
        # Taken from the counter, not yet mapped: (day, interface, found) -> prefix as written -> count.
        self._raw: dict[tuple[int, str, bool], dict[str, int]] = {}
        self._pending: dict[tuple[str, int, str], list[int]] = {}  # (prefix, day, interface) -> [found, not found]
        self._batch: tuple[str, list[ResolutionCount]] | None = None  # being written, or to be tried again
        self._known: frozenset[str] = frozenset()
        self._known_at: float | None = None  # monotonic time of the last successful read
        self._known_tried = -KNOWN_TTL
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # flushes failed in a row

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="idnode-resolution-flush")

    async def close(self) -> None:
        """Stop the periodic flush and flush what is left (for up to ``CLOSE_TIMEOUT`` seconds)."""
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._last_flush(), CLOSE_TIMEOUT)
        if self.unsaved():
            log.error("resolution statistics: %d counted resolutions could not be saved at shutdown", self.unsaved())

    async def _last_flush(self) -> None:
        while True:
            await self.tick(final=True)
            if not self.unsaved():
                return
            await asyncio.sleep(0.5)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._delay())
            try:
                await self.tick()
            except Exception:  # a bug must not stop the counting; the counts stay for the next tick
                log.exception("resolution statistics: flush failed")

    def _delay(self) -> float:
        """Until the next flush: ``interval``, or just past the next Beijing midnight if sooner."""
        now = self.clock()
        tomorrow = dt.datetime.fromtimestamp(now, SHANGHAI).date() + dt.timedelta(days=1)
        return max(0.01, min(self.interval, day_start(tomorrow) - now + 0.01))

    def unsaved(self) -> int:
        """Resolutions counted but not yet in the store (taken from the counter)."""
        total = sum(sum(c.values()) for c in self._raw.values())
        total += sum(f + n for f, n in self._pending.values())
        if self._batch is not None:
            total += sum(c.found + c.not_found for c in self._batch[1])
        return total

    # -- one flush ---------------------------------------------------------------------------------
    async def tick(self, *, final: bool = False) -> None:
        """Take the counter's counts, map them to prefixes, and write what is pending. ``final`` (at
        shutdown): read the enterprise prefixes if they are needed whenever they were last tried, and
        map every count, with the prefixes in hand if they cannot be read."""
        async with self._lock:
            self._take()
            if self._needs_known(final):
                await self._refresh_known()
            self._map(final)
            await self._flush()

    def _take(self) -> None:
        found, missing = self.counter.take()
        day, self.day = self.day, day_number(int(self.clock()))
        for outcome, raw in ((True, found), (False, missing)):
            for interface, counts in raw.items():
                if not counts:
                    continue
                held = self._raw.setdefault((day, interface, outcome), {})
                for prefix, n in counts.items():
                    if prefix not in held and len(held) >= self.counter.max_keys:
                        prefix = OVERFLOW
                    held[prefix] = held.get(prefix, 0) + n

    def _fresh(self) -> bool:
        return self._known_at is not None and time.monotonic() - self._known_at < KNOWN_TTL

    def _needs_known(self, final: bool = False) -> bool:
        """Are there not-found prefixes the enterprise prefixes in hand cannot place?"""
        if self._fresh() or (not final and time.monotonic() - self._known_tried < KNOWN_TTL):
            return False
        return any(not found and any(self._unplaced(p) for p in counts) for (_, _, found), counts in self._raw.items())

    def _unplaced(self, raw: str) -> bool:
        prefix = normalise_prefix(raw)
        return bool(prefix) and prefix != self.node_prefix and prefix != "0.NA" and prefix not in self._known

    async def _refresh_known(self) -> None:
        self._known_tried = time.monotonic()
        try:
            prefixes = await self.store.enterprise_prefixes()
        except Exception as exc:
            log.debug("resolution statistics: cannot read the enterprise prefixes: %r", exc)
            return
        self._known = frozenset(normalise_prefix(p) for p in prefixes)
        self._known_at = time.monotonic()

    def _map(self, final: bool = False) -> None:
        """Raw counts → pending rows (and the Prometheus counters). Not-found counts under prefixes the
        node cannot place yet (the enterprise prefixes could not be read) wait for a later tick."""
        fresh = final or self._fresh()
        for key in list(self._raw):
            day, interface, found = key
            counts = self._raw[key]
            for raw in list(counts):
                if not found and not fresh and self._unplaced(raw):
                    continue
                n = counts.pop(raw)
                prefix = counted_prefix(raw, self.node_prefix, found=found, known=self._known)
                row = self._pending.setdefault((prefix, day, interface), [0, 0])
                row[0 if found else 1] += n
                (RESOLUTIONS if found else RESOLUTION_MISSES).labels(interface, self.labels(prefix)).inc(n)
            if not counts:
                del self._raw[key]

    async def _flush(self) -> None:
        while self._batch is not None or self._pending:
            if self._batch is None:
                rows = [ResolutionCount(p, d, i, f, n) for (p, d, i), (f, n) in self._pending.items()]
                self._batch, self._pending = (uuid.uuid4().hex, rows), {}
            batch_id, rows = self._batch
            try:
                await self.store.add_resolution_counts(batch_id, rows, now=int(self.clock()))
            except Exception as exc:  # StoreUnavailable, or anything else: keep the batch and try again
                self.failures += 1
                if self.failures == 1 or self.failures % _RETRY_LOG_EVERY == 0:
                    log.warning(
                        "resolution statistics: cannot write to the store (%s); %d resolutions kept, retrying",
                        _reason(exc),
                        self.unsaved(),
                    )
                return
            self._batch = None
            if self.failures:
                log.info("resolution statistics: the store takes counts again after %d failed flushes", self.failures)
                self.failures = 0


def _reason(exc: BaseException) -> str:
    message: Any = getattr(exc, "message", None)
    return str(message) if message else type(exc).__name__
