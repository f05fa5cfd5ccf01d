"""Counter days and hours. Days are calendar days in Asia/Shanghai (the bureau's calendar)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

__all__ = ["SHANGHAI", "day_number", "day_start", "hour_of", "parse_day"]

SHANGHAI = ZoneInfo("Asia/Shanghai")


def day_number(ts: int) -> int:
    """UNIX seconds → the Shanghai calendar day as an int YYYYMMDD."""
    d = dt.datetime.fromtimestamp(ts, SHANGHAI).date()
    return d.year * 10000 + d.month * 100 + d.day


def day_of(d: dt.date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def day_start(d: dt.date) -> int:
    """UNIX seconds of 00:00 Asia/Shanghai on ``d``."""
    return int(dt.datetime.combine(d, dt.time(), SHANGHAI).timestamp())


def hour_of(ts: int) -> int:
    """The UNIX hour bucket a change at ``ts`` is counted in."""
    return ts // 3600


def parse_day(text: str) -> dt.date:
    """``2025-01-01`` → date; ValueError with a readable message otherwise."""
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}") from None
