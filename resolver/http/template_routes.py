"""Metadata templates (数据模板): ``/api/templates``."""

from __future__ import annotations

from aiohttp import web

from registry.errors import HandleNotFound, InvalidRequest
from registry.model import normalise_prefix
from registry.templates import parse_version
from resolver.http.keys import registry_of
from resolver.http.web import json_response, read_json, request_caller

__all__ = ["template_routes"]

template_routes = web.RouteTableDef()


@template_routes.get("/api/templates")
async def list_templates(request: web.Request) -> web.Response:
    """Every template version, node-wide and per enterprise prefix (templates are public)."""
    templates = await registry_of(request).list_templates()
    return json_response(request, {"responseCode": 1, "templates": [t.to_json() for t in templates]})


@template_routes.get("/api/templates/{id}")
async def get_template(request: web.Request) -> web.Response:
    """``?prefix=P`` for an enterprise's own template, ``?version=N`` (default: the latest)."""
    registry = registry_of(request)
    raw_version = request.query.get("version")
    version = parse_version(raw_version) if raw_version is not None else None
    if raw_version is not None and version is None:
        raise InvalidRequest("version must be a positive integer")
    prefix = request.query.get("prefix", "")
    scope = normalise_prefix(prefix) if prefix else ""
    template = await registry.template(scope, request.match_info["id"], version)
    if template is None:
        raise HandleNotFound(f"no template {request.match_info['id']}")
    return json_response(request, {"responseCode": 1, **template.to_json()})


async def _body(request: web.Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("a template is a JSON object")
    return body


@template_routes.post("/api/templates")
async def create_template(request: web.Request) -> web.Response:
    """``{"id", "fields": […], "description"?, "prefix"?}`` → version 1."""
    caller = await request_caller(request)
    body = await _body(request)
    template_id = body.get("id")
    if not isinstance(template_id, str):
        raise InvalidRequest("id must be a string")
    prefix = body.get("prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidRequest("prefix must be a string")
    template = await registry_of(request).put_template(caller, template_id, body, prefix, new=True)
    return json_response(request, {"responseCode": 1, **template.to_json()}, 201)


@template_routes.put("/api/templates/{id}")
async def add_version(request: web.Request) -> web.Response:
    """The next version. Every field of the previous version must stay (it may be disabled)."""
    caller = await request_caller(request)
    body = await _body(request)
    prefix = request.query.get("prefix") or body.get("prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidRequest("prefix must be a string")
    template = await registry_of(request).put_template(caller, request.match_info["id"], body, prefix, new=False)
    return json_response(request, {"responseCode": 1, **template.to_json()}, 201)
