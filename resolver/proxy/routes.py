"""The proxy's routes: ``GET /{prefix}/{suffix}`` for every path whose first segment is a handle
prefix, and the node's home page ``GET /`` with a form to resolve an identifier.

A path is a handle's when its first segment is a prefix: digits and dots (``88.118.8.1001``) or
``0.NA`` (prefix handles); the slash after it may arrive as ``%2F``. Such paths are routed here after
every other route (``/api``, ``/bureau``, ``/metrics`` … keep theirs), and only for GET and HEAD: a
POST of a native Handle message at any path still reaches :mod:`resolver.native.http`, any other method
at a handle's path is 405. A prefix of another node is still routed here and answered 400 (responseCode
301), so a person learns why; any other path stays a JSON 404.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from aiohttp import web

from promotion_tracker.webpages import render_page
from registry.errors import HandleError, InvalidHandle
from registry.model import HandleName
from resolver.http.keys import CONFIG_KEY, registry_of
from resolver.http.public_url import handle_path
from resolver.http.web import flag
from resolver.ops.metrics import WEB_REDIRECTS
from resolver.proxy.answer import PROXY_KEY, ProxyState, answer_error, answer_handle
from resolver.proxy.negotiation import wanted
from resolver.proxy.pages import home_context

__all__ = ["HANDLE_PATH", "add_proxy_routes", "handle_of_path"]

HANDLE_PATH = "/{handle}"  # the canonical route (shared with native messages over HTTP: POST)
_PREFIX_LIKE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)*|0\.[Nn][Aa])", re.ASCII)
_ENCODED_SLASH = re.compile(r"%2[Ff]")
MAX_ENTERED = 300  # characters of an identifier typed into the home page's form
_FORM_REDIRECTED = WEB_REDIRECTS.labels("303")  # bound once (resolver.ops.metrics)


class HandlePathResource(web.DynamicResource):
    """``/{handle}`` matching only paths whose first segment is a handle prefix."""

    def _match(self, path: str) -> dict[str, str] | None:  # path: decoded but for %2F and %25
        head = _ENCODED_SLASH.split(path[1:].partition("/")[0], maxsplit=1)[0]
        if not _PREFIX_LIKE.fullmatch(head):
            return None
        return {"handle": path[1:]}


def handle_of_path(request: web.Request) -> HandleName:
    """The handle a path names: the raw path percent-decoded strictly (invalid UTF-8 is refused,
    102), then parsed by the node's rules."""
    raw = request.raw_path.split("?", 1)[0][1:]
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidHandle("handle is not valid UTF-8", None) from None
    return registry_of(request).parse(text)


async def resolve_path(request: web.Request) -> web.StreamResponse:
    try:
        name = handle_of_path(request)
    except HandleError as exc:
        return answer_error(request, exc, wanted(request.headers.get("Accept")))
    return await answer_handle(request, name)


def _identifier(entered: str) -> str:
    """What a person typed: a handle, ``hdl:`` and a handle, or a handle's URL (on any host)."""
    text = entered.strip()
    if text[:4].lower() == "hdl:":
        return text[4:].strip()
    if text[:7].lower() == "http://" or text[:8].lower() == "https://":
        try:
            return unquote(urlsplit(text).path.lstrip("/"))
        except ValueError:
            return text
    return text


async def home(request: web.Request) -> web.Response:
    """The node's home page; with ``hdl`` (the form), 303 to that identifier's URL on this node."""
    prefix = request.app[CONFIG_KEY].prefix
    entered = request.query.get("hdl", "").strip()[:MAX_ENTERED]
    noredirect = flag(request, "noredirect")
    if not entered:
        return render_page(request, "proxy/home.html", home_context(prefix))
    registry = registry_of(request)
    try:
        name = registry.parse(_identifier(entered))
        registry.require_responsible(name)
    except HandleError as exc:
        context = home_context(prefix, entered=entered, noredirect=noredirect, code=exc.code, message=exc.message)
        return render_page(request, "proxy/home.html", context, status=400, headers={"Cache-Control": "no-store"})
    location = handle_path(name.text) + ("?noredirect" if noredirect else "")
    _FORM_REDIRECTED.inc()
    return web.Response(status=303, headers={"Location": location})


def add_proxy_routes(app: web.Application) -> None:
    """Register the home page and the handle paths on ``app``: last, after every other route."""
    app[PROXY_KEY] = ProxyState()
    app.router.add_get("/", home, name="home")
    resource = HandlePathResource("/{handle:.+}", name="proxy_handle")
    app.router.register_resource(resource)
    resource.add_route("GET", resolve_path)
    resource.add_route("HEAD", resolve_path)
