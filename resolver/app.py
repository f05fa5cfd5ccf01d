"""The aiohttp application: ``create_app(config)`` wires store, registry, resolver and routes."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from registry import valuedata
from registry.errors import HandleError, InvalidRequest, ServerError
from registry.jsonvalues import ValueLimits
from registry.service import NodeSettings, Registry
from registry.stores import open_store
from registry.stores.base import HandleStore
from resolver.admin_routes import admin_routes
from resolver.config import Config
from resolver.keys import CONFIG_KEY, STATE_KEY, NodeState
from resolver.resolve import Resolver
from resolver.routes import routes
from resolver.web import error_response

__all__ = ["create_app", "node_site"]

log = logging.getLogger("idnode")
ADMIN_SECRET_ENV = "IDNODE_ADMIN_SECRET"


def node_site(config: Config) -> bytes:
    """The HS_SITE value describing this node's interfaces (RFC 3651 section 3.2.2)."""
    try:
        address = ipaddress.ip_address(config.host)
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


@web.middleware
async def handle_errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Every failure leaves as a JSON body with a responseCode; never a stack trace, never HTML."""
    try:
        return await handler(request)
    except HandleError as exc:
        return error_response(request, exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(request, InvalidRequest(f"request body too large (limit {exc.max_size} bytes)"), 413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = InvalidRequest(exc.reason or "invalid request")
        return error_response(request, code, exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, ServerError("internal server error"), 500)


def create_app(config: Config, store: HandleStore | None = None) -> web.Application:
    """Build the application. ``store`` may be passed in (tests); otherwise it is opened from
    ``config.store_url`` at startup and closed at cleanup."""
    app = web.Application(middlewares=[handle_errors], client_max_size=config.max_body_bytes)
    app[CONFIG_KEY] = config
    state = app[STATE_KEY] = NodeState()
    app.router.add_routes(routes)
    app.router.add_routes(admin_routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        opened = store if store is not None else await open_store(config.store_url)
        settings = NodeSettings(
            prefix=config.prefix,
            max_handle_length=config.max_handle_length,
            case_sensitive_suffix=config.case_sensitive_suffix,
            value_limits=ValueLimits(max_values=config.max_values, max_data_bytes=config.max_value_bytes),
        )
        registry = Registry(opened, settings)
        generated = await registry.bootstrap(os.environ.get(ADMIN_SECRET_ENV) or None, node_site(config))
        if generated:
            print(
                f"idnode: created prefix handle 0.NA/{config.prefix}. Node admin identity "
                f"300:0.NA/{config.prefix}, secret key (shown once, stored hashed): {generated}",
                flush=True,
            )
        state.registry = registry
        state.resolver = Resolver(registry)
        yield
        state.registry = state.resolver = None
        if own_store:
            await opened.close()

    app.cleanup_ctx.append(lifecycle)
    return app
