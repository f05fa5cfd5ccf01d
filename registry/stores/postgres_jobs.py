"""Background jobs in the PostgreSQL store (registry.jobs): the job rows, their files and rejected rows.

A mixin of :class:`registry.stores.postgres.PostgresStore` (its ``_run``, ``_fetch`` and
``_fetchrow``); the tables are made by its jobs migration (:data:`JOBS_DDL`). Claims take the
oldest claimable job with ``FOR UPDATE SKIP LOCKED``, so workers of several nodes never take the
same job at once. The statements shared with SQLite are in :mod:`registry.stores.job_queries`
(numbered with :func:`~registry.stores.job_queries.numbered`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple
from typing import Any

import asyncpg

from registry.stores import job_queries as q
from registry.stores.base import AuditRecord, JobRecord, JobReject
from registry.stores.job_queries import numbered as n
from registry.stores.postgres_audit import insert_audit
from registry.stores.postgres_part import PostgresPart

__all__ = ["JOBS_DDL", "PostgresJobs"]

JOBS_DDL = """
        CREATE TABLE jobs (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT COLLATE "C" NOT NULL UNIQUE,
            kind TEXT NOT NULL, prefix TEXT COLLATE "C" NOT NULL, owner TEXT COLLATE "C" NOT NULL,
            state TEXT COLLATE "C" NOT NULL, fmt TEXT NOT NULL, options TEXT NOT NULL,
            file_sha256 TEXT COLLATE "C" NOT NULL, file_bytes BIGINT NOT NULL, file_parts INTEGER NOT NULL,
            total BIGINT, processed BIGINT NOT NULL, created BIGINT NOT NULL, replaced BIGINT NOT NULL,
            deleted BIGINT NOT NULL, present BIGINT NOT NULL, absent BIGINT NOT NULL, rejected BIGINT NOT NULL,
            line BIGINT NOT NULL, byte_offset BIGINT NOT NULL, error TEXT,
            created_at BIGINT NOT NULL, started_at BIGINT, updated_at BIGINT NOT NULL, finished_at BIGINT,
            runner TEXT, lease_until BIGINT NOT NULL
        );
        CREATE INDEX jobs_state ON jobs (state, seq);
        CREATE INDEX jobs_prefix ON jobs (prefix, seq);
        CREATE INDEX jobs_owner ON jobs (owner, seq);
        CREATE INDEX jobs_file ON jobs (file_sha256);
        CREATE TABLE job_parts (
            job_id TEXT COLLATE "C" NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (job_id, seq)
        );
        CREATE TABLE job_rejects (
            job_id TEXT COLLATE "C" NOT NULL, line BIGINT NOT NULL, handle TEXT, code INTEGER NOT NULL,
            message TEXT NOT NULL, PRIMARY KEY (job_id, line)
        );
"""


class PostgresJobs(PostgresPart):
    """Job rows, parts and rejects (``registry.stores.base.HandleStore``'s job methods)."""

    async def _in_transaction(self, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        async def run(conn: asyncpg.Connection, attempt: Any) -> Any:
            async with conn.transaction():
                result = await work(conn)
                attempt.commit_sent = True
            return result

        return await self._run(run)

    async def _changed(self, sql: str, *args: Any) -> bool:
        """Run one UPDATE in its own transaction: True when it changed a row."""
        status = await self._in_transaction(lambda conn: conn.execute(n(sql), *args))
        return not status.endswith(" 0")

    async def add_job_part(self, job_id: str, seq: int, data: bytes) -> None:
        await self._in_transaction(
            lambda conn: conn.execute(
                "INSERT INTO job_parts (job_id, seq, data) VALUES ($1, $2, $3) "
                "ON CONFLICT (job_id, seq) DO UPDATE SET data = excluded.data",
                job_id,
                seq,
                data,
            )
        )

    async def job_part(self, job_id: str, seq: int) -> bytes | None:
        row = await self._fetchrow(n(q.PART), job_id, seq)
        return bytes(row[0]) if row else None

    async def add_job(self, job: JobRecord, *, audit: AuditRecord) -> JobRecord:
        values = astuple(job)

        async def work(conn: asyncpg.Connection) -> JobRecord:
            seq = await conn.fetchval(n(q.INSERT) + " RETURNING seq", values[0], *values[2:])  # without seq
            await insert_audit(conn, audit)
            return JobRecord(job.id, int(seq), *values[2:])

        return await self._in_transaction(work)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return q.job_of(await self._fetchrow(n(q.GET), job_id))

    async def list_jobs(
        self, *, prefix: str | None, owner: str | None, limit: int, before_seq: int | None = None
    ) -> list[JobRecord]:
        sql, args = q.listing(prefix, owner, limit, before_seq)
        return [JobRecord(*r) for r in await self._fetch(n(sql), *args)]

    async def find_job(self, kind: str, prefix: str, file_sha256: str, options: str) -> JobRecord | None:
        return q.job_of(await self._fetchrow(n(q.FIND), file_sha256, kind, prefix, options))

    async def unfinished_jobs(self, prefix: str) -> int:
        row = await self._fetchrow(n(q.UNFINISHED), prefix)
        return int(row[0]) if row else 0

    async def job_counts(self) -> dict[str, int]:
        rows = await self._fetch(q.COUNTS)
        return {state: int(n) for state, n in rows}

    async def job_counts_by_kind(self) -> dict[tuple[str, str], int]:
        rows = await self._fetch(q.COUNTS_BY_KIND)
        return {(kind, state): int(n) for kind, state, n in rows}

    async def requeue_job(self, job_id: str, *, parts: int, now: int, audit: AuditRecord) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(n(q.REQUEUE), parts, now, job_id)
            if status.endswith(" 0"):
                return False
            await insert_audit(conn, audit)
            return True

        return await self._in_transaction(work)

    async def claim_job(self, runner: str, *, now: int, lease_until: int) -> JobRecord | None:
        async def work(conn: asyncpg.Connection) -> JobRecord | None:
            row = await conn.fetchrow(n(q.CLAIMABLE) + " FOR UPDATE SKIP LOCKED", now)
            if row is None:
                return None
            await conn.execute(n(q.CLAIM), runner, lease_until, now, now, row[0])
            return q.job_of(await conn.fetchrow(n(q.GET), row[0]))

        return await self._in_transaction(work)

    async def renew_job(self, job_id: str, runner: str, *, lease_until: int) -> bool:
        return await self._changed(q.RENEW, lease_until, job_id, runner)

    async def save_job_progress(self, job: JobRecord, rejects: Sequence[JobReject], *, lease_until: int) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(n(q.SAVE_PROGRESS), *q.progress(job), lease_until, job.id, job.runner)
            if status.endswith(" 0"):
                return False
            if rejects:
                await conn.execute(
                    "INSERT INTO job_rejects (job_id, line, handle, code, message) "
                    "SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::integer[], $5::text[]) "
                    "ON CONFLICT (job_id, line) DO UPDATE SET handle = excluded.handle, code = excluded.code, "
                    "message = excluded.message",
                    job.id,
                    [r.line for r in rejects],
                    [r.handle for r in rejects],
                    [r.code for r in rejects],
                    [r.message for r in rejects],
                )
            return True

        return await self._in_transaction(work)

    async def finish_job(self, job: JobRecord, *, audit: AuditRecord) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                n(q.FINISH), *q.progress(job), job.state, job.error, job.finished_at, job.id, job.runner
            )
            if status.endswith(" 0"):
                return False
            await conn.execute(n(q.DROP_PARTS), job.id)
            await insert_audit(conn, audit)
            return True

        return await self._in_transaction(work)

    async def release_job(self, job_id: str, runner: str, *, now: int) -> bool:
        return await self._changed(q.RELEASE, now, job_id, runner)

    async def job_rejects(self, job_id: str, *, after_line: int, limit: int) -> list[JobReject]:
        rows = await self._fetch(n(q.REJECTS), job_id, after_line, limit)
        return [JobReject(*r) for r in rows]
