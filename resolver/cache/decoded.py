"""Records decoded from their packed bytes, memoised by those bytes.

The cache tiers hold packed records (what the store and Redis hold); the cache needs a record's
version and TTL to fill a tier, and the :class:`~resolver.resolve.Resolver` needs the record to serve
it. One :class:`DecodedRecords` shared by both means a record is unpacked once when it enters the
process (a Redis hit or a store load) and never on a local hit: the local tier hands back the very
``bytes`` object it was filled with, and ``bytes`` caches its own hash, so a hit costs one dictionary
lookup. Equal bytes always decode to the same record, so the memo can never be stale.
"""

from __future__ import annotations

from collections import OrderedDict

from registry.model import Record
from registry.packing import unpack_record

__all__ = ["DEFAULT_SIZE", "DecodedRecords"]

DEFAULT_SIZE = 20_000


class DecodedRecords:
    """At most ``size`` decoded records, the oldest decoded dropped first."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self.unpacked = 0  # records unpacked (memo misses): what the memo exists to keep low
        self._memo: OrderedDict[bytes, Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._memo)

    def decode(self, packed: bytes) -> Record:
        """The record ``packed`` holds; raises :class:`registry.packing.PackError` for bytes that are not one."""
        record = self._memo.get(packed)
        if record is None:
            record = unpack_record(packed)
            self.unpacked += 1
            self._memo[packed] = record
            if len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return record
