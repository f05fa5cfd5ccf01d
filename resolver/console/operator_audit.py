"""The operator's audit-log page: what was done to the node, by whom, newest first, with the time in
Beijing. Narrowed by action, by actor and by a first day; paged back by entry id (``before``) as
``GET /api/audit`` pages. The page reads :class:`registry.audit.AuditLog`, the API's reader."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web

from registry.audit import ACTION
from registry.days import SHANGHAI, day_start
from registry.inputs import is_uint_text
from registry.stores.base import AuditEntry
from resolver.console.forms import N_, FormErrors, text_field
from resolver.console.operator_common import me_operator
from resolver.console.site import render
from resolver.http.keys import registry_of

__all__ = ["PAGE_SIZE", "audit_routes", "beijing_time"]

audit_routes = web.RouteTableDef()
PAGE_SIZE = 50
MAX_FILTER = 300
RECENT = 500  # entries read for the suggestions of the filter fields


def beijing_time(ts: int) -> str:
    """``2026-12-05 09:13:47``: Beijing time to the second, the same in both languages."""
    return dt.datetime.fromtimestamp(ts, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _detail(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if not isinstance(body, dict) or not body:
        return ""
    return ", ".join(f"{k}: {_shown(v)}" for k, v in body.items())


def _shown(value: object) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _row(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": beijing_time(e.at),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "source": e.source,
        "detail": _detail(e.detail),
    }


def read_filters(query: Any) -> tuple[dict[str, str], FormErrors, int | None, int | None]:
    """The filter form as typed, its problems, the first day (UNIX seconds) and the page mark."""
    form = {
        "action": text_field(query, "action", MAX_FILTER),
        "actor": text_field(query, "actor", MAX_FILTER),
        "since": text_field(query, "since", 20),
    }
    errors: FormErrors = {}
    if form["action"] and not ACTION.match(form["action"]):
        errors["action"] = N_("An action is dotted words of a–z, 0–9 and '-', such as enterprise.add.")
    since = None
    if form["since"]:
        try:
            if len(form["since"]) != 10:
                raise ValueError(form["since"])
            since = day_start(dt.date.fromisoformat(form["since"]))
        except ValueError:
            errors["since"] = N_("A date written YYYY-MM-DD.")
    raw = query.get("before", "")
    before = int(raw) if is_uint_text(raw) and len(raw) <= 18 and int(raw) > 0 else None
    return form, errors, since, before


@audit_routes.get("/console/audit")
async def audit_log(request: web.Request) -> web.Response:
    me = await me_operator(request)
    form, errors, since, before = read_filters(request.query)
    log = registry_of(request).audit
    entries: list[AuditEntry] = []
    if not errors:
        entries = await log.entries(
            limit=PAGE_SIZE,
            before_id=before,
            action=form["action"] or None,
            actor=form["actor"] or None,
            since=since,
        )
    recent = await log.entries(limit=RECENT)
    filters = {k: v for k, v in form.items() if v}
    context = {
        "entries": [_row(e) for e in entries],
        "form": form,
        "errors": errors,
        "filtered": bool(filters),
        "actions": sorted({e.action for e in recent}),
        "actors": sorted({e.actor for e in recent}),
        "older": {**filters, "before": str(entries[-1].id)} if len(entries) == PAGE_SIZE else None,
        "newest": filters if before is not None else None,
    }
    return render(request, "console/audit.html", context, me, status=400 if errors else 200, nav="audit")
