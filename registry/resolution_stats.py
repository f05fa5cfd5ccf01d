"""Resolution statistics (解析量): which prefix a resolution counts for, who may read the counts, and
the report ``GET /api/stats/resolutions`` serves. Counting and flushing live in the resolver
(:mod:`resolver.ops.resolutions`); the counts in the store (``resolution_counts``).

What is counted: a resolution request for a handle in this node's namespace that reached a lookup,
per Beijing day and interface (``rest``: ``GET /api/handles/…``; ``native``: the Handle protocol over
UDP, TCP and HTTP; ``web``: the proxy-style ``/{handle}`` pages and redirects). ``found``: the record
was there (whatever the filters then left); ``not_found``: it was not. Requests refused before the
lookup (invalid handle, another node's prefix, a store that is down) are not counted.

Which prefix: the resolved handle's (normalised); the node's prefix handles (``0.NA/…``) count for
the node prefix. A not-found handle counts for its prefix only when that is an enterprise's prefix;
otherwise (unallocated prefixes, typing errors) for the node prefix, so made-up prefixes cannot add
rows to the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from registry import valuedata
from registry.auth import Caller, has_right
from registry.days import SHANGHAI, day_of
from registry.errors import InvalidHandle, InvalidRequest, PermissionDenied
from registry.inputs import lookup_text, parse_date, shown
from registry.model import NA_PREFIX, normalise_prefix, prefix_handle_of
from registry.namespace import Namespace
from registry.stores.base import ResolutionCount

__all__ = [
    "DEFAULT_PERIOD_DAYS",
    "INTERFACES",
    "MAX_PERIOD_DAYS",
    "ResolutionStats",
    "StatsQuery",
    "counted_prefix",
    "parse_period",
]

INTERFACES = ("rest", "native", "web")
MAX_PERIOD_DAYS = 366
DEFAULT_PERIOD_DAYS = 30


def counted_prefix(raw: str, node_prefix: str, *, found: bool, known: Collection[str]) -> str:
    """The prefix a resolution of a handle with prefix ``raw`` (as the client wrote it) counts for.
    ``node_prefix`` is normalised; ``known``: the normalised enterprise prefixes."""
    prefix = normalise_prefix(raw)
    if prefix == NA_PREFIX or not prefix:
        return node_prefix
    if not found and prefix not in known:
        return node_prefix
    return prefix


def parse_period(raw_from: str | None, raw_to: str | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """``[from, to)`` from ``YYYY-MM-DD`` texts: ``to`` defaults to tomorrow (so today is in), ``from``
    to ``DEFAULT_PERIOD_DAYS`` days before ``to``; at most ``MAX_PERIOD_DAYS`` days."""
    end = parse_date(raw_to, "to") if raw_to else today + dt.timedelta(days=1)
    first = parse_date(raw_from, "from") if raw_from else end - dt.timedelta(days=DEFAULT_PERIOD_DAYS)
    if end <= first:
        raise InvalidRequest(f"the period is empty: to ({end}) must be after from ({first}); to is exclusive")
    if (end - first).days > MAX_PERIOD_DAYS:
        raise InvalidRequest(
            f"the period may span at most {MAX_PERIOD_DAYS} days, got {(end - first).days} ({first} to {end})"
        )
    return first, end


@dataclass(frozen=True, slots=True)
class StatsQuery:
    prefix: str | None  # normalised, or None: every prefix
    first: dt.date
    end: dt.date  # exclusive


def _figures(rows: Iterable[ResolutionCount]) -> dict[str, Any]:
    """``{"resolutions", "not_found", "by_interface": {interface: {…}}}`` summed over ``rows``."""
    by = {i: {"resolutions": 0, "not_found": 0} for i in INTERFACES}
    for row in rows:
        slot = by.setdefault(row.interface, {"resolutions": 0, "not_found": 0})
        slot["resolutions"] += row.found
        slot["not_found"] += row.not_found
    return {
        "resolutions": sum(s["resolutions"] for s in by.values()),
        "not_found": sum(s["not_found"] for s in by.values()),
        "by_interface": by,
    }


class ResolutionStats:
    """Reads the resolution counts for a caller: a prefix's administrators read that prefix's, the node
    administrators and the bureau's auditor identities any prefix's and the totals of all."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    def query(self, raw_prefix: str | None, raw_from: str | None, raw_to: str | None) -> StatsQuery:
        """The request's prefix (``88.118.8.1001`` or ``0.NA/88.118.8.1001``; empty: every prefix) and
        period, checked (InvalidRequest, InvalidHandle or NotResponsible: all 400)."""
        today = dt.datetime.fromtimestamp(self.ns.clock(), SHANGHAI).date()
        first, end = parse_period(raw_from, raw_to, today)
        return StatsQuery(self._prefix(raw_prefix), first, end)

    def _prefix(self, raw: str | None) -> str | None:
        if raw is None or not raw.strip():
            return None
        text = lookup_text(raw)
        if text is None:
            raise InvalidRequest(f"prefix must be a prefix such as {self.ns.node_prefix}.1001, got {shown(raw)}")
        if text.upper().startswith(NA_PREFIX + "/"):
            text = text[len(NA_PREFIX) + 1 :]
        try:
            name = self.ns.parse(prefix_handle_of(text))
        except InvalidHandle:
            raise InvalidRequest(f"invalid prefix {shown(raw)}") from None
        self.ns.require_responsible(name)
        return normalise_prefix(text)

    async def authorise(self, caller: Caller, query: StatsQuery) -> None:
        identity = caller.require_authenticated()
        if caller.node_admin or caller.role == "auditor":
            return
        if query.prefix is None:
            raise PermissionDenied(
                "the statistics of every prefix are for the node administrators and the bureau's auditor "
                "identities; an enterprise asks for its own with prefix="
            )
        record = await self.ns.read_record(self.ns.parse(prefix_handle_of(query.prefix)).key)
        if not await has_right(identity, record, valuedata.ALL_PERMS, self.ns.read_record):
            raise PermissionDenied(f"{identity} is not an administrator of prefix {query.prefix}")

    async def report(self, caller: Caller, query: StatsQuery) -> dict[str, Any]:
        """The JSON document: per day (every day of the period, zeros included) and interface, totals,
        and without a prefix also the totals per prefix."""
        await self.authorise(caller, query)
        store = self.ns.store
        first_day, end_day = day_of(query.first), day_of(query.end)
        rows = await store.resolution_counts(first_day, end_day, query.prefix)
        per_day: dict[int, list[ResolutionCount]] = {}
        for row in rows:
            per_day.setdefault(row.day, []).append(row)
        days = []
        day = query.first
        while day < query.end:
            days.append({"day": day.isoformat(), **_figures(per_day.get(day_of(day), ()))})
            day += dt.timedelta(days=1)
        body: dict[str, Any] = {
            "responseCode": 1,
            "prefix": query.prefix,
            "node_prefix": self.ns.node_prefix,
            "period": {"from": query.first.isoformat(), "to": query.end.isoformat(), "timezone": "Asia/Shanghai"},
            "interfaces": list(INTERFACES),
            "totals": _figures(rows),
            "days": days,
        }
        if query.prefix is None:
            totals = await store.resolution_prefix_totals(first_day, end_day)
            names = {normalise_prefix(e.prefix): e.name for e in await store.list_enterprises()}
            per_prefix: dict[str, list[ResolutionCount]] = {}
            for row in totals:
                per_prefix.setdefault(row.prefix, []).append(row)
            body["prefixes"] = [
                {"prefix": p, "enterprise": names.get(p), **_figures(r)} for p, r in sorted(per_prefix.items())
            ]
        return body
