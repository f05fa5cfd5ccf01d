"""Registration counters and resolution statistics in the SQLite store.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from registry.stores import rollup
from registry.stores.base import RESOLUTION_BATCH_DAYS, ResolutionCount
from registry.stores.sqlite_part import SQLitePart

__all__ = ["SQLiteStatistics"]


class SQLiteStatistics(SQLitePart):
    """``registry.stores.base.HandleStore``'s registration and resolution counts."""

    async def registration_counts(self, from_day: int, to_day: int, before_hour: int) -> Mapping[int, int]:
        how = rollup.plan(from_day, to_day, before_hour)

        def run(c: sqlite3.Connection) -> list[tuple[int, int]]:
            rows: list[tuple[int, int]] = []
            if how.full_months is not None:
                first, end = how.full_months
                rows += c.execute(
                    "SELECT enterprise_id, SUM(delta) FROM registration_months "
                    "WHERE month >= ? AND month < ? AND change_month < ? GROUP BY enterprise_id",
                    (first, end, how.before_change_month),
                ).fetchall()
                if how.partial_hours is not None:
                    rows += c.execute(
                        # The planner, seeing a day range that covers the table, would scan it all.
                        "SELECT enterprise_id, SUM(delta) FROM registration_counts INDEXED BY registration_counts_hour "
                        "WHERE hour >= ? AND hour < ? AND day >= ? AND day < ? GROUP BY enterprise_id",
                        (*how.partial_hours, first * 100 + 1, end * 100 + 1),
                    ).fetchall()
            for a, b in how.edge_days:
                rows += c.execute(
                    "SELECT enterprise_id, SUM(delta) FROM registration_counts INDEXED BY registration_counts_day "
                    "WHERE day >= ? AND day < ? AND hour < ? GROUP BY enterprise_id",
                    (a, b, before_hour),
                ).fetchall()
            return rows

        out: dict[int, int] = {}
        for eid, n in await self._read(run):
            out[eid] = out.get(eid, 0) + int(n)
        return out

    async def add_resolution_counts(self, batch: str, counts: Sequence[ResolutionCount], *, now: int) -> bool:
        rows = [(c.prefix, c.day, c.interface, c.found, c.not_found) for c in counts]

        def run(c: sqlite3.Connection) -> bool:
            added = c.execute(
                "INSERT INTO resolution_batches (batch, added_at) VALUES (?, ?) ON CONFLICT (batch) DO NOTHING",
                (batch, now),
            ).rowcount
            if not added:
                return False
            c.executemany(
                "INSERT INTO resolution_counts (prefix, day, interface, found, not_found) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (prefix, day, interface) DO UPDATE SET found = found + excluded.found, "
                "not_found = not_found + excluded.not_found",
                rows,
            )
            c.execute("DELETE FROM resolution_batches WHERE added_at < ?", (now - RESOLUTION_BATCH_DAYS * 86400,))
            return True

        async with self._write_lock:
            return await self._write(run)

    async def resolution_counts(self, from_day: int, to_day: int, prefix: str | None) -> list[ResolutionCount]:
        if prefix is None:
            sql = (
                "SELECT '', day, interface, SUM(found), SUM(not_found) FROM resolution_counts "
                "WHERE day >= ? AND day < ? GROUP BY day, interface ORDER BY day, interface"
            )
            args: tuple = (from_day, to_day)
        else:
            sql = (
                "SELECT prefix, day, interface, found, not_found FROM resolution_counts "
                "WHERE prefix = ? AND day >= ? AND day < ? ORDER BY day, interface"
            )
            args = (prefix, from_day, to_day)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [ResolutionCount(p, d, i, int(f), int(n)) for p, d, i, f, n in rows]

    async def resolution_prefix_totals(self, from_day: int, to_day: int) -> list[ResolutionCount]:
        sql = (
            "SELECT prefix, interface, SUM(found), SUM(not_found) FROM resolution_counts "
            "WHERE day >= ? AND day < ? GROUP BY prefix, interface ORDER BY prefix, interface"
        )
        rows = await self._read(lambda c: c.execute(sql, (from_day, to_day)).fetchall())
        return [ResolutionCount(p, 0, i, int(f), int(n)) for p, i, f, n in rows]

    async def registrations_by_day(self, enterprise_id: int, from_day: int, to_day: int) -> Mapping[int, int]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT day, SUM(delta) FROM registration_counts WHERE enterprise_id = ? AND day >= ? AND day < ? "
                "GROUP BY day",
                (enterprise_id, from_day, to_day),
            ).fetchall()
        )
        return {int(day): int(n) for day, n in rows}
