"""Node metadata, label templates and idempotency keys in the PostgreSQL store.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
"""

from __future__ import annotations

import asyncpg

from registry.errors import InvalidRequest
from registry.stores.base import AuditRecord
from registry.stores.postgres_audit import insert_audit
from registry.stores.postgres_part import Attempt, PostgresPart

__all__ = ["PostgresMeta"]


class PostgresMeta(PostgresPart):
    """``registry.stores.base.HandleStore``'s metadata, template and idempotency methods."""

    async def get_meta(self, key: str) -> str | None:
        row = await self._fetchrow("SELECT value FROM meta WHERE key = $1", key)
        return row[0] if row else None

    async def add_meta(self, key: str, value: str) -> str:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> str:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value
                )
                stored = await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
                attempt.commit_sent = True
            return stored

        return await self._run(run)

    async def set_meta(self, key: str, value: str, *, audit: AuditRecord | None = None) -> None:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
            audit=audit,
        )

    async def add_template(
        self, scope: str, template_id: str, version: int, body: str, *, now: int, audit: AuditRecord | None = None
    ) -> None:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> None:
            async with conn.transaction():
                status = await conn.execute(
                    "INSERT INTO templates (scope, id, version, body, created_at) VALUES ($1, $2, $3, $4, $5) "
                    "ON CONFLICT DO NOTHING",
                    scope,
                    template_id,
                    version,
                    body,
                    now,
                )
                if status.endswith(" 0"):
                    raise InvalidRequest(f"template {template_id} version {version} already exists")
                await insert_audit(conn, audit)
                attempt.commit_sent = True

        await self._run(run)

    async def get_template(self, scope: str, template_id: str, version: int | None) -> tuple[int, str] | None:
        if version is None:
            row = await self._fetchrow(
                "SELECT version, body FROM templates WHERE scope = $1 AND id = $2 ORDER BY version DESC LIMIT 1",
                scope,
                template_id,
            )
        else:
            row = await self._fetchrow(
                "SELECT version, body FROM templates WHERE scope = $1 AND id = $2 AND version = $3",
                scope,
                template_id,
                version,
            )
        return (row[0], row[1]) if row else None

    async def list_templates(self) -> list[tuple[str, str, int, str]]:
        rows = await self._fetch("SELECT scope, id, version, body FROM templates ORDER BY scope, id, version")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def get_idempotent(self, key: str) -> tuple[str, bytes] | None:
        row = await self._fetchrow("SELECT request_hash, response FROM idempotency WHERE key = $1", key)
        return (row[0], bytes(row[1])) if row else None

    async def add_idempotent(self, key: str, request_hash: str, response: bytes, *, now: int) -> None:
        await self._execute(
            "INSERT INTO idempotency (key, request_hash, response, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (key) DO NOTHING",
            key,
            request_hash,
            response,
            now,
        )
