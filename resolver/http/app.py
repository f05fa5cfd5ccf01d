"""The aiohttp application: ``create_app(config)`` wires store, registry, resolver and routes."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from promotion_tracker.policy import Policy, PolicyError
from promotion_tracker.routes import BUREAU_PAGES, TRACKER_KEY, TrackerState, tracker_routes
from promotion_tracker.signing import REPORT_KEY_INDEX, REPORT_KEY_TYPE, SigningKeyError, node_signer
from promotion_tracker.webpages import setup_pages
from registry import valuedata
from registry.counts import registrations_by_prefix
from registry.job_runner import JobRunner
from registry.model import HandleValue
from registry.service import Registry
from registry.stores import open_store
from registry.stores.base import HandleStore
from registry.value_index import ValueIndexer
from resolver.cache.decoded import DecodedRecords
from resolver.cache.shared import node_cache
from resolver.config import Config, ConfigError
from resolver.console.app import setup_console
from resolver.console.site import CONSOLE_PAGES
from resolver.datadir import prepare_data_dir
from resolver.http.access import request_context
from resolver.http.admin_routes import admin_routes
from resolver.http.api_docs import api_docs_routes
from resolver.http.audit_routes import audit_routes
from resolver.http.batch_routes import batch_routes
from resolver.http.gs1_routes import gs1_routes
from resolver.http.job_routes import job_routes
from resolver.http.keys import CONFIG_KEY, STATE_KEY, NodeState
from resolver.http.routes import routes
from resolver.http.search_routes import search_routes
from resolver.http.session_routes import session_routes
from resolver.http.sessions import SessionStore
from resolver.http.stats_routes import stats_routes
from resolver.http.template_routes import template_routes
from resolver.http.throttle import GuessThrottle
from resolver.http.web import announce_session, request_caller
from resolver.labels.routes import setup_labels
from resolver.native.handler import NativeHandler
from resolver.native.http import NATIVE_HTTP_KEY, add_native_http_route
from resolver.ops.banner import STARTUP_KEY, StartupFacts
from resolver.ops.health import health_routes
from resolver.ops.job_metrics import JOB_METER, JobStateCollector
from resolver.ops.metrics import (
    BUSINESS_PATH,
    METRICS_PATH,
    InstrumentedStore,
    TallyCollector,
    business_metrics_handler,
    metrics_handler,
    this_year,
    write_metrics,
)
from resolver.ops.resolutions import ResolutionFlusher
from resolver.proxy import PROXY_PAGES, add_proxy_routes
from resolver.resolve import Resolver

__all__ = ["create_app", "node_site"]

log = logging.getLogger("idnode")
ADMIN_SECRET_ENV = "IDNODE_ADMIN_SECRET"


def node_site(config: Config, *, native: bool | None = None) -> bytes:
    """The HS_SITE value describing this node's interfaces (RFC 3651 section 3.2.2): the HTTP port
    (the API, and native messages over HTTP), and TCP and UDP on ``native_port`` when ``native``
    (default: when ``native_port`` is set; :mod:`resolver.server` says whether they were actually bound)."""
    try:
        address = ipaddress.ip_address(config.advertise_host or config.host)
    except ValueError:
        address = ipaddress.ip_address("127.0.0.1")
    if address.is_unspecified:
        address = ipaddress.ip_address("127.0.0.1")
    http = valuedata.PROTO_HTTPS if config.tls_cert else valuedata.PROTO_HTTP
    interfaces = [valuedata.Interface(valuedata.IF_ADMIN_AND_QUERY, http, config.port)]
    listed = bool(config.native_port) if native is None else native
    if listed:
        interfaces += [
            valuedata.Interface(valuedata.IF_QUERY, valuedata.PROTO_TCP, config.native_port),
            valuedata.Interface(valuedata.IF_QUERY, valuedata.PROTO_UDP, config.native_port),
        ]
    site = valuedata.SiteInfo(
        serial=1,
        primary=True,
        attributes=(("desc", f"idnode secondary node {config.prefix}"),),
        servers=(valuedata.ServerInfo(server_id=1, address=address, interfaces=tuple(interfaces)),),
    )
    return valuedata.encode_site(site)


async def _live_tally(tracker: TrackerState):  # type: ignore[no-untyped-def]
    """This year's live tally, for the per-promoter gauges on /metrics/business."""
    import datetime as dt

    from promotion_tracker.tally import compute_tally

    if tracker.store is None:
        raise RuntimeError("not started")
    now = dt.datetime.fromtimestamp(tracker.clock(), dt.UTC)
    start, end = this_year(now)
    return await compute_tally(tracker.store, start, end, None, tracker.policy, now=now)


async def _no_trigram_index(store: HandleStore) -> bool:
    """PostgreSQL without pg_trgm (the migration goes on without its index)."""
    check = getattr(store, "trigram_index_missing", None)
    return bool(check is not None and await check())


async def _registrations(tracker: TrackerState) -> dict[str, int]:
    """Identifiers per enterprise prefix from the store's counters, for /metrics/business."""
    if tracker.store is None:
        raise RuntimeError("not started")
    return await registrations_by_prefix(tracker.store)


def create_app(
    config: Config,
    store: HandleStore | None = None,
    *,
    clock: Callable[[], int] | None = None,
    publish_site: bool = True,
    background: bool = True,
) -> web.Application:
    """Build the application. Its startup builds the node's parts (store, registry, cache, resolver,
    the native protocol's handler in ``NodeState.native``), bootstraps the prefix handle and the
    report key; it binds no listener of its own (:func:`resolver.server.node_app` adds the native
    UDP/TCP listeners). ``store`` may be passed in (tests); otherwise it is opened from
    ``config.store_url`` at startup and closed at cleanup. ``clock`` (UNIX seconds) is for tests
    that need registrations, moves and tallies at chosen times. With ``publish_site`` the prefix
    handle's HS_SITE lists the HTTP interface (what this application serves); ``False`` leaves it
    as it is (``node_app`` publishes it once the native listeners are bound, and the supervisor's
    one-off bootstrap leaves it to its workers). ``background``: run this process's share of the
    jobs and keep the value index up to date (not in the supervisor's one-off bootstrap)."""
    app = web.Application(
        middlewares=[request_context],
        client_max_size=config.max_body_bytes,
        # Bodies are decoded by resolver.http.bodies, within the body limits and with JSON errors.
        handler_args={"auto_decompress": False},
    )
    app[CONFIG_KEY] = config
    app.on_response_prepare.append(announce_session)
    state = app[STATE_KEY] = NodeState(sessions=SessionStore(per_address=config.sessions_per_address))
    facts = app[STARTUP_KEY] = StartupFacts()  # for the banner (resolver.ops.banner)
    app.router.add_routes(routes)
    app.router.add_routes(batch_routes)
    app.router.add_routes(admin_routes)
    app.router.add_routes(template_routes)
    app.router.add_routes(gs1_routes)  # /01/… (GS1 Digital Link) and /.well-known/gs1resolver
    app.router.add_routes(session_routes)
    setup_labels(app)  # /api/qr/{handle}, /api/labels
    app.router.add_routes(stats_routes)
    app.router.add_routes(job_routes)  # /api/jobs: files run as background jobs
    app.router.add_routes(search_routes)  # /hrls/handles: reverse lookup
    app.router.add_routes(audit_routes)  # /api/audit
    app.router.add_routes(tracker_routes)
    setup_console(app, clock=clock)  # /console: the web console (its routes, sessions and HTML errors)
    setup_pages(app, BUREAU_PAGES, PROXY_PAGES, CONSOLE_PAGES)  # every page's templates and catalogues
    app.router.add_routes(health_routes)
    job_states = JobStateCollector(lambda: state.registry.store if state.registry is not None else None)
    app.router.add_get(METRICS_PATH, metrics_handler([job_states]))
    tally_gauges = TallyCollector(lambda: _live_tally(tracker), lambda: _registrations(tracker))
    app.router.add_get(BUSINESS_PATH, business_metrics_handler(tally_gauges, request_caller))
    app.router.add_routes(api_docs_routes)
    add_native_http_route(app)  # POST application/x-hdl-message at any path; nothing else
    add_proxy_routes(app)  # GET / and GET /{prefix}/{suffix} for people: after every other route
    tracker = app[TRACKER_KEY] = TrackerState(authenticate=request_caller, node_prefix=config.prefix)
    if clock is not None:
        tracker.clock = clock
    try:
        tracker.policy = Policy.from_file(config.policy_file) if config.policy_file else Policy()
    except PolicyError as exc:
        raise ConfigError(f"policy_file: {exc}") from None

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        if own_store:
            prepare_data_dir(config)
        opened = InstrumentedStore(store if store is not None else await open_store(config.store_url))
        settings = config.node_settings()
        registry = Registry(opened, settings, clock=clock) if clock else Registry(opened, settings)
        records = DecodedRecords()  # shared by the cache and the resolver: one unpack per record
        cache = await node_cache(config, opened, records=records)  # None when no tier is configured
        if cache is not None:
            registry.subscribe(cache.on_commit)  # first: a write is acknowledged once every node forgot it
        registry.subscribe(write_metrics(tally_gauges))
        resolver = Resolver(opened, cache, records=records)
        # Native messages over HTTP need no listener; resolver.server binds UDP/TCP for this handler
        # and then describes them in HS_SITE.
        site = node_site(config, native=False)
        handler = NativeHandler(resolver, registry, site)
        handler.resolutions = state.resolutions  # one counter for every interface of this process
        secret = os.environ.get(ADMIN_SECRET_ENV) or None
        facts.generated_secret = await registry.bootstrap(  # printed once by the banner
            secret, site if publish_site else None
        )
        try:
            signer = await node_signer(opened, config.report_key_file or None)
        except SigningKeyError as exc:
            raise ConfigError(f"report_key_file: {exc}") from None
        await registry.set_node_value(  # replaces the Ed25519 HS_PUBKEY earlier versions put there
            HandleValue(
                index=REPORT_KEY_INDEX,
                type=REPORT_KEY_TYPE,
                data=signer.public_pem().encode("ascii"),
                timestamp=registry.clock(),
            )
        )
        tracker.store, tracker.signer = opened, signer
        state.throttle = GuessThrottle(
            config.auth_throttle_failures,
            config.auth_throttle_window,
            config.auth_throttle_levels,
            redis_url=config.redis,
            key_prefix=config.redis_key_prefix,
            timeout=config.redis_timeout_ms / 1000,
        )
        state.registry, state.resolver, state.native = registry, resolver, handler
        app[NATIVE_HTTP_KEY].handler = handler
        flusher = ResolutionFlusher(
            state.resolutions,
            opened,
            config.prefix,
            interval=config.stats_flush_seconds,
            metric_prefixes=config.stats_metric_prefixes,
            clock=registry.clock,
        )
        flusher.start()
        state.resolution_flusher = flusher
        indexer = state.indexer = ValueIndexer(opened)
        jobs = state.jobs = JobRunner(
            registry,
            os.path.join(config.data_dir, "jobs"),
            workers=config.job_workers,
            lease_seconds=config.job_lease_seconds,
            chunk=config.job_chunk_rows,
            observer=JOB_METER,
        )
        if background:
            indexer.start()
            jobs.start()
            if await _no_trigram_index(opened):
                log.warning("the store has no trigram index (pg_trgm): searches by *part* read the whole value table")
        yield
        await jobs.close()  # running jobs write the chunk they read and go back to the queue
        await indexer.close()
        state.jobs = state.indexer = None
        app[NATIVE_HTTP_KEY].handler = None
        await flusher.close()  # after the last request: every resolution counted goes to the store
        state.resolution_flusher = None
        state.registry = state.resolver = state.native = None
        registry.close()
        if state.throttle is not None:
            await state.throttle.close()
            state.throttle = None
        if cache is not None:
            await cache.close()
        if own_store:
            await opened.close()

    app.cleanup_ctx.append(lifecycle)
    return app
