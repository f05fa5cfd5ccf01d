"""``GET /api/stats/resolutions``: resolution counts (解析量) per prefix, day and interface.

Who may read what, and the document, are :class:`registry.resolution_stats.ResolutionStats`'s; the
counts come from the store, where each worker flushes its own every ``stats_flush_seconds``.
"""

from __future__ import annotations

from aiohttp import web

from registry.resolution_stats import ResolutionStats
from resolver.http.keys import registry_of
from resolver.http.web import json_response, request_caller

__all__ = ["stats_routes"]

stats_routes = web.RouteTableDef()


@stats_routes.get("/api/stats/resolutions")
async def resolution_stats(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    caller.require_authenticated()
    stats = ResolutionStats(registry_of(request).ns)
    q = request.query
    query = stats.query(q.get("prefix"), q.get("from"), q.get("to"))
    body = await stats.report(caller, query)
    return json_response(request, body, headers={"Cache-Control": "no-store"})
