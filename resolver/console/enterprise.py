"""The enterprise administrator's pages: identifiers (list, register, view, edit, delete), the QR
code of one, and the administrator's own secret key. The dashboard is :mod:`resolver.console.dashboard`,
imports :mod:`~resolver.console.imports`, search :mod:`~resolver.console.search` and label sheets
:mod:`~resolver.console.labels`.

Every identifier is named by its suffix under the signed-in enterprise's own prefix, so no page can
reach another enterprise's; every write goes through the registry's write service as the API's
``PUT``/``DELETE /api/handles`` do, as the signed-in identity (rights, disabled enterprises and
templates are checked there too). Page contexts are plain dicts; the HTML is in the templates.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlencode

from aiohttp import web

from registry import valuedata
from registry.errors import HandleAlreadyExists, HandleError, HandleNotFound, InvalidHandle
from registry.model import HandleName, HandleValue, Record, normalise_prefix
from registry.read_policy import served_values
from registry.service import Registry
from registry.templates import TEMPLATE_INDEX, Template, is_template_id, parse_template_ref
from resolver.console.forms import (
    N_,
    URL_INDEX,
    IdentifierForm,
    active_fields,
    form_of_record,
    read_identifier_form,
    text_field,
)
from resolver.console.guard import ENTERPRISE, SignedIn, key_print
from resolver.console.signin import read_form, require
from resolver.console.site import render
from resolver.http.keys import CONFIG_KEY, registry_of
from resolver.http.public_url import handle_url, public_base_url
from resolver.http.statuses import http_status
from resolver.labels.layouts import DEFAULT_LAYOUT, LAYOUTS
from resolver.labels.routes import MAX_LABELS

__all__ = ["enterprise_routes"]

enterprise_routes = web.RouteTableDef()
PAGE = 50  # identifiers a list page shows
LAYOUT_NAMES = [DEFAULT_LAYOUT, *sorted(name for name in LAYOUTS if name != DEFAULT_LAYOUT)]
MAX_SUFFIX = 255


async def _me(request: web.Request) -> SignedIn:
    me = await require(request, ENTERPRISE)
    assert me.enterprise is not None
    return me


def _prefix(me: SignedIn) -> str:
    assert me.enterprise is not None
    return me.enterprise.prefix


# -- templates ------------------------------------------------------------------------------------
async def templates_for(registry: Registry, prefix: str) -> list[Template]:
    """The templates an enterprise registers with: the latest version of each id, its own before a
    node-wide one of the same id (the order in which the registry looks them up)."""
    own, node = normalise_prefix(prefix), ""
    latest: dict[str, Template] = {}
    for t in await registry.list_templates():
        if t.scope not in (own, node):
            continue
        have = latest.get(t.id)
        if have is None or (t.scope, t.version) > (have.scope, have.version):
            latest[t.id] = t  # "" sorts before the prefix: an own template beats any node-wide one
    return sorted(latest.values(), key=lambda t: t.id)


async def label_fields(registry: Registry, prefix: str) -> list[str]:
    """The field names of the enterprise's templates, each once: what a label may print under its code."""
    names = {f.name for t in await templates_for(registry, prefix) for f in active_fields(t)}
    return sorted(names)


async def _template_of(registry: Registry, prefix: str, record: Record) -> Template | None:
    ref = record.value_at(TEMPLATE_INDEX)
    if ref is None:
        return None
    try:
        template_id, version = parse_template_ref(ref, "template")
    except HandleError:
        return None
    own = await registry.template(normalise_prefix(prefix), template_id, version)
    return own or await registry.template("", template_id, version)


def template_json(t: Template) -> dict[str, Any]:
    return {
        "id": t.id,
        "version": t.version,
        "ref": f"{t.id}@{t.version}",
        "own": bool(t.scope),
        "description": t.description,
        "fields": [
            {
                "index": f.index,
                "name": f.name,
                "type": f.type,
                "required": f.required,
                "enum": list(f.enum) if f.enum else None,
                "options": [(e, e) for e in f.enum] if f.enum else [],
                "min_length": f.min_length,
                "max_length": f.max_length,
                "pattern": f.pattern,
            }
            for f in active_fields(t)
        ],
    }


# -- the list -------------------------------------------------------------------------------------
def _cursor(raw: str | None, prefix: str) -> str | None:
    """A paging key from the query: only a key under the enterprise's own prefix counts."""
    if raw is None or len(raw) > 2 * MAX_SUFFIX or not raw.startswith(normalise_prefix(prefix) + "/"):
        return None
    return raw


@enterprise_routes.get("/console/identifiers")
async def identifiers(request: web.Request) -> web.Response:
    me = await _me(request)
    registry = registry_of(request)
    prefix = _prefix(me)
    q = (request.query.get("q") or "").strip()[:MAX_SUFFIX]
    after = _cursor(request.query.get("after"), prefix)
    before = _cursor(request.query.get("before"), prefix)
    error = ""
    try:
        if before is not None:
            rows = await registry.find_handles(me.caller, prefix, q, PAGE + 1, before=before)
            has_prev, has_next = len(rows) > PAGE, True
            rows = rows[-PAGE:]
        else:
            rows = await registry.find_handles(me.caller, prefix, q, PAGE + 1, after=after)
            has_prev, has_next = after is not None, len(rows) > PAGE
            rows = rows[:PAGE]
    except InvalidHandle:
        rows, has_prev, has_next, error = [], False, False, "q"
    total = None if q else (await registry.list_handles(me.caller, prefix, 0, 0))[0]
    context = {
        "q": q,
        "error": error,
        "total": total,
        "rows": [{"handle": h, "suffix": h.partition("/")[2]} for _, h in rows],
        "prev_key": rows[0][0] if rows and has_prev else "",
        "next_key": rows[-1][0] if rows and has_next else "",
        "layouts": LAYOUT_NAMES,
        "label_fields": await label_fields(registry, prefix),
        "prefix": prefix,
        "done": request.query.get("done", ""),
        "max_labels": MAX_LABELS,
    }
    return render(request, "console/identifiers.html", context, me, nav="identifiers")


# -- one identifier -------------------------------------------------------------------------------
def _name(request: web.Request, me: SignedIn, suffix: str) -> HandleName:
    """The identifier ``suffix`` names under the signed-in enterprise's own prefix (HandleNotFound
    for a suffix no identifier can have)."""
    if not suffix or len(suffix) > MAX_SUFFIX:
        raise HandleNotFound("no identifier given")
    try:
        return registry_of(request).parse(f"{_prefix(me)}/{suffix}")
    except InvalidHandle:
        raise HandleNotFound("no identifier can have this suffix") from None


async def _record(request: web.Request, me: SignedIn, suffix: str) -> tuple[HandleName, Record]:
    name = _name(request, me, suffix)
    record = await registry_of(request).read_record(name.key)
    if record is None:
        raise HandleNotFound(f"no identifier {name.text}", name.text)
    return name, record


def _shown_value(v: HandleValue, fields: dict[int, str]) -> dict[str, Any]:
    kind = v.type.upper()
    text: str | None
    if kind == "HS_SECKEY":
        text = None  # a hash; nothing anyone should read
    elif kind == "HS_ADMIN":
        try:
            ref = valuedata.decode_admin(v.data)
            text = f"{ref.index}:{ref.handle}"
        except (ValueError, HandleError):
            text = None
    else:
        try:
            decoded = v.data.decode("utf-8")
            text = decoded if decoded.isprintable() else None
        except UnicodeDecodeError:
            text = None
    return {
        "index": v.index,
        "type": v.type,
        "field": fields.get(v.index, ""),
        "text": text,
        "size": len(v.data),
        "public": v.public_read,
        "url": text if kind == "URL" and text and text.startswith(("https://", "http://")) else "",
    }


@enterprise_routes.get("/console/identifier")
async def identifier(request: web.Request) -> web.Response:
    me = await _me(request)
    registry = registry_of(request)
    suffix = request.query.get("suffix", "")
    _, record = await _record(request, me, suffix)
    template = await _template_of(registry, _prefix(me), record)
    fields = {f.index: f.name for f in template.fields} if template is not None else {}
    private = await registry.may_read_private(me.caller, record)
    values = served_values(record.values, private_reader=private)  # what GET /api/handles serves them
    context = {
        "handle": record.handle,
        "suffix": suffix,
        "prefix": _prefix(me),
        "template": f"{template.id}@{template.version}" if template is not None else "",
        "values": [_shown_value(v, fields) for v in sorted(values, key=lambda v: v.index)],
        "public_url": handle_url(public_base_url(request.app[CONFIG_KEY]), record.handle),
        "public_url_text": unquote(handle_url(public_base_url(request.app[CONFIG_KEY]), record.handle)),
        "qr_path": "/api/qr/" + quote(record.handle, safe="/"),
        "layouts": LAYOUT_NAMES,
        "label_fields": await label_fields(registry_of(request), _prefix(me)),
        "done": request.query.get("done", ""),
    }
    return render(request, "console/identifier.html", context, me, nav="identifiers")


# -- register and edit ----------------------------------------------------------------------------
def _form_page(
    request: web.Request,
    me: SignedIn,
    form: IdentifierForm,
    template: Template | None,
    templates: list[Template],
    *,
    editing: bool,
    error: str = "",
    status: int = 200,
) -> web.Response:
    context = {
        "form": form,
        "template": template_json(template) if template is not None else None,
        "templates": [template_json(t) for t in templates],
        "editing": editing,
        "prefix": _prefix(me),
        "error": error,
    }
    return render(request, "console/identifier_form.html", context, me, status=status, nav="new")


async def _chosen(registry: Registry, me: SignedIn, ref: str) -> tuple[Template | None, list[Template]]:
    templates = await templates_for(registry, _prefix(me))
    if not ref:
        return None, templates
    if not is_template_id(ref):
        raise HandleNotFound("no such template")
    for t in templates:
        if t.id == ref:
            return t, templates
    raise HandleNotFound(f"no template {ref} for {_prefix(me)}")


@enterprise_routes.get("/console/identifiers/new")
async def new_identifier(request: web.Request) -> web.Response:
    me = await _me(request)
    template, templates = await _chosen(registry_of(request), me, request.query.get("template", ""))
    return _form_page(request, me, IdentifierForm(), template, templates, editing=False)


@enterprise_routes.post("/console/identifiers/new")
async def register_identifier(request: web.Request) -> web.StreamResponse:
    me = await _me(request)
    post = await read_form(request, me)
    registry = registry_of(request)
    template, templates = await _chosen(registry, me, text_field(post, "template", 64))
    form = read_identifier_form(post, template)
    if form.errors:
        return _form_page(request, me, form, template, templates, editing=False, status=400)
    try:
        name = _name(request, me, form.suffix)
    except (InvalidHandle, HandleNotFound):
        form.errors["suffix"] = N_("Not a valid suffix.")
        return _form_page(request, me, form, template, templates, editing=False, status=400)
    try:
        await registry.put_handle(me.caller, name, form.values(template), overwrite=False)
    except HandleAlreadyExists:
        form.errors["suffix"] = N_("Already registered.")
        return _form_page(request, me, form, template, templates, editing=False, status=409)
    except HandleError as exc:  # refused by the registry (a disabled enterprise, a template check, …)
        status = http_status(exc.code)
        return _form_page(request, me, form, template, templates, editing=False, error=exc.message, status=status)
    raise web.HTTPSeeOther(f"/console/identifier?{_q(form.suffix)}&done=created")


def _q(suffix: str) -> str:
    return urlencode({"suffix": suffix})


@enterprise_routes.get("/console/identifier/edit")
async def edit_identifier(request: web.Request) -> web.Response:
    me = await _me(request)
    registry = registry_of(request)
    suffix = request.query.get("suffix", "")
    _, record = await _record(request, me, suffix)
    template = await _template_of(registry, _prefix(me), record)
    form = form_of_record(record.values, template, suffix, record.version)
    return _form_page(request, me, form, template, [], editing=True)


def _managed(template: Template | None, record: Record) -> set[int]:
    """The indexes the form rewrites: the URL at 1 (when it is one), the template reference, its fields."""
    url = record.value_at(URL_INDEX)
    managed = {URL_INDEX} if url is None or url.type == "URL" else set()
    if template is not None:
        managed |= {TEMPLATE_INDEX, *(f.index for f in template.fields)}
    return managed


@enterprise_routes.post("/console/identifier/edit")
async def save_identifier(request: web.Request) -> web.StreamResponse:
    me = await _me(request)
    post = await read_form(request, me)
    registry = registry_of(request)
    suffix = text_field(post, "suffix", MAX_SUFFIX)
    name, record = await _record(request, me, suffix)
    template = await _template_of(registry, _prefix(me), record)
    form = read_identifier_form(post, template, editing=True)
    form = IdentifierForm(suffix, form.url, form.fields, form.errors, form.version)
    if not form.errors and form.version != str(record.version):
        return _form_page(request, me, form, template, [], editing=True, error="changed", status=409)
    if form.errors:
        return _form_page(request, me, form, template, [], editing=True, status=400)
    managed = _managed(template, record)
    kept = [v for v in record.values if v.index not in managed]
    try:
        await registry.put_handle(me.caller, name, [*kept, *form.values(template)], overwrite=True)
    except HandleError as exc:
        return _form_page(
            request, me, form, template, [], editing=True, error=exc.message, status=http_status(exc.code)
        )
    raise web.HTTPSeeOther(f"/console/identifier?{_q(suffix)}&done=saved")


@enterprise_routes.get("/console/identifier/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    me = await _me(request)
    suffix = request.query.get("suffix", "")
    _, record = await _record(request, me, suffix)
    context = {"handle": record.handle, "suffix": suffix}
    return render(request, "console/identifier_delete.html", context, me, nav="identifiers")


@enterprise_routes.post("/console/identifier/delete")
async def delete_identifier(request: web.Request) -> web.StreamResponse:
    me = await _me(request)
    post = await read_form(request, me)
    name = _name(request, me, text_field(post, "suffix", MAX_SUFFIX))
    await registry_of(request).delete(me.caller, name)
    raise web.HTTPSeeOther("/console/identifiers?done=deleted")


# -- the secret key -------------------------------------------------------------------------------
@enterprise_routes.get("/console/key")
async def key_page(request: web.Request) -> web.Response:
    me = await _me(request)
    return render(request, "console/key.html", {"secret": ""}, me, nav="key")


@enterprise_routes.post("/console/key")
async def rotate_key(request: web.Request) -> web.Response:
    """A new secret key, shown once on this page. The other sessions of this identity end (their
    key fingerprint no longer matches); this one carries on."""
    me = await _me(request)
    await read_form(request, me)
    registry = registry_of(request)
    secret = await registry.rotate_own_secret(me.caller)
    record = await registry.read_record(me.identity.key)
    value = record.value_at(me.identity.index) if record is not None else None
    if value is not None:
        me.session["key"] = key_print(value.data)
    return render(request, "console/key.html", {"secret": secret}, me, nav="key")
