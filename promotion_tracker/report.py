"""The report a tally becomes: the JSON body that gets signed, its served bytes and their digest.

Everything an officer takes away — the page, the CSV, the XLSX, the printout — is made from one
signed document, so they agree number for number and each can name the digest of the document it
came from. A final report has no generation time in it: the same snapshot gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from promotion_tracker.explain import award_explanation, rule_text
from promotion_tracker.tally import PromoterTally, Tally

__all__ = [
    "REPORT_VERSION",
    "document_bytes",
    "document_digest",
    "signature_fingerprint",
    "tally_json",
]

REPORT_VERSION = 2


def iso_utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _promoter_json(
    pt: PromoterTally, tally: Tally, monthly: dict[int, list[int]] | None, months: list[str] | None
) -> dict[str, Any]:
    a = pt.award
    cap = tally.contribution_caps.get(pt.promoter.id)
    out: dict[str, Any] = {
        "promoter": {"id": pt.promoter.id, "name": pt.promoter.name, "uscc": pt.promoter.uscc},
        "enterprises": len(pt.enterprises),
        "eligible_enterprises": a.eligible_enterprises,
        "registrations": a.total_registrations,
        "award_yuan": a.award_yuan,
        "award": a.to_dict(),
        "contribution_cap_yuan": cap,
        "explanation": award_explanation(a, tally.policy, cap),
        "enterprise_rows": [
            {
                "id": e.id,
                "name": e.name,
                "uscc": e.uscc,
                "prefix": e.prefix,
                "registrations": e.registrations,
                "eligible": e.eligible,
                "increment": e.increment,
                **({"registrations_by_month": monthly.get(e.id, [0] * len(months or []))} if monthly else {}),
            }
            for e in pt.enterprises
        ],
    }
    if monthly is not None and months is not None:
        totals = [0] * len(months)
        for e in pt.enterprises:
            for i, n in enumerate(monthly.get(e.id, [])):
                totals[i] += n
        out["registrations_by_month"] = totals
    return out


def tally_json(
    tally: Tally,
    *,
    node_prefix: str,
    generated_at: dt.datetime,
    monthly: tuple[list[str], dict[int, list[int]]] | None = None,
) -> dict[str, Any]:
    """The report body that gets signed. Amounts are integer CNY (元). ``monthly`` (months, per
    enterprise series) adds registrations per calendar month, as the per-promoter report has them."""
    months, series = monthly if monthly is not None else (None, None)
    body: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "node_prefix": node_prefix,
        "period": {
            "from": tally.period_from.isoformat(),
            "to": tally.period_to.isoformat(),
            "timezone": "Asia/Shanghai",
            "half_open": True,
        },
        "as_of": iso_utc(tally.as_of),
        "final": tally.final,
        "snapshot_rule": "changes recorded before as_of",
        "snapshot_resolution": "hour",
    }
    if not tally.final:
        body["generated_at"] = iso_utc(generated_at)
    body |= {
        "policy": tally.policy.to_dict(),
        "rule": rule_text(tally.policy),
        "contribution_caps_yuan": {str(k): v for k, v in sorted(tally.contribution_caps.items())},
        "currency": "CNY",
    }
    if months is not None:
        body["months"] = months
    body["promoters"] = [_promoter_json(pt, tally, series, months) for pt in tally.promoters]
    body["total_award_yuan"] = sum(pt.award.award_yuan for pt in tally.promoters)
    return body


def document_bytes(document: dict[str, Any]) -> bytes:
    """The signed document as served and archived (indented UTF-8 JSON). Its SHA-256 is the digest
    the exports and the printout carry: ``sha256sum report.json`` gives the same."""
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def document_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signature_fingerprint(document: dict[str, Any]) -> str:
    """SHA-256 of the signature value (hex, first 32 digits, in groups of four) for the printout."""
    value = str(document.get("signature", {}).get("value", ""))
    h = hashlib.sha256(value.encode("ascii", "replace")).hexdigest()[:32]
    return " ".join(h[i : i + 4] for i in range(0, 32, 4))
