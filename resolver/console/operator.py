"""The operator's (node administrator's) pages: promoters, enterprises (onboarding with the credit
code checked in the form, disabling and enabling, moves to another promoter from a date, a new
secret key) and the bureau's auditor identities. The node's templates, the audit log and the status
page are in ``operator_templates``, ``operator_audit`` and ``operator_status``.

Every change goes through the same registry services the admin API uses (``registry.onboarding``,
``registry.auditors``, ``registry.secret_rotation``), as the signed-in node administrator. A new
enterprise's secret key and a new auditor's are shown once, on the page that answers the form
(``no-store``), and kept nowhere in clear.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from registry.days import SHANGHAI, day_start
from registry.errors import HandleError, InvalidRequest
from registry.inputs import is_uint_text
from registry.model import prefix_handle_of
from registry.stores.base import Attribution
from registry.uscc import InvalidUSCC, normalize_uscc
from resolver.console.forms import N_, FormErrors, text_field
from resolver.console.guard import SignedIn
from resolver.console.operator_common import me_operator, when
from resolver.console.signin import read_form
from resolver.console.site import console_state, render
from resolver.http.keys import registry_of

__all__ = ["operator_routes"]

operator_routes = web.RouteTableDef()


async def _posted(request: web.Request, fields: dict[str, int]) -> tuple[SignedIn, dict[str, str]]:
    """The operator and the form they sent (origin and token checked): each named field as
    stripped text of at most its length ("" when longer, so the page reports it)."""
    me = await me_operator(request)
    post = await read_form(request, me)
    return me, {name: text_field(post, name, limit) for name, limit in fields.items()}


def _in_force(attributions: list[Attribution], now: int) -> dict[int, int]:
    """enterprise id → the promoter it belongs to now (a move from a later date is not in force yet;
    the tally reads attributions the same way)."""
    out: dict[int, int] = {}
    for a in attributions:  # in order of effect
        if a.effective_at <= now:
            out[a.enterprise_id] = a.promoter_id
    return out


def _check_name(text: str, errors: FormErrors) -> None:
    if not text:
        errors["name"] = N_("This field is required.")
    elif len(text) > 200 or not text.isprintable():
        errors["name"] = N_("At most 200 printable characters.")


def _check_uscc(text: str, errors: FormErrors) -> str:
    if not text:
        errors["uscc"] = N_("This field is required.")
        return text
    try:
        return normalize_uscc(text)
    except InvalidUSCC:
        errors["uscc"] = N_("Not a valid unified social credit code (18 characters, check character last).")
        return text


# -- promoters ------------------------------------------------------------------------------------
async def _promoters_page(
    request: web.Request, me: SignedIn, form: dict[str, str], errors: FormErrors, *, error: str = "", status: int = 200
) -> web.Response:
    store = registry_of(request).store
    counts: dict[int, int] = {}
    for e in await store.list_enterprises():
        if e.promoter_id is not None:
            counts[e.promoter_id] = counts.get(e.promoter_id, 0) + 1
    promoters = [
        {"id": p.id, "name": p.name, "uscc": p.uscc, "created": when(p.created_at), "enterprises": counts.get(p.id, 0)}
        for p in await store.list_promoters()
    ]
    context = {
        "promoters": promoters,
        "form": form,
        "errors": errors,
        "error": error,
        "done": request.query.get("done", ""),
    }
    return render(request, "console/promoters.html", context, me, status=status, nav="promoters")


@operator_routes.get("/console/promoters")
async def promoters(request: web.Request) -> web.Response:
    me = await me_operator(request)
    return await _promoters_page(request, me, {}, {})


@operator_routes.post("/console/promoters")
async def add_promoter(request: web.Request) -> web.StreamResponse:
    me, form = await _posted(request, {"name": 300, "uscc": 40})
    errors: FormErrors = {}
    _check_name(form["name"], errors)
    uscc = _check_uscc(form["uscc"], errors)
    registry = registry_of(request)
    if not errors and await registry.store.get_promoter(uscc) is not None:
        errors["uscc"] = N_("A promoter with this credit code exists already.")
    if errors:
        return await _promoters_page(request, me, form, errors, status=400)
    try:
        await registry.add_promoter(me.caller, form["name"], uscc)
    except InvalidRequest as exc:
        return await _promoters_page(request, me, form, {}, error=exc.message, status=400)
    raise web.HTTPSeeOther("/console/promoters?done=created")


# -- enterprises ----------------------------------------------------------------------------------
async def _enterprises_page(
    request: web.Request, me: SignedIn, form: dict[str, str], errors: FormErrors, *, error: str = "", status: int = 200
) -> web.Response:
    store = registry_of(request).store
    promoters = await store.list_promoters()
    names = {p.id: p.name for p in promoters}
    current = _in_force(await store.attributions(), console_state(request).clock())
    enterprises = [
        {
            "id": e.id,
            "name": e.name,
            "uscc": e.uscc,
            "prefix": e.prefix,
            "status": e.status,
            "promoter": names.get(current.get(e.id, 0), ""),
        }
        for e in await store.list_enterprises()
    ]
    context = {
        "enterprises": enterprises,
        "promoters": [(p.id, f"{p.id} · {p.name}") for p in promoters],
        "form": form,
        "errors": errors,
        "error": error,
    }
    return render(request, "console/enterprises.html", context, me, status=status, nav="enterprises")


@operator_routes.get("/console/enterprises")
async def enterprises(request: web.Request) -> web.Response:
    me = await me_operator(request)
    return await _enterprises_page(request, me, {}, {})


def _secret_page(
    request: web.Request, me: SignedIn, kind: str, identity: str, secret: str, extra: dict[str, Any]
) -> web.Response:
    context = {"kind": kind, "identity": identity, "secret": secret, **extra}
    return render(request, "console/secret.html", context, me, nav="auditors" if kind == "auditor" else "enterprises")


@operator_routes.post("/console/enterprises")
async def onboard(request: web.Request) -> web.StreamResponse:
    me, form = await _posted(request, {"name": 300, "uscc": 40, "promoter": 20, "prefix": 100})
    errors: FormErrors = {}
    _check_name(form["name"], errors)
    uscc = _check_uscc(form["uscc"], errors)
    registry = registry_of(request)
    if "uscc" not in errors:
        existing = await registry.store.get_enterprise(uscc)
        if existing is not None:
            errors["uscc"] = N_("An enterprise with this credit code is onboarded already.")
    promoter = None
    if not is_uint_text(form["promoter"]):
        errors["promoter"] = N_("Choose a promoter.")
    else:
        promoter = await registry.store.get_promoter(int(form["promoter"]))
        if promoter is None:
            errors["promoter"] = N_("Choose a promoter.")
    if errors or promoter is None:
        return await _enterprises_page(request, me, form, errors, status=400)
    try:
        enterprise, secret = await registry.add_enterprise(
            me.caller, form["name"], uscc, promoter.id, form["prefix"] or None
        )
    except InvalidRequest as exc:
        errors = {"prefix": exc.message} if form["prefix"] and "prefix" in exc.message else {}
        return await _enterprises_page(request, me, form, errors, error="" if errors else exc.message, status=400)
    identity = f"300:{prefix_handle_of(enterprise.prefix)}"
    return _secret_page(request, me, "enterprise", identity, secret, {"enterprise": enterprise})


def _enterprise_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not is_uint_text(raw) or len(raw) > 18:
        raise web.HTTPNotFound()
    return int(raw)


async def _enterprise_page(
    request: web.Request, me: SignedIn, *, error: str = "", status: int = 200, move_date: str = ""
) -> web.Response:
    store = registry_of(request).store
    enterprise = await store.get_enterprise(_enterprise_id(request))
    if enterprise is None:
        raise web.HTTPNotFound()
    promoters = await store.list_promoters()
    names = {p.id: p.name for p in promoters}
    now = console_state(request).clock()
    attributions = await store.attributions()
    history = [
        {
            "promoter": names.get(a.promoter_id, str(a.promoter_id)),
            "from": when(a.effective_at),
            "later": a.effective_at > now,
        }
        for a in attributions
        if a.enterprise_id == enterprise.id
    ]
    in_force = _in_force(attributions, now).get(enterprise.id)
    today = dt.datetime.fromtimestamp(now, SHANGHAI).date()
    context = {
        "enterprise": enterprise,
        "identity": f"300:{prefix_handle_of(enterprise.prefix)}",
        "promoter": names.get(in_force or 0, ""),
        "created": when(enterprise.created_at),
        "history": history,
        "promoters": [(p.id, f"{p.id} · {p.name}") for p in promoters if p.id != enterprise.promoter_id],
        "in_force": in_force,
        "today": today.isoformat(),
        "move_date": move_date or today.isoformat(),
        "error": error,
        "done": request.query.get("done", ""),
    }
    return render(request, "console/enterprise.html", context, me, status=status, nav="enterprises")


@operator_routes.get("/console/enterprises/{id}")
async def enterprise(request: web.Request) -> web.Response:
    me = await me_operator(request)
    return await _enterprise_page(request, me)


@operator_routes.post("/console/enterprises/{id}/status")
async def set_status(request: web.Request) -> web.StreamResponse:
    me, form = await _posted(request, {"status": 20})
    ent_id, status = _enterprise_id(request), form["status"]
    try:
        await registry_of(request).set_enterprise_status(me.caller, ent_id, status)
    except InvalidRequest as exc:
        return await _enterprise_page(request, me, error=exc.message, status=400)
    raise web.HTTPSeeOther(f"/console/enterprises/{ent_id}?done={'enabled' if status == 'active' else 'disabled'}")


def _effective(text: str, now: int) -> int | None:
    """The start of a move: now for today (or no date), 00:00 Beijing time of a later day."""
    if not text:
        return None
    if len(text) != 10 or not text.isascii():
        raise InvalidRequest("the date must be written YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest("the date must be written YYYY-MM-DD") from None
    today = dt.datetime.fromtimestamp(now, SHANGHAI).date()
    if day < today:
        raise InvalidRequest("a move takes effect today or later, never in the past")
    return None if day == today else day_start(day)


@operator_routes.post("/console/enterprises/{id}/move")
async def move(request: web.Request) -> web.StreamResponse:
    me, form = await _posted(request, {"from": 20, "promoter": 20})
    ent_id, date, promoter = _enterprise_id(request), form["from"], form["promoter"]
    registry = registry_of(request)
    try:
        effective = _effective(date, console_state(request).clock())
        if not is_uint_text(promoter):
            raise InvalidRequest("choose the promoter to move to")
        await registry.move_enterprise(me.caller, ent_id, int(promoter), effective_at=effective)
    except InvalidRequest as exc:
        return await _enterprise_page(request, me, error=exc.message, status=400, move_date=date)
    raise web.HTTPSeeOther(f"/console/enterprises/{ent_id}?done=moved")


@operator_routes.post("/console/enterprises/{id}/secret")
async def reset_secret(request: web.Request) -> web.Response:
    me = await me_operator(request)
    await read_form(request, me)
    ent_id = _enterprise_id(request)
    found, secret = await registry_of(request).reset_enterprise_secret(me.caller, ent_id)
    identity = f"300:{prefix_handle_of(found.prefix)}"
    return _secret_page(request, me, "reset", identity, secret, {"enterprise": found})


# -- auditors -------------------------------------------------------------------------------------
async def _auditors_page(
    request: web.Request, me: SignedIn, form: dict[str, str], errors: FormErrors, *, status: int = 200
) -> web.Response:
    auditors = await registry_of(request).list_auditors(me.caller)
    context = {
        "auditors": [{"name": a.name, "identity": a.identity, "created": when(a.created_at)} for a in auditors],
        "form": form,
        "errors": errors,
        "done": request.query.get("done", ""),
    }
    return render(request, "console/auditors.html", context, me, status=status, nav="auditors")


@operator_routes.get("/console/auditors")
async def auditors(request: web.Request) -> web.Response:
    me = await me_operator(request)
    return await _auditors_page(request, me, {}, {})


@operator_routes.post("/console/auditors")
async def add_auditor(request: web.Request) -> web.Response:
    me, form = await _posted(request, {"name": 40})
    try:
        identity, secret = await registry_of(request).add_auditor(me.caller, form["name"])
    except HandleError as exc:
        message = N_("1–32 characters: a–z, 0–9 and '-'.") if isinstance(exc, InvalidRequest) else N_("Exists already.")
        return await _auditors_page(request, me, form, {"name": message}, status=400)
    return _secret_page(request, me, "auditor", identity, secret, {})


@operator_routes.post("/console/auditors/{name}/revoke")
async def revoke_auditor(request: web.Request) -> web.StreamResponse:
    me = await me_operator(request)
    await read_form(request, me)
    await registry_of(request).revoke_auditor(me.caller, request.match_info["name"])
    raise web.HTTPSeeOther("/console/auditors?done=revoked")
