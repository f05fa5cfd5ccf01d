"""Numbers and instants sent by clients: one rule for every route, file format and protocol.

Python's own parsing is too generous for input from the network: ``str.isdigit()`` is true for
``"²"`` which ``int()`` then refuses, ``int()`` accepts other scripts' digits, underscores, signs and
spaces, refuses more than 4,300 digits with a ValueError, and a valid ``datetime`` can overflow when
moved to another zone. Each of those once reached a 500. The rule here: a number is ASCII digits
(or a JSON integer), within the range of what it names, checked before it reaches a store; an
instant is an ISO 8601 time within years 1970–9998 with a zone (UTC assumed when none is given).
Every failure is the caller's ``error`` type with a message naming the field, never the raw input
at length.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from registry.errors import HandleError, InvalidRequest

__all__ = ["MAX_ID", "MAX_U32", "as_uint", "is_uint_text", "parse_instant", "parse_uint"]

MAX_ID = 2**63 - 1  # row ids: SQLite INTEGER, PostgreSQL bigint
MAX_U32 = 0xFFFFFFFF  # handle value indexes, TTLs and the like on the wire
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only (a str pattern's \d would take every script's digits)
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def _shown(raw: object) -> str:
    return repr(raw)[:40]


def is_uint_text(text: str) -> bool:
    """ASCII decimal digits only, at most 20 of them (so never a 4,300-digit conversion)."""
    return _DIGITS.fullmatch(text) is not None


def parse_uint(
    text: str,
    what: str,
    *,
    minimum: int = 0,
    maximum: int = MAX_ID,
    error: type[HandleError] = InvalidRequest,
) -> int:
    """``text`` as an integer in ``[minimum, maximum]``: ASCII digits only, no sign, no spaces."""
    if not is_uint_text(text):
        raise error(f"{what} must be a whole number written in ASCII digits, got {_shown(text)}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise error(f"{what} must be from {minimum} to {maximum}, got {_shown(text)}")
    return value


def as_uint(
    value: object,
    what: str,
    *,
    minimum: int = 0,
    maximum: int = MAX_ID,
    error: type[HandleError] = InvalidRequest,
) -> int:
    """An integer from a decoded body (JSON, msgpack): an int (not a bool), an integral float, or a
    string of ASCII digits, in ``[minimum, maximum]``."""
    if isinstance(value, bool):
        raise error(f"{what} must be a whole number, got a boolean")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        return parse_uint(value.strip(), what, minimum=minimum, maximum=maximum, error=error)
    if not isinstance(value, int):
        raise error(f"{what} must be a whole number, got {_shown(value)}")
    if not minimum <= value <= maximum:
        shown = str(value) if abs(value) < 10**20 else "a number that large"
        raise error(f"{what} must be from {minimum} to {maximum}, got {shown}")
    return value


def parse_instant(text: str, what: str, *, error: type[HandleError] = InvalidRequest) -> dt.datetime:
    """An ISO 8601 date or time (``2026-01-15``, ``2026-01-15T00:00:00+08:00``, ``…Z``) as an aware
    UTC datetime within 1970–9998; a time without a zone is taken as UTC."""
    raw = text.strip()
    if not raw.isascii() or len(raw) > 40:
        raise error(f"{what} must be an ISO 8601 time such as 2026-01-15T00:00:00+08:00, got {_shown(text)}")
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        instant = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise error(f"{what} must be an ISO 8601 time such as 2026-01-15T00:00:00+08:00, got {_shown(text)}") from None
    if not _EARLIEST <= instant < _LATEST:
        raise error(f"{what} must lie between 1970-01-01 and 9998-12-31, got {_shown(text)}")
    return instant
