"""The resolve hot path: a local-tier hit answered from ready bytes before any routing.

A traceability app resolving a code sends ``GET /api/handles/{handle}`` with no credentials and no
query string. The first such request for a handle goes the whole way (router, middleware, the
route in :mod:`resolver.http.routes`), which renders the reply into
:class:`~resolver.http.ready_replies.ReadyReplies` by raw request target when the record came from
the local cache tier. Later ones are answered here, in front of the application: one dictionary
lookup by raw target, a check that the local tier still holds the very record the reply was
rendered from (so invalidations, expiry and eviction retire it), then the counters the full path
keeps (the cache's hit counter, the resolution counter, the HTTP request counter and latency:
:mod:`resolver.ops.rest_meter` adds them to the series in bulk) and
the same headers (``Content-Type``, ``X-Request-Id``, an acceptable incoming id echoed). ``HEAD``
is answered the same way (aiohttp leaves the body out). Anything else, including any request with
an ``Authorization`` header or a query string, goes through the application unchanged.

Off when the access log is on (its line needs the full path's bookkeeping) and when the node has
no local tier (nothing is ever rendered then).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from registry.errors import HandleError
from registry.model import HandleName, Record
from resolver.http.keys import CONFIG_KEY, STATE_KEY
from resolver.http.ready_replies import Ready
from resolver.ops.logs import REQUEST_ID, sane_request_id
from resolver.ops.rest_meter import REST

if TYPE_CHECKING:
    from resolver.http.keys import NodeState
    from resolver.resolve import Resolver

__all__ = ["front", "install", "remember", "render"]

_JSON = "application/json; charset=utf-8"
_PREFIX = "/api/handles/"
_PREFIX_LENGTH = len(_PREFIX)
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def render(name: HandleName, record: Record, resolver: Resolver) -> str:
    """The reply of ``GET /api/handles/{name}`` to an anonymous caller with no query string."""
    handle = json.dumps(name.text, ensure_ascii=False)
    return f'{{"responseCode":1,"handle":{handle},"values":{resolver.public_values_json(record)}}}'


def remember(state: NodeState, target: str, name: HandleName, record: Record, body: str) -> None:
    """Keep ``body`` (the anonymous, unfiltered reply about ``record``) for the raw request target
    ``target``, if the record is the one the local tier holds for ``name``."""
    resolver = state.resolver
    cache = resolver.cache if resolver is not None else None
    local_packed = getattr(cache, "local_packed", None)
    if local_packed is None:
        return
    packed = local_packed(name.key)
    if packed is not None and resolver.decode(packed) is record:  # type: ignore[union-attr]
        state.replies.put(target, Ready(name.key, packed, body.encode("utf-8"), name.prefix))


def front(app: web.Application, inner: Handler) -> Handler:
    """The request handler to put in front of ``inner`` (the application's): see the module."""
    state = app[STATE_KEY]
    replies = state.replies
    meter = REST
    perf = time.perf_counter

    async def lane(request: web.BaseRequest, target: str, method: str) -> web.StreamResponse | None:
        """What the route answers an anonymous resolve with no query string when the record is
        there, without the router and the middleware; None: let the application answer."""
        started = perf()
        registry, resolver = state.registry, state.resolver
        if registry is None or resolver is None:
            return None
        try:
            name = registry.parse(unquote(target[_PREFIX_LENGTH:], errors="strict"))
        except (UnicodeDecodeError, HandleError):
            return None
        if not registry.is_responsible(name):
            return None
        rid = sane_request_id(request.headers.get("X-Request-Id"))
        token = REQUEST_ID.set(rid)
        try:
            record = await resolver.lookup(name.key)
        except Exception:  # the store is down and the like: the application answers (and logs)
            return None
        finally:
            REQUEST_ID.reset(token)
        if record is None:  # the application answers 404 (and counts it)
            return None
        state.resolutions.count(name.prefix, "rest", True)
        body = render(name, record, resolver)
        remember(state, target, name, record, body)
        response = web.Response(body=body.encode("utf-8"), headers={"Content-Type": _JSON, "X-Request-Id": rid})
        meter.answered(method, perf() - started, local_hit=False)  # the cache counted its own lookup
        return response

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        target = request.raw_path
        ready = replies.get(target)
        if ready is not None:
            started = perf()
            headers = request.headers
            method = request.method
            resolver = state.resolver
            if (
                (method == "GET" or method == "HEAD")
                and "Authorization" not in headers
                and resolver is not None
                and resolver.cache is not None
                and resolver.cache.local_hit(ready.key, ready.packed)  # type: ignore[attr-defined]
            ):
                state.resolutions.count(ready.prefix, "rest", True)
                rid = sane_request_id(headers.get("X-Request-Id"))
                response = web.Response(body=ready.body, headers={"Content-Type": _JSON, "X-Request-Id": rid})
                meter.answered(method, perf() - started)  # and the cache's local hit
                return response
        if target.startswith(_PREFIX) and "?" not in target and "Authorization" not in request.headers:
            method = request.method
            if method == "GET" or method == "HEAD":
                response = await lane(request, target, method)
                if response is not None:
                    return response
        return await inner(request)

    return handle


def install(runner: web.BaseRunner) -> None:
    """Put :func:`front` in front of the application of ``runner`` (set up, not yet serving), unless
    its node keeps an access log."""
    app = runner.app
    server = runner.server
    assert server is not None, "the runner is set up first"
    if isinstance(app, web.Application) and not app[CONFIG_KEY].access_log:
        server.request_handler = front(app, server.request_handler)
