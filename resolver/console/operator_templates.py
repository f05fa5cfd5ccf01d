"""The operator's template pages: the node's templates (and the enterprises' own, to read), one
template with its versions, and the forms that create a node-wide template and publish its next
version. Writes go through ``Registry.put_template``, as ``POST``/``PUT /api/templates`` do, so the
registry checks them again and records ``template.create`` / ``template.version`` in the audit log
with the change."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from registry.errors import HandleAlreadyExists, HandleNotFound, InvalidRequest
from registry.model import normalise_prefix
from registry.templates import Template, is_template_id, parse_version
from resolver.console.forms import N_
from resolver.console.guard import SignedIn
from resolver.console.operator_common import me_operator
from resolver.console.signin import read_form
from resolver.console.site import render
from resolver.console.template_form import MAX_ROWS, TemplateForm, blank_rows, form_of_template, read_template_form
from resolver.http.keys import registry_of

__all__ = ["template_routes"]

template_routes = web.RouteTableDef()
NEW_ROWS = 3  # blank field rows of a new template's form


def _latest(templates: list[Template]) -> list[dict[str, Any]]:
    """One line per template (scope, id): its latest version and how many there are."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for t in templates:
        line = out.setdefault((t.scope, t.id), {"id": t.id, "scope": t.scope, "versions": 0, "latest": t})
        line["versions"] += 1
        if t.version > line["latest"].version:
            line["latest"] = t
    return sorted(out.values(), key=lambda x: (x["scope"], x["id"]))


@template_routes.get("/console/templates")
async def templates(request: web.Request) -> web.Response:
    me = await me_operator(request)
    lines = _latest(await registry_of(request).list_templates())
    context = {
        "node": [x for x in lines if not x["scope"]],
        "enterprises": [x for x in lines if x["scope"]],
        "done": request.query.get("done", ""),
    }
    return render(request, "console/templates.html", context, me, nav="templates")


def _template_id(request: web.Request) -> str:
    template_id = request.match_info["id"]
    if not is_template_id(template_id):
        raise web.HTTPNotFound()
    return template_id


@template_routes.get("/console/templates/{id}")
async def template(request: web.Request) -> web.Response:
    """One template (``?prefix=`` for an enterprise's own), a version of it (``?version=``, default
    the latest) and the list of its versions."""
    me = await me_operator(request)
    template_id = _template_id(request)
    raw_prefix = request.query.get("prefix", "")
    try:
        scope = normalise_prefix(raw_prefix) if raw_prefix else ""
    except InvalidRequest:
        raise web.HTTPNotFound() from None
    raw_version = request.query.get("version", "")
    version = parse_version(raw_version) if raw_version else None
    if raw_version and version is None:
        raise web.HTTPNotFound()
    registry = registry_of(request)
    shown = await registry.template(scope, template_id, version)
    if shown is None:
        raise web.HTTPNotFound()
    versions = sorted(
        (t.version for t in await registry.list_templates() if t.scope == shown.scope and t.id == template_id),
        reverse=True,
    )
    context = {
        "t": shown,
        "versions": versions,
        "latest": versions[0] if versions else shown.version,
        "done": request.query.get("done", ""),
    }
    return render(request, "console/template.html", context, me, nav="templates")


def _form_page(
    request: web.Request, me: SignedIn, form: TemplateForm, *, new: bool, error: str = "", status: int = 200
) -> web.Response:
    context = {"f": form, "new": new, "error": error, "errors": form.errors}
    return render(request, "console/template_form.html", context, me, status=status, nav="templates")


def _more_rows(form: TemplateForm) -> TemplateForm:
    """The form as sent with one more blank row (the "another field" button), nothing checked."""
    if len(form.rows) < MAX_ROWS:
        form.rows.extend(blank_rows(1))
    form.errors = {}
    return form


@template_routes.get("/console/new-template")
async def new_template(request: web.Request) -> web.Response:
    me = await me_operator(request)
    return _form_page(request, me, TemplateForm(rows=blank_rows(NEW_ROWS)), new=True)


@template_routes.post("/console/templates")
async def create_template(request: web.Request) -> web.StreamResponse:
    me = await me_operator(request)
    post = await read_form(request, me)
    form = read_template_form(post, new=True)
    if post.get("more"):
        return _form_page(request, me, _more_rows(form), new=True)
    if not form.ok:
        return _form_page(request, me, form, new=True, status=400)
    try:
        made = await registry_of(request).put_template(me.caller, form.id, form.body, None, new=True)
    except HandleAlreadyExists:
        form.errors["id"] = N_("A template with this id exists already: publish a new version of it instead.")
        return _form_page(request, me, form, new=True, status=409)
    except InvalidRequest as exc:
        return _form_page(request, me, form, new=True, error=exc.message, status=400)
    raise web.HTTPSeeOther(f"/console/templates/{made.id}?done=created")


async def _node_template(request: web.Request) -> Template:
    found = await registry_of(request).template("", _template_id(request), None)
    if found is None:
        raise web.HTTPNotFound()
    return found


@template_routes.get("/console/templates/{id}/version")
async def new_version(request: web.Request) -> web.Response:
    me = await me_operator(request)
    return _form_page(request, me, form_of_template(await _node_template(request)), new=False)


@template_routes.post("/console/templates/{id}/version")
async def publish_version(request: web.Request) -> web.StreamResponse:
    me = await me_operator(request)
    post = await read_form(request, me)
    current = await _node_template(request)
    form = read_template_form(post, new=False)
    form.id = current.id
    if post.get("more"):
        return _form_page(request, me, _more_rows(form), new=False)
    if not form.ok:
        return _form_page(request, me, form, new=False, status=400)
    try:
        made = await registry_of(request).put_template(me.caller, current.id, form.body, None, new=False)
    except (InvalidRequest, HandleNotFound) as exc:
        return _form_page(request, me, form, new=False, error=exc.message, status=400)
    raise web.HTTPSeeOther(f"/console/templates/{made.id}?done=published")
