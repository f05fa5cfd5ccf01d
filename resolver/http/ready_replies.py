"""Replies rendered once per record: the raw request target (and ``Accept``) to the answer.

Filled by :mod:`resolver.http.hot_path` with what the application answered an anonymous request
that a route marked as depending only on the record (``GET /api/handles/{handle}``, a handle URL's
302), when the record came from the local cache tier; read before any routing. Landing pages also
depend on the page's language: they are kept apart (:meth:`ReadyReplies.put_page`), by target,
``Accept`` and language, at most ``page_size`` targets (a page is ~8 kB, a JSON reply ~0.3 kB).
An entry names the cache key and the very packed record (``bytes`` object) it was rendered from:
it is served only while the local tier still holds that object for that key, so every
invalidation, expiry or eviction of the record retires the reply with it, with no bookkeeping here.
Only the values anyone is served are ever rendered into an entry (the request had no credentials
and no filters), and only such requests are answered from one.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["DEFAULT_PAGE_SIZE", "DEFAULT_SIZE", "Counted", "Ready", "ReadyReplies", "Target"]

DEFAULT_SIZE = 20_000
DEFAULT_PAGE_SIZE = 2_000  # as the proxy's page memo (resolver.proxy.answer.ProxyState)


class Counted(Protocol):
    """A metric child the ready path increments as the full path does (a redirect, a landing page)."""

    def inc(self, amount: float = 1) -> None: ...


class Ready(NamedTuple):
    key: str  # the handle's cache key
    packed: bytes  # the local tier's entry it was rendered from (compared by identity)
    status: int
    headers: tuple[tuple[str, str], ...]  # as the application set them, without X-Request-Id
    body: bytes | None
    prefix: str  # the handle's prefix as the client wrote it (resolution counters)
    interface: str  # "rest" or "web" (resolution counters)
    route: str  # the route template (HTTP request metrics)
    counter: Counted | None = None  # the web resolver's counter of this answer, if it has one


Target = tuple[str, str | None]  # the raw request target and the Accept header


class ReadyReplies:
    """At most ``size`` ready replies by raw request target and ``Accept``, and the landing pages of at
    most ``page_size`` targets by language; the oldest put dropped first."""

    __slots__ = ("_pages", "_replies", "page_size", "size")

    def __init__(self, size: int = DEFAULT_SIZE, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if size < 1 or page_size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self.page_size = page_size
        self._replies: dict[Target, Ready] = {}
        self._pages: dict[Target, dict[str, Ready]] = {}

    def __len__(self) -> int:
        return len(self._replies) + sum(len(by_locale) for by_locale in self._pages.values())

    def get(self, target: Target) -> Ready | None:
        return self._replies.get(target)

    def put(self, target: Target, ready: Ready) -> None:
        replies = self._replies
        replies.pop(target, None)
        replies[target] = ready
        self._pages.pop(target, None)  # a retired page of the target (its record now has a URL: a 302)
        if len(replies) > self.size:
            del replies[next(iter(replies))]

    def pages(self, target: Target) -> dict[str, Ready] | None:
        """The landing pages kept for ``target``, by language."""
        return self._pages.get(target)

    def put_page(self, target: Target, locale: str, ready: Ready) -> None:
        self._replies.pop(target, None)  # a retired reply of the target (a 302 before its URL was removed)
        pages = self._pages
        by_locale = pages.pop(target, None) or {}
        by_locale[locale] = ready
        pages[target] = by_locale
        if len(pages) > self.page_size:
            del pages[next(iter(pages))]

    def clear(self) -> None:
        self._replies.clear()
        self._pages.clear()
