"""Background jobs in the PostgreSQL store (registry.jobs): the job rows, their files and rejected rows.

A mixin of :class:`registry.stores.postgres.PostgresStore` (its ``_run``, ``_fetch`` and
``_fetchrow``); the tables are made by its jobs migration (:data:`JOBS_DDL`). Claims take the
oldest claimable job with ``FOR UPDATE SKIP LOCKED``, so workers of several nodes never take the
same job at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple
from typing import Any

import asyncpg

from registry.stores.base import AuditRecord, JobRecord, JobReject

__all__ = ["JOBS_DDL", "PostgresJobs", "insert_audit"]

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

_NAMES = ["byte_offset" if name == "offset" else name for name in JobRecord.__dataclass_fields__ if name != "seq"]
_COLUMNS = ", ".join(_NAMES)
_SELECT = "SELECT id, seq, " + ", ".join(_NAMES[1:]) + " FROM jobs"
_PROGRESS = (
    "total = $1, processed = $2, created = $3, replaced = $4, deleted = $5, present = $6, absent = $7, "
    "rejected = $8, line = $9, byte_offset = $10, updated_at = $11"
)
_AUDIT = "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES ($1, $2, $3, $4, $5, $6)"


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


async def insert_audit(conn: asyncpg.Connection, audit: AuditRecord | None) -> None:
    """Store ``audit`` in the caller's transaction (nothing when None)."""
    if audit is not None:
        await conn.execute(_AUDIT, audit.at, audit.actor, audit.action, audit.target, audit.source, audit.detail)


def _job(row: asyncpg.Record | None) -> JobRecord | None:
    return JobRecord(*row) if row else None


Work = Callable[[asyncpg.Connection, Any], Awaitable[Any]]


class PostgresJobs:
    """Job rows, parts and rejects (``registry.stores.base.HandleStore``'s job methods)."""

    # Provided by PostgresStore.
    _run: Callable[[Work], Awaitable[Any]]
    _fetch: Callable[..., Awaitable[list[asyncpg.Record]]]
    _fetchrow: Callable[..., Awaitable[asyncpg.Record | None]]

    async def _in_transaction(self, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        async def run(conn: asyncpg.Connection, attempt: Any) -> Any:
            async with conn.transaction():
                result = await work(conn)
                attempt.commit_sent = True
            return result

        return await self._run(run)

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
        row = await self._fetchrow("SELECT data FROM job_parts WHERE job_id = $1 AND seq = $2", job_id, seq)
        return bytes(row[0]) if row else None

    async def add_job(self, job: JobRecord, *, audit: AuditRecord) -> JobRecord:
        values = astuple(job)
        fields = (values[0], *values[2:])
        marks = ", ".join(f"${n}" for n in range(1, len(fields) + 1))

        async def work(conn: asyncpg.Connection) -> JobRecord:
            seq = await conn.fetchval(f"INSERT INTO jobs ({_COLUMNS}) VALUES ({marks}) RETURNING seq", *fields)
            await insert_audit(conn, audit)
            return JobRecord(job.id, int(seq), *values[2:])

        return await self._in_transaction(work)

    async def get_job(self, job_id: str) -> JobRecord | None:
        return _job(await self._fetchrow(f"{_SELECT} WHERE id = $1", job_id))

    async def list_jobs(
        self, *, prefix: str | None, owner: str | None, limit: int, before_seq: int | None = None
    ) -> list[JobRecord]:
        terms: list[str] = ["TRUE"]
        args: list[Any] = []
        for column, value in (("prefix", prefix), ("owner", owner), ("seq <", before_seq)):
            if value is not None:
                args.append(value)
                op = "" if column.endswith("<") else " ="
                terms.append(f"{column}{op} ${len(args)}")
        sql = f"{_SELECT} WHERE {' AND '.join(terms)} ORDER BY seq DESC LIMIT ${len(args) + 1}"
        return [JobRecord(*r) for r in await self._fetch(sql, *args, limit)]

    async def find_job(self, kind: str, prefix: str, file_sha256: str, options: str) -> JobRecord | None:
        sql = (
            f"{_SELECT} WHERE file_sha256 = $1 AND kind = $2 AND prefix = $3 AND options = $4 ORDER BY seq DESC LIMIT 1"
        )
        return _job(await self._fetchrow(sql, file_sha256, kind, prefix, options))

    async def unfinished_jobs(self, prefix: str) -> int:
        row = await self._fetchrow(
            "SELECT COUNT(*) FROM jobs WHERE prefix = $1 AND state IN ('queued', 'running')", prefix
        )
        return int(row[0]) if row else 0

    async def job_counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: int(n) for state, n in rows}

    async def requeue_job(self, job_id: str, *, parts: int, now: int, audit: AuditRecord) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE jobs SET state = 'queued', error = NULL, finished_at = NULL, file_parts = $1, updated_at = $2, "
                "runner = NULL, lease_until = 0 WHERE id = $3 AND state = 'failed'",
                parts,
                now,
                job_id,
            )
            if status.endswith(" 0"):
                return False
            await insert_audit(conn, audit)
            return True

        return await self._in_transaction(work)

    async def claim_job(self, runner: str, *, now: int, lease_until: int) -> JobRecord | None:
        async def work(conn: asyncpg.Connection) -> JobRecord | None:
            row = await conn.fetchrow(
                "SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < $1) "
                "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                now,
            )
            if row is None:
                return None
            await conn.execute(
                "UPDATE jobs SET state = 'running', runner = $1, lease_until = $2, updated_at = $3, "
                "started_at = COALESCE(started_at, $3) WHERE id = $4",
                runner,
                lease_until,
                now,
                row[0],
            )
            return _job(await conn.fetchrow(f"{_SELECT} WHERE id = $1", row[0]))

        return await self._in_transaction(work)

    async def renew_job(self, job_id: str, runner: str, *, lease_until: int) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND runner = $3 AND state = 'running'",
                lease_until,
                job_id,
                runner,
            )
            return not status.endswith(" 0")

        return await self._in_transaction(work)

    async def save_job_progress(self, job: JobRecord, rejects: Sequence[JobReject], *, lease_until: int) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                f"UPDATE jobs SET {_PROGRESS}, lease_until = $12 WHERE id = $13 AND runner = $14 AND state = 'running'",
                *_progress(job),
                lease_until,
                job.id,
                job.runner,
            )
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
                f"UPDATE jobs SET {_PROGRESS}, state = $12, error = $13, finished_at = $14, runner = NULL, "
                "lease_until = 0 WHERE id = $15 AND runner = $16 AND state = 'running'",
                *_progress(job),
                job.state,
                job.error,
                job.finished_at,
                job.id,
                job.runner,
            )
            if status.endswith(" 0"):
                return False
            await conn.execute("DELETE FROM job_parts WHERE job_id = $1", job.id)
            await insert_audit(conn, audit)
            return True

        return await self._in_transaction(work)

    async def release_job(self, job_id: str, runner: str, *, now: int) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE jobs SET state = 'queued', runner = NULL, lease_until = 0, updated_at = $1 "
                "WHERE id = $2 AND runner = $3 AND state = 'running'",
                now,
                job_id,
                runner,
            )
            return not status.endswith(" 0")

        return await self._in_transaction(work)

    async def job_rejects(self, job_id: str, *, after_line: int, limit: int) -> list[JobReject]:
        rows = await self._fetch(
            "SELECT line, handle, code, message FROM job_rejects WHERE job_id = $1 AND line > $2 "
            "ORDER BY line LIMIT $3",
            job_id,
            after_line,
            limit,
        )
        return [JobReject(*r) for r in rows]
