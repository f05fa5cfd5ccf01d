"""The native Handle protocol's metrics, counted where it is cheap and flushed into Prometheus.

A resolution answered from the local cache costs the node ~20 µs; one prometheus-client counter
increment costs 0.3–1.5 µs (a lock, and with ``--workers`` a write to a memory-mapped file) and a
histogram observation twice that, so counting each request, its latency and its datagrams directly
would add 10–20 % to every native reply. The handler and the listeners therefore count into
:data:`NATIVE` — plain ints, a dictionary slot and a bisect per request — and :meth:`NativeMeter.flush`
adds what was counted to the series in :mod:`resolver.ops.metrics`: before every scrape of this process
(a scrape hook, so what it shows is exact) and a second after the first count following a flush (so
with several workers every worker's figures are at most a second old in the aggregated scrape).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

from registry.errors import RC_SUCCESS
from resolver.ops import metrics

__all__ = ["FLUSH_INTERVAL", "KNOWN_OPCODES", "NATIVE", "NativeMeter", "opcode_label"]

FLUSH_INTERVAL = 1.0
# HANDLE.NET's opcodes (AbstractMessage.OC_*): others are counted as "other", so labels stay bounded.
KNOWN_OPCODES = frozenset({0, 1, 2, *range(100, 108), 200, 201, 300, 301, 302, 400, 401, 402, *range(1000, 1004)})
_OTHER = -1


def opcode_label(opcode: int) -> str:
    return str(opcode) if opcode in KNOWN_OPCODES else "other"


class NativeMeter:
    """The counts of one process since the last flush. Every method is safe to call from the event
    loop's thread only (as the listeners and the handler do)."""

    __slots__ = (
        "_children",
        "_latency",
        "_refused",
        "_requests",
        "_resolution_codes",
        "_resolution_latency",
        "_timer",
        "bounds",
        "datagrams_in",
        "datagrams_out",
        "first_bound",
        "local_hits",
        "local_negative",
        "ready_first",
        "ready_replies",
        "ready_seconds",
        "tcp_open",
    )

    def __init__(self) -> None:
        self.bounds: tuple[float, ...] = tuple(metrics.NATIVE_LATENCY._upper_bounds[:-1])  # without +Inf
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.tcp_open = 0  # open now (a level, not a count since the flush)
        self.local_hits = 0  # local cache tier hits (and cached "no such handle") of replies sent at once
        self.local_negative = 0
        self.first_bound = self.bounds[0]
        # Resolutions answered from ready replies (responseCode 1, local hits): ``ready`` counts them,
        # or the handler does, inline, while the flush timer is set and the latency is in the first
        # bucket (``ready_first`` of them, ``ready_seconds`` their latencies' sum).
        self.ready_replies = 0
        self.ready_first = 0
        self.ready_seconds = 0.0
        self._requests: dict[tuple[int, int], int] = {}  # (opcode or _OTHER, responseCode) -> count
        self._latency: dict[int, list[Any]] = {}  # opcode -> [count per bucket ..., +Inf count, sum]
        self._resolution_codes: dict[int, int] = {}  # the fast path's: responseCode -> count (opcode 1)
        self._resolution_latency: list[Any] = self._new_latency()
        self._refused: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._children: dict[Any, Any] = {}

    def _new_latency(self) -> list[Any]:
        return [0] * (len(self.bounds) + 1) + [0.0]

    # -- counting (the hot path) ---------------------------------------------------------------------
    def resolution(self, code: int, seconds: float) -> None:
        """:meth:`answered` for a resolution (opcode 1), the native hot path's: no label to work out."""
        codes = self._resolution_codes
        codes[code] = codes.get(code, 0) + 1
        latency = self._resolution_latency
        latency[bisect_left(self.bounds, seconds)] += 1
        latency[-1] += seconds
        if self._timer is None:
            self._schedule()

    def ready(self, seconds: float) -> None:
        """:meth:`resolution` of a ready reply (``NativeHandler.respond_ready``): a local-tier hit
        answered with responseCode 1 (SUCCESS), counted in plain ints."""
        self.ready_replies += 1  # (a local hit each: added to local_hits when flushed)
        latency = self._resolution_latency
        latency[bisect_left(self.bounds, seconds)] += 1
        latency[-1] += seconds
        if self._timer is None:
            self._schedule()

    def answered(self, opcode: int, code: int, seconds: float) -> None:
        """One reply to a request with ``opcode``, carrying ``code``, built ``seconds`` after it came in."""
        if opcode not in KNOWN_OPCODES:
            opcode = _OTHER
        key = (opcode, code)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        latency = self._latency.get(opcode)
        if latency is None:
            latency = self._latency[opcode] = self._new_latency()
        latency[bisect_left(self.bounds, seconds)] += 1
        latency[-1] += seconds
        if self._timer is None:
            self._schedule()

    def refused(self, reason: str) -> None:
        """A TCP connection closed by a limit (``cap``) or refused while closing (``closing``)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1
        if self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next scrape flushes
            return
        self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    # -- into Prometheus -----------------------------------------------------------------------------
    def _child(self, family: Any, *labels: str) -> Any:
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def flush(self) -> None:
        """Add everything counted since the last flush to the Prometheus series."""
        if self._timer is not None:
            self._timer.cancel()  # a scrape came first (or the timer's loop is gone: reschedule later)
            self._timer = None
        requests, self._requests = self._requests, {}
        resolutions, self._resolution_codes = self._resolution_codes, {}
        if self.ready_replies:
            resolutions[RC_SUCCESS] = resolutions.get(RC_SUCCESS, 0) + self.ready_replies
            self.local_hits += self.ready_replies
            self.ready_replies = 0
        if self.ready_first:
            self._resolution_latency[0] += self.ready_first
            self._resolution_latency[-1] += self.ready_seconds
            self.ready_first, self.ready_seconds = 0, 0.0
        for code, count in resolutions.items():
            requests[1, code] = requests.get((1, code), 0) + count
        for (opcode, code), count in requests.items():
            self._child(metrics.NATIVE_REQUESTS, opcode_label(opcode), str(code)).inc(count)
        latency, self._latency = self._latency, {}
        fast, self._resolution_latency = self._resolution_latency, self._new_latency()
        if any(fast[:-1]):  # the fast path counted something
            slow = latency.setdefault(1, self._new_latency())
            latency[1] = [a + b for a, b in zip(slow, fast, strict=True)]
        for opcode, counts in latency.items():
            child = self._child(metrics.NATIVE_LATENCY, opcode_label(opcode))
            # prometheus-client has no bulk observe: add to the child's bucket and sum values, the
            # ones observe() adds to (non-cumulative buckets, in bound order, +Inf last).
            buckets = child._buckets
            assert len(buckets) == len(counts) - 1, "prometheus-client's Histogram layout changed"
            for i, count in enumerate(counts[:-1]):
                if count:
                    buckets[i].inc(count)
            child._sum.inc(counts[-1])
        if self.datagrams_in:
            self._child(metrics.NATIVE_DATAGRAMS, "in").inc(self.datagrams_in)
            self.datagrams_in = 0
        if self.datagrams_out:
            self._child(metrics.NATIVE_DATAGRAMS, "out").inc(self.datagrams_out)
            self.datagrams_out = 0
        for result, count in (("hit", self.local_hits), ("negative", self.local_negative)):
            if count:
                self._child(metrics.CACHE_REQUESTS, "local", result).inc(count)
        self.local_hits = self.local_negative = 0
        refused, self._refused = self._refused, {}
        for reason, count in refused.items():
            self._child(metrics.NATIVE_TCP_REFUSED, reason).inc(count)
        metrics.NATIVE_TCP_CONNECTIONS.set(self.tcp_open)


NATIVE = NativeMeter()
metrics.SCRAPE_HOOKS.append(NATIVE.flush)
