"""The Handle REST API (``/api/handles``, ``/api/prefixes``), compatible with HANDLE.NET 9."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from registry.errors import HandleError, HandleNotFound, InvalidHandle, InvalidRequest
from registry.inputs import MAX_U32, parse_uint
from registry.jsonvalues import ValueLimits, parse_values, values_to_json
from registry.model import MAX_INDEX, HandleName, prefix_handle_of
from registry.read_policy import ValueFilter
from resolver.http.hot_path import mark, render
from resolver.http.keys import CONFIG_KEY, STATE_KEY, registry_of, resolver_of
from resolver.http.web import flag, json_response, read_json, request_caller

__all__ = ["resolve_name", "routes"]

routes = web.RouteTableDef()
MAX_PAGE = MAX_U32 // 2  # so that page × pageSize stays within a store's 64-bit offset


def _handle(request: web.Request, *, mint: bool = False) -> HandleName:
    """The handle from the raw path, percent-decoded strictly so invalid UTF-8 is refused (102).

    With ``mint`` (``mintNewSuffix=true``) the suffix may be empty (``PUT /api/handles/P/``): the
    server's generated suffix is then the whole suffix."""
    raw = request.raw_path.split("?", 1)[0]
    raw = raw[len("/api/handles/") :] if raw.startswith("/api/handles/") else request.match_info["handle"]
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidHandle("handle is not valid UTF-8", None) from None
    registry = registry_of(request)
    if mint and text.endswith("/") and text.count("/") == 1:
        probe = registry.parse(text + "x")  # validates the prefix
        return HandleName(text=text, prefix=probe.prefix, suffix="", key=probe.key[:-1])
    return registry.parse(text)


@contextmanager
def _about(name: HandleName) -> Iterator[None]:
    """Errors about a request on ``name`` carry the handle (pyhandle reads it, even from errors)."""
    try:
        yield
    except HandleError as exc:
        if exc.handle is None:
            exc.handle = name.text
        raise


def _indexes(request: web.Request, *, various: bool = True) -> list[int] | None:
    """``index=N`` (repeatable); ``index=various`` (PUT only) means "the indexes in the body"."""
    raw = request.query.getall("index", [])
    if not raw:
        return None
    out: list[int] = []
    for item in raw:
        if item.strip().lower() == "various":
            if not various:
                # On DELETE "various" names no index; treating it as "none given" would delete the handle.
                raise InvalidRequest("index=various is only for PUT; name the indexes to delete")
            return []
        out.append(parse_uint(item.strip(), "index (a value index or 'various')", minimum=1, maximum=MAX_INDEX))
    return out


def _limits(request: web.Request) -> ValueLimits:
    c = request.app[CONFIG_KEY]
    return ValueLimits(max_values=c.max_values, max_data_bytes=c.max_value_bytes)


@routes.get("/api/handles/{handle:.+}")
async def resolve(request: web.Request) -> web.Response:
    return await resolve_name(request, _handle(request))


async def resolve_name(request: web.Request, name: HandleName, interface: str = "rest") -> web.Response:
    """The answer of ``GET /api/handles/{name}`` with this request's query and credentials (also the
    JSON that a handle's URL on the node answers with ``Accept: application/json``: ``interface``
    ``web`` counts it there)."""
    if not request.query_string and "Authorization" not in request.headers:
        # The hot path (a traceability app resolving a code): what registry.read_policy serves an
        # anonymous caller without filters, rendered once per record.
        registry_of(request).require_responsible(name)
        resolver = resolver_of(request)
        record = await resolver.lookup(name.key)
        request.app[STATE_KEY].resolutions.count(name.prefix, interface, record is not None)
        if record is None:
            raise HandleNotFound("Handle Not Found", name.text)
        mark(request, name, record, interface)  # resolver.http.hot_path answers the next one
        return web.Response(text=render(name, record, resolver), content_type="application/json")
    with _about(name):
        return await _resolve(request, name, interface)


async def _resolve(request: web.Request, name: HandleName, interface: str) -> web.Response:
    registry = registry_of(request)
    registry.require_responsible(name)
    caller = await request_caller(request)
    resolver = resolver_of(request)
    record = await resolver.lookup(name.key, authoritative=flag(request, "auth"))
    request.app[STATE_KEY].resolutions.count(name.prefix, interface, record is not None)
    if record is None:
        raise HandleNotFound("Handle Not Found", name.text)
    wanted = ValueFilter(
        types=tuple(request.query.getall("type", [])),
        indexes=frozenset(parse_uint(i.strip(), "index", maximum=MAX_INDEX) for i in request.query.getall("index", [])),
        public_only=flag(request, "publicOnly"),
    )
    private_reader = not wanted.public_only and await registry.may_read_private(caller, record)
    values = resolver.served(record, private_reader=private_reader, request=wanted)
    body: dict[str, Any] = {"responseCode": 1, "handle": name.text, "values": values_to_json(values)}
    if not values and wanted.selects:
        body["responseCode"] = 200  # HANDLE.NET: the filters matched no value this caller is served
    return json_response(request, body)


@routes.put("/api/handles/{handle:.+}")
async def put_handle(request: web.Request) -> web.Response:
    mint = flag(request, "mintNewSuffix")
    name = _handle(request, mint=mint)
    with _about(name):
        registry = registry_of(request)
        caller = await request_caller(request)
        caller.require_authenticated()
        body = await read_json(request)
        if isinstance(body, dict) and "handle" in body and body["handle"] is not None:
            try:
                same = isinstance(body["handle"], str) and registry.parse(body["handle"]).key == name.key
            except InvalidHandle:
                same = False
            if not same and not mint:
                raise InvalidRequest("the handle in the body does not match the handle in the URL", name.text)
        values = parse_values(body, _limits(request))
        overwrite = True if "overwrite" not in request.query else flag(request, "overwrite")
        report = await registry.put_handle(
            caller, name, values, overwrite=overwrite, indexes=_indexes(request), mint=mint
        )
    return json_response(request, {"responseCode": 1, "handle": report.handle}, 201 if report.created else 200)


@routes.delete("/api/handles/{handle:.+}")
async def delete_handle(request: web.Request) -> web.Response:
    name = _handle(request)
    with _about(name):
        caller = await request_caller(request)
        await registry_of(request).delete(caller, name, _indexes(request, various=False))
    return json_response(request, {"responseCode": 1, "handle": name.text})


def _int_param(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return parse_uint(raw.strip(), name, maximum=maximum)


@routes.get("/api/handles")
async def list_handles(request: web.Request) -> web.Response:
    prefix = request.query.get("prefix", "").strip()
    if not prefix:
        raise InvalidRequest("list handles needs ?prefix=")
    if prefix.upper().startswith("0.NA/"):
        prefix = prefix[5:]
    max_size = request.app[CONFIG_KEY].max_page_size
    page = _int_param(request, "page", 0, MAX_PAGE)
    size = _int_param(request, "pageSize", max_size, max_size)
    caller = await request_caller(request)
    total, handles = await registry_of(request).list_handles(caller, prefix, page, size)
    body = {
        "responseCode": 1,
        "prefix": prefix,
        "totalCount": str(total),
        "page": page,
        "pageSize": size,
        "handles": handles,
    }
    return json_response(request, body)


@routes.get("/api/prefixes")
async def list_prefixes(request: web.Request) -> web.Response:
    registry = registry_of(request)
    prefixes = [registry.node_prefix, *await registry.store.enterprise_prefixes()]
    body = {
        "responseCode": 1,
        "totalCount": str(len(prefixes)),
        "prefixes": [prefix_handle_of(p) for p in prefixes],
    }
    return json_response(request, body)
