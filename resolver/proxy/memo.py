"""What the proxy makes from a record, kept as long as the resolver hands out the same record object.

The resolver decodes equal packed bytes to one :class:`~registry.model.Record` object
(:meth:`resolver.resolve.Resolver.decode`), and a write changes the bytes: a new object comes out and
nothing kept for the old one is ever found again. So nothing here needs invalidating; entries are
keyed by the record's identity and hold the record, so the id cannot be reused while they live.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from registry.model import Record

__all__ = ["RecordMemo"]

T = TypeVar("T")


class RecordMemo(Generic[T]):
    """At most ``size`` things made from records (a record may have several: one per ``variant``),
    the oldest dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[int, Hashable], tuple[Record, T]] = OrderedDict()

    def get(self, record: Record, variant: Hashable = None) -> T | None:
        entry = self._entries.get((id(record), variant))
        return entry[1] if entry is not None and entry[0] is record else None

    def put(self, record: Record, value: T, variant: Hashable = None) -> T:
        if self.size > 0:
            self._entries[(id(record), variant)] = (record, value)
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
