"""JSON views of the registry's records of people: promoters, enterprises (and their GS1 company
prefixes) and auditors, as the admin API answers and ``idnode … --json`` prints them. Pure functions
of the stored objects."""

from __future__ import annotations

import datetime as dt
from typing import Any

from registry.auditors import Auditor
from registry.model import prefix_handle_of
from registry.stores.base import Enterprise, Gs1Prefix, Promoter

__all__ = ["auditor_json", "enterprise_json", "gs1_prefix_json", "iso_time", "promoter_json"]


def iso_time(ts: int) -> str:
    """Seconds since the epoch as ``2026-01-15T08:00:00Z``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def promoter_json(p: Promoter) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "uscc": p.uscc, "created": iso_time(p.created_at)}


def enterprise_json(e: Enterprise) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": e.name,
        "uscc": e.uscc,
        "prefix": e.prefix,
        "admin": f"300:{prefix_handle_of(e.prefix)}",
        "status": e.status,
        "promoter": e.promoter_id,
        "created": iso_time(e.created_at),
    }


def auditor_json(a: Auditor) -> dict[str, Any]:
    return {"name": a.name, "identity": a.identity, "created": iso_time(a.created_at)}


def gs1_prefix_json(p: Gs1Prefix) -> dict[str, Any]:
    return {"companyPrefix": p.company_prefix, "enterprise": p.enterprise_prefix, "created": iso_time(p.created_at)}
