"""Admin API for the node administrator: promoters and enterprises (onboarding, moves, disabling),
the enterprises' GS1 company prefixes (also for their own administrators), auditors."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.auth import Caller
from registry.errors import InvalidRequest, PermissionDenied
from registry.views import auditor_json, enterprise_json, gs1_prefix_json, iso_time, promoter_json
from resolver.http.keys import registry_of
from resolver.http.web import json_response, read_json, request_caller

__all__ = ["admin_routes"]

admin_routes = web.RouteTableDef()


async def _reader(request: web.Request) -> Caller:
    """Node admins and the bureau's auditor may read the admin lists."""
    caller = await request_caller(request)
    caller.require_authenticated()
    if not (caller.node_admin or caller.role == "auditor"):
        raise PermissionDenied("only the node administrator or the auditor may read this")
    return caller


async def _object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


@admin_routes.post("/api/promoters")
async def add_promoter(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    body = await _object(request)
    promoter = await registry_of(request).add_promoter(caller, body.get("name"), body.get("uscc"))
    return json_response(request, {"responseCode": 1, **promoter_json(promoter)}, 201)


@admin_routes.get("/api/promoters")
async def list_promoters(request: web.Request) -> web.Response:
    await _reader(request)
    promoters = await registry_of(request).store.list_promoters()
    return json_response(request, {"responseCode": 1, "promoters": [promoter_json(p) for p in promoters]})


@admin_routes.post("/api/enterprises")
async def add_enterprise(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    body = await _object(request)
    enterprise, secret = await registry_of(request).add_enterprise(
        caller, body.get("name"), body.get("uscc"), body.get("promoter"), body.get("prefix")
    )
    reply = {"responseCode": 1, **enterprise_json(enterprise), "secret": secret}
    return json_response(request, reply, 201, headers={"Cache-Control": "no-store"})


@admin_routes.get("/api/enterprises")
async def list_enterprises(request: web.Request) -> web.Response:
    await _reader(request)
    enterprises = await registry_of(request).store.list_enterprises()
    return json_response(request, {"responseCode": 1, "enterprises": [enterprise_json(e) for e in enterprises]})


@admin_routes.get("/api/enterprises/{ref}")
async def get_enterprise(request: web.Request) -> web.Response:
    await _reader(request)
    registry = registry_of(request)
    enterprise = await registry.find_enterprise(request.match_info["ref"])
    history = [
        {"promoter": a.promoter_id, "effective": iso_time(a.effective_at)}
        for a in await registry.store.attributions()
        if a.enterprise_id == enterprise.id
    ]
    return json_response(request, {"responseCode": 1, **enterprise_json(enterprise), "attributions": history})


@admin_routes.patch("/api/enterprises/{ref}")
async def update_enterprise(request: web.Request) -> web.Response:
    """``{"promoter": …}`` moves the enterprise (from now on); ``{"status": "disabled"|"active"}``."""
    caller = await request_caller(request)
    body = await _object(request)
    enterprise = await registry_of(request).update_enterprise(caller, request.match_info["ref"], body)
    return json_response(request, {"responseCode": 1, **enterprise_json(enterprise)})


@admin_routes.get("/api/enterprises/{ref}/gs1-prefixes")
async def list_gs1_prefixes(request: web.Request) -> web.Response:
    """The enterprise's GS1 company prefixes: its administrator, the node administrator, the auditor."""
    caller = await request_caller(request)
    enterprise, prefixes = await registry_of(request).list_gs1_prefixes(caller, request.match_info["ref"])
    body = {"responseCode": 1, "enterprise": enterprise.prefix, "gs1Prefixes": [gs1_prefix_json(p) for p in prefixes]}
    return json_response(request, body)


@admin_routes.put("/api/enterprises/{ref}/gs1-prefixes/{company_prefix}")
async def add_gs1_prefix(request: web.Request) -> web.Response:
    """Register a GS1 company prefix for the enterprise: 201, or 200 when it holds it already."""
    caller = await request_caller(request)
    info = request.match_info
    prefix, created = await registry_of(request).add_gs1_prefix(caller, info["ref"], info["company_prefix"])
    return json_response(request, {"responseCode": 1, **gs1_prefix_json(prefix)}, 201 if created else 200)


@admin_routes.delete("/api/enterprises/{ref}/gs1-prefixes/{company_prefix}")
async def remove_gs1_prefix(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    info = request.match_info
    removed = await registry_of(request).remove_gs1_prefix(caller, info["ref"], info["company_prefix"])
    return json_response(request, {"responseCode": 1, "companyPrefix": removed, "removed": True})


@admin_routes.post("/api/auditors")
async def add_auditor(request: web.Request) -> web.Response:
    """``{"name": "baiyun"}`` → the bureau's read-only identity and its secret (shown once)."""
    caller = await request_caller(request)
    body = await _object(request)
    identity, secret = await registry_of(request).add_auditor(caller, body.get("name"))
    reply = {"responseCode": 1, "identity": identity, "secret": secret}
    return json_response(request, reply, 201, headers={"Cache-Control": "no-store"})


@admin_routes.get("/api/auditors")
async def list_auditors(request: web.Request) -> web.Response:
    """The bureau's identities in force (node administrator only)."""
    caller = await request_caller(request)
    auditors = await registry_of(request).list_auditors(caller)
    return json_response(request, {"responseCode": 1, "auditors": [auditor_json(a) for a in auditors]})


@admin_routes.delete("/api/auditors/{name}")
async def revoke_auditor(request: web.Request) -> web.Response:
    """Revoke one: from the next request on its credentials get 401 on every node of the store."""
    caller = await request_caller(request)
    identity = await registry_of(request).revoke_auditor(caller, request.match_info["name"])
    return json_response(request, {"responseCode": 1, "identity": identity, "revoked": True})
