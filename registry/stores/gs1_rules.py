"""The rules both stores apply to GS1 company prefixes inside the transaction that adds one.

A GTIN has one owner: a company prefix may not be, start, or extend another enterprise's (GS1
allocates prefixes that never overlap, so an overlap is a mistake or an attempt to take another
company's GTINs; the node administrator settles it). One enterprise may hold overlapping prefixes.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import HandleAlreadyExists, InvalidRequest
from registry.stores.base import Gs1Prefix

__all__ = ["gs1_check_conflicts", "gs1_check_limit", "gs1_shorter"]

SHORTEST = 4


def gs1_shorter(company_prefix: str) -> list[str]:
    """``company_prefix`` and every shorter prefix of it that could be registered (4 digits on)."""
    return [company_prefix[:n] for n in range(SHORTEST, len(company_prefix) + 1)]


def gs1_check_conflicts(found: Sequence[Gs1Prefix], enterprise_id: int, company_prefix: str) -> None:
    """Refuse when a registered prefix that overlaps ``company_prefix`` belongs to another enterprise."""
    other = next((p for p in found if p.enterprise_id != enterprise_id), None)
    if other is None:
        return
    if other.company_prefix == company_prefix:
        raise HandleAlreadyExists(f"GS1 company prefix {company_prefix} is registered by another enterprise")
    raise HandleAlreadyExists(
        f"GS1 company prefix {company_prefix} overlaps {other.company_prefix}, registered by another "
        "enterprise: a GTIN has one owner"
    )


def gs1_check_limit(held: int, limit: int) -> None:
    if held >= limit:
        raise InvalidRequest(f"an enterprise may register at most {limit} GS1 company prefixes")
