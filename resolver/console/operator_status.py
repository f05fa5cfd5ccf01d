"""The operator's status page: readiness as ``/readyz`` reports it, the store, the cache tiers, the
queue of background jobs (queued, running, failed) with the latest failures, and the node's recent
warnings and errors (:mod:`resolver.ops.recent_errors`, this process's). When the store does not
answer, the page still shows what it knows and says which parts it could not read."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from registry.errors import HandleError
from registry.stores.base import JobRecord
from resolver.console.operator_audit import beijing_time
from resolver.console.operator_common import me_operator
from resolver.console.site import console_state, render
from resolver.http.keys import STATE_KEY, registry_of
from resolver.ops.health import STORE_PING_TIMEOUT, readiness
from resolver.ops.recent_errors import RECENT

__all__ = ["status_routes"]

status_routes = web.RouteTableDef()
JOB_STATES = ("queued", "running", "failed", "done")
RECENT_JOBS = 200  # newest jobs looked through for the latest failures
FAILURES_SHOWN = 5
PROBLEMS_SHOWN = 20


def _failure(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "prefix": job.prefix,
        "at": beijing_time(job.finished_at or job.updated_at),
        "error": job.error or "",
        "processed": job.processed,
        "total": job.total,
    }


async def _from_store(request: web.Request) -> dict[str, Any]:
    """What the page reads from the store; {"store_read": False} when it does not answer."""
    store = registry_of(request).store
    try:
        async with asyncio.timeout(STORE_PING_TIMEOUT):
            counts = await store.job_counts()
            recent = await store.list_jobs(prefix=None, owner=None, limit=RECENT_JOBS)
            promoters = len(await store.list_promoters())
            enterprises = len(await store.list_enterprises())
    except (HandleError, TimeoutError, OSError):
        return {"store_read": False}
    failed = [j for j in recent if j.state == "failed"][:FAILURES_SHOWN]
    return {
        "store_read": True,
        "jobs": {state: counts.get(state, 0) for state in JOB_STATES},
        "failures": [_failure(j) for j in failed],
        "promoters": promoters,
        "enterprises": enterprises,
    }


@status_routes.get("/console/status")
async def status(request: web.Request) -> web.Response:
    me = await me_operator(request)
    state = request.app[STATE_KEY]
    body, http_status = await readiness(state)
    registry = registry_of(request)
    cache = body.get("cache") or {}
    local = cache.get("local") or {}
    runner = state.jobs
    context = {
        "ready": body.get("status", "unavailable"),
        "ready_status": http_status,
        "degraded": body.get("degraded", []),
        "store": body.get("store", ""),
        "store_error": body.get("store_error", ""),
        "store_kind": urlsplit(registry.store.url).scheme or "sqlite",
        "prefix": registry.node_prefix,
        "cache": {
            "configured": bool(cache),
            "redis": cache.get("redis", ""),
            "breaker": cache.get("breaker", ""),
            "invalidation": cache.get("invalidation", ""),
            "local_enabled": local.get("enabled", False),
            "local_entries": local.get("entries", 0),
            "local_bytes": local.get("bytes", 0),
        },
        "workers": runner.workers if runner is not None else None,
        "problems": [
            {"at": beijing_time(int(p.at)), "logger": p.logger, "level": p.level, "message": p.message}
            for p in RECENT.newest(PROBLEMS_SHOWN)
        ],
        "checked": beijing_time(console_state(request).clock()),
        **await _from_store(request),
    }
    return render(request, "console/status.html", context, me, nav="status")
