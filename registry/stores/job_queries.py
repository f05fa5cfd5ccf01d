"""The SQL of background jobs, written once for both stores.

The text is SQLite's, with ``?`` placeholders; :func:`numbered` gives PostgreSQL's ``$1, $2, …``
form of the same statement. What differs between the stores stays in their mixins
(:mod:`registry.stores.sqlite_jobs`, :mod:`registry.stores.postgres_jobs`): the tables' DDL, how a
job part or a reject is upserted, and PostgreSQL's ``FOR UPDATE SKIP LOCKED`` on a claim.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

from registry.stores.base import JobRecord

__all__ = [
    "CLAIM",
    "CLAIMABLE",
    "COLUMNS",
    "COUNTS",
    "COUNTS_BY_KIND",
    "DROP_PARTS",
    "FIND",
    "FINISH",
    "GET",
    "INSERT",
    "PART",
    "REJECTS",
    "RELEASE",
    "RENEW",
    "REQUEUE",
    "SAVE_PROGRESS",
    "UNFINISHED",
    "job_of",
    "listing",
    "numbered",
    "progress",
]

# JobRecord's fields in order, as columns (``offset`` is an SQL word), without ``seq`` (the store's).
_NAMES = ["byte_offset" if name == "offset" else name for name in JobRecord.__dataclass_fields__ if name != "seq"]
COLUMNS = ", ".join(_NAMES)
_SELECT = "SELECT id, seq, " + ", ".join(_NAMES[1:]) + " FROM jobs"
_PROGRESS = (
    "total = ?, processed = ?, created = ?, replaced = ?, deleted = ?, present = ?, absent = ?, rejected = ?, "
    "line = ?, byte_offset = ?, updated_at = ?"
)

INSERT = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(_NAMES))})"
PART = "SELECT data FROM job_parts WHERE job_id = ? AND seq = ?"
GET = f"{_SELECT} WHERE id = ?"
FIND = f"{_SELECT} WHERE file_sha256 = ? AND kind = ? AND prefix = ? AND options = ? ORDER BY seq DESC LIMIT 1"
COUNTS = "SELECT state, COUNT(*) FROM jobs GROUP BY state"
COUNTS_BY_KIND = "SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state"
UNFINISHED = "SELECT COUNT(*) FROM jobs WHERE prefix = ? AND state IN ('queued', 'running')"
REQUEUE = (
    "UPDATE jobs SET state = 'queued', error = NULL, finished_at = NULL, file_parts = ?, updated_at = ?, "
    "runner = NULL, lease_until = 0 WHERE id = ? AND state = 'failed'"
)
# The oldest job nobody works on: queued, or running on a lease that ran out.
CLAIMABLE = "SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < ?) ORDER BY seq LIMIT 1"
CLAIM = (
    "UPDATE jobs SET state = 'running', runner = ?, lease_until = ?, updated_at = ?, "
    "started_at = COALESCE(started_at, ?) WHERE id = ?"
)
RENEW = "UPDATE jobs SET lease_until = ? WHERE id = ? AND runner = ? AND state = 'running'"
SAVE_PROGRESS = f"UPDATE jobs SET {_PROGRESS}, lease_until = ? WHERE id = ? AND runner = ? AND state = 'running'"
FINISH = (
    f"UPDATE jobs SET {_PROGRESS}, state = ?, error = ?, finished_at = ?, runner = NULL, lease_until = 0 "
    "WHERE id = ? AND runner = ? AND state = 'running'"
)
DROP_PARTS = "DELETE FROM job_parts WHERE job_id = ?"
RELEASE = (
    "UPDATE jobs SET state = 'queued', runner = NULL, lease_until = 0, updated_at = ? "
    "WHERE id = ? AND runner = ? AND state = 'running'"
)
REJECTS = "SELECT line, handle, code, message FROM job_rejects WHERE job_id = ? AND line > ? ORDER BY line LIMIT ?"


@functools.cache
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered for PostgreSQL (``$1``, ``$2``, …)."""
    count = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def listing(prefix: str | None, owner: str | None, limit: int, before_seq: int | None) -> tuple[str, list[Any]]:
    """The newest jobs first, of a prefix or an owner, before a ``seq`` (the page before)."""
    terms = ["1 = 1"]
    args: list[Any] = []
    for term, value in (("prefix = ?", prefix), ("owner = ?", owner), ("seq < ?", before_seq)):
        if value is not None:
            terms.append(term)
            args.append(value)
    return f"{_SELECT} WHERE {' AND '.join(terms)} ORDER BY seq DESC LIMIT ?", [*args, limit]


def progress(job: JobRecord) -> tuple[Any, ...]:
    """The arguments of the progress columns (the first placeholders of SAVE_PROGRESS and FINISH)."""
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


def job_of(row: Sequence[Any] | None) -> JobRecord | None:
    return JobRecord(*row) if row else None
