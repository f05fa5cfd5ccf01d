"""Reading identifiers in the SQLite store: one, many, their versions, and listings by prefix.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (see :mod:`registry.stores.sqlite_part`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from registry.packing import unpack_record
from registry.stores.base import LIST_BUCKET, ListedHandle, StoredHandle
from registry.stores.sqlite_handle_writes import existing_versions
from registry.stores.sqlite_part import SQLitePart

__all__ = ["SQLiteHandleReads"]


def _handle_of(packed: bytes) -> str:
    return unpack_record(packed).handle


class SQLiteHandleReads(SQLitePart):
    """``registry.stores.base.HandleStore``'s handle reads and listings."""

    @staticmethod
    def _row(row: tuple) -> StoredHandle:
        key, record, version, enterprise_id, created_at = row
        return StoredHandle(key, record, version, enterprise_id, created_at)

    async def get(self, key: str) -> StoredHandle | None:
        def run(c: sqlite3.Connection) -> StoredHandle | None:
            row = c.execute(
                "SELECT hkey, record, version, enterprise_id, created_at FROM handles WHERE hkey = ?", (key,)
            ).fetchone()
            return self._row(row) if row else None

        return await self._read(run)

    async def get_many(self, keys: Sequence[str]) -> dict[str, StoredHandle]:
        def run(c: sqlite3.Connection) -> dict[str, StoredHandle]:
            out: dict[str, StoredHandle] = {}
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for row in c.execute(
                    f"SELECT hkey, record, version, enterprise_id, created_at FROM handles WHERE hkey IN ({marks})",
                    chunk,
                ):
                    out[row[0]] = self._row(row)
            return out

        return await self._read(run)

    async def exists_many(self, keys: Sequence[str]) -> dict[str, int]:
        def run(c: sqlite3.Connection) -> dict[str, int]:
            return existing_versions(c, keys)

        return await self._read(run)

    async def current_version(self) -> int:
        return await self._read(
            lambda c: int(c.execute("SELECT value FROM meta WHERE key = 'write_seq'").fetchone()[0])
        )

    async def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        def run(c: sqlite3.Connection) -> tuple[int, list[str]]:
            buckets = c.execute(
                "SELECT bucket, n FROM list_buckets WHERE prefix = ? AND n > 0 ORDER BY bucket", (prefix,)
            ).fetchall()
            total = sum(n for _, n in buckets)
            if page_size <= 0:
                return total, []
            skip = page * page_size
            if skip >= total:
                return total, []
            start_bucket = None
            for bucket, n in buckets:
                if skip < n:
                    start_bucket = bucket
                    break
                skip -= n
            rows = c.execute(
                "SELECT record FROM handles WHERE prefix = ? AND id >= ? ORDER BY id LIMIT ? OFFSET ?",
                (prefix, start_bucket * LIST_BUCKET, page_size, skip),
            ).fetchall()
            return total, [_handle_of(r[0]) for r in rows]

        return await self._read(run)

    async def handles_from(
        self, prefix: str, limit: int, *, start: str | None = None, after: int = -1
    ) -> list[ListedHandle]:
        def run(c: sqlite3.Connection) -> list[ListedHandle]:
            rows = c.execute(
                "SELECT id, record FROM handles WHERE prefix = ? AND id > ? AND (? IS NULL OR id >= "
                "(SELECT id FROM handles WHERE hkey = ? AND prefix = ?)) ORDER BY id LIMIT ?",
                (prefix, after, start, start, prefix, max(0, limit)),
            ).fetchall()
            return [ListedHandle(r[0], _handle_of(r[1]), r[1]) for r in rows]

        return await self._read(run)

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
        sql = f"SELECT hkey, record FROM handles WHERE prefix = ? AND hkey {op} ?"
        args: list[object] = [prefix, low]
        if end is not None:
            sql += " AND hkey < ?"
            args.append(end)
        if before is not None:
            sql += " AND hkey < ? ORDER BY hkey DESC LIMIT ?"
            args += [before, max(0, limit)]
        else:
            sql += " ORDER BY hkey LIMIT ?"
            args.append(max(0, limit))
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        found = [(r[0], _handle_of(r[1])) for r in rows]
        return found[::-1] if before is not None else found
