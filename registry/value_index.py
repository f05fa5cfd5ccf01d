"""The reverse-lookup index: which values are searchable, the text kept for them, and patterns.

A search (``GET /hrls/handles?URL=*part*``) must stay fast on millions of identifiers, and a
``*part*`` pattern cannot use an ordinary index: the stores keep a trigram index of the values
(SQLite: an FTS5 table with the ``trigram`` tokenizer; PostgreSQL: ``pg_trgm`` GIN), which finds
the rows holding every three-character run of the pattern without reading the others, and a B-tree
on (type, text) for exact values and patterns with a fixed start.

Trigram indexes are dear to write: each value adds one entry per character (measured on the
project's 2-core VM, 100,000 URL values: PostgreSQL GIN ~16,000-20,000 rows/s, SQLite FTS5 ~40,000
rows/s, against batch registration's ~35,000 identifiers/s with two values each). Kept in the write
transaction they would cut batch registration to a third. So a write only queues the handles it
wrote (``value_index_queue``, in the same transaction: cheap, and nothing is ever missed), and the
node's :class:`ValueIndexer` (re)indexes queued handles from their records as they are then, a few
thousand per transaction, off the request path: a search sees a write about a second later. Hits
are checked against the current record (:func:`matches`) before they are answered, so a handle
changed since it was indexed is never returned for a value it no longer holds.

What is indexed: values anyone may read (public read permission) of every type except those that
hold keys, secrets, administrators or sites, whose data is UTF-8 of at most
:data:`MAX_INDEXED_BYTES` once folded to lower case (matching is case-insensitive, as HANDLE.NET's
search servlet is meant to be). A pattern is the value with ``*`` standing for any run of
characters; one that starts with ``*`` needs three characters in a row somewhere (fewer would
match through the whole index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence

from registry.errors import HandleError, InvalidRequest
from registry.model import Record
from registry.packing import unpack_record
from registry.stores.base import HandleStore, ValueCondition
from registry.tasks import cancel_and_wait
from registry.valuedata import SITE_TYPES

__all__ = [
    "MAX_INDEXED_BYTES",
    "MAX_PATTERN",
    "ValueIndexer",
    "condition",
    "entries",
    "fold",
    "matches",
    "searchable_type",
]

log = logging.getLogger(__name__)

MAX_INDEXED_BYTES = 1024  # of a value's folded UTF-8; longer values are not searchable
MAX_PATTERN = 1024  # characters of one search pattern
MAX_VALUES = 65_535  # the store numbers a handle's index rows in 16 bits
MIN_INFIX_RUN = 3  # the trigram index needs a run of three characters
_NOT_INDEXED = frozenset({"HS_ADMIN", "HS_SECKEY", "HS_PUBKEY", "HS_VLIST", "HS_SIGNATURE", "HS_CERT"}) | SITE_TYPES
_TYPE = re.compile(r"^[^\s*]{1,255}$")


def fold(text: str) -> str:
    """The form values and patterns are compared in (case-insensitive)."""
    return text.lower()


def searchable_type(type_: str) -> bool:
    return type_.upper() not in _NOT_INDEXED


def _indexed_text(record: Record, n: int) -> str | None:
    value = record.values[n]
    if not value.public_read or not searchable_type(value.type):
        return None
    try:
        text = fold(value.data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    if not text or len(text.encode("utf-8")) > MAX_INDEXED_BYTES or "\x00" in text:
        return None
    return text


def entries(packed: bytes) -> list[tuple[int, str, str]]:
    """A record's index rows: (value number, TYPE, folded text) of each searchable value."""
    record = unpack_record(packed)
    out = []
    for n in range(min(len(record.values), MAX_VALUES)):
        text = _indexed_text(record, n)
        if text is not None:
            out.append((n, record.values[n].type.upper(), text))
    return out


def _glob(literal: str) -> str:
    return literal.replace("[", "[[]").replace("?", "[?]")


def _like(literal: str) -> str:
    return literal.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def condition(type_: str, pattern: str) -> ValueCondition:
    """A search term (``URL``, ``*example.com/p/*``) as the stores take it; InvalidRequest for a
    type that is not indexed or a pattern the index cannot serve."""
    if not _TYPE.match(type_):
        raise InvalidRequest(f"{type_[:40]!r} is not a value type")
    if not searchable_type(type_):
        raise InvalidRequest(f"values of type {type_.upper()} are not searchable")
    if not pattern or len(pattern) > MAX_PATTERN or "\x00" in pattern:
        raise InvalidRequest(f"{type_}: a search pattern is 1-{MAX_PATTERN} characters")
    folded = re.sub(r"\*+", "*", fold(pattern))
    if "*" not in folded:
        return ValueCondition(type_.upper(), folded, folded, folded, _glob(folded), _like(folded), False)
    parts = folded.split("*")
    if not parts[0] and max(len(p) for p in parts) < MIN_INFIX_RUN:
        raise InvalidRequest(
            f"{type_}: a pattern starting with * needs at least {MIN_INFIX_RUN} characters in a row besides *, "
            "e.g. *example.com*"
        )
    glob = "*".join(_glob(p) for p in parts)
    return ValueCondition(type_.upper(), folded, None, parts[0], glob, "%".join(_like(p) for p in parts), not parts[0])


def _regex(c: ValueCondition) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in c.pattern.split("*")), re.DOTALL)


def matches(record: Record, conditions: Sequence[ValueCondition]) -> bool:
    """Does ``record``, as it is now, meet every condition with a searchable value?"""
    for c in conditions:
        wanted = _regex(c)
        found = False
        for n, value in enumerate(record.values[:MAX_VALUES]):
            if value.type.upper() != c.type:
                continue
            text = _indexed_text(record, n)
            if text is not None and wanted.fullmatch(text):
                found = True
                break
        if not found:
            return False
    return True


class ValueIndexer:
    """Keeps the value index up to date in the background: every ``interval`` seconds (and when
    nudged) it indexes what writes queued, ``chunk`` handles per store transaction, until the
    queue is empty. Several processes sharing a store may run one each: the store lets one at a
    time take from the queue."""

    def __init__(self, store: HandleStore, *, interval: float = 1.0, chunk: int = 2000) -> None:
        self.store = store
        self.interval = interval
        self.chunk = chunk
        self.indexed = 0  # handles (re)indexed by this process
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="idnode-value-indexer")

    def nudge(self) -> None:
        self._wake.set()

    async def run_once(self, limit: int | None = None) -> int:
        """Index queued handles until none waits (or ``limit`` handles); how many were indexed."""
        done = 0
        while limit is None or done < limit:
            step = self.chunk if limit is None else min(self.chunk, limit - done)
            n = await self.store.index_values(step, entries)
            done += n
            self.indexed += n
            if n < step:
                break
            await asyncio.sleep(0)  # let requests in between chunks
        return done

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except HandleError as exc:  # the store is unavailable: try again later
                log.warning("value index: %s", exc.message)
            except Exception:
                log.exception("value index: unexpected error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
