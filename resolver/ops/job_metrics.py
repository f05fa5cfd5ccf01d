"""The jobs' metrics: what this node's job runner did (its events) and what the store holds.

:data:`JOB_METER` is the job runner's observer (:class:`registry.job_events.JobObserver`): rows by
kind and outcome after every stored checkpoint (``rate(idnode_job_rows_total[…])`` is rows per
second), jobs finished by kind and state, and how long each took. :class:`JobStateCollector` reads
the jobs queued and running from the store at scrape time, so the gauge is the same whichever
worker or replica answers the scrape, and counts jobs submitted anywhere (``max`` it across
replicas, never ``sum``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from registry.job_run import KINDS
from resolver.ops import metrics

__all__ = ["JOB_METER", "JOB_STATE_TTL", "JobMeter", "JobStateCollector"]

JOB_STATE_TTL = 5.0  # seconds a read of the job table serves scrapes
UNFINISHED = ("queued", "running")


class JobMeter:
    """Counts the job runner's events into the series of :mod:`resolver.ops.metrics`."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], Any] = {}

    def rows(self, kind: str, counts: Mapping[str, int]) -> None:
        for outcome, n in counts.items():
            child = self._rows.get((kind, outcome))
            if child is None:
                child = self._rows[kind, outcome] = metrics.JOB_ROWS.labels(kind, outcome)
            child.inc(n)

    def ended(self, kind: str, state: str, seconds: float) -> None:
        metrics.JOBS_FINISHED.labels(kind, state).inc()
        metrics.JOB_DURATION.labels(kind, state).observe(seconds)


JOB_METER = JobMeter()


class JobStateCollector:
    """``idnode_jobs{state, kind}``: jobs queued and running now, counted by the store (one
    ``GROUP BY kind, state`` over every job, read at most every ``JOB_STATE_TTL`` s)."""

    name = "jobs"

    def __init__(self, store: Callable[[], Any]) -> None:
        self._store = store  # the store, once the node has opened it (None before)
        self._counts: dict[tuple[str, str], int] | None = None
        self._at = 0.0

    async def refresh(self) -> None:
        if self._counts is not None and time.monotonic() - self._at <= JOB_STATE_TTL:
            return
        store = self._store()
        if store is None:
            raise RuntimeError("the node has not opened its store yet")
        read: Awaitable[dict[tuple[str, str], int]] = store.job_counts_by_kind()
        counts = {(state, kind): 0 for state in UNFINISHED for kind in KINDS}
        for (kind, state), n in (await read).items():
            if (state, kind) in counts:
                counts[state, kind] = n
        self._counts, self._at = counts, time.monotonic()

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "idnode_jobs",
            "Jobs queued and running now, by state and kind (the store's, read at scrape time).",
            labels=["state", "kind"],
        )
        for (state, kind), n in sorted((self._counts or {}).items()):
            family.add_metric([state, kind], n)
        yield family
