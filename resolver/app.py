"""The aiohttp application: ``create_app(config)`` wires store, registry, resolver and routes."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from promotion_tracker.policy import Policy, PolicyError
from promotion_tracker.routes import BUREAU_PAGES, TRACKER_KEY, TrackerState, tracker_routes
from promotion_tracker.signing import node_signer
from promotion_tracker.webpages import setup_pages
from registry import valuedata
from registry.model import HandleValue
from registry.service import Registry
from registry.stores import open_store
from registry.stores.base import HandleStore
from resolver.access import request_context
from resolver.admin_routes import admin_routes
from resolver.batch_routes import batch_routes
from resolver.cache import build_cache
from resolver.config import Config, ConfigError
from resolver.health import health_routes
from resolver.keys import CONFIG_KEY, STATE_KEY, NodeState
from resolver.metrics import InstrumentedStore, TallyCollector, metrics_handler, this_year
from resolver.native.server import start_native_or_warn
from resolver.resolve import Resolver
from resolver.routes import routes
from resolver.session_routes import session_routes
from resolver.template_routes import template_routes
from resolver.web import request_caller

__all__ = ["create_app", "node_site"]

log = logging.getLogger("idnode")
ADMIN_SECRET_ENV = "IDNODE_ADMIN_SECRET"
PUBKEY_INDEX = 301  # the node's report-signing key on its prefix handle


def node_site(config: Config) -> bytes:
    """The HS_SITE value describing this node's interfaces (RFC 3651 section 3.2.2)."""
    try:
        address = ipaddress.ip_address(config.advertise_host or config.host)
    except ValueError:
        address = ipaddress.ip_address("127.0.0.1")
    if address.is_unspecified:
        address = ipaddress.ip_address("127.0.0.1")
    http = valuedata.PROTO_HTTPS if config.tls_cert else valuedata.PROTO_HTTP
    interfaces = [valuedata.Interface(valuedata.IF_ADMIN_AND_QUERY, http, config.port)]
    if config.native_port:
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
    """This year's live tally, for the per-promoter gauges on /metrics."""
    import datetime as dt

    from promotion_tracker.tally import compute_tally

    if tracker.store is None:
        raise RuntimeError("not started")
    now = dt.datetime.fromtimestamp(tracker.clock(), dt.UTC)
    start, end = this_year(now)
    return await compute_tally(tracker.store, start, end, None, tracker.policy, now=now)


def create_app(
    config: Config, store: HandleStore | None = None, *, clock: Callable[[], int] | None = None
) -> web.Application:
    """Build the application. ``store`` may be passed in (tests); otherwise it is opened from
    ``config.store_url`` at startup and closed at cleanup. ``clock`` (UNIX seconds) is for tests
    that need registrations, moves and tallies at chosen times."""
    app = web.Application(middlewares=[request_context], client_max_size=config.max_body_bytes)
    app[CONFIG_KEY] = config
    state = app[STATE_KEY] = NodeState()
    app.router.add_routes(routes)
    app.router.add_routes(batch_routes)
    app.router.add_routes(admin_routes)
    app.router.add_routes(template_routes)
    app.router.add_routes(session_routes)
    app.router.add_routes(tracker_routes)
    setup_pages(app, BUREAU_PAGES)  # the page templates and catalogues (later pages add theirs here)
    app.router.add_routes(health_routes)
    app.router.add_get("/metrics", metrics_handler(TallyCollector(lambda: _live_tally(tracker))))
    tracker = app[TRACKER_KEY] = TrackerState(authenticate=request_caller, node_prefix=config.prefix)
    if clock is not None:
        tracker.clock = clock
    try:
        tracker.policy = Policy.from_file(config.policy_file) if config.policy_file else Policy()
    except PolicyError as exc:
        raise ConfigError(f"policy_file: {exc}") from None

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        opened = InstrumentedStore(store if store is not None else await open_store(config.store_url))
        settings = config.node_settings()
        registry = Registry(opened, settings, clock=clock) if clock else Registry(opened, settings)
        cache = await build_cache(config, opened)  # None when no tier is configured
        if cache is not None:
            registry.add_listener(cache.invalidate)
        generated = await registry.bootstrap(os.environ.get(ADMIN_SECRET_ENV) or None, node_site(config))
        if generated:
            print(
                f"idnode: created prefix handle 0.NA/{config.prefix}. Node admin identity "
                f"300:0.NA/{config.prefix}, secret key (shown once, stored hashed): {generated}",
                flush=True,
            )
        signer = await node_signer(opened)
        await registry.set_node_value(
            HandleValue(
                index=PUBKEY_INDEX,
                type="HS_PUBKEY",
                data=valuedata.encode_public_key(signer.public_key),
                timestamp=registry.clock(),
            )
        )
        tracker.store, tracker.signer = opened, signer
        state.registry = registry
        state.resolver = Resolver(registry, cache)
        native = None
        if config.native_port:  # UDP/TCP Handle protocol; a port that cannot be bound only logs a warning
            native = await start_native_or_warn(state.resolver, registry, config, node_site(config))
        yield
        if native is not None:
            await native.close()
        state.registry = state.resolver = None
        if cache is not None:
            await cache.close()
        if own_store:
            await opened.close()

    app.cleanup_ctx.append(lifecycle)
    return app
