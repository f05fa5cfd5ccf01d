"""Reading identifiers in the PostgreSQL store: one, many, their versions, and listings by prefix.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from registry.stores.base import LIST_BUCKET, ListedHandle, StoredHandle
from registry.stores.postgres_part import PostgresPart

__all__ = ["PostgresHandleReads"]

_LIST = f"""
WITH b AS (
    SELECT bucket, n, SUM(n) OVER (ORDER BY bucket) AS upto FROM list_buckets WHERE prefix = $1 AND n > 0
),
t AS (SELECT COALESCE(SUM(n), 0)::bigint AS total FROM b),
s AS (SELECT bucket, $2::bigint - (upto - n) AS skip FROM b WHERE upto > $2::bigint ORDER BY bucket LIMIT 1)
SELECT t.total, p.handle
FROM t LEFT JOIN (
    SELECT h.id, h.handle FROM s CROSS JOIN LATERAL (
        SELECT id, handle FROM handles
        WHERE prefix = $1 AND id >= s.bucket * {LIST_BUCKET}
        ORDER BY id LIMIT $3 OFFSET s.skip
    ) h
) p ON true
ORDER BY p.id
"""

_COUNT = "SELECT COALESCE(SUM(n), 0)::bigint FROM list_buckets WHERE prefix = $1 AND n > 0"

_FROM = (
    "SELECT id, handle, record FROM handles WHERE prefix = $1 AND id > $2 AND ($3::text IS NULL OR id >= "
    "(SELECT id FROM handles WHERE hkey = $3 AND prefix = $1)) ORDER BY id LIMIT $4"
)

_HANDLE_COLUMNS = "hkey, record, version, enterprise_id, created_at"

_GET = f"SELECT {_HANDLE_COLUMNS} FROM handles WHERE hkey = $1"

_GET_MANY = (
    f"SELECT h.* FROM unnest($1::text[]) k(key) CROSS JOIN LATERAL ("
    f' SELECT {_HANDLE_COLUMNS} FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1) h'
)

_EXISTS_MANY = (
    "SELECT h.* FROM unnest($1::text[]) k(key) CROSS JOIN LATERAL ("
    ' SELECT hkey, version FROM handles WHERE hkey = (k.key COLLATE "C") LIMIT 1) h'
)


class PostgresHandleReads(PostgresPart):
    """``registry.stores.base.HandleStore``'s handle reads and listings."""

    @staticmethod
    def _row(row: asyncpg.Record) -> StoredHandle:
        return StoredHandle(row[0], bytes(row[1]), row[2], row[3], row[4])

    async def get(self, key: str) -> StoredHandle | None:
        row = await self._fetchrow(_GET, key)
        return self._row(row) if row else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, StoredHandle]:
        if not keys:
            return {}
        rows = await self._fetch(_GET_MANY, list(keys))
        return {r[0]: self._row(r) for r in rows}

    async def exists_many(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = await self._fetch(_EXISTS_MANY, list(keys))
        return {r[0]: r[1] for r in rows}

    async def current_version(self) -> int:
        """The committed version watermark (see the module docstring): every write with a version
        <= the value returned is committed; every write not yet visible will get a larger one."""
        row = await self._fetchrow("SELECT version FROM idnode_state")
        return int(row[0]) if row else 0

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        if page_size <= 0:
            row = await self._fetchrow(_COUNT, prefix)
            return (int(row[0]) if row else 0), []
        skip = max(0, page * page_size)  # SQLite treats a negative OFFSET as 0
        rows = await self._fetch(_LIST, prefix, skip, page_size)
        total = int(rows[0][0]) if rows else 0
        return total, [r[1] for r in rows if r[1] is not None]

    async def handles_from(
        self, prefix: str, limit: int, *, start: str | None = None, after: int = -1
    ) -> list[ListedHandle]:
        rows = await self._fetch(_FROM, prefix, after, start, max(0, limit))
        return [ListedHandle(r[0], r[1], bytes(r[2])) for r in rows]

    async def handles_in_range(
        self,
        prefix: str,
        start: str,
        end: str | None,
        limit: int,
        *,
        after: str | None = None,
        before: str | None = None,
    ) -> list[tuple[str, str]]:
        low, op = (after, ">") if after is not None and after >= start else (start, ">=")
        sql = f'SELECT hkey, handle FROM handles WHERE prefix = $1 AND hkey {op} ($2 COLLATE "C")'
        args: list[object] = [prefix, low]
        if end is not None:
            args.append(end)
            sql += f' AND hkey < (${len(args)} COLLATE "C")'
        if before is not None:
            args.append(before)
            sql += f' AND hkey < (${len(args)} COLLATE "C") ORDER BY hkey DESC'
        else:
            sql += " ORDER BY hkey"
        args.append(max(0, limit))
        sql += f" LIMIT ${len(args)}"
        rows = await self._fetch(sql, *args)
        found = [(r[0], r[1]) for r in rows]
        return found[::-1] if before is not None else found
