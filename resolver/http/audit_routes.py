"""``GET /api/audit``: the audit log (registry.audit), newest first, for the node administrator and the
bureau's auditors. ``since`` (an ISO 8601 instant), ``action``, ``target``, ``actor`` narrow it; ``limit`` and
``before`` (an entry id; a full page names the next one in ``next``) page through it."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from registry.audit import MAX_PAGE
from registry.errors import PermissionDenied
from registry.inputs import MAX_ID, parse_instant, parse_uint
from registry.stores.base import AuditEntry
from registry.views import iso_time
from resolver.http.keys import registry_of
from resolver.http.web import json_response, request_caller

__all__ = ["audit_routes"]

audit_routes = web.RouteTableDef()


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso_time(e.at),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "source": e.source,
        "detail": json.loads(e.detail),
    }


@audit_routes.get("/api/audit")
async def audit_log(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    caller.require_authenticated()
    if not (caller.node_admin or caller.role == "auditor"):
        raise PermissionDenied("only the node administrator and the auditor read the audit log")
    query = request.query
    since = int(parse_instant(query["since"], "since").timestamp()) if query.get("since") else None
    limit = parse_uint(query["limit"], "limit", minimum=1, maximum=MAX_PAGE) if query.get("limit") else 100
    before = parse_uint(query["before"], "before", minimum=1, maximum=MAX_ID) if query.get("before") else None
    entries = await registry_of(request).audit.entries(
        limit=limit,
        before_id=before,
        action=query.get("action") or None,
        target=query.get("target") or None,
        since=since,
        actor=query.get("actor") or None,
    )
    body: dict[str, Any] = {"responseCode": 1, "entries": [entry_json(e) for e in entries]}
    if len(entries) == limit:
        body["next"] = str(request.rel_url.update_query(before=str(entries[-1].id)))
    return json_response(request, body, headers={"Cache-Control": "no-store"})
