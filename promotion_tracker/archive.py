"""Final reports are kept: the first signed bytes made for a final snapshot are stored in the node's
store and served for that request ever after.

A final snapshot's numbers cannot change (:mod:`promotion_tracker.tally`), but what the node would
say about them can: a new policy file for a later round, a new signing key, a new report version.
A report the bureau filed must stay checkable against the node, so the node answers a request for a
final snapshot with exactly the bytes it signed the first time. The key names everything that
selects a report: period, snapshot, reading, caps and promoter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable

from registry.stores.base import HandleStore

__all__ = ["ARCHIVE_PREFIX", "final_or_new", "key_of"]

ARCHIVE_PREFIX = "final_report:"


def key_of(
    period_from: dt.date,
    period_to: dt.date,
    snapshot: int,
    mode: str,
    caps: dict[int, int],
    promoter_id: int | None,
) -> str:
    selector = {
        "from": period_from.isoformat(),
        "to": period_to.isoformat(),
        "snapshot": snapshot,
        "mode": mode,
        "caps": sorted(caps.items()),
        "promoter": promoter_id,
    }
    digest = hashlib.sha256(json.dumps(selector, sort_keys=True).encode("ascii")).hexdigest()
    return ARCHIVE_PREFIX + digest


async def final_or_new(store: HandleStore, key: str, make: Callable[[], Awaitable[bytes]]) -> bytes:
    """The archived bytes under ``key``, or ``make()``'s, archived (the first of two racing wins)."""
    stored = await store.get_meta(key)
    if stored is None:
        stored = await store.add_meta(key, (await make()).decode("utf-8"))
    return stored.encode("utf-8")
