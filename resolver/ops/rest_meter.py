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
ROUTE = "/api/handles/{handle}"  # the route template of the REST resolve
_Key = tuple[str, str, int]  # route template, method, status


class RestMeter:
    """Counts since the last flush; call from the event loop's thread only."""

    __slots__ = ("_counts", "_latency", "_timer", "bounds", "local_hits")

    def __init__(self) -> None:
        self.bounds: tuple[float, ...] = tuple(metrics.HTTP_LATENCY._upper_bounds[:-1])  # without +Inf
        self.local_hits = 0
        self._counts: dict[_Key, int] = {}
        self._latency: dict[tuple[str, str], list[Any]] = {}  # (route, method) -> [per bucket ..., +Inf, sum]
        self._timer: asyncio.TimerHandle | None = None

    def _new_latency(self) -> list[Any]:
        return [0] * (len(self.bounds) + 1) + [0.0]

    def answered(self, route: str, method: str, status: int, seconds: float, *, local_hit: bool = True) -> None:
        """One request to ``route`` answered by the hot path in ``seconds``; ``local_hit``: from a
        ready reply (a local-tier hit the cache did not count)."""
        if local_hit:
            self.local_hits += 1
        key = (route, method, status)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        latency = self._latency.get((route, method))
        if latency is None:
            latency = self._latency[route, method] = self._new_latency()
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
        counts, self._counts = self._counts, {}
        for (route, method, status), count in counts.items():
            metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc(count)
        latencies, self._latency = self._latency, {}
        for (route, method), buckets_counted in latencies.items():
            child = metrics.HTTP_LATENCY.labels(route, method)
            # prometheus-client has no bulk observe: add to the child's bucket and sum values, the
            # ones observe() adds to (non-cumulative buckets, in bound order, +Inf last).
            buckets = child._buckets
            assert len(buckets) == len(buckets_counted) - 1, "prometheus-client's Histogram layout changed"
            for i, n in enumerate(buckets_counted[:-1]):
                if n:
                    buckets[i].inc(n)
            child._sum.inc(buckets_counted[-1])


REST = RestMeter()
metrics.SCRAPE_HOOKS.append(REST.flush)
