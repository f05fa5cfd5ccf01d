"""The enterprise administrator's search: its identifiers by the start of their suffix, or by a value
they hold (the reverse lookup of ``GET /hrls/handles``, :mod:`registry.search`, with ``*`` standing
for any run of characters and the value's type chosen from the URL, the e-mail address and its
templates' fields), fifty a page, always under its own prefix. Each result has a checkbox: the
checked ones become a label sheet (:mod:`resolver.console.labels`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.errors import InvalidHandle, InvalidRequest
from registry.inputs import parse_uint
from resolver.console.enterprise import LAYOUT_NAMES, MAX_SUFFIX, label_fields, templates_for
from resolver.console.guard import ENTERPRISE, SignedIn
from resolver.console.signin import require
from resolver.console.site import render
from resolver.http.keys import registry_of
from resolver.labels.routes import MAX_LABELS

__all__ = ["search_routes"]

search_routes = web.RouteTableDef()
PAGE = 50
MAX_PAGE_NUMBER = 100_000
BASIC_TYPES = ("URL", "EMAIL")


async def _me(request: web.Request) -> SignedIn:
    me = await require(request, ENTERPRISE)
    assert me.enterprise is not None
    return me


async def value_types(request: web.Request, prefix: str) -> list[str]:
    """The types a value search offers: the URL, an e-mail address, and the types of its templates' fields."""
    own = {f.type.upper() for t in await templates_for(registry_of(request), prefix) for f in t.fields}
    return [*BASIC_TYPES, *sorted(own - set(BASIC_TYPES))]


def _page_number(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        return parse_uint(raw.strip(), "page", minimum=0, maximum=MAX_PAGE_NUMBER)
    except InvalidRequest:
        return 0


@search_routes.get("/console/search")
async def search_page(request: web.Request) -> web.Response:
    """``?q=`` (the start of suffixes, ``after=`` pages on) or ``?type=&value=`` (``page=`` pages on)."""
    me = await _me(request)
    assert me.enterprise is not None
    prefix = me.enterprise.prefix
    registry = registry_of(request)
    types = await value_types(request, prefix)
    query = request.query
    q = (query.get("q") or "").strip()[:MAX_SUFFIX]
    value = (query.get("value") or "").strip()[:1024]
    kind = (query.get("type") or "URL").strip().upper()[:64]
    by = "value" if "value" in query else ("suffix" if "q" in query else "")
    rows: list[str] = []
    error, detail = "", ""
    next_link: dict[str, str] | None = None
    prev_link: dict[str, str] | None = None
    if by == "suffix":
        after = query.get("after") or None
        if after is not None and (len(after) > MAX_SUFFIX or not after.startswith(q)):
            after = None
        try:
            key = registry.parse(f"{prefix}/{after}").key if after is not None else None
            found = await registry.find_handles(me.caller, prefix, q, PAGE + 1, after=key)
        except InvalidHandle:
            found, error = [], "q"
        rows = [h for _, h in found[:PAGE]]
        if len(found) > PAGE:
            next_link = {"q": q, "after": rows[-1].partition("/")[2]}
    elif by == "value":
        page = _page_number(query.get("page"))
        if kind not in types:
            error = "type"
        elif not value:
            error = "value"
        else:
            try:
                found = await _value_page(registry, me, kind, value, prefix, page)
            except InvalidRequest as exc:
                found, error, detail = [], "pattern", exc.message
            rows = found[:PAGE]
            if len(found) > PAGE:
                next_link = {"type": kind, "value": value, "page": str(page + 1)}
            if page > 0:
                prev_link = {"type": kind, "value": value, "page": str(page - 1)}
    context: dict[str, Any] = {
        "prefix": prefix,
        "by": by,
        "q": q,
        "value": value,
        "type": kind,
        "types": types,
        "rows": [{"handle": h, "suffix": h.partition("/")[2]} for h in rows],
        "error": error,
        "detail": detail,
        "next_link": next_link,
        "prev_link": prev_link,
        "layouts": LAYOUT_NAMES,
        "label_fields": await label_fields(registry_of(request), me.enterprise.prefix),
        "max_labels": MAX_LABELS,
    }
    return render(request, "console/search.html", context, me, status=400 if error else 200, nav="search")


async def _value_page(registry: Any, me: SignedIn, kind: str, value: str, prefix: str, page: int) -> list[str]:
    """Page ``page`` of fifty, and the first of the next (to know whether there is one)."""
    here = await registry.search.search(me.caller, {kind: value}, prefix=prefix, page=page, limit=PAGE)
    if len(here) < PAGE:
        return list(here)
    following = await registry.search.search(me.caller, {kind: value}, prefix=prefix, page=(page + 1) * PAGE, limit=1)
    return [*here, *following]
