"""Promoters, enterprises, their attributions and GS1 company prefixes in the SQLite store.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from registry.errors import InvalidRequest
from registry.stores.base import Attribution, AuditRecord, Enterprise, Gs1Prefix, HandleWrite, Promoter
from registry.stores.gs1_rules import gs1_check_conflicts, gs1_check_limit, gs1_shorter
from registry.stores.sqlite_audit import insert_audit
from registry.stores.sqlite_handle_writes import apply_writes
from registry.stores.sqlite_part import SQLitePart

__all__ = ["SQLiteEnterprises"]


class SQLiteEnterprises(SQLitePart):
    """``registry.stores.base.HandleStore``'s promoter, enterprise and GS1 prefix methods."""

    async def add_promoter(self, name: str, uscc: str, *, now: int, audit: AuditRecord | None = None) -> Promoter:
        def run(c: sqlite3.Connection) -> Promoter:
            if c.execute("SELECT 1 FROM promoters WHERE uscc = ?", (uscc,)).fetchone():
                raise InvalidRequest(f"a promoter with credit code {uscc} already exists")
            cur = c.execute("INSERT INTO promoters (name, uscc, created_at) VALUES (?, ?, ?)", (name, uscc, now))
            insert_audit(c, audit)
            return Promoter(cur.lastrowid, name, uscc, now)

        async with self._write_lock:
            return await self._write(run)

    async def list_promoters(self) -> list[Promoter]:
        rows = await self._read(
            lambda c: c.execute("SELECT id, name, uscc, created_at FROM promoters ORDER BY id").fetchall()
        )
        return [Promoter(*r) for r in rows]

    async def get_promoter(self, ref: int | str) -> Promoter | None:
        col = "id" if isinstance(ref, int) else "uscc"
        row = await self._read(
            lambda c: c.execute(f"SELECT id, name, uscc, created_at FROM promoters WHERE {col} = ?", (ref,)).fetchone()
        )
        return Promoter(*row) if row else None

    async def add_enterprise(
        self,
        name: str,
        uscc: str,
        prefix: str,
        promoter_id: int,
        prefix_write: HandleWrite,
        *,
        now: int,
        audit: AuditRecord | None = None,
    ) -> Enterprise:
        def run(c: sqlite3.Connection) -> Enterprise:
            if c.execute("SELECT 1 FROM enterprises WHERE uscc = ?", (uscc,)).fetchone():
                raise InvalidRequest(f"an enterprise with credit code {uscc} already exists")
            if c.execute("SELECT 1 FROM enterprises WHERE prefix_key = ?", (prefix.upper(),)).fetchone():
                raise InvalidRequest(f"prefix {prefix} is already allocated")
            cur = c.execute(
                "INSERT INTO enterprises (name, uscc, prefix, prefix_key, status, created_at) "
                "VALUES (?, ?, ?, ?, 'active', ?)",
                (name, uscc, prefix, prefix.upper(), now),
            )
            eid = cur.lastrowid
            c.execute(
                "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES (?, ?, ?)",
                (eid, promoter_id, now),
            )
            (result,) = apply_writes(c, [prefix_write], now, True)
            if not result.ok:
                raise InvalidRequest(f"prefix handle 0.NA/{prefix} already exists")
            insert_audit(c, audit)
            return Enterprise(eid, name, uscc, prefix, "active", promoter_id, now)

        async with self._write_lock:
            return await self._write(run)

    _ENTERPRISE_SQL = (
        "SELECT e.id, e.name, e.uscc, e.prefix, e.status, "
        "(SELECT a.promoter_id FROM attributions a WHERE a.enterprise_id = e.id "
        " ORDER BY a.effective_at DESC, a.seq DESC LIMIT 1), e.created_at FROM enterprises e"
    )

    async def list_enterprises(self) -> list[Enterprise]:
        rows = await self._read(lambda c: c.execute(self._ENTERPRISE_SQL + " ORDER BY e.id").fetchall())
        return [Enterprise(*r) for r in rows]

    async def get_enterprise(self, ref: int | str) -> Enterprise | None:
        if isinstance(ref, int):
            where, args = " WHERE e.id = ?", (ref,)
        else:
            where, args = " WHERE e.prefix_key = ? OR e.uscc = ?", (ref.upper(), ref.upper())
        row = await self._read(lambda c: c.execute(self._ENTERPRISE_SQL + where, args).fetchone())
        return Enterprise(*row) if row else None

    async def enterprise_prefixes(self) -> list[str]:
        rows = await self._read(lambda c: c.execute("SELECT prefix FROM enterprises ORDER BY id").fetchall())
        return [r[0] for r in rows]

    async def move_enterprise(
        self, enterprise_id: int, promoter_id: int, *, effective_at: int, audit: AuditRecord | None = None
    ) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES (?, ?, ?)",
                (enterprise_id, promoter_id, effective_at),
            )
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def set_enterprise_status(self, enterprise_id: int, status: str, *, audit: AuditRecord | None = None) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("UPDATE enterprises SET status = ? WHERE id = ?", (status, enterprise_id))
            insert_audit(c, audit)

        async with self._write_lock:
            await self._write(run)

    async def attributions(self) -> list[Attribution]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT enterprise_id, promoter_id, effective_at FROM attributions ORDER BY effective_at, seq"
            ).fetchall()
        )
        return [Attribution(*r) for r in rows]

    _GS1_SQL = (
        "SELECT g.company_prefix, g.enterprise_id, e.prefix, g.created_at "
        "FROM gs1_prefixes g JOIN enterprises e ON e.id = g.enterprise_id"
    )

    async def add_gs1_prefix(
        self, enterprise_id: int, company_prefix: str, *, now: int, limit: int
    ) -> tuple[Gs1Prefix, bool]:
        shorter = gs1_shorter(company_prefix)

        def run(c: sqlite3.Connection) -> tuple[Gs1Prefix, bool]:
            marks = ",".join("?" * len(shorter))
            rows = c.execute(
                f"{self._GS1_SQL} WHERE g.company_prefix IN ({marks}) "
                "OR (g.company_prefix > ? AND g.company_prefix < ?) ORDER BY g.company_prefix",
                (*shorter, company_prefix, company_prefix + ":"),
            ).fetchall()
            found = [Gs1Prefix(*r) for r in rows]
            gs1_check_conflicts(found, enterprise_id, company_prefix)
            same = next((p for p in found if p.company_prefix == company_prefix), None)
            if same is not None:
                return same, False
            (held,) = c.execute(
                "SELECT count(*) FROM gs1_prefixes WHERE enterprise_id = ?", (enterprise_id,)
            ).fetchone()
            gs1_check_limit(held, limit)
            c.execute(
                "INSERT INTO gs1_prefixes (company_prefix, enterprise_id, created_at) VALUES (?, ?, ?)",
                (company_prefix, enterprise_id, now),
            )
            (prefix,) = c.execute("SELECT prefix FROM enterprises WHERE id = ?", (enterprise_id,)).fetchone()
            return Gs1Prefix(company_prefix, enterprise_id, prefix, now), True

        async with self._write_lock:
            return await self._write(run)

    async def list_gs1_prefixes(self, enterprise_id: int | None = None) -> list[Gs1Prefix]:
        if enterprise_id is None:
            sql, args = self._GS1_SQL + " ORDER BY g.company_prefix", ()
        else:
            sql, args = self._GS1_SQL + " WHERE g.enterprise_id = ? ORDER BY g.company_prefix", (enterprise_id,)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [Gs1Prefix(*r) for r in rows]

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        async with self._write_lock:
            removed = await self._write(
                lambda c: (
                    c.execute(
                        "DELETE FROM gs1_prefixes WHERE company_prefix = ? AND enterprise_id = ?",
                        (company_prefix, enterprise_id),
                    ).rowcount
                )
            )
        return removed > 0

    async def find_gs1_prefix(self, candidates: Sequence[str]) -> Gs1Prefix | None:
        if not candidates:
            return None
        marks = ",".join("?" * len(candidates))
        sql = f"{self._GS1_SQL} WHERE g.company_prefix IN ({marks}) ORDER BY length(g.company_prefix) DESC LIMIT 1"
        row = await self._read(lambda c: c.execute(sql, tuple(candidates)).fetchone())
        return Gs1Prefix(*row) if row else None
