"""Background jobs in the SQLite store (registry.jobs): the job rows, their files and rejected rows.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (its ``_read``, ``_write`` and
``_write_lock``); the tables are made by its jobs migration (:data:`JOBS_DDL`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple
from typing import Any, TypeVar

from registry.stores.base import AuditRecord, JobRecord, JobReject

__all__ = ["JOBS_DDL", "SQLiteJobs", "insert_audit"]

T = TypeVar("T")

JOBS_DDL = """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL, prefix TEXT NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL,
        fmt TEXT NOT NULL, options TEXT NOT NULL,
        file_sha256 TEXT NOT NULL, file_bytes INTEGER NOT NULL, file_parts INTEGER NOT NULL,
        total INTEGER, processed INTEGER NOT NULL, created INTEGER NOT NULL, replaced INTEGER NOT NULL,
        deleted INTEGER NOT NULL, present INTEGER NOT NULL, absent INTEGER NOT NULL, rejected INTEGER NOT NULL,
        line INTEGER NOT NULL, byte_offset INTEGER NOT NULL, error TEXT,
        created_at INTEGER NOT NULL, started_at INTEGER, updated_at INTEGER NOT NULL, finished_at INTEGER,
        runner TEXT, lease_until INTEGER NOT NULL
    );
    CREATE INDEX jobs_state ON jobs (state, seq);
    CREATE INDEX jobs_prefix ON jobs (prefix, seq);
    CREATE INDEX jobs_owner ON jobs (owner, seq);
    CREATE INDEX jobs_file ON jobs (file_sha256);
    CREATE TABLE job_parts (job_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (job_id, seq));
    CREATE TABLE job_rejects (
        job_id TEXT NOT NULL, line INTEGER NOT NULL, handle TEXT, code INTEGER NOT NULL, message TEXT NOT NULL,
        PRIMARY KEY (job_id, line)
    ) WITHOUT ROWID;
"""

# JobRecord's fields in order, as columns (``offset`` is an SQL word).
_COLUMNS = ", ".join(
    "byte_offset" if name == "offset" else name for name in JobRecord.__dataclass_fields__ if name != "seq"
)
_SELECT = f"SELECT id, seq, {_COLUMNS.replace('id, ', '', 1)} FROM jobs"
_PROGRESS = (
    "total = ?, processed = ?, created = ?, replaced = ?, deleted = ?, present = ?, absent = ?, rejected = ?, "
    "line = ?, byte_offset = ?, updated_at = ?"
)


def _progress(job: JobRecord) -> tuple[Any, ...]:
    return (
        job.total,
        job.processed,
        job.created,
        job.replaced,
        job.deleted,
        job.present,
        job.absent,
        job.rejected,
        job.line,
        job.offset,
        job.updated_at,
    )


def insert_audit(c: sqlite3.Connection, audit: AuditRecord | None) -> None:
    """Store ``audit`` in the caller's transaction (nothing when None)."""
    if audit is not None:
        c.execute(
            "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (audit.at, audit.actor, audit.action, audit.target, audit.source, audit.detail),
        )


def _job(row: tuple[Any, ...] | None) -> JobRecord | None:
    return JobRecord(*row) if row else None


class SQLiteJobs:
    """Job rows, parts and rejects (``registry.stores.base.HandleStore``'s job methods)."""

    # Provided by SQLiteStore.
    _read: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _write_lock: asyncio.Lock

    async def _writing(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._write_lock:
            return await self._write(fn)

    async def add_job_part(self, job_id: str, seq: int, data: bytes) -> None:
        await self._writing(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO job_parts (job_id, seq, data) VALUES (?, ?, ?)", (job_id, seq, data)
            )
        )

    async def job_part(self, job_id: str, seq: int) -> bytes | None:
        row = await self._read(
            lambda c: c.execute("SELECT data FROM job_parts WHERE job_id = ? AND seq = ?", (job_id, seq)).fetchone()
        )
        return bytes(row[0]) if row else None

    async def add_job(self, job: JobRecord, *, audit: AuditRecord) -> JobRecord:
        values = astuple(job)
        fields = (values[0], *values[2:])  # without seq

        def run(c: sqlite3.Connection) -> JobRecord:
            marks = ", ".join("?" * len(fields))
            cur = c.execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES ({marks})", fields)
            insert_audit(c, audit)
            return JobRecord(job.id, int(cur.lastrowid or 0), *values[2:])

        return await self._writing(run)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return _job(await self._read(lambda c: c.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()))

    async def list_jobs(
        self, *, prefix: str | None, owner: str | None, limit: int, before_seq: int | None = None
    ) -> list[JobRecord]:
        terms: list[str] = ["1 = 1"]
        args: list[Any] = []
        for column, value in (("prefix", prefix), ("owner", owner)):
            if value is not None:
                terms.append(f"{column} = ?")
                args.append(value)
        if before_seq is not None:
            terms.append("seq < ?")
            args.append(before_seq)
        sql = f"{_SELECT} WHERE {' AND '.join(terms)} ORDER BY seq DESC LIMIT ?"
        rows = await self._read(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [JobRecord(*r) for r in rows]

    async def find_job(self, kind: str, prefix: str, file_sha256: str, options: str) -> JobRecord | None:
        sql = f"{_SELECT} WHERE file_sha256 = ? AND kind = ? AND prefix = ? AND options = ? ORDER BY seq DESC LIMIT 1"
        return _job(await self._read(lambda c: c.execute(sql, (file_sha256, kind, prefix, options)).fetchone()))

    async def unfinished_jobs(self, prefix: str) -> int:
        sql = "SELECT COUNT(*) FROM jobs WHERE prefix = ? AND state IN ('queued', 'running')"
        return int((await self._read(lambda c: c.execute(sql, (prefix,)).fetchone()))[0])

    async def job_counts(self) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM jobs GROUP BY state"
        return {state: int(n) for state, n in await self._read(lambda c: c.execute(sql).fetchall())}

    async def requeue_job(self, job_id: str, *, parts: int, now: int, audit: AuditRecord) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE jobs SET state = 'queued', error = NULL, finished_at = NULL, file_parts = ?, updated_at = ?, "
                "runner = NULL, lease_until = 0 WHERE id = ? AND state = 'failed'",
                (parts, now, job_id),
            )
            if cur.rowcount:
                insert_audit(c, audit)
            return bool(cur.rowcount)

        return await self._writing(run)

    async def claim_job(self, runner: str, *, now: int, lease_until: int) -> JobRecord | None:
        def run(c: sqlite3.Connection) -> JobRecord | None:
            row = c.execute(
                "SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < ?) "
                "ORDER BY seq LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE jobs SET state = 'running', runner = ?, lease_until = ?, updated_at = ?, "
                "started_at = COALESCE(started_at, ?) WHERE id = ?",
                (runner, lease_until, now, now, row[0]),
            )
            return _job(c.execute(f"{_SELECT} WHERE id = ?", (row[0],)).fetchone())

        return await self._writing(run)

    async def renew_job(self, job_id: str, runner: str, *, lease_until: int) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND runner = ? AND state = 'running'",
                (lease_until, job_id, runner),
            )
            return bool(cur.rowcount)

        return await self._writing(run)

    async def save_job_progress(self, job: JobRecord, rejects: Sequence[JobReject], *, lease_until: int) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                f"UPDATE jobs SET {_PROGRESS}, lease_until = ? WHERE id = ? AND runner = ? AND state = 'running'",
                (*_progress(job), lease_until, job.id, job.runner),
            )
            if not cur.rowcount:
                return False
            c.executemany(
                "INSERT OR REPLACE INTO job_rejects (job_id, line, handle, code, message) VALUES (?, ?, ?, ?, ?)",
                [(job.id, r.line, r.handle, r.code, r.message) for r in rejects],
            )
            return True

        return await self._writing(run)

    async def finish_job(self, job: JobRecord, *, audit: AuditRecord) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                f"UPDATE jobs SET {_PROGRESS}, state = ?, error = ?, finished_at = ?, runner = NULL, lease_until = 0 "
                "WHERE id = ? AND runner = ? AND state = 'running'",
                (*_progress(job), job.state, job.error, job.finished_at, job.id, job.runner),
            )
            if not cur.rowcount:
                return False
            c.execute("DELETE FROM job_parts WHERE job_id = ?", (job.id,))
            insert_audit(c, audit)
            return True

        return await self._writing(run)

    async def release_job(self, job_id: str, runner: str, *, now: int) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE jobs SET state = 'queued', runner = NULL, lease_until = 0, updated_at = ? "
                "WHERE id = ? AND runner = ? AND state = 'running'",
                (now, job_id, runner),
            )
            return bool(cur.rowcount)

        return await self._writing(run)

    async def job_rejects(self, job_id: str, *, after_line: int, limit: int) -> list[JobReject]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT line, handle, code, message FROM job_rejects WHERE job_id = ? AND line > ? "
                "ORDER BY line LIMIT ?",
                (job_id, after_line, limit),
            ).fetchall()
        )
        return [JobReject(*r) for r in rows]
