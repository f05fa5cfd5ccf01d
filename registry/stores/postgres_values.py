"""The value index in the PostgreSQL store (registry.value_index): queue, index rows, trigram search.

``handle_values`` holds a row per searchable value (handle id, value number, prefix, type, folded
text) with a B-tree on (type, folded) for exact values and fixed starts, and a ``pg_trgm`` GIN
index on ``folded`` for patterns that start with a wildcard. ``pg_trgm`` ships with PostgreSQL
and is a trusted extension (PostgreSQL 13 and later): the store's owner may create it. Where it
cannot be created the migration goes on without the GIN index, and such searches read the whole
table (the node logs a warning at start).

One process indexes at a time (a transaction-scoped advisory lock); the others skip their turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from registry.stores.base import ValueCondition
from registry.stores.postgres_part import PostgresPart

__all__ = ["INDEXER_LOCK", "QUEUE_ROW", "VALUES_DDL", "PostgresValues"]

log = logging.getLogger(__name__)

INDEXER_LOCK = 0x69646E6F6476  # "idnodv": held while a process takes from the queue
QUEUE_ROW = 2000  # handle ids per row of value_index_queue
ANALYSE_AFTER = 10_000  # handles indexed before the index is tidied (below)

VALUES_DDL = """
        DO $$ BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'idnode: no pg_trgm (%): searches by *part* read the whole value table', SQLERRM;
        END $$;
        CREATE TABLE value_index_queue (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, hids BIGINT[] NOT NULL, prefixes TEXT[] NOT NULL
        );
        INSERT INTO value_index_queue (hids, prefixes)
            SELECT array_agg(id ORDER BY id), array_agg(prefix ORDER BY id)
            FROM (SELECT id, prefix, (row_number() OVER (ORDER BY id) - 1) / 2000 AS g FROM handles) h
            GROUP BY g ORDER BY g;
        CREATE TABLE handle_values (
            hid BIGINT NOT NULL, n INTEGER NOT NULL, prefix TEXT COLLATE "C" NOT NULL,
            type TEXT COLLATE "C" NOT NULL, folded TEXT COLLATE "C" NOT NULL, PRIMARY KEY (hid, n)
        );
        CREATE INDEX handle_values_type ON handle_values (type, folded);
        DO $$ BEGIN
            EXECUTE 'CREATE INDEX handle_values_trgm ON handle_values USING gin (folded gin_trgm_ops)';
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'idnode: no trigram index on handle_values (%)', SQLERRM;
        END $$;
"""


def _term(cond: ValueCondition, args: list[Any], prefixes: Sequence[str] | None) -> str:
    """The SELECT of the (handle id, prefix) pairs meeting one condition."""

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    where = f" AND prefix = ANY({arg(list(prefixes))}::text[])" if prefixes is not None else ""
    if cond.exact is not None:
        return (
            f"SELECT hid, prefix FROM handle_values WHERE type = {arg(cond.type)} AND folded = {arg(cond.exact)}{where}"
        )
    like = f"folded LIKE {arg(cond.like)} AND type = {arg(cond.type)}"
    if not cond.infix and ord(cond.prefix[-1]) < 0x10FFFF:
        # The fixed start as a range of the (type, folded) index: a prepared statement's generic plan
        # cannot take one from a LIKE pattern that arrives as a parameter.
        upper = cond.prefix[:-1] + chr(ord(cond.prefix[-1]) + 1)
        like += f" AND folded >= {arg(cond.prefix)} AND folded < {arg(upper)}"
    return f"SELECT hid, prefix FROM handle_values WHERE {like}{where}"


class PostgresValues(PostgresPart):
    """``registry.stores.base.HandleStore``'s value-index methods."""

    _unanalysed: int  # handles indexed by this process since the index was last tidied

    async def value_index_backlog(self) -> int:
        row = await self._fetchrow("SELECT COALESCE(SUM(cardinality(hids)), 0) FROM value_index_queue")
        return int(row[0]) if row else 0

    async def trigram_index_missing(self) -> bool:
        """True when the store has no trigram index (``pg_trgm`` could not be created)."""
        row = await self._fetchrow("SELECT to_regclass('handle_values_trgm') IS NULL")
        return bool(row and row[0])

    async def index_values(self, limit: int, entries: Callable[[bytes], list[tuple[int, str, str]]]) -> int:
        async def run(conn: asyncpg.Connection, attempt: Any) -> int:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", INDEXER_LOCK):
                    return 0
                # Whole queue rows, the oldest first, until they hold ``limit`` handles (at least one row).
                taken = await conn.fetch(
                    "DELETE FROM value_index_queue WHERE seq IN (SELECT seq FROM (SELECT seq, "
                    "SUM(cardinality(hids)) OVER (ORDER BY seq) - cardinality(hids) AS before "
                    "FROM value_index_queue ORDER BY seq LIMIT $1) q WHERE before < $1) RETURNING hids, prefixes",
                    limit,
                )
                if not taken:
                    return 0
                pairs = sorted({pair for r in taken for pair in zip(r[0], r[1], strict=True)})
                hids = [h for h, _ in pairs]
                await conn.execute("DELETE FROM handle_values WHERE hid = ANY($1::bigint[])", hids)
                records = await conn.fetch(
                    "SELECT h.id, h.prefix, h.record FROM unnest($1::bigint[], $2::text[]) k(id, prefix) "
                    "CROSS JOIN LATERAL (SELECT id, prefix, record FROM handles "
                    'WHERE prefix = (k.prefix COLLATE "C") AND id = k.id LIMIT 1) h',
                    hids,
                    [p for _, p in pairs],
                )
                rows = [
                    (hid, n, prefix, kind, text)
                    for hid, prefix, packed in records
                    for n, kind, text in entries(bytes(packed))
                ]
                if rows:
                    await conn.copy_records_to_table(
                        "handle_values", records=rows, columns=["hid", "n", "prefix", "type", "folded"]
                    )
                attempt.commit_sent = True
            return sum(len(r[0]) for r in taken)

        async with self._stream_gate:  # not while this process streams a batch in (it goes first)
            done = await self._run(run)
        self._unanalysed = getattr(self, "_unanalysed", 0) + done
        if done < limit and self._unanalysed >= ANALYSE_AFTER:
            await self._tidy_index()
        return done

    async def _tidy_index(self) -> None:
        """After a large indexing run: the GIN index's pending list merged (searches read it entry by
        entry) and fresh statistics (else the planner takes the type for selective and reads the
        B-tree of every value), rather than waiting for autovacuum."""
        self._unanalysed = 0

        async def run(conn: asyncpg.Connection, attempt: Any) -> None:
            if await conn.fetchval("SELECT to_regclass('handle_values_trgm') IS NOT NULL"):
                await conn.execute("SELECT gin_clean_pending_list('handle_values_trgm')")
            await conn.execute("ANALYZE handle_values")

        await self._run(run)

    async def search_values(
        self, conditions: Sequence[ValueCondition], prefixes: Sequence[str] | None, limit: int, offset: int
    ) -> list[bytes]:
        if not conditions or (prefixes is not None and not prefixes):
            return []
        args: list[Any] = []
        terms = [_term(cond, args, prefixes) for cond in conditions]
        found = " INTERSECT ".join(terms) if len(terms) > 1 else f"SELECT DISTINCT hid, prefix FROM ({terms[0]}) t"
        args += [limit, offset]
        sql = (
            f"SELECT h.record FROM ({found}) m CROSS JOIN LATERAL (SELECT record FROM handles "
            f"WHERE prefix = m.prefix AND id = m.hid) h ORDER BY m.hid LIMIT ${len(args) - 1} OFFSET ${len(args)}"
        )
        return [bytes(r[0]) for r in await self._fetch(sql, *args)]
