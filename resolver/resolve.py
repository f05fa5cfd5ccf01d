"""The read path: look a handle up through the cache tiers, then the store.

Tiers are optional (the embedded defaults keep only the local one; several workers without Redis keep
none); ``authoritative`` skips them all.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Protocol

from registry.jsonvalues import values_to_json
from registry.model import Record
from registry.packing import unpack_record
from registry.service import Registry

__all__ = ["CacheTier", "Resolver"]


class CacheTier(Protocol):
    async def lookup(self, key: str, load: object) -> bytes | None:
        """Return the packed record for ``key`` (None: no such handle), calling ``load`` on a miss."""


class Resolver:
    """Looks records up for the REST API and the native protocol alike.

    Cache hits hand back the same ``bytes`` object each time, so decoded records are memoised by
    those bytes (``bytes`` caches its own hash): a hit costs a dictionary lookup, not a msgpack
    decode. Equal bytes always decode to the same record, so the memo can never be stale.
    """

    def __init__(self, registry: Registry, cache: CacheTier | None = None, *, memo_size: int = 20_000) -> None:
        self.registry = registry
        self.cache = cache
        self._memo: OrderedDict[bytes, Record] = OrderedDict()
        self._memo_size = memo_size
        self._public: OrderedDict[int, tuple[Record, str]] = OrderedDict()

    def decode(self, packed: bytes) -> Record:
        record = self._memo.get(packed)
        if record is None:
            record = unpack_record(packed)
            self._memo[packed] = record
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return record

    def public_values_json(self, record: Record) -> str:
        """The JSON array of the record's publicly readable values, rendered once per record object
        (keyed by identity; the entry holds the record, so the id cannot be reused meanwhile)."""
        entry = self._public.get(id(record))
        if entry is not None and entry[0] is record:
            return entry[1]
        rendered = json.dumps(
            values_to_json(v for v in record.values if v.public_read), ensure_ascii=False, separators=(",", ":")
        )
        self._public[id(record)] = (record, rendered)
        if len(self._public) > self._memo_size:
            self._public.popitem(last=False)
        return rendered

    async def _load(self, key: str) -> bytes | None:
        row = await self.registry.store.get(key)
        return row.packed if row else None

    async def lookup(self, key: str, *, authoritative: bool = False) -> Record | None:
        if self.cache is None or authoritative:
            packed = await self._load(key)
        else:
            packed = await self.cache.lookup(key, self._load)
        return self.decode(packed) if packed is not None else None
