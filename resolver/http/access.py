"""The one middleware: request id, JSON errors, metrics and the access log.

One layer rather than three keeps the resolve path short.

Every request gets a request id: a sane incoming ``X-Request-Id`` is kept, anything else is replaced
by a fresh one. It is echoed in the reply's ``X-Request-Id`` header and set in
:data:`resolver.ops.logs.REQUEST_ID`, so every log line written while serving the request carries it.

With the ``access_log`` setting on, each request also leaves one line on the ``idnode.access``
logger: method, route template (never the raw path or query), status, duration, request id, the
client address and the identity named in the credentials (the ``index:handle`` part only, never
the secret, the Authorization header or a body). Off by default so the resolve path stays lean.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from registry.auth import Identity
from registry.errors import HandleError
from resolver.http.credentials import parse_basic
from resolver.http.keys import CONFIG_KEY
from resolver.http.web import answer
from resolver.ops.logs import REQUEST_ID, sane_request_id
from resolver.ops.metrics import record_request

__all__ = ["REQUEST_ID_HEADER", "claimed_identity", "request_context"]

REQUEST_ID_HEADER = "X-Request-Id"
access_log = logging.getLogger("idnode.access")
# index:handle; the handle has a prefix and a '/', no whitespace. Anything else (a secret typed into
# the user field, garbage) is not logged.
_IDENTITY = re.compile(r"[0-9]{1,10}:[^\s/:]+/\S{0,255}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def claimed_identity(authorization: str | None) -> str | None:
    """The ``index:handle`` identity named in Basic credentials, parsed exactly as authentication
    parses it (:func:`resolver.http.credentials.parse_basic`, then ``Identity.parse``); None when there
    is none, it is not a valid identity, or it holds whitespace. Whether the secret was right shows
    in the status (401, 403 or 429)."""
    if not authorization:
        return None
    scheme, _, param = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        identity = str(Identity.parse(parse_basic(param).identity))
    except HandleError:
        return None
    return identity if _IDENTITY.fullmatch(identity) else None


def _route(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def _log_access(request: web.Request, rid: str, status: int, started: float) -> None:
    access_log.info(
        "request",
        extra={
            "method": request.method,
            "route": _route(request),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": rid,
            "remote": request.remote,
            "identity": claimed_identity(request.headers.get("Authorization")),
        },
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = sane_request_id(request.headers.get(REQUEST_ID_HEADER))
    token = REQUEST_ID.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await answer(request, handler)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    except web.HTTPException as exc:  # redirects and the like that the error middleware let through
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = rid
        raise
    except asyncio.CancelledError:  # the client went away
        status = 499
        raise
    finally:
        try:
            record_request(request, status, time.perf_counter() - started)
            config = request.app.get(CONFIG_KEY)
            if config is not None and config.access_log:
                _log_access(request, rid, status, started)
        finally:
            REQUEST_ID.reset(token)
