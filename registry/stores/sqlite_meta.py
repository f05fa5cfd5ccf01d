"""Node metadata, label templates and idempotency keys in the SQLite store.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`).
"""

from __future__ import annotations

import sqlite3

from registry.errors import InvalidRequest
from registry.stores.base import AuditRecord
from registry.stores.sqlite_audit import insert_audit
from registry.stores.sqlite_part import SQLitePart

__all__ = ["SQLiteMeta"]


class SQLiteMeta(SQLitePart):
    """``registry.stores.base.HandleStore``'s metadata, template and idempotency methods."""

    async def get_meta(self, key: str) -> str | None:
        row = await self._read(lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return row[0] if row else None

    async def add_meta(self, key: str, value: str) -> str:
        async with self._write_lock:
            return await self._write(lambda c: _add_meta(c, key, value))

    async def set_meta(self, key: str, value: str, *, audit: AuditRecord | None = None) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def add_template(
        self, scope: str, template_id: str, version: int, body: str, *, now: int, audit: AuditRecord | None = None
    ) -> None:
        def run(c: sqlite3.Connection) -> None:
            if c.execute(
                "SELECT 1 FROM templates WHERE scope = ? AND id = ? AND version = ?", (scope, template_id, version)
            ).fetchone():
                raise InvalidRequest(f"template {template_id} version {version} already exists")
            c.execute(
                "INSERT INTO templates (scope, id, version, body, created_at) VALUES (?, ?, ?, ?, ?)",
                (scope, template_id, version, body, now),
            )
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def get_template(self, scope: str, template_id: str, version: int | None) -> tuple[int, str] | None:
        if version is None:
            sql = "SELECT version, body FROM templates WHERE scope = ? AND id = ? ORDER BY version DESC LIMIT 1"
            args: tuple = (scope, template_id)
        else:
            sql = "SELECT version, body FROM templates WHERE scope = ? AND id = ? AND version = ?"
            args = (scope, template_id, version)
        row = await self._read(lambda c: c.execute(sql, args).fetchone())
        return (row[0], row[1]) if row else None

    async def list_templates(self) -> list[tuple[str, str, int, str]]:
        rows = await self._read(
            lambda c: c.execute("SELECT scope, id, version, body FROM templates ORDER BY scope, id, version").fetchall()
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def get_idempotent(self, key: str) -> tuple[str, bytes] | None:
        row = await self._read(
            lambda c: c.execute("SELECT request_hash, response FROM idempotency WHERE key = ?", (key,)).fetchone()
        )
        return (row[0], bytes(row[1])) if row else None

    async def add_idempotent(self, key: str, request_hash: str, response: bytes, *, now: int) -> None:
        async with self._write_lock:
            await self._write(
                lambda c: c.execute(
                    "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (key, request_hash, response, now),
                )
            )


def _add_meta(c: sqlite3.Connection, key: str, value: str) -> str:
    c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
    return c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
