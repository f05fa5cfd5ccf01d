"""The context dicts of the bureau's pages, made from a signed report. No HTML here: the templates
under ``templates/bureau/`` render what these return."""

from __future__ import annotations

import datetime as dt
from typing import Any

from promotion_tracker.exports import beijing_time
from promotion_tracker.report import signature_fingerprint
from promotion_tracker.webpages.environment import url_with
from promotion_tracker.webpages.formatting import BEIJING

__all__ = ["bureau_context", "error_context", "promoter_context"]

TALLIES = "/api/promotion/tallies"
CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM, CHART_LEFT = 720, 240, 18, 44, 56


def _pct(n: int, of: int) -> int:
    return 100 if of <= 0 else min(100, n * 100 // of)


def _instant(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _common(document: dict[str, Any], digest: str, query: Any, locale: str) -> dict[str, Any]:
    """What both pages show: period, snapshot, reading, rule, signature, the form's values."""
    report, signature = document["report"], document["signature"]
    params = query.params()
    period_from = dt.date.fromisoformat(report["period"]["from"])
    period_to = dt.date.fromisoformat(report["period"]["to"])
    requested = query.as_of.astimezone(BEIJING) if query.as_of is not None else None
    return {
        "report": report,
        "policy": report["policy"],
        "params": params,
        "period_from": period_from,
        "period_last": period_to - dt.timedelta(days=1),
        "snapshot": _instant(report["as_of"]),
        "snapshot_beijing": beijing_time(report["as_of"]),
        "requested_as_of": requested,
        "final": report["final"],
        "mode": report["policy"]["mode"],
        "rule": report["rule"],
        "signature": {
            "alg": signature["alg"],
            "key_id": signature["key_id"],
            "fingerprint": signature_fingerprint(document),
            "digest": digest,
        },
        "form": {
            "from": params["from"],
            "to": params["to"],
            "mode": report["policy"]["mode"],
            "as_of": requested.strftime("%Y-%m-%dT%H:%M") if requested is not None else "",
            "caps": " ".join(params["cap"]),
        },
        "caps": {int(k): v for k, v in report["contribution_caps_yuan"].items()},
        "locale": locale,
    }


def _links(path: str, params: dict[str, Any], locale: str) -> dict[str, str]:
    return {
        "json": url_with(path, {**params, "format": "json"}),
        "csv": url_with(path, {**params, "format": "csv", "lang": "zh"}),
        "csv_en": url_with(path, {**params, "format": "csv", "lang": "en"}),
        "xlsx": url_with(path, {**params, "format": "xlsx", "lang": locale}),
    }


def _award_parts(p: dict[str, Any]) -> dict[str, Any]:
    a = p["award"]
    return {
        "qualified": a["qualified"],
        "increments": a["increment_enterprises"],
        "base_yuan": a["base_yuan"],
        "increment_yuan": a["increment_yuan"],
        "uncapped_yuan": a["uncapped_yuan"],
        "award_yuan": p["award_yuan"],
        "capped_by": a["capped_by"],
        "contribution_cap": p.get("contribution_cap_yuan"),
    }


def _progress(p: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any]:
    n, t = p["eligible_enterprises"], p["registrations"]
    base_n, base_t = policy["base_enterprises"], policy["base_registrations"]
    return {
        "eligible": n,
        "registrations": t,
        "ent_pct": _pct(n, base_n),
        "reg_pct": _pct(t, base_t),
        "ent_met": n >= base_n,
        "reg_met": t >= base_t,
    }


def bureau_context(document: dict[str, Any], digest: str, query: Any, locale: str) -> dict[str, Any]:
    context = _common(document, digest, query, locale)
    report, params = context["report"], context["params"]
    rows = []
    for p in report["promoters"]:
        pid = p["promoter"]["id"]
        rows.append(
            {
                "id": pid,
                "name": p["promoter"]["name"],
                "uscc": p["promoter"]["uscc"],
                "enterprises": p["enterprises"],
                **_progress(p, report["policy"]),
                **_award_parts(p),
                "explanation": p["explanation"],
                "link": url_with(f"/bureau/promoters/{pid}", {**params, "lang": locale}),
            }
        )
    context |= {
        "rows": rows,
        "totals": {
            "promoters": len(rows),
            "qualified": sum(1 for r in rows if r["qualified"]),
            "enterprises": sum(r["enterprises"] for r in rows),
            "registrations": sum(r["registrations"] for r in rows),
            "base_yuan": sum(r["base_yuan"] for r in rows),
            "increment_yuan": sum(r["increment_yuan"] for r in rows),
            "award_yuan": report["total_award_yuan"],
        },
        "links": _links(TALLIES, params, locale),
        "form_action": "/bureau",
    }
    return context


def _nice_scale(top: int) -> int:
    """The smallest of 1, 2, 4, 5 or 8 times a power of ten (at least 4) at or above ``top``."""
    magnitude = 10 ** max(0, len(str(max(top, 1))) - 1)
    for m in (1, 2, 4, 5, 8, 10):
        if m * magnitude >= max(top, 4):
            return m * magnitude
    return 10 * magnitude


def _chart(months: list[str], values: list[int]) -> dict[str, Any]:
    """Bar geometry for the per-month SVG chart (numbers only; the template draws it)."""
    scale = _nice_scale(max(values, default=0))
    plot_w = CHART_WIDTH - CHART_LEFT - 8
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = plot_w / max(1, len(months))
    bars = []
    for i, (label, value) in enumerate(zip(months, values, strict=True)):
        h = plot_h * value / scale
        bars.append(
            {
                "label": label,
                "month": dt.date(int(label[:4]), int(label[5:7]), 1),
                "value": value,
                "x": round(CHART_LEFT + i * slot + slot * 0.15, 1),
                "w": round(slot * 0.7, 1),
                "y": round(CHART_TOP + plot_h - h, 1),
                "h": round(h, 1),
                "cx": round(CHART_LEFT + i * slot + slot / 2, 1),
            }
        )
    ticks = [{"value": scale * k // 4, "y": round(CHART_TOP + plot_h - plot_h * k / 4, 1)} for k in range(5)]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - 8,
        "baseline": CHART_TOP + plot_h,
        "bars": bars,
        "ticks": ticks,
        "label_every": max(1, (len(months) + 23) // 24),
    }


def promoter_context(
    document: dict[str, Any], digest: str, query: Any, promoter_id: int, locale: str
) -> dict[str, Any]:
    context = _common(document, digest, query, locale)
    report, params = context["report"], context["params"]
    (p,) = [x for x in report["promoters"] if x["promoter"]["id"] == promoter_id]
    months = report.get("months", [])
    enterprises = [
        {
            "id": e["id"],
            "name": e["name"],
            "uscc": e["uscc"],
            "prefix": e["prefix"],
            "registrations": e["registrations"],
            "eligible": e["eligible"],
            "increment": e["increment"],
        }
        for e in p["enterprise_rows"]
    ]
    context |= {
        "promoter": p["promoter"],
        "enterprises": enterprises,
        "enterprise_count": len(enterprises),
        "progress": _progress(p, report["policy"]),
        "award": _award_parts(p),
        "explanation": p["explanation"],
        "chart": _chart(months, p.get("registrations_by_month", [0] * len(months))),
        "links": _links(f"{TALLIES}/{promoter_id}", params, locale),
        "back": url_with("/bureau", {**params, "lang": locale}),
        "form_action": f"/bureau/promoters/{promoter_id}",
    }
    return context


def error_context(request: Any, message: str, status: int, default_period: tuple[dt.date, dt.date]) -> dict[str, Any]:
    """The form again, with what the officer typed and what was wrong with it."""
    q = request.query
    return {
        "status": status,
        "message": message,
        "form": {
            "from": (q.get("from") or default_period[0].isoformat())[:40],
            "to": (q.get("to") or default_period[1].isoformat())[:40],
            "mode": q.get("mode") if q.get("mode") in ("per_enterprise", "pooled") else "per_enterprise",
            "as_of": (q.get("as_of") or "")[:40],
            "caps": " ".join(q.getall("cap", []))[:400],
        },
        "form_action": request.path if request.path.startswith("/bureau") else "/bureau",
    }
