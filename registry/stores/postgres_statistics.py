"""Registration counters and resolution statistics in the PostgreSQL store.

A mixin of :class:`registry.stores.postgres.PostgresStore` (see :mod:`registry.stores.postgres_part`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from registry.stores import rollup
from registry.stores.base import RESOLUTION_BATCH_DAYS, ResolutionCount
from registry.stores.postgres_part import Attempt, PostgresPart

__all__ = ["PostgresStatistics"]

_ADD_RESOLUTIONS = (
    "INSERT INTO resolution_counts (prefix, day, interface, found, not_found) "
    "SELECT * FROM unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::bigint[]) "
    "ORDER BY 1, 2, 3 "
    "ON CONFLICT (prefix, day, interface) DO UPDATE SET found = resolution_counts.found + excluded.found, "
    "not_found = resolution_counts.not_found + excluded.not_found"
)


class PostgresStatistics(PostgresPart):
    """``registry.stores.base.HandleStore``'s registration and resolution counts."""

    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        how = rollup.plan(from_day, to_day, before_hour)
        parts: list[str] = []
        args: list[int] = []

        def arg(value: int) -> str:
            args.append(value)
            return f"${len(args)}::bigint"

        if how.full_months is not None:
            first, end = how.full_months
            parts.append(
                "SELECT enterprise_id, SUM(delta) AS n FROM registration_months WHERE month >= "
                f"{arg(first)} AND month < {arg(end)} AND change_month < {arg(how.before_change_month)} "
                "GROUP BY enterprise_id"
            )
            if how.partial_hours is not None:
                a, b = how.partial_hours
                parts.append(
                    f"SELECT enterprise_id, SUM(delta) AS n FROM registration_counts WHERE hour >= {arg(a)} "
                    f"AND hour < {arg(b)} AND day >= {arg(first * 100 + 1)} AND day < {arg(end * 100 + 1)} "
                    "GROUP BY enterprise_id"
                )
        for a, b in how.edge_days:
            parts.append(
                f"SELECT enterprise_id, SUM(delta) AS n FROM registration_counts WHERE day >= {arg(a)} "
                f"AND day < {arg(b)} AND hour < {arg(before_hour)} GROUP BY enterprise_id"
            )
        if not parts:
            return {}
        sql = f"SELECT enterprise_id, SUM(n) FROM ({' UNION ALL '.join(parts)}) p GROUP BY enterprise_id"
        rows = await self._fetch(sql, *args)
        return {r[0]: int(r[1]) for r in rows}

    async def add_resolution_counts(self, batch: str, counts: Sequence[ResolutionCount], *, now: int) -> bool:
        # Rows in key order: workers flushing together then lock shared rows in the same order (no deadlock).
        rows = sorted((c.prefix, c.day, c.interface, c.found, c.not_found) for c in counts)
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[], [], [], [], []]

        async def run(conn: asyncpg.Connection, attempt: Attempt) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "INSERT INTO resolution_batches (batch, added_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    batch,
                    now,
                )
                if status.endswith(" 0"):
                    return False
                await conn.execute(_ADD_RESOLUTIONS, *columns)
                await conn.execute(
                    "DELETE FROM resolution_batches WHERE added_at < $1", now - RESOLUTION_BATCH_DAYS * 86400
                )
                attempt.commit_sent = True
            return True

        return await self._run(run)

    async def resolution_counts(self, from_day: int, to_day: int, prefix: str | None) -> list[ResolutionCount]:
        if prefix is None:
            rows = await self._fetch(
                "SELECT '', day, interface, SUM(found), SUM(not_found) FROM resolution_counts "
                "WHERE day >= $1 AND day < $2 GROUP BY day, interface ORDER BY day, interface",
                from_day,
                to_day,
            )
        else:
            rows = await self._fetch(
                "SELECT prefix, day, interface, found, not_found FROM resolution_counts "
                "WHERE prefix = $1 AND day >= $2 AND day < $3 ORDER BY day, interface",
                prefix,
                from_day,
                to_day,
            )
        return [ResolutionCount(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    async def resolution_prefix_totals(self, from_day: int, to_day: int) -> list[ResolutionCount]:
        rows = await self._fetch(
            "SELECT prefix, interface, SUM(found), SUM(not_found) FROM resolution_counts "
            "WHERE day >= $1 AND day < $2 GROUP BY prefix, interface ORDER BY prefix, interface",
            from_day,
            to_day,
        )
        return [ResolutionCount(r[0], 0, r[1], int(r[2]), int(r[3])) for r in rows]

    async def registrations_by_day(self, enterprise_id: int, from_day: int, to_day: int) -> Mapping[int, int]:
        rows = await self._fetch(
            "SELECT day, SUM(delta) FROM registration_counts WHERE enterprise_id = $1 AND day >= $2 AND day < $3 "
            "GROUP BY day",
            enterprise_id,
            from_day,
            to_day,
        )
        return {int(r[0]): int(r[1]) for r in rows}
