"""Render a tally: JSON (to be signed), CSV, and the bureau's HTML page. No I/O here."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from typing import Any
from urllib.parse import urlencode

from promotion_tracker.tally import PromoterTally, Tally

__all__ = ["CSV_COLUMNS", "tally_csv", "tally_html", "tally_json"]

REPORT_VERSION = 1


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _promoter_json(pt: PromoterTally, *, with_enterprises: bool) -> dict[str, Any]:
    a = pt.award
    out: dict[str, Any] = {
        "promoter": {"id": pt.promoter.id, "name": pt.promoter.name, "uscc": pt.promoter.uscc},
        "enterprises": len(pt.enterprises),
        "eligible_enterprises": a.eligible_enterprises,
        "registrations": a.total_registrations,
        "award_yuan": a.award_yuan,
        "award": a.to_dict(),
    }
    if with_enterprises:
        out["enterprise_rows"] = [
            {
                "id": e.id,
                "name": e.name,
                "uscc": e.uscc,
                "prefix": e.prefix,
                "registrations": e.registrations,
                "eligible": e.eligible,
                "increment": e.increment,
            }
            for e in pt.enterprises
        ]
    return out


def tally_json(tally: Tally, *, node_prefix: str, generated_at: dt.datetime, with_enterprises: bool = False) -> dict:
    """The report body that gets signed. Amounts are integer CNY (元)."""
    return {
        "report_version": REPORT_VERSION,
        "node_prefix": node_prefix,
        "period": {
            "from": tally.period_from.isoformat(),
            "to": tally.period_to.isoformat(),
            "timezone": "Asia/Shanghai",
            "half_open": True,
        },
        "as_of": _iso(tally.as_of),
        "requested_as_of": _iso(tally.requested_as_of) if tally.requested_as_of else None,
        "final": tally.final,
        "snapshot_resolution": "hour",
        "generated_at": _iso(generated_at),
        "policy": tally.policy.to_dict(),
        "contribution_caps_yuan": {str(k): v for k, v in sorted(tally.contribution_caps.items())},
        "currency": "CNY",
        "promoters": [_promoter_json(pt, with_enterprises=with_enterprises) for pt in tally.promoters],
        "total_award_yuan": sum(pt.award.award_yuan for pt in tally.promoters),
    }


CSV_COLUMNS = [
    "promoter_id",
    "promoter_name",
    "promoter_uscc",
    "enterprises",
    "eligible_enterprises",
    "registrations",
    "increment_enterprises",
    "base_yuan",
    "increment_yuan",
    "award_yuan",
    "qualified",
    "capped_by",
    "mode",
    "period_from",
    "period_to",
    "as_of",
    "reason",
]


def tally_csv(tally: Tally) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for pt in tally.promoters:
        a = pt.award
        w.writerow(
            [
                pt.promoter.id,
                pt.promoter.name,
                pt.promoter.uscc,
                len(pt.enterprises),
                a.eligible_enterprises,
                a.total_registrations,
                a.increment_enterprises,
                a.base_yuan,
                a.increment_yuan,
                a.award_yuan,
                "yes" if a.qualified else "no",
                a.capped_by or "",
                a.mode,
                tally.period_from.isoformat(),
                tally.period_to.isoformat(),
                _iso(tally.as_of),
                a.reason,
            ]
        )
    return buf.getvalue()


def _pct(n: int, of: int) -> int:
    return 100 if of <= 0 else min(100, n * 100 // of)


_STYLE = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",system-ui,sans-serif;margin:2rem;color:#1d2733}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d5dbe3;
padding:.5rem;text-align:left;vertical-align:top}th{background:#f2f5f8;font-weight:600}.en{color:#5b6b7c;
font-size:.85em;display:block;font-weight:normal}.bar{background:#e6ebf0;border-radius:4px;height:.7rem;
width:12rem}.bar span{display:block;height:100%;border-radius:4px;background:#2f7dd1}.met span{background:#2e9d5b}
.num{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#5b6b7c}.yes{color:#2e9d5b;font-weight:600}
.no{color:#b54708}
"""


def _progress(label: str, n: int, of: int) -> str:
    cls = "bar met" if n >= of else "bar"
    return (
        f'<div class="{cls}" role="progressbar" aria-valuenow="{n}" aria-valuemax="{of}" '
        f'data-label="{label}"><span style="width:{_pct(n, of)}%"></span></div>'
        f"<small>{n:,} / {of:,}</small>"
    )


def tally_html(tally: Tally, *, node_prefix: str, query: dict[str, str]) -> str:
    """The bureau page: promoters, progress toward the base, the award and why; links to CSV/JSON."""
    p = tally.policy
    e = html.escape
    rows = []
    for pt in tally.promoters:
        a = pt.award
        rows.append(
            "<tr>"
            f'<td><strong>{e(pt.promoter.name)}</strong><span class="en">{e(pt.promoter.uscc)}</span></td>'
            f"<td>{_progress('enterprises', a.eligible_enterprises, p.base_enterprises)}</td>"
            f"<td>{_progress('registrations', a.total_registrations, p.base_registrations)}</td>"
            f'<td class="num">{len(pt.enterprises)}</td>'
            f'<td class="num">{a.increment_enterprises}</td>'
            f'<td class="num award">{a.award_yuan:,}</td>'
            f'<td class="{"yes" if a.qualified else "no"}">{"达标 met" if a.qualified else "未达标 not met"}</td>'
            f"<td>{e(a.reason)}</td>"
            "</tr>"
        )
    json_link = "/api/promotion/tallies?" + urlencode({**query, "format": "json"})
    csv_link = "/api/promotion/tallies?" + urlencode({**query, "format": "csv"})
    total = sum(pt.award.award_yuan for pt in tally.promoters)
    mode_label = {"per_enterprise": "逐家计算 per enterprise", "pooled": "合并计算 pooled"}[p.mode]
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>标识解析推广奖励 Promotion award — {e(node_prefix)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>工业互联网标识解析二级节点推广奖励 <span class="en">Identifier-resolution promotion award (clause 8)</span></h1>
<p class="meta">节点 Node <strong>{e(node_prefix)}</strong> ·
统计期间 Period <strong id="period">{tally.period_from.isoformat()} – {tally.period_to.isoformat()}</strong>
（含起始日，不含截止日 from inclusive, to exclusive; Asia/Shanghai） ·
快照 Snapshot <strong id="as-of">{_iso(tally.as_of)}</strong>
{"" if tally.final else "（实时，尚未定稿 live, not final）"} ·
口径 Reading <strong>{mode_label}</strong></p>
<p class="meta">条件 Rule: ≥ {p.base_enterprises} 家企业 enterprises 且 and
≥ {p.base_registrations:,} 个标识 identifiers → {p.base_award_yuan:,} 元;
每增加一家注册量 ≥ {p.increment_registrations:,} 的企业
each further enterprise with ≥ {p.increment_registrations:,} → +{p.increment_award_yuan:,} 元;
上限 cap {p.cap_yuan:,} 元.</p>
<p><a id="csv-link" href="{e(csv_link)}">下载 CSV download</a> ·
<a id="json-link" href="{e(json_link)}">签名 JSON signed report</a> ·
<a href="/api/promotion/public-key">节点公钥 node public key</a></p>
<table id="tally">
<thead><tr>
<th>推广单位<span class="en">Promoter</span></th>
<th>有效企业<span class="en">Eligible enterprises</span></th>
<th>标识注册量<span class="en">Registrations</span></th>
<th>企业总数<span class="en">Enterprises</span></th>
<th>增量企业<span class="en">Increment enterprises</span></th>
<th>奖励（元）<span class="en">Award (CNY)</span></th>
<th>状态<span class="en">Status</span></th>
<th>说明<span class="en">Why</span></th>
</tr></thead>
<tbody>
{"".join(rows) or '<tr><td colspan="8">暂无推广单位 No promoters yet</td></tr>'}
</tbody></table>
<p class="meta">合计 Total: <strong id="total">{total:,}</strong> 元 CNY</p>
</body></html>
"""
