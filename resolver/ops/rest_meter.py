"""The REST hot path's metrics (:mod:`resolver.http.hot_path`), counted as plain ints and flushed
into Prometheus.

A resolve answered from a ready reply costs the node about as much as aiohttp's own work; with
``--workers`` every prometheus-client increment is a lock and a write to a memory-mapped file
(~1–2 µs), and the hot path would make four (the request counter, the latency histogram's bucket and
sum, the cache's hit counter): a tenth of the request. So the hot path counts into :data:`REST` and
:meth:`RestMeter.flush` adds the counts to the same series the full path uses (``idnode_http_requests_total``,
``idnode_http_request_duration_seconds``, ``idnode_cache_requests_total``): before every scrape of
this process (a scrape hook, so what it shows is exact) and a second after the first count following
a flush (so with several workers every worker's figures are at most a second old), as
:mod:`resolver.ops.native_meter` does for the native protocol.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

from resolver.ops import metrics

__all__ = ["FLUSH_INTERVAL", "REST", "ROUTE", "RestMeter"]

FLUSH_INTERVAL = 1.0
ROUTE = "/api/handles/{handle}"  # the route template the full path counts these requests under
_METHODS = ("GET", "HEAD")


class RestMeter:
    """Counts since the last flush; call from the event loop's thread only."""

    __slots__ = ("_latency", "_requests", "_timer", "bounds", "local_hits")

    def __init__(self) -> None:
        self.bounds: tuple[float, ...] = tuple(metrics.HTTP_LATENCY._upper_bounds[:-1])  # without +Inf
        self.local_hits = 0
        self._requests: dict[str, int] = dict.fromkeys(_METHODS, 0)
        self._latency: dict[str, list[Any]] = {m: self._new_latency() for m in _METHODS}
        self._timer: asyncio.TimerHandle | None = None

    def _new_latency(self) -> list[Any]:
        return [0] * (len(self.bounds) + 1) + [0.0]

    def answered(self, method: str, seconds: float, *, local_hit: bool = True) -> None:
        """One 200 answered by the hot path to ``method`` (GET or HEAD) in ``seconds``; ``local_hit``:
        from a ready reply (a local-tier hit the cache did not count)."""
        if local_hit:
            self.local_hits += 1
        self._requests[method] += 1
        latency = self._latency[method]
        latency[bisect_left(self.bounds, seconds)] += 1
        latency[-1] += seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Add everything counted since the last flush to the Prometheus series."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        hits, self.local_hits = self.local_hits, 0
        if hits:
            metrics.CACHE_REQUESTS.labels("local", "hit").inc(hits)
        for method in _METHODS:
            count = self._requests[method]
            if not count:
                continue
            self._requests[method] = 0
            counts, self._latency[method] = self._latency[method], self._new_latency()
            metrics.HTTP_REQUESTS.labels(ROUTE, method, "200").inc(count)
            child = metrics.HTTP_LATENCY.labels(ROUTE, method)
            # prometheus-client has no bulk observe: add to the child's bucket and sum values, the
            # ones observe() adds to (non-cumulative buckets, in bound order, +Inf last).
            buckets = child._buckets
            assert len(buckets) == len(counts) - 1, "prometheus-client's Histogram layout changed"
            for i, n in enumerate(counts[:-1]):
                if n:
                    buckets[i].inc(n)
            child._sum.inc(counts[-1])


REST = RestMeter()
metrics.SCRAPE_HOOKS.append(REST.flush)
