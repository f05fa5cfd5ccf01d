"""The per-process cache tier: an LRU bounded in entries and in bytes, with bounded staleness.

Entries hold the packed record as the store has it (or :data:`NEGATIVE` for "no such handle") and
an expiry time. Freshness is a pure function of the ``now`` the caller passes (a monotonic clock
reading in seconds), so tests move time by hand and never sleep.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

__all__ = ["ENTRY_OVERHEAD", "MISS", "NEGATIVE", "LocalTier"]

# Rough bookkeeping cost of one entry (dict slot, tuple, key object) counted against the byte bound.
ENTRY_OVERHEAD: Final = 120


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISS: Final = _Marker("MISS")  # get(): nothing cached (or expired)
NEGATIVE: Final = _Marker("NEGATIVE")  # a cached "no such handle"


class LocalTier:
    """An LRU map ``key -> (packed | NEGATIVE, expires_at, size)``.

    ``max_entries`` and ``max_bytes`` are hard bounds: inserting evicts least recently used entries
    until both hold; an entry larger than ``max_bytes`` on its own is not cached.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[bytes | _Marker, float, int]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: str, now: float) -> bytes | _Marker:
        """The packed record, :data:`NEGATIVE`, or :data:`MISS` (absent or expired at ``now``)."""
        entry = self._data.get(key)
        if entry is None:
            return MISS
        value, expires_at, size = entry
        if now >= expires_at:
            del self._data[key]
            self._bytes -= size
            return MISS
        self._data.move_to_end(key)
        return value

    def holds(self, key: str, value: bytes, now: float) -> bool:
        """Does ``key`` still hold this very ``value`` (the same object, unexpired at ``now``)? A hit
        for a reply rendered from ``value`` (:mod:`resolver.http.hot_path`): counted as recently used."""
        entry = self._data.get(key)
        if entry is None or entry[0] is not value or now >= entry[1]:
            return False
        self._data.move_to_end(key)
        return True

    def put(self, key: str, value: bytes | _Marker, ttl: float, now: float) -> bool:
        """Cache ``value`` (packed bytes or NEGATIVE) for ``ttl`` seconds from ``now``."""
        if ttl <= 0:
            self.discard(key)
            return False
        size = ENTRY_OVERHEAD + len(key) * 2 + (len(value) if isinstance(value, bytes) else 0)
        if size > self.max_bytes:
            self.discard(key)
            return False
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        self._data[key] = (value, now + ttl, size)
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, _, dropped) = self._data.popitem(last=False)
            self._bytes -= dropped
            self.evictions += 1
        return True

    def discard(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[2]

    def discard_many(self, keys: Iterable[str]) -> None:
        """:meth:`discard` of every key, in one pass over them: only the keys held are touched (a
        batch invalidates 100,000 keys of new handles, of which the tier holds few or none)."""
        data = self._data
        if not data:
            return
        for key in [k for k in keys if k in data]:
            self._bytes -= data.pop(key)[2]

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0
