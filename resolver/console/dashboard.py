"""The enterprise administrator's dashboard: its prefix, how many identifiers it has registered (in
all, and per day over the last 30 days), how often they were resolved per day (the resolution
statistics of :mod:`registry.resolution_stats`, as ``GET /api/stats/resolutions`` serves them), and
its templates. The charts are server-drawn SVG (:mod:`resolver.console.charts`)."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from registry.days import SHANGHAI, day_of
from registry.errors import PermissionDenied
from registry.resolution_stats import ResolutionStats, StatsQuery
from resolver.console.charts import CHART_DAYS, DayChart, day_chart
from resolver.console.enterprise import template_json, templates_for
from resolver.console.guard import ENTERPRISE, SignedIn
from resolver.console.signin import require
from resolver.console.site import console_state, render
from resolver.http.keys import registry_of

__all__ = ["dashboard_routes"]

dashboard_routes = web.RouteTableDef()


def _today(request: web.Request) -> dt.date:
    return dt.datetime.fromtimestamp(console_state(request).clock(), SHANGHAI).date()


async def resolutions_chart(request: web.Request, me: SignedIn, today: dt.date) -> DayChart | None:
    """Resolutions of the enterprise's identifiers per day (every interface, found ones), the last
    ``CHART_DAYS`` days; None when its identity may not read them."""
    assert me.enterprise is not None
    registry = registry_of(request)
    first = today - dt.timedelta(days=CHART_DAYS - 1)
    query = StatsQuery(me.enterprise.prefix, first, today + dt.timedelta(days=1))
    try:
        report = await ResolutionStats(registry.ns).report(me.caller, query)
    except PermissionDenied:
        return None
    counts = {day_of(dt.date.fromisoformat(d["day"])): d["resolutions"] for d in report["days"]}
    return day_chart(counts, today)


@dashboard_routes.get("/console/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    me = await require(request, ENTERPRISE)
    registry = registry_of(request)
    enterprise = me.enterprise
    assert enterprise is not None
    total, _ = await registry.list_handles(me.caller, enterprise.prefix, 0, 0)
    today = _today(request)
    first = today - dt.timedelta(days=CHART_DAYS - 1)
    counts = await registry.store.registrations_by_day(enterprise.id, day_of(first), day_of(today) + 1)
    context = {
        "enterprise": enterprise,
        "total": total,
        "chart": day_chart(counts, today),
        "resolutions": await resolutions_chart(request, me, today),
        "templates": [template_json(t) for t in await templates_for(registry, enterprise.prefix)],
    }
    return render(request, "console/dashboard.html", context, me, nav="dashboard")
