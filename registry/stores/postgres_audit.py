"""The audit log in the PostgreSQL store.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
:func:`insert_audit` adds an entry inside another write's transaction.
"""

from __future__ import annotations

import asyncpg

from registry.stores.base import AuditEntry, AuditRecord, audit_where
from registry.stores.postgres_part import Attempt, PostgresPart

__all__ = ["PostgresAudit", "insert_audit"]

_AUDIT = "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES ($1, $2, $3, $4, $5, $6)"


async def insert_audit(conn: asyncpg.Connection, audit: AuditRecord | None) -> None:
    """Store ``audit`` in the caller's transaction (nothing when None)."""
    if audit is not None:
        await conn.execute(_AUDIT, audit.at, audit.actor, audit.action, audit.target, audit.source, audit.detail)


class PostgresAudit(PostgresPart):
    """``registry.stores.base.HandleStore``'s audit-log methods."""

    async def add_audit(self, at: int, actor: str, action: str, target: str, source: str, detail: str) -> int:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> int:
            async with conn.transaction():
                entry_id = await conn.fetchval(
                    "INSERT INTO audit_log (at, actor, action, target, source, detail) "
                    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    at,
                    actor,
                    action,
                    target,
                    source,
                    detail,
                )
                attempt.commit_sent = True
            return int(entry_id)

        return await self._run(run)

    async def list_audit(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
        actor: str | None = None,
    ) -> list[AuditEntry]:
        where, args = audit_where(before_id, action, target, since, lambda n: f"${n}", actor)
        rows = await self._fetch(
            f"SELECT id, at, actor, action, target, source, detail FROM audit_log{where} "
            f"ORDER BY id DESC LIMIT ${len(args) + 1}",
            *args,
            limit,
        )
        return [AuditEntry(*r) for r in rows]
