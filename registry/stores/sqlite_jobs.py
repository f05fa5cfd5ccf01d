"""Background jobs in the SQLite store (registry.jobs): the job rows, their files and rejected rows.

A mixin of :class:`registry.stores.sqlite.SQLiteStore` (its ``_read``, ``_write`` and
``_write_lock``); the tables are made by its jobs migration (:data:`JOBS_DDL`), the statements
shared with PostgreSQL are in :mod:`registry.stores.job_queries`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import astuple
from typing import TypeVar

from registry.stores import job_queries as q
from registry.stores.base import AuditRecord, JobRecord, JobReject
from registry.stores.sqlite_audit import insert_audit
from registry.stores.sqlite_part import SQLitePart

__all__ = ["JOBS_DDL", "SQLiteJobs"]

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


class SQLiteJobs(SQLitePart):
    """Job rows, parts and rejects (``registry.stores.base.HandleStore``'s job methods)."""

    async def add_job_part(self, job_id: str, seq: int, data: bytes) -> None:
        await self._writing(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO job_parts (job_id, seq, data) VALUES (?, ?, ?)", (job_id, seq, data)
            )
        )

    async def job_part(self, job_id: str, seq: int) -> bytes | None:
        row = await self._read(lambda c: c.execute(q.PART, (job_id, seq)).fetchone())
        return bytes(row[0]) if row else None

    async def add_job(self, job: JobRecord, *, audit: AuditRecord) -> JobRecord:
        values = astuple(job)

        def run(c: sqlite3.Connection) -> JobRecord:
            cur = c.execute(q.INSERT, (values[0], *values[2:]))  # without seq
            insert_audit(c, audit)
            return JobRecord(job.id, int(cur.lastrowid or 0), *values[2:])

        return await self._writing(run)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return q.job_of(await self._read(lambda c: c.execute(q.GET, (job_id,)).fetchone()))

    async def list_jobs(
        self, *, prefix: str | None, owner: str | None, limit: int, before_seq: int | None = None
    ) -> list[JobRecord]:
        sql, args = q.listing(prefix, owner, limit, before_seq)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [JobRecord(*r) for r in rows]

    async def find_job(self, kind: str, prefix: str, file_sha256: str, options: str) -> JobRecord | None:
        return q.job_of(await self._read(lambda c: c.execute(q.FIND, (file_sha256, kind, prefix, options)).fetchone()))

    async def unfinished_jobs(self, prefix: str) -> int:
        return int((await self._read(lambda c: c.execute(q.UNFINISHED, (prefix,)).fetchone()))[0])

    async def job_counts(self) -> dict[str, int]:
        return {state: int(n) for state, n in await self._read(lambda c: c.execute(q.COUNTS).fetchall())}

    async def job_counts_by_kind(self) -> dict[tuple[str, str], int]:
        rows = await self._read(lambda c: c.execute(q.COUNTS_BY_KIND).fetchall())
        return {(kind, state): int(n) for kind, state, n in rows}

    async def requeue_job(self, job_id: str, *, parts: int, now: int, audit: AuditRecord) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(q.REQUEUE, (parts, now, job_id))
            if cur.rowcount:
                insert_audit(c, audit)
            return bool(cur.rowcount)

        return await self._writing(run)

    async def claim_job(self, runner: str, *, now: int, lease_until: int) -> JobRecord | None:
        def run(c: sqlite3.Connection) -> JobRecord | None:
            row = c.execute(q.CLAIMABLE, (now,)).fetchone()
            if row is None:
                return None
            c.execute(q.CLAIM, (runner, lease_until, now, now, row[0]))
            return q.job_of(c.execute(q.GET, (row[0],)).fetchone())

        return await self._writing(run)

    async def renew_job(self, job_id: str, runner: str, *, lease_until: int) -> bool:
        return await self._writing(lambda c: bool(c.execute(q.RENEW, (lease_until, job_id, runner)).rowcount))

    async def save_job_progress(self, job: JobRecord, rejects: Sequence[JobReject], *, lease_until: int) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(q.SAVE_PROGRESS, (*q.progress(job), lease_until, job.id, job.runner))
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
            cur = c.execute(q.FINISH, (*q.progress(job), job.state, job.error, job.finished_at, job.id, job.runner))
            if not cur.rowcount:
                return False
            c.execute(q.DROP_PARTS, (job.id,))
            insert_audit(c, audit)
            return True

        return await self._writing(run)

    async def release_job(self, job_id: str, runner: str, *, now: int) -> bool:
        return await self._writing(lambda c: bool(c.execute(q.RELEASE, (now, job_id, runner)).rowcount))

    async def job_rejects(self, job_id: str, *, after_line: int, limit: int) -> list[JobReject]:
        rows = await self._read(lambda c: c.execute(q.REJECTS, (job_id, after_line, limit)).fetchall())
        return [JobReject(*r) for r in rows]
