"""Numbers and instants sent by clients: one rule for every route, file format and protocol.

Python's own parsing is too generous for input from the network: ``str.isdigit()`` is true for
``"²"`` which ``int()`` then refuses, ``int()`` accepts other scripts' digits, underscores, signs and
spaces, refuses more than 4,300 digits with a ValueError, and a valid ``datetime`` can overflow when
moved to another zone. Each of those once reached a 500. The rule here: a number is ASCII digits
(or a JSON integer), within the range of what it names, checked before it reaches a store; an
instant is an ISO 8601 time within years 1970–9998 with a zone (UTC assumed when none is given).
Every failure is the caller's ``error`` type with a message naming the field, never the raw input
at length.

JSON texts from clients follow the same rule (:func:`decode_json`, :func:`json_problem`): Python's
``json`` refuses an integer of more than 4,300 digits with a plain ValueError (not a
JSONDecodeError), and accepts ``"\\ud800"`` escapes that decode to unpaired surrogates, strings
that no store, msgpack or UTF-8 encoder takes. Both are the client's error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from typing import Any

from registry.errors import HandleError, InvalidRequest

__all__ = [
    "MAX_ID",
    "MAX_U32",
    "UNPAIRED_SURROGATE",
    "as_uint",
    "decode_json",
    "has_unpaired_surrogate",
    "is_uint_text",
    "json_problem",
    "lookup_text",
    "parse_date",
    "parse_instant",
    "parse_uint",
    "reference",
    "shown",
]

MAX_ID = 2**63 - 1  # row ids: SQLite INTEGER, PostgreSQL bigint
MAX_U32 = 0xFFFFFFFF  # handle value indexes, TTLs and the like on the wire
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only (a str pattern's \d would take every script's digits)
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


_REFERENCE_TEXT = 64  # longer than any prefix or credit code


def shown(raw: object) -> str:
    """A client's input as an error message quotes it: its repr, cut short."""
    return repr(raw)[:40]


def lookup_text(ref: object) -> str | None:
    """A prefix or credit code to look up, or None when ``ref`` cannot be one (so that no store
    sees a NUL, a control character or a long string)."""
    if not isinstance(ref, str):
        return None
    text = ref.strip()
    return text if text and len(text) <= _REFERENCE_TEXT and text.isprintable() else None


def reference(ref: object, what: str) -> tuple[int | None, str | None]:
    """A promoter or enterprise reference from a client: (id, text to look up by prefix or credit
    code). An id is checked against the stores' id range here, before any store sees it; a short
    string of ASCII digits is tried as an id first, then as text."""
    if isinstance(ref, str):
        text = lookup_text(ref)
        number = int(text) if text is not None and is_uint_text(text) and len(text) < 18 else None
        return number, text
    return as_uint(ref, what), None


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
        raise error(f"{what} must be a whole number written in ASCII digits, got {shown(text)}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise error(f"{what} must be from {minimum} to {maximum}, got {shown(text)}")
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
        raise error(f"{what} must be a whole number, got {shown(value)}")
    if not minimum <= value <= maximum:
        got = str(value) if abs(value) < 10**20 else "a number that large"
        raise error(f"{what} must be from {minimum} to {maximum}, got {got}")
    return value


def parse_instant(text: str, what: str, *, error: type[HandleError] = InvalidRequest) -> dt.datetime:
    """An ISO 8601 date or time (``2026-01-15``, ``2026-01-15T00:00:00+08:00``, ``…Z``) as an aware
    UTC datetime within 1970–9998; a time without a zone is taken as UTC."""
    raw = text.strip()
    if not raw.isascii() or len(raw) > 40:
        raise error(f"{what} must be an ISO 8601 time such as 2026-01-15T00:00:00+08:00, got {shown(text)}")
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        instant = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise error(f"{what} must be an ISO 8601 time such as 2026-01-15T00:00:00+08:00, got {shown(text)}") from None
    if not _EARLIEST <= instant < _LATEST:
        raise error(f"{what} must lie between 1970-01-01 and 9998-12-31, got {shown(text)}")
    return instant


def parse_date(text: str, what: str, *, error: type[HandleError] = InvalidRequest) -> dt.date:
    """A calendar day written ``YYYY-MM-DD`` (ASCII digits), within 1970-01-01 to 9998-12-31."""
    raw = text.strip()
    try:
        if not raw.isascii() or len(raw) != 10 or raw[4] != "-" or raw[7] != "-":
            raise ValueError
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise error(f"{what} must be a date written YYYY-MM-DD, got {shown(text)}") from None
    if not _EARLIEST.date() <= day < _LATEST.date():
        raise error(f"{what} must lie between 1970-01-01 and 9998-12-31, got {shown(text)}")
    return day


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how one gets into a JSON text
UNPAIRED_SURROGATE = "a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode text"


def _surrogate_in(obj: Any) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def has_unpaired_surrogate(text: str, obj: Any, start: int = 0, end: int | None = None) -> bool:
    """Whether ``obj``, decoded from ``text[start:end]``, holds a string with an unpaired surrogate.
    The decoded value is walked only when the text has a surrogate escape at all (a paired one
    decodes to a proper character), so ordinary JSON costs one substring search."""
    end = len(text) if end is None else end
    if text.find("\\u", start, end) < 0 or not _SURROGATE_ESCAPE.search(text, start, end):
        return False
    return _surrogate_in(obj)


def json_problem(exc: Exception) -> str:
    """What is wrong with a JSON text that ``json`` refused, in words for the client."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    # json's only other ValueError: int() refusing a long literal (sys.set_int_max_str_digits).
    return f"a number has more than {sys.get_int_max_str_digits() or 4300} digits"


def decode_json(text: str, *, error: type[HandleError] = InvalidRequest) -> Any:
    """``json.loads`` for a body from the network: every refusal is ``error`` ("malformed JSON: …"),
    never a ValueError or RecursionError, and strings are Unicode text."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"malformed JSON: {json_problem(exc)}") from None
    if has_unpaired_surrogate(text, obj):
        raise error(f"malformed JSON: {UNPAIRED_SURROGATE}")
    return obj
