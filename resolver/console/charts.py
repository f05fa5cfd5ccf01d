"""The dashboard's bar chart of registrations per day, as numbers an inline SVG template draws
(server-rendered: no script, prints and reads without JavaScript)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from registry.days import day_of

__all__ = ["CHART_DAYS", "Bar", "DayChart", "day_chart"]

CHART_DAYS = 30
WIDTH, HEIGHT = 900, 200  # the SVG's user units; the page scales it to the screen
# Room for the values above the bars and the dates below: on a phone the 900 units shrink to about
# 340 px, so the labels are drawn 28 units high there (console.css) to be 10-11 px on the screen.
TOP, BOTTOM = 30, 38
SIDE = 30  # room at either end, so the first and last dates are not cut off


@dataclass(frozen=True)
class Bar:
    day: dt.date
    value: int
    x: float
    y: float
    width: float
    height: float
    label: bool  # whether its date is written under it


@dataclass(frozen=True)
class DayChart:
    bars: list[Bar]
    total: int
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - BOTTOM


def day_chart(counts: Mapping[int, int], last_day: dt.date, days: int = CHART_DAYS) -> DayChart:
    """Bars for the ``days`` days up to and including ``last_day`` (``counts`` by YYYYMMDD; a day
    with fewer identifiers than before, after deletions, counts as 0)."""
    span = [last_day - dt.timedelta(days=days - 1 - i) for i in range(days)]
    values = [max(0, counts.get(day_of(d), 0)) for d in span]
    peak = max(values, default=0)
    room = HEIGHT - TOP - BOTTOM
    step = (WIDTH - 2 * SIDE) / days
    bars = []
    for i, (day, value) in enumerate(zip(span, values, strict=True)):
        height = room * value / peak if peak else 0.0
        bars.append(
            Bar(
                day=day,
                value=value,
                x=round(SIDE + i * step + step * 0.15, 2),
                y=round(HEIGHT - BOTTOM - height, 2),
                width=round(step * 0.7, 2),
                height=round(height, 2),
                label=(days - 1 - i) % 7 == 0,
            )
        )
    return DayChart(bars, sum(values), peak)
