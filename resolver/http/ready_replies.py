"""Replies rendered once per record: the raw request target (and ``Accept``) to the answer.

Filled by :mod:`resolver.http.hot_path` with what the application answered an anonymous request with
no query string that a route marked as depending only on the record (``GET /api/handles/{handle}``,
a handle URL's 302), when the record came from the local cache tier; read before any routing.
An entry names the cache key and the very packed record (``bytes`` object) it was rendered from:
it is served only while the local tier still holds that object for that key, so every
invalidation, expiry or eviction of the record retires the reply with it, with no bookkeeping here.
Only the values anyone is served are ever rendered into an entry (the request had no credentials
and no filters), and only such requests are answered from one.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DEFAULT_SIZE", "Ready", "ReadyReplies", "Target"]

DEFAULT_SIZE = 20_000


class Ready(NamedTuple):
    key: str  # the handle's cache key
    packed: bytes  # the local tier's entry it was rendered from (compared by identity)
    status: int
    headers: tuple[tuple[str, str], ...]  # as the application set them, without X-Request-Id
    body: bytes | None
    prefix: str  # the handle's prefix as the client wrote it (resolution counters)
    interface: str  # "rest" or "web" (resolution counters)
    route: str  # the route template (HTTP request metrics)


Target = tuple[str, str | None]  # the raw request target and the Accept header


class ReadyReplies:
    """At most ``size`` ready replies by raw request target and ``Accept``, the oldest put dropped first."""

    __slots__ = ("_replies", "size")

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self._replies: dict[Target, Ready] = {}

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, target: Target) -> Ready | None:
        return self._replies.get(target)

    def put(self, target: Target, ready: Ready) -> None:
        replies = self._replies
        replies.pop(target, None)
        replies[target] = ready
        if len(replies) > self.size:
            del replies[next(iter(replies))]

    def clear(self) -> None:
        self._replies.clear()
