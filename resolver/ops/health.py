"""Liveness and readiness: ``GET /healthz`` and ``GET /readyz``.

``/healthz`` answers 200 while the process runs. ``/readyz`` pings the store and reads the cache's
status: 200 ``{"status": "ok"}`` when everything works; 200 ``{"status": "degraded", "degraded":
[...]}`` when a part is down but handles still resolve (Redis away: from the store; store away:
from what the caches hold); 503 only when the store is unreachable and no cache can answer either.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from resolver.http.keys import STATE_KEY, NodeState

__all__ = ["STORE_PING_TIMEOUT", "health_routes", "readiness"]

health_routes = web.RouteTableDef()
STORE_PING_TIMEOUT = 2.0


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


@health_routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _reply({"status": "alive"})


async def readiness(state: NodeState) -> tuple[dict[str, Any], int]:
    """What ``/readyz`` answers, and its status (the console's status page shows the same)."""
    registry, resolver = state.registry, state.resolver
    if registry is None or resolver is None:
        return {"status": "starting"}, 503
    body: dict[str, Any] = {}
    degraded: list[str] = []
    try:
        async with asyncio.timeout(STORE_PING_TIMEOUT):
            await registry.store.ping()
        body["store"] = "ok"
    except Exception as exc:  # StoreUnavailable, a timeout, a dropped connection
        body["store"] = "unavailable"
        body["store_error"] = str(exc) or type(exc).__name__
        degraded.append("store")
    cache = resolver.cache
    status = getattr(cache, "status", None)
    cache_status: dict[str, Any] | None = status() if callable(status) else None
    if cache_status is not None:
        body["cache"] = cache_status
        if cache_status.get("redis") == "degraded":
            degraded.append("redis")
    if "store" in degraded:
        can_serve = getattr(cache, "can_serve", None)
        if not (callable(can_serve) and can_serve()):
            return {"status": "unavailable", "degraded": degraded, **body}, 503
    if degraded:
        return {"status": "degraded", "degraded": degraded, **body}, 200
    return {"status": "ok", **body}, 200


@health_routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    body, status = await readiness(request.app[STATE_KEY])
    return _reply(body, status)
