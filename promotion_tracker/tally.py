"""Tallies per promoter over a period ``[from, to)`` as of a snapshot time, from the store's counters.

One boundary rule for everything: a snapshot at instant ``S`` sees exactly what was recorded
strictly before ``S`` — registrations and deletions (counted per UNIX hour), moves of enterprises
between promoters, new promoters and new enterprises. Counters hold whole hours, so ``S`` is a whole
hour: a given ``as_of`` is rounded down to its hour and the report states the effective snapshot.

A snapshot is ``final`` once ``S`` lies :data:`SETTLE_SECONDS` in the past: by then every write
stamped before ``S`` has committed (a write takes its time stamp before it waits for the store) and
the clocks of the nodes sharing a store agree, so nothing can change what it counts any more.
Without ``as_of`` the tally is live: it counts everything recorded so far (the snapshot is the end of
the current hour, not final). The cost grows with enterprises × months (the store's roll-up), never
with identifiers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from promotion_tracker.policy import AwardResult, Policy, compute_award
from registry.days import SHANGHAI, day_of, hour_of
from registry.stores.base import Enterprise, HandleStore, Promoter

__all__ = [
    "SETTLE_SECONDS",
    "EnterpriseRow",
    "PromoterTally",
    "Tally",
    "TallyError",
    "compute_tally",
    "default_period",
    "monthly_counts",
    "period_bounds",
    "period_months",
    "recorded_before",
    "snapshot_of",
]


SETTLE_SECONDS = 300


class TallyError(ValueError):
    pass


@dataclass(frozen=True)
class EnterpriseRow:
    id: int
    name: str
    uscc: str
    prefix: str
    registrations: int
    eligible: bool
    increment: bool


@dataclass(frozen=True)
class PromoterTally:
    promoter: Promoter
    enterprises: list[EnterpriseRow]
    award: AwardResult

    @property
    def eligible(self) -> int:
        return self.award.eligible_enterprises


@dataclass(frozen=True)
class Tally:
    period_from: dt.date
    period_to: dt.date
    as_of: dt.datetime  # the effective snapshot (whole hour, UTC)
    requested_as_of: dt.datetime | None  # None: a live tally
    final: bool  # the snapshot lies wholly in the past, so the numbers can no longer change
    policy: Policy
    promoters: list[PromoterTally] = field(default_factory=list)
    contribution_caps: dict[int, int] = field(default_factory=dict)


def period_bounds(period_from: dt.date, period_to: dt.date) -> tuple[int, int]:
    if period_to <= period_from:
        raise TallyError(f"the period is empty: to ({period_to}) must be after from ({period_from})")
    return day_of(period_from), day_of(period_to)


def snapshot_of(as_of: dt.datetime | None, now: dt.datetime) -> tuple[int, bool]:
    """(the snapshot S in UNIX seconds, whether it is final) for a requested ``as_of`` (None: live).
    Counters hold whole hours: S is ``as_of`` rounded down to its hour, or the end of this hour."""
    now_ts = int(now.timestamp())
    if as_of is None:
        return (hour_of(now_ts) + 1) * 3600, False
    snapshot = hour_of(int(as_of.timestamp())) * 3600
    return snapshot, snapshot + SETTLE_SECONDS <= now_ts


def recorded_before(ts: int, snapshot: int) -> bool:
    """The one boundary rule: a change recorded at ``ts`` is in the snapshot at ``snapshot``."""
    return ts < snapshot


def _attribution_at(store_rows: list, snapshot: int) -> dict[int, int]:
    """enterprise id → promoter id in force at the snapshot (rows ordered by effective time)."""
    out: dict[int, int] = {}
    for a in store_rows:
        if recorded_before(a.effective_at, snapshot):
            out[a.enterprise_id] = a.promoter_id
    return out


async def compute_tally(
    store: HandleStore,
    period_from: dt.date,
    period_to: dt.date,
    as_of: dt.datetime | None,
    policy: Policy,
    *,
    now: dt.datetime,
    contribution_caps: Mapping[int, int] | None = None,
    promoter_id: int | None = None,
) -> Tally:
    """Tally every promoter (or only ``promoter_id``) for ``[period_from, period_to)`` as of ``as_of``
    (None: live, everything recorded up to ``now``)."""
    from_day, to_day = period_bounds(period_from, period_to)
    if as_of is not None and as_of.tzinfo is None:
        raise TallyError("as_of must carry a time zone")
    snapshot, final = snapshot_of(as_of, now)
    snapshot_hour = snapshot // 3600
    effective = dt.datetime.fromtimestamp(snapshot, dt.UTC)
    # Four independent reads, run together (PostgreSQL pool connections, SQLite reader threads).
    counts, attributions, enterprise_list, promoters = await asyncio.gather(
        store.registration_counts(from_day, to_day, snapshot_hour),
        store.attributions(),
        store.list_enterprises(),
        store.list_promoters(),
    )
    owner = _attribution_at(attributions, snapshot)
    enterprises: dict[int, Enterprise] = {e.id: e for e in enterprise_list}
    if promoter_id is not None:
        promoters = [p for p in promoters if p.id == promoter_id]
    by_promoter: dict[int, list[Enterprise]] = {}
    for eid, pid in owner.items():
        if eid in enterprises:
            by_promoter.setdefault(pid, []).append(enterprises[eid])
    caps = contribution_caps or {}
    out = []
    for p in promoters:
        if not recorded_before(p.created_at, snapshot):
            continue  # did not exist at the snapshot (its enterprises cannot either)
        members = sorted(by_promoter.get(p.id, []), key=lambda e: e.id)
        per_prefix = {e.prefix: max(0, counts.get(e.id, 0)) for e in members}
        award = compute_award(per_prefix, policy, contribution_cap_yuan=caps.get(p.id))
        increments = set(award.increment_enterprise_keys)
        rows = [
            EnterpriseRow(
                id=e.id,
                name=e.name,
                uscc=e.uscc,
                prefix=e.prefix,
                registrations=per_prefix[e.prefix],
                eligible=per_prefix[e.prefix] >= policy.min_enterprise_registrations,
                increment=e.prefix in increments,
            )
            for e in members
        ]
        out.append(PromoterTally(p, rows, award))
    requested = as_of.astimezone(dt.UTC) if as_of is not None else None
    return Tally(period_from, period_to, effective, requested, final, policy, out, dict(caps))


def default_period(now: dt.datetime) -> tuple[dt.date, dt.date]:
    """This calendar year so far (Asia/Shanghai): [1 January, tomorrow)."""
    today = now.astimezone(SHANGHAI).date()
    return dt.date(today.year, 1, 1), today + dt.timedelta(days=1)


def period_months(period_from: dt.date, period_to: dt.date) -> list[tuple[str, dt.date, dt.date]]:
    """The calendar months the period touches, clipped to it: (``YYYY-MM``, first day, day after last)."""
    out = []
    start = period_from
    while start < period_to:
        nxt = dt.date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        end = min(nxt, period_to)
        out.append((f"{start.year:04d}-{start.month:02d}", start, end))
        start = end
    return out


async def monthly_counts(store: HandleStore, tally: Tally) -> tuple[list[str], dict[int, list[int]]]:
    """Registrations per enterprise and calendar month of the period, at the tally's snapshot. The
    months of an enterprise add up to its registrations in the period."""
    snapshot_hour = int(tally.as_of.timestamp()) // 3600
    months = period_months(tally.period_from, tally.period_to)
    wanted = {e.id for pt in tally.promoters for e in pt.enterprises}
    series: dict[int, list[int]] = {eid: [0] * len(months) for eid in wanted}
    per_month = await asyncio.gather(
        *(store.registration_counts(day_of(start), day_of(end), snapshot_hour) for _, start, end in months)
    )
    for i, counts in enumerate(per_month):
        for eid, n in counts.items():
            if eid in series:
                series[eid][i] = max(0, n)
    return [label for label, _, _ in months], series
