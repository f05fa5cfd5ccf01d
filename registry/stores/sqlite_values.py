"""The value index in the SQLite store (registry.value_index): queue, index rows, FTS5 trigram search.

``handle_values`` holds a row per searchable value, its id ``handle id << 16 | value number`` (so a
handle's rows are one id range, and their order is the listing order); ``handle_values_fts`` is an
FTS5 table over its ``folded`` column with the ``trigram`` tokenizer, which serves GLOB patterns
with a run of three characters from the index. Rows are written straight into the FTS table
(external content): FTS5 triggers on ``handle_values`` cost four times as much per row (measured).
A row of ``value_index_queue`` holds the ids of up to :data:`QUEUE_ROW` written handles, as decimal
text separated by commas (a row per handle cost a batch's store write a sixth more).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from registry.stores.base import ValueCondition
from registry.stores.sqlite_part import SQLitePart

__all__ = ["QUEUE_ROW", "VALUES_DDL", "SQLiteValues", "queue_for_index"]

QUEUE_ROW = 2000  # handle ids per row of value_index_queue

VALUES_DDL = """
    CREATE TABLE value_index_queue (seq INTEGER PRIMARY KEY, hids TEXT NOT NULL);
    INSERT INTO value_index_queue (hids)
        SELECT group_concat(id, ',') FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 2000 AS g FROM handles)
        GROUP BY g ORDER BY g;
    CREATE TABLE handle_values (id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, type TEXT NOT NULL, folded TEXT NOT NULL);
    CREATE INDEX handle_values_type ON handle_values (type, folded);
    CREATE VIRTUAL TABLE handle_values_fts USING fts5(
        folded, content='handle_values', content_rowid='id', tokenize='trigram case_sensitive 1'
    );
"""
SHIFT = 16  # handle_values.id = handle id << SHIFT | value number


def queue_for_index(c: sqlite3.Connection, hids: Sequence[int]) -> None:
    """In the write's transaction: the handles it wrote (created, replaced, deleted) wait to be indexed."""
    c.executemany(
        "INSERT INTO value_index_queue (hids) VALUES (?)",
        [(",".join(map(str, hids[i : i + QUEUE_ROW])),) for i in range(0, len(hids), QUEUE_ROW)],
    )


def _term(cond: ValueCondition, args: list[Any], prefixes: Sequence[str] | None) -> str:
    """The SELECT of the handle ids meeting one condition."""
    where = ""
    if prefixes is not None:
        where = f" AND v.prefix IN ({','.join('?' * len(prefixes))})"
    if cond.exact is not None:
        args += [cond.type, cond.exact, *(prefixes or ())]
        return f"SELECT v.id >> {SHIFT} AS hid FROM handle_values v WHERE v.type = ? AND v.folded = ?{where}"
    if not cond.infix:  # a fixed start: the (type, folded) index, GLOB's range
        args += [cond.type, cond.glob, *(prefixes or ())]
        return f"SELECT v.id >> {SHIFT} AS hid FROM handle_values v WHERE v.type = ? AND v.folded GLOB ?{where}"
    args += [cond.glob, cond.type, *(prefixes or ())]
    return (
        f"SELECT v.id >> {SHIFT} AS hid FROM handle_values_fts f CROSS JOIN handle_values v ON v.id = f.rowid "
        f"WHERE f.folded GLOB ? AND v.type = ?{where}"
    )


class SQLiteValues(SQLitePart):
    """``registry.stores.base.HandleStore``'s value-index methods."""

    async def value_index_backlog(self) -> int:
        sql = "SELECT COALESCE(SUM(length(hids) - length(replace(hids, ',', '')) + 1), 0) FROM value_index_queue"
        return int((await self._read(lambda c: c.execute(sql).fetchone()))[0])

    async def index_values(self, limit: int, entries: Callable[[bytes], list[tuple[int, str, str]]]) -> int:
        def run(c: sqlite3.Connection) -> int:
            # Whole queue rows, the oldest first, until they hold ``limit`` handles (at least one row).
            taken: list[int] = []
            last = 0
            while len(taken) < limit:
                page = c.execute(
                    "SELECT seq, hids FROM value_index_queue WHERE seq > ? ORDER BY seq LIMIT 64", (last,)
                ).fetchall()
                for seq, text in page:
                    if taken and len(taken) >= limit:
                        break
                    taken += map(int, text.split(","))
                    last = seq
                if len(page) < 64:
                    break
            if not taken:
                return 0
            hids = sorted(set(taken))
            spans = [(h << SHIFT, (h + 1) << SHIFT) for h in hids]
            c.executemany(
                "INSERT INTO handle_values_fts (handle_values_fts, rowid, folded) "
                "SELECT 'delete', id, folded FROM handle_values WHERE id >= ? AND id < ?",
                spans,
            )
            c.executemany("DELETE FROM handle_values WHERE id >= ? AND id < ?", spans)
            rows: list[tuple[int, str, str, str]] = []
            for start in range(0, len(hids), 500):
                chunk = hids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for hid, prefix, packed in c.execute(
                    f"SELECT id, prefix, record FROM handles WHERE id IN ({marks})", chunk
                ):
                    rows += [((hid << SHIFT) | n, prefix, kind, text) for n, kind, text in entries(packed)]
            c.executemany("INSERT INTO handle_values (id, prefix, type, folded) VALUES (?, ?, ?, ?)", rows)
            c.executemany("INSERT INTO handle_values_fts (rowid, folded) VALUES (?, ?)", [(r[0], r[3]) for r in rows])
            c.execute("DELETE FROM value_index_queue WHERE seq <= ?", (last,))
            return len(taken)

        async with self._write_lock:
            return await self._write(run)

    async def search_values(
        self, conditions: Sequence[ValueCondition], prefixes: Sequence[str] | None, limit: int, offset: int
    ) -> list[bytes]:
        if not conditions or (prefixes is not None and not prefixes):
            return []
        args: list[Any] = []
        terms = [_term(cond, args, prefixes) for cond in conditions]
        found = " INTERSECT ".join(terms) if len(terms) > 1 else f"SELECT DISTINCT hid FROM ({terms[0]})"
        sql = f"SELECT h.record FROM ({found}) m JOIN handles h ON h.id = m.hid ORDER BY m.hid LIMIT ? OFFSET ?"
        rows = await self._read(lambda c: c.execute(sql, (*args, limit, offset)).fetchall())
        return [bytes(r[0]) for r in rows]
