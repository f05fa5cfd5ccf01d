"""The audit log in the SQLite store.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`);
:func:`insert_audit` adds an entry inside another write's transaction.
"""

from __future__ import annotations

import sqlite3

from registry.stores.base import AuditEntry, AuditRecord, audit_where
from registry.stores.sqlite_part import SQLitePart

__all__ = ["SQLiteAudit", "insert_audit"]


def insert_audit(c: sqlite3.Connection, audit: AuditRecord | None) -> None:
    """Store ``audit`` in the caller's transaction (nothing when None)."""
    if audit is not None:
        c.execute(
            "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (audit.at, audit.actor, audit.action, audit.target, audit.source, audit.detail),
        )


class SQLiteAudit(SQLitePart):
    """``registry.stores.base.HandleStore``'s audit-log methods."""

    async def add_audit(self, at: int, actor: str, action: str, target: str, source: str, detail: str) -> int:
        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (at, actor, action, target, source, detail),
            )
            return int(cur.lastrowid or 0)

        async with self._write_lock:
            return await self._write(run)

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
        where, args = audit_where(before_id, action, target, since, lambda n: "?", actor)
        sql = f"SELECT id, at, actor, action, target, source, detail FROM audit_log{where} ORDER BY id DESC LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [AuditEntry(*r) for r in rows]
