"""Reverse lookup: ``GET /hrls/handles?URL=*part*`` → a JSON list of handles, as HANDLE.NET's search
servlet answers pyhandle's ``Searcher.search_handle`` (which sends the terms as they are, with Basic
credentials). ``page`` (from 0) and ``limit`` page through the hits; ``prefix`` narrows them; any
other query parameter is a value type and its pattern (``*`` for any run of characters). A full
page carries ``Link: <…page=N+1…>; rel="next"``. The rules are in :mod:`registry.search`.
"""

from __future__ import annotations

import json

from aiohttp import web

from registry.errors import InvalidRequest
from registry.inputs import MAX_U32, parse_uint
from resolver.http.keys import CONFIG_KEY, registry_of
from resolver.http.web import request_caller

__all__ = ["DEFAULT_LIMIT", "search_routes"]

search_routes = web.RouteTableDef()
DEFAULT_LIMIT = 1000
RESERVED = ("page", "limit", "prefix")


def _number(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return parse_uint(raw.strip(), name, minimum=minimum, maximum=maximum)


@search_routes.get("/hrls/handles")
async def search_handles(request: web.Request) -> web.Response:
    caller = await request_caller(request)
    caller.require_authenticated()
    max_limit = request.app[CONFIG_KEY].max_page_size
    limit = _number(request, "limit", min(DEFAULT_LIMIT, max_limit), 1, max_limit)
    page = _number(request, "page", 0, 0, MAX_U32 // 2)
    terms: dict[str, str] = {}
    for key, value in request.query.items():
        if key in RESERVED:
            continue
        if key.upper() in terms:
            raise InvalidRequest(f"search term {key[:40]!r} given twice")
        terms[key.upper()] = value
    prefix = request.query.get("prefix") or None
    handles = await registry_of(request).search.search(caller, terms, prefix=prefix, page=page, limit=limit)
    headers = {"Cache-Control": "no-store"}
    if len(handles) == limit:
        headers["Link"] = f'<{request.rel_url.update_query(page=str(page + 1))}>; rel="next"'
    return web.Response(text=json.dumps(handles, ensure_ascii=False), content_type="application/json", headers=headers)
