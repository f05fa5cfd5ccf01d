"""Prometheus metrics. Label values are bounded: routes are route templates, never handles.

Two scrape paths. ``/metrics`` is open and holds the operational series (requests, latencies,
caches, store, Redis, batches, handle changes, the process). ``/metrics/business`` holds the
business figures, which are no more public than the tallies they come from: registrations and
resolutions per enterprise prefix and the clause-8 gauges per promoter (award, eligible enterprises,
registrations); it takes the same credentials as the tallies (node administrator or auditor, HTTP
Basic or a Handle session).

With ``--workers N`` each worker writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by the
server before the workers start) and both paths aggregate them (prometheus-client multiprocess
mode). The business figures are computed from the store at scrape time (cached briefly), so every
worker reports the same numbers and every writer counts (``idnode import`` too). Nothing is
counted in request handlers: :func:`write_metrics` subscribes to the write service's events.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from registry.auth import Caller
from registry.errors import PermissionDenied
from registry.write_events import Commit, Subscriber
from registry.write_plan import Change

__all__ = [
    "BATCH_ITEMS",
    "CACHE_REQUESTS",
    "GS1_RESOLUTIONS",
    "HANDLE_CHANGES",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "JOBS_FINISHED",
    "JOB_DURATION",
    "JOB_ROWS",
    "LABELS",
    "LABEL_SHEETS",
    "LABEL_SHEET_SECONDS",
    "NATIVE_DATAGRAMS",
    "NATIVE_LATENCY",
    "NATIVE_REQUESTS",
    "NATIVE_TCP_CONNECTIONS",
    "NATIVE_TCP_REFUSED",
    "QR_CODES",
    "REDIS_BREAKER",
    "REDIS_ERRORS",
    "RESOLUTIONS",
    "RESOLUTION_MISSES",
    "SCRAPE_HOOKS",
    "STORE_ERRORS",
    "STORE_LATENCY",
    "WEB_ERROR_PAGES",
    "WEB_LANDING_PAGES",
    "WEB_LINKSETS",
    "WEB_REDIRECTS",
    "InstrumentedStore",
    "ScrapeCollector",
    "business_metrics_handler",
    "metrics_handler",
    "record_request",
    "write_metrics",
]

MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)

HTTP_REQUESTS = Counter(
    "idnode_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "idnode_http_request_duration_seconds",
    "HTTP request latency by route and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "idnode_cache_requests_total", "Cache lookups by tier and result (hit, miss, negative).", ["tier", "result"]
)
STORE_LATENCY = Histogram(
    "idnode_store_operation_duration_seconds", "Store operation latency.", ["operation"], buckets=_LATENCY_BUCKETS
)
STORE_ERRORS = Counter("idnode_store_errors_total", "Store operations that failed (unavailable).", ["operation"])
REDIS_LATENCY = Histogram(
    "idnode_redis_operation_duration_seconds", "Redis round-trip latency.", ["operation"], buckets=_LATENCY_BUCKETS
)
REDIS_ERRORS = Counter("idnode_redis_errors_total", "Redis operations that failed.", ["operation"])
REDIS_BREAKER = Gauge(
    "idnode_redis_breaker_state", "Redis circuit breaker: 0 closed, 1 half-open, 2 open.", multiprocess_mode="max"
)
BATCH_ITEMS = Histogram(
    "idnode_batch_size_items",
    "Items per batch registration request.",
    buckets=(1, 10, 100, 1000, 10_000, 50_000, 100_000),
)
BATCH_RESULTS = Counter(
    "idnode_batch_item_outcomes_total", "Batch items by outcome (created, replaced, failed).", ["outcome"]
)
HANDLE_CHANGES = Counter(
    "idnode_handle_changes_total",
    "Handles created, replaced and deleted by this node's writes (its write events), by change.",
    ["change"],
)
# Added by resolver.ops.resolutions at each flush (not per request); prefix labels bounded there.
RESOLUTIONS = Counter(
    "idnode_resolutions_total",
    "Resolutions answered with the record, by interface and prefix ('other' past stats_metric_prefixes).",
    ["interface", "prefix"],
)
RESOLUTION_MISSES = Counter(
    "idnode_resolutions_not_found_total",
    "Resolutions of handles not found, by interface and prefix ('other' past stats_metric_prefixes).",
    ["interface", "prefix"],
)

# The native Handle protocol (UDP, TCP, and its messages over HTTP). Counted into plain ints on the
# hot path and added here in one flush (resolver.ops.native_meter): labels are bounded (known
# opcodes, else "other"; the responseCodes the node sends).
NATIVE_REQUESTS = Counter(
    "idnode_native_requests_total",
    "Native Handle protocol requests answered, by opcode and responseCode.",
    ["opcode", "code"],
)
NATIVE_LATENCY = Histogram(
    "idnode_native_request_duration_seconds",
    "Native Handle protocol requests: from the whole message received to its reply built, by opcode.",
    ["opcode"],
    buckets=(0.0001, 0.00025, *_LATENCY_BUCKETS),
)
NATIVE_DATAGRAMS = Counter(
    "idnode_native_udp_datagrams_total", "Native UDP datagrams received (in) and sent (out).", ["direction"]
)
NATIVE_TCP_CONNECTIONS = Gauge(
    "idnode_native_tcp_connections", "Open native TCP connections.", multiprocess_mode="livesum"
)
NATIVE_TCP_REFUSED = Counter(
    "idnode_native_tcp_connections_refused_total",
    "Native TCP connections closed by the node's limits: the idlest one at a connection cap (cap), or "
    "one that arrived while the listeners were closing (closing).",
    ["reason"],
)

# The web resolver (resolver.proxy, resolver.labels, GS1 Digital Link). Each outcome is counted
# by one pre-bound child (one increment on the hot path): the modules bind theirs at import.
WEB_REDIRECTS = Counter(
    "idnode_web_redirects_total",
    "Web resolver redirects by status: 302 to a handle's target, 303 from the home page's form.",
    ["status"],
)
WEB_LANDING_PAGES = Counter("idnode_web_landing_pages_total", "Landing pages of handles served, by language.", ["lang"])
WEB_LINKSETS = Counter("idnode_web_linksets_total", "Linksets (application/linkset+json) of handles served.")
WEB_ERROR_PAGES = Counter(
    "idnode_web_error_pages_total", "Error pages for people at handles' URLs (and GS1 links), by status.", ["status"]
)
GS1_RESOLUTIONS = Counter(
    "idnode_gs1_resolutions_total",
    "GS1 Digital Link requests: resolved to a handle (answered by the proxy), not_found, invalid.",
    ["outcome"],
)
QR_CODES = Counter(
    "idnode_qr_codes_total",
    "QR codes served by format; rendered=true when made for the request, false from the code cache.",
    ["format", "rendered"],
)
LABEL_SHEETS = Counter("idnode_label_sheets_total", "PDF label sheets made.")
LABELS = Counter("idnode_labels_total", "Labels on the PDF label sheets made.")
LABEL_SHEET_SECONDS = Histogram(
    "idnode_label_sheet_duration_seconds",
    "Time to make one PDF label sheet (reading the handles, laying out, the PDF).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

# Jobs (registry.job_runner): the runner's events, counted by resolver.ops.job_metrics; the queued
# and running jobs are read from the store at scrape time (JobStateCollector there).
JOBS_FINISHED = Counter(
    "idnode_jobs_finished_total", "Jobs finished, by kind and state (done, failed).", ["kind", "state"]
)
JOB_ROWS = Counter(
    "idnode_job_rows_total",
    "Rows the jobs of this node processed, by kind and outcome (created, replaced, deleted, present, "
    "absent, rejected); rate() is rows per second.",
    ["kind", "outcome"],
)
JOB_DURATION = Histogram(
    "idnode_job_duration_seconds",
    "Jobs finished: seconds from first started to finished (resumptions included), by kind and state.",
    ["kind", "state"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)

METRICS_PATH = "/metrics"
BUSINESS_PATH = "/metrics/business"

# Called before every scrape: counts kept as plain ints in this process are added to the series.
SCRAPE_HOOKS: list[Callable[[], None]] = []

TALLY_TTL = 60.0
REGISTRATIONS_TTL = 5.0  # other workers' and processes' writes show within this; this process's at once


def route_of(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    if route is None or route.resource is None:
        return "unmatched"
    return route.resource.canonical


_CHILDREN: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _children(route: str, method: str, status: str) -> tuple[Any, Any]:
    """The labelled counter and histogram of one (route, method, status), looked up once: label
    lookups cost more than the increments on the resolve path."""
    key = (route, method, status)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = (HTTP_REQUESTS.labels(route, method, status), HTTP_LATENCY.labels(route, method))
    return found


def record_request(request: web.Request, status: int, seconds: float) -> None:
    """Count one answered request by route template, method and status (called by the one
    middleware in resolver.http.access)."""
    route = route_of(request)
    if route not in (METRICS_PATH, BUSINESS_PATH):
        counter, latency = _children(route, request.method, str(status))
        counter.inc()
        latency.observe(seconds)


class TallyCollector:
    """The business figures computed from the store at scrape time. Per promoter: eligible
    enterprises, registrations and current award of a live tally for this calendar year; per
    enterprise prefix: registrations this year (computed at most every ``TALLY_TTL`` s). Per
    enterprise prefix: identifiers registered, all time, from the store's exact registration
    counters (``registrations``; at most every ``REGISTRATIONS_TTL`` s, and afresh after a write
    of this process), so ``idnode import`` and every other writer count."""

    FAMILIES = frozenset(
        {
            "idnode_promoter_eligible_enterprises",
            "idnode_promoter_registrations",
            "idnode_promoter_award_yuan",
            "idnode_enterprise_registrations",
            "idnode_registrations",
        }
    )

    def __init__(
        self,
        compute: Callable[[], Awaitable[Any]],
        registrations: Callable[[], Awaitable[Mapping[str, int]]] | None = None,
    ) -> None:
        self._compute = compute
        self._cached: Any = None
        self._at = 0.0
        self._registrations = registrations
        self._counts: Mapping[str, int] | None = None
        self._counts_at = 0.0

    def registrations_changed(self) -> None:
        """This process wrote handles: read the counters again at the next scrape."""
        self._counts_at = -REGISTRATIONS_TTL

    async def refresh(self) -> None:
        """Recompute what is due; a failure is raised once both parts were tried."""
        failure: Exception | None = None
        now = time.monotonic()
        if self._registrations is not None and (self._counts is None or now - self._counts_at > REGISTRATIONS_TTL):
            try:
                self._counts = await self._registrations()
                self._counts_at = now
            except Exception as exc:  # the store is down; the tally will say so too
                failure = exc
        if self._cached is None or now - self._at > TALLY_TTL:
            self._cached = await self._compute()
            self._at = time.monotonic()
        if failure is not None:
            raise failure

    def collect(self) -> Iterable[Any]:
        tally = self._cached
        eligible = GaugeMetricFamily(
            "idnode_promoter_eligible_enterprises",
            "Eligible enterprises per promoter (live tally, this year).",
            labels=["promoter"],
        )
        regs = GaugeMetricFamily(
            "idnode_promoter_registrations", "Registrations per promoter (live tally, this year).", labels=["promoter"]
        )
        award = GaugeMetricFamily(
            "idnode_promoter_award_yuan", "Current clause-8 award per promoter in CNY.", labels=["promoter"]
        )
        ent = GaugeMetricFamily(
            "idnode_enterprise_registrations",
            "Registrations per enterprise prefix (live tally, this year).",
            labels=["prefix"],
        )
        total = CounterMetricFamily(
            "idnode_registrations",
            "Identifiers registered under each enterprise prefix, all time, net of deletions (the store's counters).",
            labels=["prefix"],
        )
        if tally is not None:
            for pt in tally.promoters:
                label = [str(pt.promoter.id)]
                eligible.add_metric(label, pt.award.eligible_enterprises)
                regs.add_metric(label, pt.award.total_registrations)
                award.add_metric(label, pt.award.award_yuan)
                for row in pt.enterprises:
                    ent.add_metric([row.prefix], row.registrations)
        for prefix, n in sorted((self._counts or {}).items()):
            total.add_metric([prefix], n)
        yield from (eligible, regs, award, ent, total)


def write_metrics(tally: TallyCollector | None) -> Subscriber:
    """The write-event subscriber of the metrics: counts the handles each commit changed and has
    the registration counters read again after a creation or deletion."""

    async def on_commit(commit: Commit) -> None:
        counts = commit.counts()
        for change, n in counts.items():
            HANDLE_CHANGES.labels(change.value).inc(n)
        if tally is not None and (Change.CREATED in counts or Change.DELETED in counts):
            tally.registrations_changed()

    return on_commit


# Families (names without _total) served only on /metrics/business.
BUSINESS_FAMILIES = frozenset({"idnode_resolutions", "idnode_resolutions_not_found", *TallyCollector.FAMILIES})


class _Part:
    """The families of ``source`` that are (or are not) business figures."""

    def __init__(self, source: Any, business: bool) -> None:
        self._source = source
        self._business = business

    def collect(self) -> Iterable[Any]:
        for family in self._source.collect():
            if (family.name in BUSINESS_FAMILIES) == self._business:
                yield family


def _exposition(business: bool) -> bytes:
    for hook in SCRAPE_HOOKS:
        hook()
    if MULTIPROC:
        source: Any = MultiProcessCollector(None)
    else:
        from prometheus_client import REGISTRY

        source = REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Part(source, business))  # type: ignore[arg-type]
    return generate_latest(registry)


def _reply(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class ScrapeCollector(Protocol):
    """Operational families read at scrape time (from the store): ``refresh`` before ``collect``."""

    name: str  # the operation STORE_ERRORS counts when refresh fails

    async def refresh(self) -> None: ...
    def collect(self) -> Iterable[Any]: ...


def metrics_handler(collectors: Sequence[ScrapeCollector] = ()) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``/metrics``: the operational series, open to any scraper; with the families of
    ``collectors`` (each left out, and its failure counted, while the store is down)."""

    async def metrics(request: web.Request) -> web.Response:
        body = _exposition(business=False)
        if collectors:
            extra = CollectorRegistry(auto_describe=False)
            for collector in collectors:
                try:
                    await collector.refresh()
                except Exception:  # the store is down: /readyz says so; the scrape still answers
                    STORE_ERRORS.labels(collector.name).inc()
                    continue
                extra.register(collector)  # type: ignore[arg-type]
            body += generate_latest(extra)
        return _reply(body)

    return metrics


def business_metrics_handler(
    tally: TallyCollector | None, authenticate: Callable[[web.Request], Awaitable[Caller]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``/metrics/business``: registrations per enterprise and the clause-8 gauges, for the node
    administrator and the bureau's auditor identities only (as the tallies)."""

    async def business_metrics(request: web.Request) -> web.Response:
        caller = await authenticate(request)
        caller.require_authenticated()
        if not (caller.node_admin or caller.role == "auditor"):
            raise PermissionDenied("business metrics are for the auditor identities and node administrators")
        body = _exposition(business=True)
        if tally is not None:
            try:
                await tally.refresh()
                extra = CollectorRegistry(auto_describe=False)
                extra.register(tally)  # type: ignore[arg-type]
                body += generate_latest(extra)
            except Exception:  # the store is down: its figures are left out, the error counted
                STORE_ERRORS.labels("tally").inc()
        return _reply(body)

    return business_metrics


def this_year(now: dt.datetime) -> tuple[dt.date, dt.date]:
    from registry.days import SHANGHAI

    year = now.astimezone(SHANGHAI).year
    return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)


class InstrumentedStore:
    """Wraps a store so every call is timed and every StoreUnavailable counted, by method name."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            from registry.errors import StoreUnavailable

            start = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            except StoreUnavailable:
                STORE_ERRORS.labels(name).inc()
                raise
            finally:
                STORE_LATENCY.labels(name).observe(time.perf_counter() - start)

        setattr(self, name, timed)  # build the wrapper once per method
        return timed
