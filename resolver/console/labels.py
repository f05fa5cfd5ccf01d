"""QR label sheets from the console: the PDF of :mod:`resolver.labels` for the identifiers checked in a
list or search results, or for a run of them in registration order from one suffix on, made for the
signed-in enterprise under its own prefix. A POST with the form's token (no browser password prompt:
the console session is the credential); it changes nothing. At most ``MAX_LABELS`` labels a sheet,
as ``GET /api/labels``; a larger print run is several sheets, each from the suffix after the last.
A ``field`` (one of the enterprise's template fields) prints that field's value under each code, as
``GET /api/labels?field=`` does (:class:`resolver.labels.fields.FieldReader`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from registry.errors import HandleError, HandleNotFound, InvalidHandle, InvalidRequest, ServerBusy
from registry.inputs import parse_uint
from registry.model import normalise_prefix
from resolver.console.enterprise import LAYOUT_NAMES, MAX_SUFFIX, label_fields
from resolver.console.forms import N_
from resolver.console.guard import ENTERPRISE, SignedIn
from resolver.console.signin import read_form, require
from resolver.console.site import render
from resolver.http.keys import CONFIG_KEY, registry_of
from resolver.http.public_url import handle_url, public_base_url
from resolver.http.statuses import http_status
from resolver.labels.fields import FieldReader
from resolver.labels.layouts import LAYOUTS, layout_named
from resolver.labels.renderer import render_sheet
from resolver.labels.routes import LABELS_KEY, MAX_LABELS, SHEETS_AT_ONCE, _make_sheet
from resolver.labels.sheet import Label

__all__ = ["console_label_routes"]

console_label_routes = web.RouteTableDef()


async def _me(request: web.Request) -> SignedIn:
    me = await require(request, ENTERPRISE)
    assert me.enterprise is not None
    return me


async def _page(
    request: web.Request, me: SignedIn, *, error: str = "", detail: str = "", status: int = 200
) -> web.Response:
    assert me.enterprise is not None
    context = {
        "layouts": LAYOUT_NAMES,
        "label_fields": await label_fields(registry_of(request), me.enterprise.prefix),
        "max_labels": MAX_LABELS,
        "error": error,
        "detail": detail,
    }
    return render(request, "console/labels.html", context, me, status=status, nav="labels")


@console_label_routes.get("/console/labels")
async def labels_page(request: web.Request) -> web.Response:
    return await _page(request, await _me(request))


def _suffixes(post: Mapping[str, Any]) -> list[str]:
    getall = getattr(post, "getall", None)
    values = getall("suffix", []) if getall is not None else []
    return [v for v in values if isinstance(v, str)]


@console_label_routes.post("/console/labels")
async def make_labels(request: web.Request) -> web.StreamResponse:
    """``suffix`` (repeated: the checked identifiers) or ``from`` and ``count`` (a run), and ``layout``."""
    me = await _me(request)
    too_many = N_("At most %(n)s labels a sheet: check fewer identifiers.")
    try:
        post = await read_form(request, me)
    except web.HTTPRequestEntityTooLarge:  # more fields than a form may have: far more than a sheet holds
        return await _page(request, me, error=too_many, status=413)
    assert me.enterprise is not None
    prefix = me.enterprise.prefix
    layout_name = post.get("layout")
    if not isinstance(layout_name, str) or layout_name not in LAYOUTS:
        return await _page(request, me, error=N_("Choose one of the sheets listed."), status=400)
    layout = layout_named(layout_name)
    field_name = post.get("field")
    field_name = field_name.strip() if isinstance(field_name, str) and field_name.strip() else None
    if field_name is not None and field_name not in await label_fields(registry_of(request), prefix):
        return await _page(request, me, error=N_("Choose one of the fields listed."), status=400)
    chosen = _suffixes(post)
    if len(chosen) > MAX_LABELS:
        return await _page(request, me, error=too_many, status=400)
    state = request.app[LABELS_KEY]
    if state.sheets.locked():
        raise ServerBusy(f"{SHEETS_AT_ONCE} label sheets are being made; try again shortly", retry_after=5)
    try:
        if chosen:
            async with state.sheets:
                pdf = await _selected_sheet(request, prefix, chosen, layout_name, field_name)
        else:
            start = post.get("from")
            start = start.strip() if isinstance(start, str) and start.strip() else None
            if start is not None and len(start) > MAX_SUFFIX:
                raise InvalidHandle("the suffix is too long", None)
            raw_count = post.get("count")
            try:
                count = parse_uint(str(raw_count or "").strip(), "count", minimum=1, maximum=MAX_LABELS)
            except InvalidRequest:
                return await _page(request, me, error=N_("How many labels: a number from 1 to %(n)s."), status=400)
            async with state.sheets:
                pdf, _labels = await _make_sheet(request, me.caller, prefix, start, count, layout, field_name)
    except (HandleNotFound, InvalidHandle) as exc:
        return await _page(
            request, me, error=N_("No labels were made:"), detail=exc.message, status=http_status(exc.code)
        )
    except HandleError as exc:
        if isinstance(exc, ServerBusy):
            raise
        return await _page(
            request, me, error=N_("No labels were made:"), detail=exc.message, status=http_status(exc.code)
        )
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in prefix)
    headers = {"Content-Disposition": f'attachment; filename="labels-{safe}.pdf"'}
    return web.Response(body=pdf, content_type="application/pdf", headers=headers)


async def _selected_sheet(
    request: web.Request, prefix: str, suffixes: list[str], layout: str, field_name: str | None
) -> bytes:
    """The labels of the chosen identifiers, in the order given (each once; ones deleted since are left
    out), with the value of ``field_name`` under each code when it is given."""
    registry = registry_of(request)
    reader = FieldReader(registry, normalise_prefix(prefix), field_name) if field_name else None
    config = request.app[CONFIG_KEY]
    base = public_base_url(config)
    seen: set[str] = set()
    labels = []
    for suffix in suffixes:
        if not suffix or len(suffix) > MAX_SUFFIX or suffix in seen:
            continue
        seen.add(suffix)
        try:
            name = registry.parse(f"{prefix}/{suffix}")
        except InvalidHandle:
            continue
        record = await registry.read_record(name.key)
        if record is not None:
            note = await reader.value(record) if reader is not None else None
            labels.append(Label(record.handle, handle_url(base, record.handle), note))
    if not labels:
        raise HandleNotFound(f"none of the chosen identifiers is registered under {prefix}", prefix)
    return await render_sheet(layout_named(layout), f"idnode labels {prefix}", config.label_font, labels)
