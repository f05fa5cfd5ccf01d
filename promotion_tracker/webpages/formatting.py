"""Counts, money, dates and times for pages, formatted by Babel for the page's locale (never by hand):
200,000 · 200,000 元 / CNY 200,000 · 2026年12月1日 / December 1, 2026 · times in Beijing time."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from babel.dates import format_date as _babel_date
from babel.dates import format_time as _babel_time
from babel.numbers import format_decimal

from promotion_tracker.webpages.locales import babel_locale, translations

__all__ = [
    "BEIJING",
    "format_date",
    "format_datetime",
    "format_money",
    "format_month",
    "format_month_short",
    "format_number",
    "format_year",
]

BEIJING = ZoneInfo("Asia/Shanghai")


def format_number(value: int | float, locale: str) -> str:
    return format_decimal(value, locale=babel_locale(locale))


def format_money(yuan: int, locale: str) -> str:
    """Whole yuan: ``200,000 元`` in Chinese, ``CNY 200,000`` in English."""
    return translations(locale).gettext("CNY %(amount)s") % {"amount": format_number(yuan, locale)}


def format_date(value: dt.date, locale: str) -> str:
    return _babel_date(value, "long", locale=babel_locale(locale))


def format_datetime(value: dt.datetime, locale: str) -> str:
    """An instant in Beijing time: ``2026年12月1日 19:00`` / ``December 1, 2026 19:00``."""
    local = value.astimezone(BEIJING)
    when = _babel_date(local.date(), "long", locale=babel_locale(locale))
    return f"{when} {_babel_time(local, 'HH:mm', locale=babel_locale(locale))}"


def format_month(value: dt.date, locale: str) -> str:
    """A calendar month: ``2025年1月`` / ``Jan 2025``."""
    from babel.dates import format_skeleton

    return format_skeleton("yMMM", value, locale=babel_locale(locale))


def format_month_short(value: dt.date, locale: str) -> str:
    """A month without its year: ``1月`` / ``Jan``."""
    from babel.dates import format_skeleton

    return format_skeleton("MMM", value, locale=babel_locale(locale))


def format_year(value: dt.date, locale: str) -> str:
    """The year of a date: ``2025年`` / ``2025``."""
    from babel.dates import format_skeleton

    return format_skeleton("y", value, locale=babel_locale(locale))
