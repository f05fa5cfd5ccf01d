"""Promoters, enterprises, their attributions and GS1 company prefixes in the PostgreSQL store.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
A new enterprise's prefix handle is written with the handle writer's ``_check`` and ``_apply``, in
the enterprise's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from registry.errors import InvalidRequest
from registry.stores.base import Attribution, AuditRecord, Enterprise, Gs1Prefix, HandleWrite, Promoter
from registry.stores.gs1_rules import gs1_check_conflicts, gs1_check_limit, gs1_shorter
from registry.stores.postgres_audit import insert_audit
from registry.stores.postgres_handle_writes import PackedRecords, PostgresHandleWrites, WritePlan, classify
from registry.stores.postgres_part import Attempt

__all__ = ["GS1_LOCK", "PostgresEnterprises"]

# Held while a GS1 company prefix is added, so two overlapping ones cannot both pass the check.
GS1_LOCK = 0x69646E6F6731  # "idnog1"

_GS1_SQL = (
    "SELECT g.company_prefix, g.enterprise_id, e.prefix, g.created_at "
    "FROM gs1_prefixes g JOIN enterprises e ON e.id = g.enterprise_id"
)

_ENTERPRISE_SQL = (
    "SELECT e.id, e.name, e.uscc, e.prefix, e.status, "
    "(SELECT a.promoter_id FROM attributions a WHERE a.enterprise_id = e.id "
    " ORDER BY a.effective_at DESC, a.seq DESC LIMIT 1), e.created_at FROM enterprises e"
)

_UNIQUE_MESSAGES = {
    "promoters_uscc_key": "a promoter with credit code {uscc} already exists",
    "enterprises_uscc_key": "an enterprise with credit code {uscc} already exists",
    "enterprises_prefix_key_key": "prefix {prefix} is already allocated",
}


class PostgresEnterprises(PostgresHandleWrites):
    """``registry.stores.base.HandleStore``'s promoter, enterprise and GS1 prefix methods."""

    @staticmethod
    def _conflict(exc: asyncpg.UniqueViolationError, **names: str) -> InvalidRequest:
        template = _UNIQUE_MESSAGES.get(exc.constraint_name or "")
        if template is None:
            return InvalidRequest(f"conflicting data: {exc}")
        return InvalidRequest(template.format(**names))

    async def add_promoter(self, name: str, uscc: str, *, now: int, audit: AuditRecord | None = None) -> Promoter:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> Promoter:
            async with conn.transaction():
                if await conn.fetchval("SELECT 1 FROM promoters WHERE uscc = $1", uscc):
                    raise InvalidRequest(f"a promoter with credit code {uscc} already exists")
                try:
                    pid = await conn.fetchval(
                        "INSERT INTO promoters (name, uscc, created_at) VALUES ($1, $2, $3) RETURNING id",
                        name,
                        uscc,
                        now,
                    )
                except asyncpg.UniqueViolationError as exc:  # a concurrent insert won
                    raise self._conflict(exc, uscc=uscc) from None
                await insert_audit(conn, audit)
                attempt.commit_sent = True
            return Promoter(pid, name, uscc, now)

        return await self._run(run)

    async def list_promoters(self) -> list[Promoter]:
        rows = await self._fetch("SELECT id, name, uscc, created_at FROM promoters ORDER BY id")
        return [Promoter(*r) for r in rows]

    async def get_promoter(self, ref: int | str) -> Promoter | None:
        col = "id" if isinstance(ref, int) else "uscc"
        row = await self._fetchrow(f"SELECT id, name, uscc, created_at FROM promoters WHERE {col} = $1", ref)
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
        writes = [prefix_write]
        records = PackedRecords(writes)

        async def run(conn: asyncpg.Connection, attempt: Attempt) -> Enterprise:
            async with conn.transaction():
                # The version lock first: it serialises this with every handle write and every other
                # enterprise, so the checks below cannot race and no id is burnt on a refusal.
                version, next_id, have = await self._check(conn, writes)
                if await conn.fetchval("SELECT 1 FROM enterprises WHERE uscc = $1", uscc):
                    raise InvalidRequest(f"an enterprise with credit code {uscc} already exists")
                if await conn.fetchval("SELECT 1 FROM enterprises WHERE prefix_key = $1", prefix.upper()):
                    raise InvalidRequest(f"prefix {prefix} is already allocated")
                plan = classify(writes, have, True)
                if not isinstance(plan, WritePlan):
                    raise InvalidRequest(f"prefix handle 0.NA/{prefix} already exists")
                try:
                    eid = await conn.fetchval(
                        "INSERT INTO enterprises (name, uscc, prefix, prefix_key, status, created_at) "
                        "VALUES ($1, $2, $3, $4, 'active', $5) RETURNING id",
                        name,
                        uscc,
                        prefix,
                        prefix.upper(),
                        now,
                    )
                except asyncpg.UniqueViolationError as exc:
                    raise self._conflict(exc, uscc=uscc, prefix=prefix) from None
                await conn.execute(
                    "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES ($1, $2, $3)",
                    eid,
                    promoter_id,
                    now,
                )
                await self._apply(conn, writes, records, have, plan, version, next_id, now)
                await insert_audit(conn, audit)
                attempt.commit_sent = True
            return Enterprise(eid, name, uscc, prefix, "active", promoter_id, now)

        return await self._run(run)

    async def list_enterprises(self) -> list[Enterprise]:
        rows = await self._fetch(_ENTERPRISE_SQL + " ORDER BY e.id")
        return [Enterprise(*r) for r in rows]

    async def get_enterprise(self, ref: int | str) -> Enterprise | None:
        if isinstance(ref, int):
            row = await self._fetchrow(_ENTERPRISE_SQL + " WHERE e.id = $1", ref)
        else:
            row = await self._fetchrow(
                _ENTERPRISE_SQL + " WHERE e.prefix_key = $1 OR e.uscc = $1 ORDER BY e.id LIMIT 1", ref.upper()
            )
        return Enterprise(*row) if row else None

    async def enterprise_prefixes(self) -> list[str]:
        rows = await self._fetch("SELECT prefix FROM enterprises ORDER BY id")
        return [r[0] for r in rows]

    async def move_enterprise(
        self, enterprise_id: int, promoter_id: int, *, effective_at: int, audit: AuditRecord | None = None
    ) -> None:
        await self._execute(
            "INSERT INTO attributions (enterprise_id, promoter_id, effective_at) VALUES ($1, $2, $3)",
            enterprise_id,
            promoter_id,
            effective_at,
            audit=audit,
        )

    async def set_enterprise_status(self, enterprise_id: int, status: str, *, audit: AuditRecord | None = None) -> None:
        await self._execute("UPDATE enterprises SET status = $1 WHERE id = $2", status, enterprise_id, audit=audit)

    async def attributions(self) -> list[Attribution]:
        rows = await self._fetch(
            "SELECT enterprise_id, promoter_id, effective_at FROM attributions ORDER BY effective_at, seq"
        )
        return [Attribution(*r) for r in rows]

    async def add_gs1_prefix(
        self, enterprise_id: int, company_prefix: str, *, now: int, limit: int
    ) -> tuple[Gs1Prefix, bool]:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> tuple[Gs1Prefix, bool]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", GS1_LOCK)
                rows = await conn.fetch(
                    f"{_GS1_SQL} WHERE g.company_prefix = ANY($1::text[]) "
                    "OR (g.company_prefix > $2 AND g.company_prefix < $3) ORDER BY g.company_prefix",
                    gs1_shorter(company_prefix),
                    company_prefix,
                    company_prefix + ":",
                )
                found = [Gs1Prefix(*r) for r in rows]
                gs1_check_conflicts(found, enterprise_id, company_prefix)
                same = next((p for p in found if p.company_prefix == company_prefix), None)
                if same is not None:
                    return same, False
                held = await conn.fetchval("SELECT count(*) FROM gs1_prefixes WHERE enterprise_id = $1", enterprise_id)
                gs1_check_limit(held, limit)
                prefix = await conn.fetchval(
                    "WITH i AS (INSERT INTO gs1_prefixes (company_prefix, enterprise_id, created_at) "
                    "VALUES ($1, $2, $3)) SELECT prefix FROM enterprises WHERE id = $2",
                    company_prefix,
                    enterprise_id,
                    now,
                )
                attempt.commit_sent = True
            return Gs1Prefix(company_prefix, enterprise_id, prefix, now), True

        return await self._run(run)

    async def list_gs1_prefixes(self, enterprise_id: int | None = None) -> list[Gs1Prefix]:
        if enterprise_id is None:
            rows = await self._fetch(_GS1_SQL + " ORDER BY g.company_prefix")
        else:
            rows = await self._fetch(_GS1_SQL + " WHERE g.enterprise_id = $1 ORDER BY g.company_prefix", enterprise_id)
        return [Gs1Prefix(*r) for r in rows]

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        async def run(conn: asyncpg.Connection, attempt: Attempt) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "DELETE FROM gs1_prefixes WHERE company_prefix = $1 AND enterprise_id = $2",
                    company_prefix,
                    enterprise_id,
                )
                attempt.commit_sent = True
            return status != "DELETE 0"

        return await self._run(run)

    async def find_gs1_prefix(self, candidates: Sequence[str]) -> Gs1Prefix | None:
        if not candidates:
            return None
        row = await self._fetchrow(
            f"{_GS1_SQL} WHERE g.company_prefix = ANY($1::text[]) ORDER BY length(g.company_prefix) DESC LIMIT 1",
            list(candidates),
        )
        return Gs1Prefix(*row) if row else None
