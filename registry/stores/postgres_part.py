"""What every part of the PostgreSQL store uses: the base of its mixins.

:class:`registry.stores.postgres.PostgresStore` is made of one mixin per table family
(``postgres_handle_reads``, ``postgres_handle_writes``, ``postgres_enterprises``,
``postgres_statistics``, ``postgres_sessions``, ``postgres_meta``, ``postgres_audit``,
``postgres_jobs``, ``postgres_values``); the store itself provides the connection methods declared
here (``_run`` retries a call once on a fresh connection unless it may have committed, see
:class:`Attempt`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

__all__ = ["Attempt", "PostgresPart", "Work"]


@dataclass(slots=True)
class Attempt:
    acquired: bool = False  # a connection was handed to us
    commit_sent: bool = False  # from here on a failure leaves the outcome unknown: never retry


# What ``_run`` runs: a coroutine on a pooled connection, told about its attempt.
Work = Callable[[asyncpg.Connection, Any], Awaitable[Any]]


class PostgresPart:
    """The connection methods a mixin of PostgresStore may call (provided by PostgresStore)."""

    _run: Callable[[Work], Awaitable[Any]]
    _fetch: Callable[..., Awaitable[list[asyncpg.Record]]]
    _fetchrow: Callable[..., Awaitable[asyncpg.Record | None]]
    _execute: Callable[..., Awaitable[None]]
    # Held by a batch written while it is read (postgres_create_stream); the value indexer waits for it.
    _stream_gate: asyncio.Lock
