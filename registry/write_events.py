"""Write events: what one committed store transaction changed, for whoever subscribes.

After every commit :class:`registry.writes.WriteService` hands each subscriber one :class:`Commit`
and awaits it before the write is acknowledged (cache invalidation across processes completes
first). A commit of a 100,000-item batch is one call; its events are built only when a subscriber
asks for them, so a subscriber that needs only the keys (the cache) pays for nothing more.
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from registry.stores.base import HandleWrite, NewHandle, WriteOutcome, WriteResult
from registry.write_plan import Change

__all__ = ["Commit", "KeysListener", "Subscriber", "WriteEvent", "keys_subscriber"]

_CHANGES = {
    WriteOutcome.CREATED: Change.CREATED,
    WriteOutcome.REPLACED: Change.REPLACED,
    WriteOutcome.DELETED: Change.DELETED,
}
_OK = frozenset(_CHANGES)
_outcome = operator.attrgetter("outcome")


class WriteEvent(NamedTuple):
    """One handle created, replaced or deleted. ``prefix`` is normalised (``88.118.8.1001``; a
    prefix handle's is ``0.NA``)."""

    change: Change
    key: str
    handle: str
    prefix: str


class Commit:
    """The handles one transaction wrote (writes whose outcome was not a change are left out)."""

    __slots__ = ("_events", "_keys", "_results", "_writes")

    def __init__(self, writes: Sequence[HandleWrite] | Sequence[NewHandle], results: Sequence[WriteResult]) -> None:
        self._writes = writes
        self._results = results
        self._keys: list[str] | None = None
        self._events: list[WriteEvent] | None = None

    @property
    def keys(self) -> list[str]:
        """The keys of the records that changed."""
        if self._keys is None:
            ok = _OK
            self._keys = [w.key for w, r in zip(self._writes, self._results, strict=True) if r.outcome in ok]
        return self._keys

    @property
    def events(self) -> list[WriteEvent]:
        if self._events is None:
            self._events = [
                WriteEvent(_CHANGES[r.outcome], w.key, w.handle, w.prefix)
                for w, r in zip(self._writes, self._results, strict=True)
                if r.ok
            ]
        return self._events

    def counts(self) -> dict[Change, int]:
        """How many handles each kind of change touched."""
        tally = collections.Counter(map(_outcome, self._results))  # in C: a batch has 100,000 results
        return {change: tally[outcome] for outcome, change in _CHANGES.items() if tally[outcome]}

    def __bool__(self) -> bool:
        return bool(self.keys)


Subscriber = Callable[[Commit], Awaitable[None]]
KeysListener = Callable[[Sequence[str]], Awaitable[None]]


def keys_subscriber(listener: KeysListener) -> Subscriber:
    """A subscriber that hands ``listener`` only the changed keys (a cache's ``invalidate``)."""

    async def subscriber(commit: Commit) -> None:
        await listener(commit.keys)

    return subscriber
