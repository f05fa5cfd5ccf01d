"""The read path: look a handle up through the cache tiers, then the store, and say which values are served.

Tiers are optional (the embedded defaults keep only the local one; several workers without Redis keep
theirs in step through the supervisor's worker hub); ``authoritative`` skips them all. Which values a
caller is served is decided by :mod:`registry.read_policy` alone; the Resolver only memoises its answer
for the common case.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from registry.jsonvalues import values_to_json
from registry.model import HandleValue, Record
from registry.read_policy import ALL_PUBLIC, ValueFilter, public_values, served_values
from registry.stores.base import StoredHandle
from resolver.cache.decoded import DecodedRecords
from resolver.cache.local_tier import MISS

__all__ = ["MISS", "CacheTier", "HandleReader", "Resolver"]


class CacheTier(Protocol):
    async def lookup(self, key: str, load: Callable[[str], Awaitable[bytes | None]]) -> bytes | None:
        """Return the packed record for ``key`` (None: no such handle), calling ``load`` on a miss."""

    def cached(self, key: str) -> bytes | object | None:
        """The process's own tier's answer, without awaiting: packed bytes, None or ``MISS``."""


class HandleReader(Protocol):
    """What the Resolver reads from: a store's ``get`` (a ``HandleStore``, instrumented or not)."""

    async def get(self, key: str) -> StoredHandle | None: ...


class Resolver:
    """Looks records up for the REST API, the native protocol and web resolution alike.

    Decoded records come from :class:`~resolver.cache.decoded.DecodedRecords`, shared with the cache
    (``records``): a record is unpacked once when it enters the process, a cache hit costs a
    dictionary lookup. The publicly served values of a record, and their JSON, are kept per record
    object (keyed by identity; the entry holds the record, so the id cannot be reused meanwhile).
    """

    def __init__(
        self,
        store: HandleReader,
        cache: CacheTier | None = None,
        *,
        records: DecodedRecords | None = None,
        memo_size: int = 20_000,
    ) -> None:
        self.store = store
        self.cache = cache
        self.records = records if records is not None else DecodedRecords(memo_size)
        self.decode = self.records.decode
        self._memo_size = memo_size
        self._public: OrderedDict[int, tuple[Record, tuple[HandleValue, ...], str | None]] = OrderedDict()

    async def _load(self, key: str) -> bytes | None:
        row = await self.store.get(key)
        return row.packed if row else None

    async def lookup(self, key: str, *, authoritative: bool = False) -> Record | None:
        if self.cache is None or authoritative:
            packed = await self._load(key)
        else:
            packed = await self.cache.lookup(key, self._load)
        return self.decode(packed) if packed is not None else None

    def cached(self, key: str) -> Record | object | None:
        """The record from the process's own cache tier, without awaiting: the record, None (a
        cached "no such handle"), or :data:`~resolver.cache.local_tier.MISS` (then ``lookup``).
        Raises :class:`registry.packing.PackError` for cached bytes that are not a record."""
        cache = self.cache
        if cache is None:
            return MISS
        packed = cache.cached(key)
        if packed is None or packed is MISS:
            return packed
        return self.decode(packed)  # type: ignore[arg-type]

    # -- what is served (registry.read_policy decides; memoised for anonymous, unfiltered reads) ------
    def served(
        self, record: Record, *, private_reader: bool = False, request: ValueFilter = ALL_PUBLIC
    ) -> tuple[HandleValue, ...]:
        """:func:`registry.read_policy.served_values` of ``record``; the public values of a record
        are worked out once per record."""
        if request is ALL_PUBLIC and not private_reader:
            return self._public_entry(record)[1]
        return served_values(record.values, private_reader=private_reader, request=request)

    def public_values_json(self, record: Record) -> str:
        """The JSON array of the values anyone is served, rendered once per record."""
        entry = self._public.get(id(record))
        if entry is not None and entry[0] is record and entry[2] is not None:
            return entry[2]  # the REST hot path: one dictionary lookup
        values = self._public_entry(record)[1]
        rendered = json.dumps(values_to_json(values), ensure_ascii=False, separators=(",", ":"))
        self._public[id(record)] = (record, values, rendered)
        return rendered

    def _public_entry(self, record: Record) -> tuple[Record, tuple[HandleValue, ...], str | None]:
        entry = self._public.get(id(record))
        if entry is not None and entry[0] is record:
            return entry
        entry = (record, public_values(record.values), None)
        self._public[id(record)] = entry
        if len(self._public) > self._memo_size:
            self._public.popitem(last=False)
        return entry
