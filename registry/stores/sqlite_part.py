"""What every part of the SQLite store uses: the base of its mixins.

:class:`registry.stores.sqlite.SQLiteStore` is made of one mixin per table family
(``sqlite_handle_reads``, ``sqlite_handle_writes``, ``sqlite_enterprises``, ``sqlite_statistics``,
``sqlite_sessions``, ``sqlite_meta``, ``sqlite_audit``, ``sqlite_jobs``, ``sqlite_values``); the store
itself provides the connections declared here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["SQLitePart"]

T = TypeVar("T")


class SQLitePart:
    """The connection methods a mixin of SQLiteStore may call (provided by SQLiteStore)."""

    # A read on the reader pool; a write in one transaction on the single writer thread.
    _read: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _write_lock: asyncio.Lock
    # Work on the writer thread outside ``_write``'s transaction (a stream of chunks, one transaction).
    _on_writer: Callable[[Callable[[sqlite3.Connection], Any]], asyncio.Future[Any]]

    async def _writing(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._write_lock:
            return await self._write(fn)
