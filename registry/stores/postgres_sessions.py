"""Console sessions in the PostgreSQL store.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
"""

from __future__ import annotations

import asyncpg

from registry.stores.base import ConsoleSession
from registry.stores.postgres_part import Attempt, PostgresPart

__all__ = ["PostgresSessions"]


class PostgresSessions(PostgresPart):
    """``registry.stores.base.HandleStore``'s console-session methods."""

    async def put_console_session(self, id_hash: str, identity: str, data: str, *, now: int, expires_at: int) -> None:
        await self._execute(
            "INSERT INTO console_sessions (id_hash, identity, data, created_at, last_seen, expires_at) "
            "VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, "
            "last_seen = excluded.last_seen",
            id_hash,
            identity,
            data,
            now,
            expires_at,
        )

    async def get_console_session(self, id_hash: str) -> ConsoleSession | None:
        row = await self._fetchrow(
            "SELECT identity, data, created_at, last_seen, expires_at FROM console_sessions WHERE id_hash = $1",
            id_hash,
        )
        return ConsoleSession(row[0], row[1], int(row[2]), int(row[3]), int(row[4])) if row else None

    async def touch_console_session(self, id_hash: str, *, now: int) -> None:
        await self._execute("UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1", id_hash, now)

    async def delete_console_session(self, id_hash: str) -> None:
        await self._execute("DELETE FROM console_sessions WHERE id_hash = $1", id_hash)

    async def purge_console_sessions(self, *, now: int, idle_before: int) -> int:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> int:
            async with conn.transaction():
                status = await conn.execute(
                    "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen < $2", now, idle_before
                )
                attempt.commit_sent = True
            return int(status.split()[-1])

        return await self._run(run)
