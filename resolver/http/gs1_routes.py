"""GS1 Digital Link resolution on the node's HTTP port: ``/01/{gtin}[/22/…][/10/…][/21/…]`` and the
resolver description ``/.well-known/gs1resolver`` (GS1-Conformant Resolver 1.2.0).

A scan of a GS1 QR code resolves like a scan of a handle: the path is parsed and checked
(:func:`registry.gs1.parse_digital_link`; 400 when malformed or the check digit is wrong), the
enterprise that registered the GTIN's company prefix is found (:mod:`registry.gs1_prefixes`), the
most specific of the handles the link names that exists is chosen (unit, batch, product: walking
up inside one request, without redirects, as the standard asks), and the proxy answers for that
handle exactly as for ``/{prefix}/{suffix}``: redirect, landing page, JSON or linkset by ``Accept``,
with the query string (``linkType=``, data attributes) left to it. A GTIN no enterprise has
registered, or one without any such handle, is a 404; refusals are the proxy's too
(:func:`resolver.proxy.answer.answer_error`: the error page, or the Handle JSON error by ``Accept``).

Every answer here carries ``Access-Control-Allow-Origin: *`` and ``OPTIONS`` answers a CORS
preflight (2.2 of the standard): all of it is public, and no credentials are ever needed.
"""

from __future__ import annotations

import json

from aiohttp import web

from registry.errors import HandleError, HandleNotFound
from registry.gs1 import GTIN_AI, parse_digital_link
from registry.model import HandleName
from resolver.http.keys import CONFIG_KEY, registry_of, resolver_of
from resolver.http.public_url import public_base_url
from resolver.http.web import flag
from resolver.ops.metrics import GS1_RESOLUTIONS
from resolver.proxy.answer import answer_error, answer_handle
from resolver.proxy.linkset import GS1_VOCABULARY
from resolver.proxy.negotiation import wanted

__all__ = ["WELL_KNOWN", "gs1_routes", "resolver_description"]

gs1_routes = web.RouteTableDef()

WELL_KNOWN = "/.well-known/gs1resolver"
LINKSET_CONTEXT = "https://ref.gs1.org/standards/resolver/linkset-context"
_ANY_ORIGIN = {"Access-Control-Allow-Origin": "*"}
# Bound once (resolver.ops.metrics): a link resolved to a handle, to none, or refused as malformed.
_RESOLVED = GS1_RESOLUTIONS.labels("resolved")
_NOT_FOUND = GS1_RESOLUTIONS.labels("not_found")
_INVALID = GS1_RESOLUTIONS.labels("invalid")
_PREFLIGHT = {
    **_ANY_ORIGIN,
    "Allow": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Accept, Accept-Language",
    "Access-Control-Max-Age": "86400",
}


async def _handle_of(request: web.Request) -> HandleName:
    """The handle a Digital Link resolves to: the most specific one of its enterprise that exists."""
    link = parse_digital_link(request.raw_path.split("?", 1)[0])
    registry = registry_of(request)
    owner = await registry.gs1_owner(link)
    if owner is None:
        raise HandleNotFound(f"GTIN {link.gtin}: no enterprise of this node has registered its GS1 company prefix")
    names = [registry.parse(f"{owner.enterprise_prefix}/{suffix}") for suffix in link.handle_suffixes()]
    resolver = resolver_of(request)
    authoritative = flag(request, "auth")
    for name in names:
        if await resolver.lookup(name.key, authoritative=authoritative) is not None:
            return name
    fallback = f" or any of the {len(names) - 1} less specific handles" if len(names) > 1 else ""
    raise HandleNotFound(f"{link.path} is not registered: no handle {names[0].text}{fallback}", names[0].text)


@gs1_routes.get(f"/{GTIN_AI}/{{gtin}}")
@gs1_routes.get(f"/{GTIN_AI}/{{gtin}}/{{qualifiers:.*}}")
async def resolve_digital_link(request: web.Request) -> web.StreamResponse:
    """``/01/{gtin}[/22/{cpv}][/10/{lot}][/21/{serial}]`` or ``/01/{gtin}/235/{tpx}`` (one trailing
    slash tolerated): the proxy's answer for the handle the link resolves to."""
    try:
        name = await _handle_of(request)
    except HandleError as exc:
        (_NOT_FOUND if isinstance(exc, HandleNotFound) else _INVALID).inc()
        refusal = answer_error(request, exc, wanted(request.headers.get("Accept")))
        refusal.headers.update(_ANY_ORIGIN)
        return refusal
    _RESOLVED.inc()
    response = await answer_handle(request, name)
    if not response.prepared:
        response.headers.update(_ANY_ORIGIN)
    return response


@gs1_routes.options(f"/{GTIN_AI}/{{gtin}}")
@gs1_routes.options(f"/{GTIN_AI}/{{gtin}}/{{qualifiers:.*}}")
@gs1_routes.options(WELL_KNOWN)
async def preflight(request: web.Request) -> web.Response:
    """A CORS preflight (or a plain OPTIONS): what may be asked, from any origin."""
    return web.Response(status=204, headers=_PREFLIGHT)


def resolver_description(node_prefix: str, root: str) -> dict[str, object]:
    """The resolver description file (GS1-Conformant Resolver 1.2.0, section 3; it validates
    against the standard's description-file schema): GTINs (AI 01) with every key qualifier,
    ``gs1:`` link types (the namespace the proxy's linksets expand them to), linkset never the
    default link type."""
    return {
        "name": f"工业互联网标识解析二级节点 {node_prefix} · Industrial Internet identifier resolution node",
        "resolverRoot": root,
        "supportedPrimaryKeys": [GTIN_AI],
        "supportedLinkType": [{"namespace": GS1_VOCABULARY, "prefix": "gs1:"}],
        "linkTypeDefaultCanBeLinkset": False,
        "jsonLdContextLocation": LINKSET_CONTEXT,
    }


@gs1_routes.get(WELL_KNOWN)
async def describe_resolver(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    body = resolver_description(config.prefix, public_base_url(config))
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        content_type="application/json",
        headers={**_ANY_ORIGIN, "Cache-Control": "max-age=3600"},
    )
