"""The read path: look a handle up through the cache tiers, then the store.

Tiers are optional (none on the embedded defaults); ``authoritative`` skips them all.
"""

from __future__ import annotations

from typing import Protocol

from registry.model import Record
from registry.packing import unpack_record
from registry.service import Registry

__all__ = ["CacheTier", "Resolver"]


class CacheTier(Protocol):
    async def lookup(self, key: str, load: object) -> bytes | None:
        """Return the packed record for ``key`` (None: no such handle), calling ``load`` on a miss."""


class Resolver:
    def __init__(self, registry: Registry, cache: CacheTier | None = None) -> None:
        self.registry = registry
        self.cache = cache

    async def _load(self, key: str) -> bytes | None:
        row = await self.registry.store.get(key)
        return row.packed if row else None

    async def lookup(self, key: str, *, authoritative: bool = False) -> Record | None:
        if self.cache is None or authoritative:
            packed = await self._load(key)
        else:
            packed = await self.cache.lookup(key, self._load)
        return unpack_record(packed) if packed is not None else None
