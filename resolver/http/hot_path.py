"""The resolve hot path: answers that depend on a record alone, served from ready bytes before any routing.

A traceability app resolving a code sends ``GET /api/handles/{handle}`` (or a browser the handle's
URL, answered with a 302 or a landing page) with no credentials. A route whose answer to such a
request depends only on the record, the raw request target (query included) and ``Accept`` says so
(:func:`mark`: the REST resolve, the proxy's redirect, JSON and landing page); the handler in front
of the application (:func:`front`) then keeps what the application answered (status, headers but
the request id, body) in :class:`~resolver.http.ready_replies.ReadyReplies`, by raw target and
``Accept``, when the record came from the local cache tier. A landing page also depends on its
language: it is kept by the language the ``lang`` cookie and ``Accept-Language`` choose
(:func:`promotion_tracker.webpages.locales.choose_locale`, memoised by the two headers' text), and
only when that is the language the page was rendered in (a ``lang`` query parameter that chose
another is in the target, and such a page is not kept). The next such request is answered here: one
dictionary lookup, a check that the local tier still holds the very record the reply was made from
(so invalidations, expiry and eviction retire it), then the counters the full path keeps (the
cache's hit counter, the resolution counter, the HTTP request counter and latency:
:mod:`resolver.ops.rest_meter` adds them to the series in bulk; a redirect's or a landing page's
counter of the web resolver) and the request id (an acceptable incoming one echoed, as the
middleware does). ``HEAD`` is answered the same way (aiohttp leaves the body out).

An anonymous ``GET /api/handles/{handle}`` with no query string and no ready reply (a Redis or store
hit) takes a lane that skips the router and the middleware too (:func:`front`); a missing record,
an invalid handle or a failure goes to the application, which answers as always. Any request with an
``Authorization`` header goes through the application unchanged, and only the values anyone is
served are ever in a ready reply.

Off when the access log is on (its line needs the full path's bookkeeping); nothing is kept when
the node has no local tier.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from promotion_tracker.webpages.locales import choose_locale
from registry.errors import HandleError
from registry.model import HandleName, Record
from resolver.http.keys import CONFIG_KEY, STATE_KEY
from resolver.http.ready_replies import Counted, Ready
from resolver.ops.logs import REQUEST_ID, sane_request_id
from resolver.ops.metrics import route_of
from resolver.ops.rest_meter import REST, ROUTE

if TYPE_CHECKING:
    from resolver.http.keys import NodeState
    from resolver.resolve import Resolver

__all__ = ["KEPT_ROUTES", "front", "install", "mark", "render"]

_JSON = "application/json; charset=utf-8"
_PREFIX = "/api/handles/"
_PREFIX_LENGTH = len(_PREFIX)
_MARK: web.RequestKey[tuple[HandleName, Record, str, str | None, Counted | None]] = web.RequestKey(
    "idnode.hot_path.mark"
)
_REQUEST_ID = "X-Request-Id"
# The routes whose marked answers depend on the record, target and Accept alone: the REST resolve and
# a handle's URL (resolver.proxy.routes); a marked answer of any other route is not kept.
KEPT_ROUTES = frozenset({ROUTE, "/{handle}"})
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_LOCALES: dict[tuple[str | None, str | None], str] = {}  # (Cookie, Accept-Language) -> a page's language
_LOCALES_SIZE = 1024


def render(name: HandleName, record: Record, resolver: Resolver) -> str:
    """The reply of ``GET /api/handles/{name}`` to an anonymous caller with no query string."""
    handle = json.dumps(name.text, ensure_ascii=False)
    return f'{{"responseCode":1,"handle":{handle},"values":{resolver.public_values_json(record)}}}'


def mark(
    request: web.Request,
    name: HandleName,
    record: Record,
    interface: str,
    *,
    locale: str | None = None,
    counter: Counted | None = None,
) -> None:
    """Say that the answer to ``request`` depends only on ``record`` (looked up for ``name``, counted
    as a resolution through ``interface``), its raw target and ``Accept`` (and, for a page, on
    ``locale``, the language it was rendered in): call it only for answers made from the values
    anyone is served, with no credentials read. ``counter``: incremented for each ready answer, as
    the route does for its own."""
    request[_MARK] = (name, record, interface, locale, counter)


def header_locale(request: web.BaseRequest) -> str:
    """The language the ``lang`` cookie and ``Accept-Language`` choose for a page (no ``lang`` query
    parameter considered), memoised by the two headers' text."""
    headers = request.headers
    key = (headers.get("Cookie"), headers.get("Accept-Language"))
    found = _LOCALES.get(key)
    if found is None:
        found = choose_locale(None, request.cookies.get("lang"), key[1])
        if len(_LOCALES) >= _LOCALES_SIZE:
            _LOCALES.clear()
        _LOCALES[key] = found
    return found


def _local_packed(state: NodeState, name: HandleName, record: Record) -> bytes | None:
    """The local tier's packed record for ``name`` if ``record`` was decoded from it."""
    resolver = state.resolver
    local_packed = getattr(resolver.cache, "local_packed", None) if resolver is not None else None
    if local_packed is None:
        return None
    packed = local_packed(name.key)
    if packed is None or resolver.decode(packed) is not record:  # type: ignore[union-attr]
        return None
    return packed


def front(app: web.Application, inner: Handler) -> Handler:
    """The request handler to put in front of ``inner`` (the application's): see the module."""
    state = app[STATE_KEY]
    replies = state.replies
    meter = REST
    perf = time.perf_counter

    def keep(request: web.BaseRequest, response: web.StreamResponse, target: str, accept: str | None) -> None:
        marked = request.get(_MARK)
        if marked is None or not isinstance(response, web.Response) or response.prepared:
            return
        body = response.body
        if body is not None and not isinstance(body, bytes):
            return
        name, record, interface, locale, counter = marked
        packed = _local_packed(state, name, record)
        if packed is None:
            return
        route = route_of(request)  # type: ignore[arg-type]
        if route not in KEPT_ROUTES:  # GS1 links also depend on who registered the company prefix
            return
        if locale is not None and header_locale(request) != locale:  # a lang query parameter chose it
            return
        headers = tuple((k, v) for k, v in response.headers.items() if k != _REQUEST_ID)
        ready = Ready(name.key, packed, response.status, headers, body, name.prefix, interface, route, counter)
        if locale is None:
            replies.put((target, accept), ready)
        else:
            replies.put_page((target, accept), locale, ready)

    async def lane(request: web.BaseRequest, target: str, method: str, accept: str | None) -> web.Response | None:
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
        rid = sane_request_id(request.headers.get(_REQUEST_ID))
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
        body = render(name, record, resolver).encode("utf-8")
        packed = _local_packed(state, name, record)
        if packed is not None:
            ready = Ready(name.key, packed, 200, (("Content-Type", _JSON),), body, name.prefix, "rest", ROUTE)
            replies.put((target, accept), ready)
        response = web.Response(body=body, headers={"Content-Type": _JSON, _REQUEST_ID: rid})
        meter.answered(ROUTE, method, 200, perf() - started, local_hit=False)  # the cache counted its lookup
        return response

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        target = request.raw_path
        headers = request.headers
        accept = headers.get("Accept")
        ready = replies.get((target, accept))
        if ready is None:
            pages = replies.pages((target, accept))
            if pages is not None:
                ready = pages.get(header_locale(request))
        method = request.method
        anonymous = (method == "GET" or method == "HEAD") and "Authorization" not in headers
        if ready is not None and anonymous:
            started = perf()
            resolver = state.resolver
            if (
                resolver is not None
                and resolver.cache is not None
                and resolver.cache.local_hit(ready.key, ready.packed)  # type: ignore[attr-defined]
            ):
                state.resolutions.count(ready.prefix, ready.interface, True)
                rid = sane_request_id(headers.get(_REQUEST_ID))
                response = web.Response(
                    status=ready.status, body=ready.body, headers=[*ready.headers, (_REQUEST_ID, rid)]
                )
                meter.answered(ready.route, method, ready.status, perf() - started)  # and the local hit
                if ready.counter is not None:  # a redirect or a page, counted as resolver.proxy.answer does
                    ready.counter.inc()
                return response
        if not anonymous:
            return await inner(request)
        if "?" not in target and target.startswith(_PREFIX):
            laned = await lane(request, target, method, accept)
            if laned is not None:
                return laned
        response = await inner(request)
        keep(request, response, target, accept)
        return response

    return handle


def install(runner: web.BaseRunner) -> None:
    """Put :func:`front` in front of the application of ``runner`` (set up, not yet serving), unless
    its node keeps an access log."""
    app = runner.app
    server = runner.server
    assert server is not None, "the runner is set up first"
    if isinstance(app, web.Application) and not app[CONFIG_KEY].access_log:
        server.request_handler = front(app, server.request_handler)
