"""The monthly roll-up of the registration counters, shared by both stores.

``registration_counts`` holds one row per (enterprise, creation day, hour of change): a tally over a
year of daily registrations reads enterprises × 365 rows. ``registration_months`` holds the same
deltas summed per (creation month, month of change, enterprise) — months in Beijing time, like the
days — and is written in the same transaction, so a tally reads enterprises × months rows instead.

``counts(from_day, to_day, before_hour)`` (creation days ``[from_day, to_day)``, changes recorded in
hours ``< before_hour``) is answered exactly as the sum of three parts (:func:`plan`):

- the months lying wholly inside the period, from the roll-up, for months of change wholly before
  the month of the cut-off;
- the same creation months from the detail rows, for changes in the cut-off's month before the
  cut-off (at most one month of changes, found through an index on the hour);
- the days at either end of the period that do not fill a month, from the detail rows (at most two
  partial months, found through an index on the day).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from registry.days import SHANGHAI, day_start

__all__ = ["CountPlan", "change_month", "plan"]

# Hours from which the month of change is past any date a datetime can hold: every change counts.
_LAST_HOUR = int(dt.datetime(9999, 1, 1, tzinfo=dt.UTC).timestamp()) // 3600


def change_month(hour: int) -> int:
    """YYYYMM (Beijing time) of the UNIX hour ``hour``."""
    t = dt.datetime.fromtimestamp(hour * 3600, SHANGHAI)
    return t.year * 100 + t.month


def _next_month(month: int) -> int:
    year, m = divmod(month, 100)
    return (year + 1) * 100 + 1 if m == 12 else month + 1


def _month_start_hour(month: int) -> int:
    year, m = divmod(month, 100)
    return day_start(dt.date(year, m, 1)) // 3600


@dataclass(frozen=True)
class CountPlan:
    full_months: tuple[int, int] | None  # [first, end) creation months read from the roll-up
    before_change_month: int  # roll-up rows with change_month < this count
    partial_hours: tuple[int, int] | None  # detail rows of the full months with hour in [a, b)
    edge_days: tuple[tuple[int, int], ...]  # detail rows with day in [a, b) and hour < before_hour


def plan(from_day: int, to_day: int, before_hour: int) -> CountPlan:
    """How to answer ``counts(from_day, to_day, before_hour)`` from roll-up and detail rows."""
    first = from_day // 100 if from_day % 100 == 1 else _next_month(from_day // 100)
    end = to_day // 100  # the month of to_day is never whole: to_day itself is excluded
    if first >= end:
        return CountPlan(None, 0, None, ((from_day, to_day),) if from_day < to_day else ())
    edges = tuple((a, b) for a, b in ((from_day, first * 100 + 1), (end * 100 + 1, to_day)) if a < b)
    if before_hour >= _LAST_HOUR:
        return CountPlan((first, end), 10**8, None, edges)
    if before_hour <= 0:
        return CountPlan(None, 0, None, ())
    cut = change_month(before_hour)
    start = _month_start_hour(cut)
    partial = (start, before_hour) if start < before_hour else None
    return CountPlan((first, end), cut, partial, edges)
