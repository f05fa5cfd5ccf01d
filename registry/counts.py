"""Registrations as the store counts them: identifiers per enterprise prefix, all time.

The store keeps exact registration counters, changed in the transaction that creates or deletes a
handle (:mod:`registry.stores.base`): the same numbers tallies are made of, whoever wrote — a
request, a batch, ``idnode import`` or a job."""

from __future__ import annotations

from registry.model import normalise_prefix
from registry.stores.base import HandleStore

__all__ = ["registrations_by_prefix"]

FIRST_DAY = 19700101  # creation days are YYYYMMDD (Asia/Shanghai)
END_DAY = 99991231
ALL_HOURS = 1 << 62  # changes recorded in any hour count


async def registrations_by_prefix(store: HandleStore) -> dict[str, int]:
    """Per enterprise prefix (normalised): the identifiers registered under it and not deleted."""
    counts = await store.registration_counts(FIRST_DAY, END_DAY, ALL_HOURS)
    if not counts:
        return {}
    prefixes = {e.id: normalise_prefix(e.prefix) for e in await store.list_enterprises()}
    return {prefixes[eid]: n for eid, n in counts.items() if eid in prefixes}
