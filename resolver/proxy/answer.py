"""How a handle's URL on the node answers: the one place a web resolution completes.

:func:`answer_handle` serves ``GET /{prefix}/{suffix}`` (``resolver.proxy.routes``) and any other
route that maps a request to a handle (GS1 Digital Link). By ``Accept``
(:mod:`resolver.proxy.negotiation`, ``Vary: Accept``):

- ``application/json``: exactly what ``GET /api/handles/{handle}`` answers for the same query and
  credentials (:func:`resolver.http.routes.resolve_name`, the same code);
- ``application/linkset+json``, or GS1's ``linkType=linkset`` (``all``): the RFC 9264 linkset of the
  URL-like values (:mod:`resolver.proxy.linkset`);
- anything else: 302 to the link of GS1's ``linkType`` when the linkset has one of that type (in the
  language ``Accept-Language`` prefers), else to the target the proxy parameters choose
  (:mod:`resolver.proxy.targets`), or, with ``noredirect`` or no target, the landing page (HTML,
  Chinese or English).

Only values the caller may read are used, for every answer: :mod:`registry.read_policy` decides
(anonymous callers: public values). An ``HS_ALIAS`` value is followed within this node (at most
:data:`MAX_ALIAS_HOPS`; a loop is 404, responseCode 6), unless ``ignore_aliases`` is given. Errors
are pages for people and the Handle JSON error for the JSON representations.

What is made from a record (its destinations, facts, linkset and rendered pages) is kept in
:class:`~resolver.proxy.memo.RecordMemo` by record object, so a write needs no invalidation and a
landing page from the memo costs about what a JSON resolve does. ``auth`` (read the store, not the
caches) and credentials that may read non-public values bypass the memos.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from aiohttp import web
from multidict import MultiMapping
from prometheus_client import Counter

from promotion_tracker.webpages import LOCALES, negotiate_locale, render_page
from promotion_tracker.webpages.locales import parse_accept_language
from registry.auth import Caller
from registry.errors import (
    HandleError,
    HandleNotFound,
    InvalidHandle,
    InvalidRequest,
    InvalidValue,
    TooManyAliases,
)
from registry.inputs import parse_uint
from registry.model import MAX_INDEX, HandleName, Record, normalise_prefix
from registry.read_policy import public_values, served_values
from registry.templates import TEMPLATE_INDEX, TEMPLATE_TYPE, Template, parse_template_ref
from resolver.http.hot_path import mark
from resolver.http.keys import CONFIG_KEY, STATE_KEY, registry_of, resolver_of
from resolver.http.routes import resolve_name
from resolver.http.web import error_response, flag, request_address, request_caller
from resolver.ops.metrics import WEB_ERROR_PAGES, WEB_LANDING_PAGES, WEB_LINKSETS, WEB_REDIRECTS
from resolver.proxy.linkset import GS1_VOCABULARY, linkset, relation_of
from resolver.proxy.locations import MAX_LOCATT
from resolver.proxy.memo import RecordMemo
from resolver.proxy.negotiation import LINKSET_TYPE, Wanted, wanted
from resolver.proxy.pages import Registration, error_context, landing_context
from resolver.proxy.targets import Destinations, destinations_of
from resolver.proxy.urls import append_to

__all__ = ["MAX_ALIAS_HOPS", "PROXY_KEY", "ProxyState", "answer_error", "answer_handle"]

MAX_ALIAS_HOPS = 8
MAX_TYPE = 255
MAX_LOCATT_LENGTH = 255
MAX_URLAPPEND = 2048
MAX_LINK_TYPE = 500
ALL_LINKS = frozenset({"linkset", "all"})  # linkType values that ask for the whole linkset
_GS1_URI = re.compile(r"^https?://(?:www\.|ref\.)?gs1\.org/voc/")  # the GS1 vocabulary under its other names
PAGE_VARY = "Accept, Accept-Language, Cookie"
PRIVATE = {"Cache-Control": "private, no-store"}  # pages showing what only these credentials may read

# Each outcome's counter child, bound once: the hot paths pay one increment (resolver.ops.metrics).
_REDIRECTED = WEB_REDIRECTS.labels("302")
_LANDING = {locale: WEB_LANDING_PAGES.labels(locale) for locale in LOCALES}
_LINKSET = WEB_LINKSETS
_ERROR_PAGES: dict[int, Counter] = {}


def _error_page_counter(status: int) -> Counter:
    child = _ERROR_PAGES.get(status)
    if child is None:
        child = _ERROR_PAGES[status] = WEB_ERROR_PAGES.labels(str(status))
    return child


@dataclass(frozen=True)
class Facts:
    """What a landing page shows beside the values: the template they follow, registration."""

    template: Template | None
    registration: Registration


@dataclass
class ProxyState:
    """The memos of the proxy (one per application)."""

    destinations: RecordMemo[Destinations] = field(default_factory=lambda: RecordMemo(20_000))
    facts: RecordMemo[Facts] = field(default_factory=lambda: RecordMemo(20_000))
    pages: RecordMemo[bytes] = field(default_factory=lambda: RecordMemo(2_000))  # rendered landing pages
    linksets: RecordMemo[bytes] = field(default_factory=lambda: RecordMemo(2_000))


PROXY_KEY: web.AppKey[ProxyState] = web.AppKey("proxy", ProxyState)


@dataclass(frozen=True)
class Asked:
    """The proxy parameters of a request (HANDLE.NET's and the DOI proxy's names)."""

    index: int | None = None
    type: str | None = None
    locatt: tuple[str, ...] = ()
    urlappend: str | None = None
    noredirect: bool = False
    ignore_aliases: bool = False
    auth: bool = False
    link_type: str | None = None  # GS1's linkType: a link relation to redirect to, or "linkset"/"all"


PLAIN = Asked()


def _asked(request: web.Request) -> Asked:
    if not request.query_string:
        return PLAIN
    query: MultiMapping[str] = request.query
    index = None
    if query.get("index", "").strip():  # an empty one (a form's empty field) is none, as in HANDLE.NET
        index = parse_uint(query["index"].strip(), "index", maximum=MAX_INDEX)
    type_ = query.get("type", "").strip() or None
    if type_ is not None and len(type_) > MAX_TYPE:
        raise InvalidRequest(f"type must be a value type of at most {MAX_TYPE} characters")
    locatt = tuple(query.getall("locatt", []))
    if len(locatt) > MAX_LOCATT or any(len(a) > MAX_LOCATT_LENGTH for a in locatt):
        raise InvalidRequest(f"at most {MAX_LOCATT} locatt parameters of at most {MAX_LOCATT_LENGTH} characters")
    append = query.get("urlappend")
    if append is not None and len(append) > MAX_URLAPPEND:
        raise InvalidRequest(f"urlappend is at most {MAX_URLAPPEND} characters")
    link_type = query.get("linkType", "").strip() or None
    if link_type is not None and len(link_type) > MAX_LINK_TYPE:
        raise InvalidRequest(f"linkType is at most {MAX_LINK_TYPE} characters")
    return Asked(
        index=index,
        type=type_,
        locatt=locatt,
        urlappend=append or None,
        noredirect=flag(request, "noredirect"),
        ignore_aliases=flag(request, "ignore_aliases"),
        auth=flag(request, "auth"),
        link_type=link_type,
    )


# -- what the caller sees --------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """A record as this request may see it. ``shared``: the public view, kept in the memos."""

    name: HandleName
    record: Record
    found: Destinations
    shared: bool


async def _view(request: web.Request, name: HandleName, record: Record, caller: Caller | None, asked: Asked) -> View:
    state = request.app[PROXY_KEY]
    if caller is not None and await registry_of(request).may_read_private(caller, record):
        values = served_values(record.values, private_reader=True)
        return View(name, record, destinations_of(values, record.handle), False)
    found = state.destinations.get(record)
    if found is None:
        found = state.destinations.put(record, destinations_of(public_values(record.values), record.handle))
    return View(name, record, found, not asked.auth)


async def _lookup(
    request: web.Request, name: HandleName, caller: Caller | None, asked: Asked, *, counted: bool = False
) -> View:
    """The record of ``name`` as the caller may see it. ``counted``: the resolution the request asked
    for (not an alias hop), counted for its prefix like REST and native resolutions, found or not."""
    record = await resolver_of(request).lookup(name.key, authoritative=asked.auth)
    if counted:
        request.app[STATE_KEY].resolutions.count(name.prefix, "web", record is not None)
    if record is None:
        raise HandleNotFound("Handle Not Found", name.text)
    return await _view(request, name, record, caller, asked)


async def _follow(request: web.Request, view: View, caller: Caller | None, asked: Asked) -> View:
    """Follow HS_ALIAS values within this node. An alias that names no handle of this node ends the
    chain there (its page shows it); a loop, or more than MAX_ALIAS_HOPS hops, is TooManyAliases."""
    registry = registry_of(request)
    seen = {view.name.key}
    start = view.name.text
    while view.found.alias is not None:
        try:
            target = registry.parse(view.found.alias)
        except InvalidHandle:
            break
        if not registry.is_responsible(target):
            break
        if target.key in seen or len(seen) > MAX_ALIAS_HOPS:
            raise TooManyAliases(f"the aliases from {start} loop or go on for more than {MAX_ALIAS_HOPS} hops", start)
        seen.add(target.key)
        try:
            view = await _lookup(request, target, caller, asked)
        except HandleNotFound:
            raise HandleNotFound(f"{start} is an alias of {target.text}, which is not registered", start) from None
    return view


# -- the answers -----------------------------------------------------------------------------------
async def answer_handle(request: web.Request, name: HandleName) -> web.StreamResponse:
    """Answer a request for ``name`` at a web URL of the node: negotiation, redirect, page, errors."""
    kind = wanted(request.headers.get("Accept"))
    try:
        if kind is Wanted.JSON:
            response: web.StreamResponse = await resolve_name(request, name, "web")
        else:
            response = await _answer(request, name, kind)
    except HandleError as exc:
        if exc.handle is None:
            exc.handle = name.text
        response = answer_error(request, exc, kind)
    return _completed(request, name, response)


def _completed(request: web.Request, name: HandleName, response: web.StreamResponse) -> web.StreamResponse:
    """Every web answer about a handle ends here, whatever it is (the resolution itself is counted
    where the record is looked up, ``_lookup``, as REST counts its own)."""
    if "Vary" not in response.headers:
        response.headers["Vary"] = "Accept"
    return response


async def _answer(request: web.Request, name: HandleName, kind: Wanted) -> web.StreamResponse:
    registry_of(request).require_responsible(name)
    asked = _asked(request)
    caller = await request_caller(request) if "Authorization" in request.headers else None
    view = await _lookup(request, name, caller, asked, counted=True)
    alias_of = None
    if view.found.alias is not None and not asked.ignore_aliases:
        followed = await _follow(request, view, caller, asked)
        if followed.name.key != name.key:
            view, alias_of = followed, name.text
    if kind is Wanted.LINKSET or asked.link_type in ALL_LINKS:
        return await _linkset(request, view)
    if not asked.noredirect:
        target = await _typed_link(request, view, asked.link_type) if asked.link_type is not None else None
        if target is None:  # no linkType, or none of that type: the default target
            client = request_address(request) if view.found.locations else None
            target = view.found.target(index=asked.index, type_=asked.type, locatt=asked.locatt, client=client)
        if target is not None:
            if asked.urlappend is not None:
                appended = append_to(target, asked.urlappend)
                if appended is None:
                    raise InvalidRequest("urlappend would make the target no http(s) URL of the same host")
                target = appended
            _REDIRECTED.inc()
            if caller is None and view.shared and alias_of is None and not view.found.locations and asked is PLAIN:
                # depends on the record alone: resolver.http.hot_path answers the next one
                mark(request, name, view.record, "web", counter=_REDIRECTED)
            return web.Response(status=302, headers={"Location": target, "Vary": "Accept"})
    page = await _page(request, view, alias_of)
    if caller is None and view.shared and alias_of is None and page.status == 200:
        # The record, the raw target (the links to the page in each language) and the language alone.
        locale = negotiate_locale(request)
        mark(request, name, view.record, "web", locale=locale, counter=_LANDING[locale])
    return page


def _anchor(request: web.Request) -> str:
    """The URL the request named, without its query: the linkset's context. Under ``public_base_url``
    when the operator set it (behind a TLS-terminating proxy the request alone says ``http``)."""
    base = request.app[CONFIG_KEY].public_base_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return base + request.raw_path.split("?", 1)[0]


async def _typed_link(request: web.Request, view: View, link_type: str) -> str | None:
    """The target of ``linkType`` (GS1-Conformant Resolver: ``gs1:pip``, its URI, or another link
    relation) among the links the linkset would list, the one in the first language of
    ``Accept-Language`` that one is in if several; None when the handle has no link of that type."""
    relation = relation_of(_GS1_URI.sub(GS1_VOCABULARY, link_type))
    if relation is None:
        return None
    facts = await _facts(request, view)
    names = {f.index: f.name for f in facts.template.fields} if facts.template is not None else {}
    contexts = linkset(_anchor(request), view.found, names)["linkset"]
    targets = contexts[0].get(relation, []) if contexts else []
    if not targets:
        return None
    asked_for = parse_accept_language(request.headers.get("Accept-Language") or "")
    for language in (tag.lower().split("-")[0] for tag in asked_for if tag != "*"):
        for target in targets:
            if any(tag.lower().split("-")[0] == language for tag in target.get("hreflang", ())):
                return str(target["href"])
    return str(targets[0]["href"])


async def _linkset(request: web.Request, view: View) -> web.Response:
    anchor = _anchor(request)
    state = request.app[PROXY_KEY]
    body = state.linksets.get(view.record, anchor) if view.shared else None
    if body is None:
        facts = await _facts(request, view)
        names = {f.index: f.name for f in facts.template.fields} if facts.template is not None else {}
        document = linkset(anchor, view.found, names)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if view.shared:
            state.linksets.put(view.record, body, anchor)
    headers = {"Vary": "Accept"} if view.shared else {"Vary": "Accept", **PRIVATE}
    _LINKSET.inc()
    return web.Response(body=body, content_type=LINKSET_TYPE, headers=headers)


async def _template(request: web.Request, view: View) -> Template | None:
    """The template the values name at index 1001 (the enterprise's own before the node-wide one),
    when the caller may see that value."""
    ref = next((v for v in view.found.values if v.index == TEMPLATE_INDEX), None)
    if ref is None or ref.type.upper() != TEMPLATE_TYPE:
        return None
    try:
        template_id, version = parse_template_ref(ref, "template")
    except InvalidValue:
        return None
    registry = registry_of(request)
    own = await registry.template(normalise_prefix(view.name.prefix), template_id, version)
    return own or await registry.template("", template_id, version)


async def _facts(request: web.Request, view: View) -> Facts:
    state = request.app[PROXY_KEY]
    facts = state.facts.get(view.record) if view.shared else None
    if facts is not None:
        return facts
    store = registry_of(request).store
    row = await store.get(view.name.key)
    enterprise = None
    if row is not None and row.enterprise_id is not None:
        enterprise = await store.get_enterprise(row.enterprise_id)
    elif view.name.is_prefix_handle:  # 0.NA/88.118.8.1001: the enterprise holding that prefix
        enterprise = await store.get_enterprise(normalise_prefix(view.name.suffix))
    registration = Registration(row.created_at if row is not None else None, enterprise)
    facts = Facts(await _template(request, view), registration)
    return state.facts.put(view.record, facts) if view.shared else facts


def _html(body: bytes, locale: str, status: int = 200) -> web.Response:
    return web.Response(
        body=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Language": "zh-CN" if locale == "zh" else locale, "Vary": PAGE_VARY},
    )


async def _page(request: web.Request, view: View, alias_of: str | None) -> web.Response:
    state = request.app[PROXY_KEY]
    locale = negotiate_locale(request)
    variant = (locale, alias_of, request.raw_path)  # the page links to itself in each language
    if view.shared:
        body = state.pages.get(view.record, variant)
        if body is not None:
            _LANDING[locale].inc()
            return _html(body, locale)
    facts = await _facts(request, view)
    context = landing_context(
        handle=view.record.handle,  # as registered: the same page whichever spelling of the prefix came in
        found=view.found,
        template=facts.template,
        registration=facts.registration,
        node_prefix=request.app[CONFIG_KEY].prefix,
        alias_of=alias_of,
    )
    headers = {"Vary": PAGE_VARY} if view.shared else {"Vary": PAGE_VARY, **PRIVATE}
    response = render_page(request, "proxy/landing.html", context, headers=headers)
    if view.shared and isinstance(response.body, bytes):
        state.pages.put(view.record, response.body, variant)
    _LANDING[locale].inc()
    return response


def answer_error(request: web.Request, exc: HandleError, kind: Wanted) -> web.Response:
    """An error at a handle's URL: the Handle JSON error (status, challenges and ``Retry-After`` as
    everywhere) for the JSON representations, else the error page with the same status and headers."""
    reply = error_response(request, exc)
    if kind is not Wanted.PEOPLE:
        reply.headers["Vary"] = "Accept"
        return reply
    context = error_context(
        request.app[CONFIG_KEY].prefix, status=reply.status, code=exc.code, message=exc.message, handle=exc.handle
    )
    headers = {"Vary": PAGE_VARY, "Cache-Control": "no-store"}
    page = render_page(request, "proxy/error.html", context, status=reply.status, headers=headers)
    for header in ("WWW-Authenticate", "Retry-After"):
        for value in reply.headers.getall(header, []):
            page.headers.add(header, value)
    _error_page_counter(page.status).inc()
    return page
