"""Which representation of a handle a request asks for, from its ``Accept`` header.

Three representations live at one URL: a person's (the redirect of the proxy, or the landing page),
the Handle JSON of ``GET /api/handles/{handle}`` and an RFC 9264 JSON linkset. Each gets the
quality of the most specific media range that matches it; the highest quality wins, then the more
specific match (``application/json`` named beats ``*/*``), then the order above. Nothing matching
(``text/plain`` alone, a malformed header) is the person's answer, as the HANDLE.NET and DOI proxies
answer a browser: never 406.
"""

from __future__ import annotations

import enum

__all__ = ["JSON_TYPE", "LINKSET_TYPE", "Wanted", "wanted"]

JSON_TYPE = "application/json"
LINKSET_TYPE = "application/linkset+json"
HTML_TYPE = "text/html"
MAX_RANGES = 32  # media ranges read from one header
_MEMO_SIZE = 256


class Wanted(enum.Enum):
    PEOPLE = HTML_TYPE  # redirect, or the landing page
    JSON = JSON_TYPE
    LINKSET = LINKSET_TYPE


_ORDER = (Wanted.PEOPLE, Wanted.JSON, Wanted.LINKSET)
_memo: dict[str, Wanted] = {}


def _ranges(header: str) -> list[tuple[str, str, float]]:
    """``(type, subtype, q)`` of each media range; ranges with q=0 are kept (they refuse)."""
    out = []
    for part in header.split(",")[:MAX_RANGES]:
        media, _, params = part.partition(";")
        kind, slash, sub = media.strip().lower().partition("/")
        if not slash or not kind or not sub:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value.strip())))
                except ValueError:
                    q = 0.0
        out.append((kind, sub.strip(), q))
    return out


def _quality(ranges: list[tuple[str, str, float]], media: str) -> tuple[float, int]:
    """The quality the header gives ``media`` and how specific the range that gave it was (2 named,
    1 ``type/*``, 0 ``*/*``, -1 none)."""
    kind, _, sub = media.partition("/")
    best = (0.0, -1)
    for rkind, rsub, q in ranges:
        if rkind == kind and rsub == sub:
            specificity = 2
        elif rkind == kind and rsub == "*":
            specificity = 1
        elif rkind == "*" and rsub == "*":
            specificity = 0
        else:
            continue
        if specificity > best[1]:
            best = (q, specificity)
    return best


def wanted(accept: str | None) -> Wanted:
    """The representation ``Accept`` asks for (memoised: clients send a handful of distinct headers)."""
    if not accept:
        return Wanted.PEOPLE
    found = _memo.get(accept)
    if found is not None:
        return found
    ranges = _ranges(accept)
    scored = []
    for position, kind in enumerate(_ORDER):
        q, specificity = _quality(ranges, kind.value)
        if q > 0:
            scored.append((-q, -specificity, position, kind))
    found = min(scored)[3] if scored else Wanted.PEOPLE
    if len(_memo) >= _MEMO_SIZE:
        _memo.clear()
    _memo[accept] = found
    return found
