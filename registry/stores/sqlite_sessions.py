"""Console sessions in the SQLite store.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`).
"""

from __future__ import annotations

from registry.stores.base import ConsoleSession
from registry.stores.sqlite_part import SQLitePart

__all__ = ["SQLiteSessions"]


class SQLiteSessions(SQLitePart):
    """``registry.stores.base.HandleStore``'s console-session methods."""

    async def put_console_session(self, id_hash: str, identity: str, data: str, *, now: int, expires_at: int) -> None:
        async with self._write_lock:
            await self._write(
                lambda c: c.execute(
                    "INSERT INTO console_sessions (id_hash, identity, data, created_at, last_seen, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, "
                    "last_seen = excluded.last_seen",
                    (id_hash, identity, data, now, now, expires_at),
                )
            )

    async def get_console_session(self, id_hash: str) -> ConsoleSession | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT identity, data, created_at, last_seen, expires_at FROM console_sessions WHERE id_hash = ?",
                (id_hash,),
            ).fetchone()
        )
        return ConsoleSession(*row) if row else None

    async def touch_console_session(self, id_hash: str, *, now: int) -> None:
        async with self._write_lock:
            await self._write(
                lambda c: c.execute("UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))
            )

    async def delete_console_session(self, id_hash: str) -> None:
        async with self._write_lock:
            await self._write(lambda c: c.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,)))

    async def purge_console_sessions(self, *, now: int, idle_before: int) -> int:
        async with self._write_lock:
            return await self._write(
                lambda c: (
                    c.execute(
                        "DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen < ?", (now, idle_before)
                    ).rowcount
                )
            )
